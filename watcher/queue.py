"""The huey queue: built by a factory (never at import), one task, enqueue that survives locks.

Huey is only the dispatcher. Its dequeue deletes a task before it runs, so the sidecars,
not the queue, are the record of what is finished.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import structlog
from huey import SqliteHuey
from huey.api import TaskWrapper
from huey.signals import SIGNAL_INTERRUPTED

from watcher.settings import Settings

TASK_NAME = "hotfolder.convert"  # stored as "watcher.worker.hotfolder.convert"
QUEUE_NAME = "hotfolder"
log = structlog.get_logger("hotfolder.queue")


@dataclass
class Queue:
    huey: SqliteHuey
    convert: TaskWrapper

    def enqueue(self, rel: str, priority: int, timeout: float) -> None:
        """Enqueue `rel`, retrying while another process holds the database lock."""
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            try:
                self.huey.enqueue(self.convert.s(rel, priority=priority))
                return
            except sqlite3.OperationalError as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("queue.enqueue_retry", source=rel, error=str(exc))
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def depth(self) -> int:
        return self.huey.storage.queue_size()

    def queued_sources(self) -> set[str]:
        """Relative paths with a task waiting in the queue (read without running anything)."""
        sources: set[str] = set()
        name = self.huey._registry.task_to_string(self.convert.task_class)
        for raw in self.huey.storage.enqueued_items():
            message = self.huey.serializer.deserialize(raw)
            if message.name == name and message.args:
                sources.add(message.args[0])
        return sources


def queue_file(settings: Settings) -> Path:
    return settings.state_dir / "queue.db"


def build_queue(settings: Settings) -> Queue:
    """The SqliteHuey in the state dir (WAL, fsync on, results off) with the convert task.

    The task body lives in watcher.worker and runs only in consumer worker processes.
    """
    from watcher.worker import Worker

    settings.state_dir.mkdir(parents=True, exist_ok=True)
    huey = SqliteHuey(
        QUEUE_NAME,
        filename=str(queue_file(settings)),
        results=False,
        fsync=True,
        timeout=10,
        utc=True,
    )
    worker = Worker(settings, huey)
    huey.on_startup()(worker.start)
    convert = huey.task(name=TASK_NAME, context=True)(worker.run)
    huey.signal(SIGNAL_INTERRUPTED)(worker.interrupted)
    return Queue(huey, convert)

