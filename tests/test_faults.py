"""Never lose a file: real daemons killed, hung, crashed, stopped and starved of disk.

Every test ends with the full accounting: each input has a terminal sidecar, nothing is
left `processing`, and each document was converted into one result only.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from handlers.ledger import Ledger
from handlers.lifecycle import admit
from handlers.sidecar import now_iso
from handlers.source import digest_input
from tests.helpers import Daemon, alive, corpus, drop, drop_batch, fill, small_tmpfs, wait_for

DOCS = [
    "pdf/redp5110_sampled.pdf",
    "pdf/multi_page.pdf",
    "docx/word_sample.docx",
    "pptx/powerpoint_sample.pptx",
    "html/wiki_duck.html",
]


def assert_accounted(daemon: Daemon, names: list[str], state: str = "completed") -> None:
    """Every input ends in `state` and nothing is left `processing`."""
    states = daemon.states()
    assert "processing" not in states.values(), states
    missing = [n for n in names if states.get(n) != state]
    assert not missing, {n: states.get(n) for n in missing}


def assert_one_result_per_document(daemon: Daemon, batch: dict[str, str]) -> None:
    """Copies of one corpus document all hold the same Markdown: no mixed or partial result."""
    by_doc: dict[str, set[str]] = {}
    for name, doc in batch.items():
        by_doc.setdefault(doc, set()).add((daemon.output / f"{name}.md").read_text())
    for doc, texts in by_doc.items():
        assert len(texts) == 1 and next(iter(texts)).strip(), doc


def wait_all_terminal(daemon: Daemon, names: list[str], timeout: float = 240) -> None:
    terminal = {"completed", "failed", "cancelled"}

    def done() -> bool:
        daemon.check_running()
        states = daemon.states()
        return all(states.get(n) in terminal for n in names)

    wait_for(done, timeout, f"{len(names)} jobs to end")


def test_kill9_consumer_mid_batch_then_restart(make_daemon, tmp_path) -> None:
    watch = make_daemon("watch")
    work = make_daemon("work", root=tmp_path)
    batch = drop_batch(watch.input, 30, DOCS)
    wait_for(lambda: list(watch.states().values()).count("completed") >= 4, 120, "progress")
    wait_for(lambda: "processing" in watch.states().values(), 60, "a job in progress")
    orphans = work.kill9()
    # Its worker processes must not live on and take jobs unsupervised.
    wait_for(lambda: not any(alive(pid) for pid in orphans), 15, "orphaned workers to die")
    assert "processing" in watch.states().values() or "pending" in watch.states().values()
    again = make_daemon("work", root=tmp_path)
    wait_all_terminal(watch, list(batch))
    assert_accounted(watch, list(batch))
    assert_one_result_per_document(watch, batch)
    assert again.stop() == 0 and watch.stop() == 0


def test_kill9_one_worker_child_mid_job(make_daemon) -> None:
    daemon = make_daemon("run", faults="slow:slow*:3")
    drop(corpus("docx/word_sample.docx"), daemon.input / "slow.docx")
    status = daemon.wait_state("slow.docx", ("processing",))
    worker_pid = int(status["worker"].rsplit(":", 1)[1])
    os.kill(worker_pid, signal.SIGKILL)
    final = daemon.wait_terminal("slow.docx", timeout=60)
    assert final["state"] == "completed" and final["attempts"] == 2, final
    assert final["worker"] != status["worker"]
    assert [e["source"] for e in daemon.events("job.worker_lost")] == ["slow.docx"]
    assert "died, restarting" in daemon.log()  # a real death keeps huey's warning
    assert not daemon.events("worker.recycled")
    assert_accounted(daemon, ["slow.docx"])
    assert daemon.stop() == 0


def test_kill9_watcher_while_files_arrive(make_daemon, tmp_path) -> None:
    watch = make_daemon("watch")
    work = make_daemon("work", root=tmp_path)
    names: list[str] = []
    stop_dropping = threading.Event()

    def keep_dropping() -> None:
        for i in range(24):
            if stop_dropping.is_set():
                return
            doc = DOCS[i % len(DOCS)]
            name = f"a{i:02d}{Path(doc).suffix}"
            drop(corpus(doc), watch.input / name)
            names.append(name)
            time.sleep(0.15)

    dropper = threading.Thread(target=keep_dropping)
    dropper.start()
    time.sleep(1.2)
    watch.kill9()
    dropper.join(30)
    stop_dropping.set()
    watch_again = make_daemon("watch", root=tmp_path)
    wait_all_terminal(watch_again, names)
    assert_accounted(watch_again, names)
    batch = {n: DOCS[int(n[1:3]) % len(DOCS)] for n in names}
    assert_one_result_per_document(watch_again, batch)
    assert work.stop() == 0 and watch_again.stop() == 0


def test_files_dropped_while_everything_is_down(make_daemon, tmp_path) -> None:
    first = make_daemon("run")
    drop(corpus("csv/csv-comma.csv"), first.input / "before.csv")
    assert first.wait_terminal("before.csv")["state"] == "completed"
    assert first.stop() == 0
    batch = drop_batch(first.input, 8, DOCS)
    second = make_daemon("run", root=tmp_path)
    wait_all_terminal(second, list(batch))
    assert_accounted(second, [*batch, "before.csv"])
    assert len([e for e in second.events("job.started") if e["source"] == "before.csv"]) == 1
    assert second.stop() == 0


def test_sigterm_lets_a_long_conversion_finish(make_daemon, tmp_path) -> None:
    watch = make_daemon("watch")
    work = make_daemon("work", root=tmp_path, faults="slow:slow*:4")
    drop(corpus("pdf/multi_page.pdf"), watch.input / "slow.pdf")
    watch.wait_state("slow.pdf", ("processing",))
    assert work.stop(signal.SIGTERM) == 0
    status = watch.sidecar("slow.pdf")
    assert status["state"] == "completed" and status["attempts"] == 1, status
    assert watch.stop() == 0


def test_hung_converter_hits_hard_timeout_and_the_queue_moves_on(make_daemon) -> None:
    daemon = make_daemon(
        "run",
        faults="hang:hang*",
        config={"workers": {"count": 1}, "jobs": {"hard_timeout": 2, "max_attempts": 2}},
    )
    drop(corpus("pdf/multi_page.pdf"), daemon.input / "hang.pdf")
    daemon.wait_state("hang.pdf", ("processing",))
    drop(corpus("docx/word_sample.docx"), daemon.input / "next.docx")
    assert daemon.wait_terminal("next.docx", timeout=60)["state"] == "completed"
    final = daemon.wait_terminal("hang.pdf", timeout=60)
    assert final["state"] == "failed" and final["attempts"] == 2, final
    assert final["error"]["type"] == "timeout"
    assert "hard_timeout" in final["error"]["message"] and "2 attempts" in final["error"]["message"]
    assert len(daemon.events("job.hard_timeout")) == 2
    assert_accounted(daemon, ["next.docx"])
    assert daemon.stop() == 0


def test_crashing_converter_fails_after_max_attempts(make_daemon) -> None:
    daemon = make_daemon("run", faults="abort:crash*", config={"jobs": {"max_attempts": 3}})
    drop(corpus("pdf/multi_page.pdf"), daemon.input / "crash.pdf")
    drop(corpus("docx/word_sample.docx"), daemon.input / "fine.docx")
    final = daemon.wait_terminal("crash.pdf", timeout=90)
    assert final["state"] == "failed" and final["attempts"] == 3, final
    assert final["error"]["type"] == "worker_crashed"
    assert "3 attempts" in final["error"]["message"]
    assert daemon.wait_terminal("fine.docx")["state"] == "completed"
    assert_accounted(daemon, ["fine.docx"])
    # A failed file is not retried on restart while its content is unchanged.
    assert daemon.stop() == 0
    passes = len(daemon.events("reconcile.pass"))  # the log file is shared by both runs
    again = make_daemon("run", root=daemon.root, faults="abort:crash*")
    wait_for(lambda: len(again.events("reconcile.pass")) >= passes + 3, 30, "reconciler passes")
    assert again.sidecar("crash.pdf")["finished_at"] == final["finished_at"]
    assert again.stop() == 0


def test_same_file_dropped_50_times_in_a_burst_converts_once(make_daemon) -> None:
    daemon = make_daemon("run")
    for _ in range(50):
        drop(corpus("pdf/multi_page.pdf"), daemon.input / "burst.pdf")
    final = daemon.wait_terminal("burst.pdf")
    assert final["state"] == "completed" and final["attempts"] == 1
    time.sleep(2)  # two reconciler passes and several settle periods
    started = [e for e in daemon.events("job.started") if e["source"] == "burst.pdf"]
    assert len(started) == 1, started
    assert daemon.stop() == 0


def test_two_reconcilers_never_convert_one_file_twice(make_daemon, tmp_path) -> None:
    batch = drop_batch(tmp_path / "input", 10, DOCS)
    first = make_daemon("watch", config={"jobs": {"reconcile_interval": 0.3}})
    twin = make_daemon("watch", root=tmp_path)  # a second watcher on the same folders
    work = make_daemon("work", root=tmp_path)
    wait_all_terminal(first, list(batch))
    time.sleep(1.5)
    assert_accounted(first, list(batch))
    started = [e["source"] for e in work.events("job.started")]
    assert sorted(started) == sorted(batch), started
    assert work.stop() == 0 and first.stop() == 0 and twin.stop() == 0


def test_full_output_disk_is_retried_and_nothing_is_truncated(make_daemon, tmp_path) -> None:
    with small_tmpfs(tmp_path / "output", "1m") as output:
        filler = fill(output, leave=24 * 1024)  # room for sidecars, not for outputs
        daemon = make_daemon("run", config={"jobs": {"max_attempts": 10}})
        drop(corpus("pdf/multi_page.pdf"), daemon.input / "r.pdf")
        wait_for(lambda: (daemon.sidecar("r.pdf") or {}).get("error"), 60, "the disk-full error")
        waiting = daemon.sidecar("r.pdf")
        assert waiting["error"]["type"] == "disk_full" and waiting["error"]["retryable"]
        assert str(output) in waiting["error"]["message"]  # names the disk that is full
        assert not (output / "r.pdf.md").exists() and not (output / "r.pdf.json").exists()
        assert not [p for p in output.iterdir() if p.name.endswith(".tmp")], "temp files left"
        filler.unlink()
        final = daemon.wait_terminal("r.pdf", timeout=60)
        assert final["state"] == "completed" and final["attempts"] >= 2
        assert len((output / "r.pdf.md").read_text()) == 9438  # whole, per the manifest
        assert oct((output / "r.pdf.md").stat().st_mode & 0o777) == oct(0o644)
        assert daemon.stop() == 0


def test_what_a_power_cut_leaves_unsynced_is_taken_in_again(make_daemon, tmp_path) -> None:
    """Only outcomes are fsynced: a job's record while it waits or runs, the task and the
    in-flight note may be lost or torn by a power cut. Whatever each says after one (an old
    record, none, a torn file, a `processing` of a dead worker, a `pending` with no task),
    the input file is still there, and every job ends once; an outcome on disk stands."""
    first = make_daemon("run")
    drop(corpus("csv/csv-comma.csv"), first.input / "kept.csv")
    assert first.wait_terminal("kept.csv")["state"] == "completed"
    assert first.stop() == 0
    names = ["none.csv", "torn.csv", "half.csv", "running.csv", "waiting.csv"]
    for name in names:
        drop(corpus("csv/csv-comma.csv"), first.input / name)
    ledger = Ledger(first.output)
    for name in ("half.csv", "running.csv", "waiting.csv"):
        sha, size, info = digest_input(first.input, name)
        admit(ledger, name, sha, size, info.st_mtime_ns, 0)
    (first.output / "torn.csv.status.json").write_bytes(b"")
    half = first.output / "half.csv.status.json"
    half.write_bytes(half.read_bytes()[:40])
    running = ledger.read("running.csv")
    assert running is not None
    running.state, running.attempts, running.started_at = "processing", 1, now_iso()
    running.worker = f"{socket.gethostname()}:{dead_pid()}"
    ledger.save(running)
    state = first.root / "state"
    for extra in ("", "-wal", "-shm"):
        (state / f"queue.db{extra}").unlink(missing_ok=True)
    again = make_daemon("run", root=tmp_path)
    wait_all_terminal(again, names)
    assert_accounted(again, [*names, "kept.csv"])
    started = sorted(e["source"] for e in again.events("job.started"))  # both runs' log
    assert started == sorted([*names, "kept.csv"]), started  # each once: kept.csv not again
    assert ledger.read("running.csv").attempts == 2  # type: ignore[union-attr]
    assert again.stop() == 0


def dead_pid() -> int:
    """The pid of a process that has exited."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid
