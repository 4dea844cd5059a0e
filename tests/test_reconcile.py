"""Intake and the reconciler in this process, on the real SQLite queue, index and leases:
a settled file becomes one job, and the sweep recovers what a dead worker left."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from unittest.mock import ANY

import pytest

import watcher.daemon.observer as observer_module
import watcher.queue as queue_module
from handlers.lifecycle import cancel, start
from handlers.sidecar import JobStatus, now_iso
from handlers.source import Snapshot, read_input
from tests.helpers import corpus, wait_for
from watcher.daemon import inflight
from watcher.daemon.ignore import IgnoreRules
from watcher.daemon.intake import Intake
from watcher.daemon.observer import SettleTracker
from watcher.daemon.reconcile import purge, sweep
from watcher.daemon.skips import Skips
from watcher.services import Services, open_services
from watcher.settings import load_settings


@pytest.fixture
def services(tmp_path: Path) -> Services:
    config = tmp_path / "config.toml"
    config.write_text("[jobs]\nretry_backoff = 0\nmax_attempts = 2\n")
    settings = load_settings(config)
    settings.input_dir.mkdir()
    return open_services(settings)


def drop(services: Services, rel: str, source: str) -> Path:
    target = services.settings.input_dir / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(corpus(source).read_bytes())
    return target


def private_copy(services: Services, rel: str) -> Snapshot:
    scratch = services.settings.scratch_dir
    scratch.mkdir(parents=True, exist_ok=True)
    return read_input(services.settings.input_dir, rel, scratch, lambda info: None)


def state_of(services: Services, rel: str) -> tuple[str, object]:
    """The recorded state of `rel` and its error type (None without an error)."""
    status = services.ledger.read(rel)
    assert status is not None, f"{rel} has no record"
    return status.state, (status.error or {}).get("type")


def test_a_settled_file_becomes_one_pending_job_and_one_task(services: Services) -> None:
    path = drop(services, "in/a.docx", "docx/word_sample.docx")
    intake = Intake(services)
    assert intake.submit(path) == "enqueued"
    status = services.ledger.read("in/a.docx")
    assert status is not None and status.state == "pending" and status.size_bytes > 0
    assert services.queue.queued_sources() == {"in/a.docx"}
    # Met again, live or by a rescan that sees the task: nothing new.
    assert intake.submit(path) == "in_flight"
    assert intake.submit(path, queued=frozenset({"in/a.docx"})) == "in_flight"
    assert services.queue.depth() == 1
    assert services.fresh_index().counts() == {"pending": 1}


def test_new_content_is_a_new_job(services: Services) -> None:
    path = drop(services, "a.md", "md/mixed.md")
    intake = Intake(services)
    intake.submit(path)
    first = services.ledger.read("a.md")
    path.write_bytes(corpus("md/wiki.md").read_bytes())
    assert intake.submit(path) == "enqueued"
    second = services.ledger.read("a.md")
    assert first is not None and second is not None and second.job_id != first.job_id


def test_the_sweep_recovers_a_job_whose_worker_is_gone(services: Services) -> None:
    drop(services, "lost.md", "md/mixed.md")
    copy = private_copy(services, "lost.md")
    start(services.ledger, None, copy, "lost.md", 3, "gone:1")  # and then the worker died
    sweep(services)
    assert state_of(services, "lost.md") == ("pending", "worker_crashed")
    assert services.queue.queued_sources() == {"lost.md"}


def test_the_sweep_leaves_a_job_whose_worker_holds_its_lease(services: Services) -> None:
    drop(services, "alive.md", "md/mixed.md")
    copy = private_copy(services, "alive.md")
    start(services.ledger, None, copy, "alive.md", 0, "here:1")
    with services.leases.hold("alive.md") as lease:
        assert lease is not None
        sweep(services)
    status = services.ledger.read("alive.md")
    assert status is not None and status.state == "processing"
    assert services.queue.depth() == 0


def test_a_waiting_job_whose_input_vanished_ends_failed(services: Services) -> None:
    path = drop(services, "gone.md", "md/mixed.md")
    Intake(services).submit(path)
    path.unlink()
    sweep(services)
    assert state_of(services, "gone.md") == ("failed", "source_vanished")


def test_purge_forgets_old_finished_jobs_but_keeps_those_still_in_the_input(
    services: Services,
) -> None:
    for rel in ("kept.md", "gone.md"):
        Intake(services).submit(drop(services, rel, "md/mixed.md"))
    (services.settings.input_dir / "gone.md").unlink()
    sweep(services)  # gone.md ends failed: source_vanished
    waiting = services.ledger.read("kept.md")
    assert waiting is not None
    cancel(services.ledger, waiting)
    assert purge(services, 3600, ["failed", "cancelled"], outputs=False, dry_run=False) == ([], 0)
    forgotten, kept = purge(services, -60, ["failed", "cancelled"], outputs=False, dry_run=False)
    assert forgotten == ["gone.md"] and kept == 1
    assert services.ledger.read("gone.md") is None
    assert services.ledger.read("kept.md") is not None


def test_the_sweep_names_the_cause_the_worker_guard_gave(services: Services) -> None:
    drop(services, "slow.md", "md/mixed.md")
    worker_pid = 4_000_000  # no such process
    worker = f"{socket.gethostname()}:{worker_pid}"
    start(services.ledger, None, private_copy(services, "slow.md"), "slow.md", 0, worker)
    entry = inflight.Running(worker_pid, "slow.md", 0.0)
    # What the guard writes before it kills a worker for running past jobs.hard_timeout.
    inflight.mark_killed(services.settings.workers_dir, entry, "timeout")
    sweep(services)
    assert state_of(services, "slow.md") == ("pending", "timeout")


def test_an_index_deleted_under_a_running_process_is_refilled_by_the_sweep(
    services: Services,
) -> None:
    for n in range(3):
        Intake(services).submit(drop(services, f"d{n}.md", "md/mixed.md"))
    assert services.index.counts() == {"pending": 3}
    for suffix in ("", "-wal", "-shm"):
        (services.settings.state_dir / f"index.db{suffix}").unlink(missing_ok=True)
    sweep(services)  # the same process, with its connection to the deleted file
    assert services.index.counts() == {"pending": 3}


def test_a_job_forgotten_while_a_sync_walks_is_not_brought_back(services: Services) -> None:
    for n in range(2):
        Intake(services).submit(drop(services, f"p{n}.md", "md/mixed.md"))
    first, second = sorted(services.ledger.all(), key=lambda status: status.source)
    read_earlier = first.model_copy(update={"updated_at": "2000-01-01T00:00:00.000Z"})

    def walk() -> Iterator[JobStatus]:
        yield read_earlier  # its sidecar was read, then `purge` forgot the job
        services.ledger.forget(first.source)
        yield second

    services.index.sync(walk(), now_iso())
    with services.index.connect() as db:
        rows = [row[0] for row in db.execute("select source from jobs order by source")]
    assert rows == ["p1.md"]


def queue_rows(services: Services) -> list[str]:
    """The tasks committed to the queue file, as another process sees them."""
    db = sqlite3.connect(services.settings.state_dir / "queue.db")
    try:
        return [row[0] for row in db.execute("select data from task")]
    finally:
        db.close()


def test_a_settle_pass_commits_its_tasks_together(services: Services, monkeypatch) -> None:
    monkeypatch.setattr(queue_module, "GROUP_WAIT", 60.0)  # only the count or the end commits
    monkeypatch.setattr(queue_module, "GROUP_TASKS", 3)
    intake = Intake(services)
    paths = [drop(services, f"burst/{n}.md", "md/mixed.md") for n in range(4)]
    with intake.together():
        for path in paths[:2]:
            assert intake.submit(path) == "enqueued"
        assert queue_rows(services) == []  # held: nothing committed yet
        # This thread knows what it holds: meeting a file again enqueues nothing more.
        assert intake.submit(paths[0]) == "in_flight"
        assert services.queue.queued_sources() == {"burst/0.md", "burst/1.md"}
        assert intake.submit(paths[2]) == "enqueued"
        assert len(queue_rows(services)) == 3  # GROUP_TASKS reached: one commit of three
        assert intake.submit(paths[3]) == "enqueued"
        assert len(queue_rows(services)) == 3
    assert len(queue_rows(services)) == 4
    assert services.queue.queued_sources() == {f"burst/{n}.md" for n in range(4)}


def test_a_settle_pass_whose_queue_commit_fails_is_taken_in_again(
    services: Services, monkeypatch
) -> None:
    monkeypatch.setattr(observer_module, "RETRY_PAUSE", 0.3)
    intake = Intake(services)
    intake.enqueue_timeout = 0.3
    storage = services.queue.huey.storage
    storage._timeout = 0.1  # SQLite's own wait, short: the retry loop gives up at 0.3 s
    storage.close()
    holder = sqlite3.connect(storage.filename, isolation_level=None, check_same_thread=False)
    holder.execute("begin exclusive")
    skips = Skips()
    tracker = SettleTracker(
        0.05,
        IgnoreRules(services.settings.input_dir, [], []),
        intake.submit,
        skips,
        group=intake.together,
    )
    stop = threading.Event()
    thread = threading.Thread(target=tracker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        for n in range(3):
            drop(services, f"late/{n}.md", "md/mixed.md")
        tracker.offer(services.settings.input_dir / "late")
        # The pass took them in (pending records) but could not commit their tasks.
        wait_for(lambda: len(skips.seen) == 3, 10, "the failed commit noted for each file")
        assert all(state_of(services, f"late/{n}.md")[0] == "pending" for n in range(3))
        assert queue_rows(services) == []
        holder.execute("commit")
        wait_for(lambda: len(queue_rows(services)) == 3, 10, "the tasks, once the queue is free")
        wait_for(lambda: not tracker.tracked, 5, "nothing left to take in")
        assert services.queue.queued_sources() == {f"late/{n}.md" for n in range(3)}
        assert len(queue_rows(services)) == 3  # each once
    finally:
        holder.close()
        stop.set()
        thread.join(5)


def test_a_worker_rewrites_its_own_note_in_place_and_the_guard_clears_a_dead_workers(
    tmp_path: Path,
) -> None:
    workers_dir, me = tmp_path / "workers", os.getpid()
    note = inflight.entry_file(workers_dir, me)
    workers_dir.mkdir()
    note.write_text(json.dumps({"pid": me, "source": "x" * 2000, "started": 1.0}))  # pid reuse
    inflight.mark_running(workers_dir, "a.md")
    first = note.stat()
    assert inflight.read(workers_dir, me) == inflight.Running(me, "a.md", ANY)
    inflight.clear(workers_dir, me)
    assert inflight.read(workers_dir, me) is None and inflight.all_running(workers_dir) == []
    long_name = "deep/" * 150 + "b.md"  # past the slot: the slot grows
    inflight.mark_running(workers_dir, long_name)
    assert inflight.read(workers_dir, me).source == long_name  # type: ignore[union-attr]
    inflight.mark_running(workers_dir, "c.md")  # shorter again: the padding keeps it whole
    assert inflight.read(workers_dir, me).source == "c.md"  # type: ignore[union-attr]
    assert note.stat().st_ino == first.st_ino  # one file all along, no new one per job
    assert inflight.pids(workers_dir) == [me]
    note.unlink()  # removed under the worker: its next job writes a new one
    inflight.mark_running(workers_dir, "d.md")
    assert inflight.read(workers_dir, me).source == "d.md"  # type: ignore[union-attr]
    note.unlink()
    outside = tmp_path / "outside.json"
    outside.write_text("kept")
    note.symlink_to(outside)  # a link in its place is replaced, never written through
    inflight.mark_running(workers_dir, "e.md")
    assert not note.is_symlink() and outside.read_text() == "kept"
    assert inflight.read(workers_dir, me).source == "e.md"  # type: ignore[union-attr]
    # Another process's clear (the guard's, for a dead worker) removes the file.
    dead = 4_000_000
    inflight.entry_file(workers_dir, dead).write_text(json.dumps({"pid": dead, "source": None}))
    assert sorted(inflight.pids(workers_dir)) == [me, dead]
    inflight.clear(workers_dir, dead)
    assert inflight.pids(workers_dir) == [me]
