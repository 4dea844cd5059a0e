"""The observer side in-process: ignore rules, the settle tracker, the inotify fallback."""

from __future__ import annotations

import errno
import logging
import threading
import time
from pathlib import Path

from watchdog.observers.polling import PollingObserver

import watcher.daemon.observer as observer_module
from tests.helpers import wait_for
from watcher.daemon.ignore import IgnoreRules
from watcher.daemon.observer import LOST_EVENTS, Handoff, LostEvents, SettleTracker, start_observer
from watcher.settings import WatchConfig


def test_ignore_rules(tmp_path: Path) -> None:
    out = tmp_path / "in" / "out"
    rules = IgnoreRules(tmp_path / "in", ["*.bak", "drafts"], [out, tmp_path / "elsewhere"])
    ignored = [
        "a/.hidden.pdf",
        ".git/x.pdf",
        "~$doc.docx",
        "x.part",
        "y.crdownload",
        "z.tmp",
        "Thumbs.db",
        "a.bak",
        "drafts/a.pdf",
        "out/a.pdf.md",
    ]
    kept = ["a.pdf", "sub/dir/report.docx", "draftsman.pdf", "t.partial.pdf"]
    for rel in ignored:
        assert rules.ignored(tmp_path / "in" / rel), rel
    for rel in kept:
        assert not rules.ignored(tmp_path / "in" / rel), rel
    assert rules.ignored(tmp_path / "not-input" / "a.pdf")


def run_tracker(tracker: SettleTracker) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()
    thread = threading.Thread(target=tracker.run, args=(stop,), daemon=True)
    thread.start()
    return stop, thread


def test_settle_tracker_waits_for_quiet_and_reports_once(tmp_path: Path) -> None:
    settled: list[tuple[Path, int]] = []
    rules = IgnoreRules(tmp_path, [], [])
    tracker = SettleTracker(
        0.6, rules, lambda path, queued: settled.append((path, path.stat().st_size))
    )
    stop, thread = run_tracker(tracker)
    target = tmp_path / "growing.bin"
    with target.open("wb") as handle:
        for _ in range(8):  # writes 0.3 s apart: never quiet for 0.6 s
            handle.write(b"x" * 1000)
            handle.flush()
            tracker.offer(target)
            time.sleep(0.3)
            assert not settled
    wait_for(lambda: settled, 5, "the file to settle")
    time.sleep(1)
    assert settled == [(target, 8000)]
    stop.set()
    thread.join(5)


def test_settle_tracker_expands_folders_and_survives_a_failing_intake(tmp_path: Path) -> None:
    seen: list[str] = []

    def intake(path: Path, queued: object) -> None:
        if path.name == "bad.txt":
            raise RuntimeError("intake blew up")
        seen.append(path.relative_to(tmp_path).as_posix())

    tracker = SettleTracker(0.1, IgnoreRules(tmp_path, [], []), intake)
    stop, thread = run_tracker(tracker)
    (tmp_path / "batch" / "deep").mkdir(parents=True)
    for rel in ("batch/a.txt", "batch/deep/b.txt", "batch/bad.txt", "batch/.hidden"):
        (tmp_path / rel).write_text("x")
    tracker.offer(tmp_path / "batch")
    wait_for(lambda: len(seen) == 2, 5, "both good files")
    assert sorted(seen) == ["batch/a.txt", "batch/deep/b.txt"]
    assert thread.is_alive()
    stop.set()
    thread.join(5)


def test_exhausted_inotify_falls_back_to_polling(tmp_path: Path, monkeypatch) -> None:
    def no_watches_left(self: object) -> None:
        raise OSError(errno.ENOSPC, "inotify watch limit reached")

    monkeypatch.setattr(observer_module.Observer, "start", no_watches_left)
    seen: list[Path] = []
    tracker = SettleTracker(0.1, IgnoreRules(tmp_path, [], []), lambda p, q: seen.append(p))
    stop, thread = run_tracker(tracker)
    config = WatchConfig(observer="native", polling_interval=0.2)
    observer = start_observer(config, tmp_path, Handoff(tracker, IgnoreRules(tmp_path, [], [])))
    try:
        assert isinstance(observer, PollingObserver)
        (tmp_path / "new.pdf").write_bytes(b"%PDF")
        wait_for(lambda: seen == [tmp_path / "new.pdf"], 10, "the polling observer to see it")
    finally:
        observer.stop()
        observer.join(5)
        stop.set()
        thread.join(5)


class Shown(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_lost_events_are_heard_even_when_the_log_shows_errors_only() -> None:
    """watchdog's overflow warning reaches the rescan whatever the log level, and the log
    keeps the level it was given (the end-to-end case is in test_watching)."""
    family, source = logging.getLogger("watchdog"), logging.getLogger(LOST_EVENTS[0])
    handler = Shown()
    shown = handler.records
    source.addHandler(handler)
    before = family.level
    family.setLevel(logging.ERROR)
    heard: list[bool] = []
    losses = LostEvents(lambda: heard.append(True)).install()
    try:
        source.warning("Inotify queue overflowed; filesystem events were lost")
        source.warning("something else")
        assert heard == [True] and shown == []
        family.setLevel(logging.WARNING)
        source.warning("Inotify queue overflowed; filesystem events were lost")
        assert heard == [True, True] and len(shown) == 1
    finally:
        losses.remove()
        source.removeHandler(handler)
        family.setLevel(before)
    assert source.level == logging.NOTSET


def test_rescans_do_not_restart_the_quiet_period(tmp_path: Path) -> None:
    settled: list[Path] = []
    tracker = SettleTracker(0.8, IgnoreRules(tmp_path, [], []), lambda p, q: settled.append(p))
    stop, thread = run_tracker(tracker)
    (tmp_path / "still.pdf").write_bytes(b"%PDF")
    for _ in range(10):  # a reconciler rescanning more often than the settle time
        tracker.offer(tmp_path, frozenset())
        time.sleep(0.25)
    # Handed on (once per completed quiet period, which intake then finds unchanged).
    assert settled and set(settled) == {tmp_path / "still.pdf"}
    stop.set()
    thread.join(5)


def test_a_file_closed_by_its_writer_settles_sooner_than_one_still_open(tmp_path: Path) -> None:
    settled: list[str] = []
    rules = IgnoreRules(tmp_path, [], [])
    tracker = SettleTracker(
        4.0, rules, lambda path, queued: settled.append(path.name), closed_settle=0.1
    )
    stop, thread = run_tracker(tracker)
    observer = start_observer(WatchConfig(observer="native"), tmp_path, Handoff(tracker, rules))
    try:
        with (tmp_path / "open.pdf").open("wb") as still_open:
            still_open.write(b"%PDF-1.4 first part")
            still_open.flush()
            (tmp_path / "closed.pdf").write_bytes(b"%PDF-1.4 whole")  # opened, written, closed
            wait_for(lambda: settled, 3, "the closed file")  # well inside the 4 s settle
            assert settled == ["closed.pdf"]  # the open one still waits its full settle
            still_open.write(b" and the rest")
        wait_for(lambda: len(settled) == 2, 3, "the file once closed")
        assert settled == ["closed.pdf", "open.pdf"]
    finally:
        observer.stop()
        observer.join(5)
        stop.set()
        thread.join(5)
