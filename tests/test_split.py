"""Long documents split across real worker processes: the parts are shared, a worker
killed mid-part costs only that part, a coordinator killed mid-job costs only the parts it
had not finished, and a cancel stops every part. Faults come from tests/faults."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from handlers.converter import ConversionOptions, DoclingConverter
from handlers.outputs import FORMATS, Rendition
from handlers.parts import PARTS, plan
from tests.helpers import Daemon, alive, long_pdf, run_cli, wait_for

REL = "long.pdf"
PAGES = 36  # two of the corpus's redp5110 (18 pages) in a row: 13 parts, 4 pages down to 1
ALL_PARTS = [list(pages) for pages in plan(PAGES, 8)]


@pytest.fixture(scope="module")
def long(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return long_pdf(tmp_path_factory.mktemp("long") / REL, copies=2).read_bytes()


@pytest.fixture(scope="module")
def whole(tmp_path_factory: pytest.TempPathFactory, long: bytes) -> dict[str, bytes]:
    """Markdown and JSON of the long PDF converted whole, in this process."""
    source = tmp_path_factory.mktemp("whole") / REL
    source.write_bytes(long)
    document = DoclingConverter(ConversionOptions()).convert(source, lambda d, t: None).document
    rendition = Rendition(document, source)
    return {fmt: FORMATS[fmt].render(rendition) or b"" for fmt in ("md", "json")}


def start(make_daemon, tmp_path: Path, faults: str) -> Daemon:  # type: ignore[no-untyped-def]
    marks = tmp_path / "marks"
    marks.mkdir()
    return make_daemon("run", faults=faults, env={"HOTFOLDER_FAULT_MARKS": str(marks)})


def stalled(daemon: Daemon, first_page: int) -> int:
    """The pid of the worker that stalled in the part starting at `first_page`."""
    mark = daemon.root / "marks" / f"stall-long*-{first_page}"
    wait_for(lambda: mark.exists() and mark.read_text(), 60, "a worker to stall in its part")
    return int(mark.read_text())


def parts_done(daemon: Daemon) -> list[dict]:
    return daemon.events("job.part_done")


def check_joined(daemon: Daemon, whole: dict[str, bytes], attempts: int) -> dict:
    status = daemon.wait_state(REL, ("completed", "failed"), timeout=120)
    assert status["state"] == "completed", status
    assert (status["parts"], status["pages"], status["attempts"]) == (
        len(ALL_PARTS),
        PAGES,
        attempts,
    )
    for fmt, expected in whole.items():
        assert (daemon.output / status["outputs"][fmt]).read_bytes() == expected, fmt
    done = Counter(tuple(event["pages"]) for event in parts_done(daemon))
    assert sorted(done) == [tuple(pages) for pages in ALL_PARTS]
    assert set(done.values()) == {1}, done  # no part converted twice
    # Removed once the outcome is recorded (the parts are kept until the job has ended).
    wait_for(lambda: not any((daemon.output / PARTS).iterdir()), 10, "the parts removed")
    return status


def test_a_worker_killed_mid_part_costs_only_that_part(
    make_daemon, tmp_path: Path, long: bytes, whole: dict[str, bytes]
) -> None:
    # The coordinator's own first part takes 2 s, so the other worker surely takes the
    # first part offered (pages 5-8), where it stalls until it is killed.
    daemon = start(make_daemon, tmp_path, "slow:long*:2:1;stall:long*:300:5")
    (daemon.input / REL).write_bytes(long)
    victim = stalled(daemon, 5)
    coordinator = daemon.wait_state(REL, ("processing",))["worker"]
    assert not coordinator.endswith(f":{victim}")
    wait_for(lambda: len(parts_done(daemon)) == len(ALL_PARTS) - 1, 90, "every other part")
    os.kill(victim, signal.SIGKILL)
    status = check_joined(daemon, whole, attempts=1)
    again = [event for event in parts_done(daemon) if event["pages"] == [5, 8]]
    assert again[0]["coordinator"] and again[0]["worker"] == status["worker"] == coordinator
    assert not alive(victim)
    assert daemon.stop() == 0


def test_a_coordinator_killed_mid_job_costs_only_its_unfinished_part(
    make_daemon, tmp_path: Path, long: bytes, whole: dict[str, bytes]
) -> None:
    # The coordinator stalls in its first part while the other worker does all the others.
    daemon = start(make_daemon, tmp_path, "stall:long*:300:1")
    (daemon.input / REL).write_bytes(long)
    victim = stalled(daemon, 1)
    assert daemon.wait_state(REL, ("processing",))["worker"].endswith(f":{victim}")
    wait_for(lambda: len(parts_done(daemon)) == len(ALL_PARTS) - 1, 90, "the other worker's parts")
    helper = {event["worker"] for event in parts_done(daemon)}
    assert len(helper) == 1 and not helper.pop().endswith(f":{victim}")
    os.kill(victim, signal.SIGKILL)
    status = check_joined(daemon, whole, attempts=2)  # the crash counts as an attempt
    assert [event["pages"] for event in parts_done(daemon)][-1] == [1, 4]
    assert not status["worker"].endswith(f":{victim}")
    assert daemon.stop() == 0


def test_a_cancel_stops_every_part(make_daemon, tmp_path: Path, long: bytes) -> None:
    daemon = start(make_daemon, tmp_path, "slow:long*:1")  # every part takes a second more
    (daemon.input / REL).write_bytes(long)
    wait_for(lambda: len(parts_done(daemon)) >= 2, 90, "two parts")
    answer = run_cli(daemon.config_file, "cancel", REL)
    assert answer.returncode == 0, answer
    status = daemon.wait_state(REL, ("cancelled", "completed"), timeout=30)
    assert status["state"] == "cancelled" and status["outputs"] == {}
    count = len(parts_done(daemon))
    time.sleep(3)  # longer than a part takes: any part still going would be done by now
    assert len(parts_done(daemon)) == count < len(ALL_PARTS)
    assert not any((daemon.output / PARTS).iterdir())
    assert daemon.stop() == 0
