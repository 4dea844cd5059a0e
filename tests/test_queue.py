"""The real SQLite queue: what is waiting can be listed, and an enqueue survives a lock."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from watcher.backends.sqlite import SqliteBackend
from watcher.queue import build_queue
from watcher.settings import load_settings


def make_queue(tmp_path: Path):
    config = tmp_path / "config.toml"
    config.write_text("")
    settings = load_settings(config)
    backend = SqliteBackend(settings)
    return build_queue(backend), backend.path


def test_queued_sources_lists_waiting_files_and_settings(tmp_path: Path) -> None:
    queue, db_file = make_queue(tmp_path)
    queue.enqueue("a/report.pdf", priority=5, timeout=5)
    queue.enqueue("b.docx", priority=0, timeout=5)
    assert queue.queued_sources() == {"a/report.pdf", "b.docx"}
    assert queue.depth() == 2
    db = sqlite3.connect(db_file)
    assert db.execute("pragma journal_mode").fetchone()[0] == "wal"
    # Commits are not fsynced (the reconciler re-enqueues what a power cut loses).
    with queue.huey.storage.db() as cursor:
        assert cursor.execute("pragma synchronous").fetchone()[0] == 1  # normal
    assert db.execute("select max(priority) from task").fetchone()[0] == 5


def test_enqueue_waits_out_a_locked_database(tmp_path: Path) -> None:
    queue, db_file = make_queue(tmp_path)
    # A short busy timeout, so the retry loop (not SQLite's busy handler) does the waiting.
    queue.huey.storage._timeout = 0.2
    queue.huey.storage.close()
    holder = sqlite3.connect(db_file, isolation_level=None, check_same_thread=False)
    holder.execute("begin exclusive")
    release = threading.Timer(1.5, holder.execute, args=("commit",))
    release.start()
    started = time.monotonic()
    queue.enqueue("late.pdf", priority=0, timeout=10)
    release.join()
    assert time.monotonic() - started >= 1.0
    assert queue.queued_sources() == {"late.pdf"}
