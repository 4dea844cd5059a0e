"""The huey queue: built by a factory (never at import), one task, enqueue that survives locks.
The one place that picks its storage: SQLite in the state dir (one host) or Redis (several).

Huey is only the dispatcher. Its dequeue deletes a task before it runs, so the sidecars,
not the queue, are the record of what is finished.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog
from huey import SqliteHuey
from huey.api import Huey, Task, TaskWrapper
from huey.registry import Message
from huey.signals import SIGNAL_INTERRUPTED

from handlers.atomic import set_aside
from handlers.lease import exclusive
from watcher.backends.doorbell import Doorbell
from watcher.settings import Settings

TASK_NAME = "hotfolder.convert"  # stored as "watcher.queue.hotfolder.convert"
QUEUE_NAME = "hotfolder"
log = structlog.get_logger("hotfolder.queue")


class Runner(Protocol):
    """What runs the tasks in a worker process (watcher.worker.Worker)."""

    def start(self) -> None: ...

    def run(self, rel: str, task: Task | None = None) -> None: ...

    def interrupted(self, signal: str, task: Task) -> None: ...

    def stop(self) -> None: ...


@dataclass
class Queue:
    huey: Huey
    convert: TaskWrapper
    # The task body, set in the processes that run tasks (`serve`); the others only enqueue.
    handler: Callable[[str, Task | None], None] | None = None

    def serve(self, worker: Runner) -> None:
        """Run tasks in this process with `worker`: its start-up and shutdown hooks run in
        each worker process, its `interrupted` puts back a task a stop cut short."""
        self.handler = worker.run
        self.huey.on_startup()(worker.start)
        self.huey.on_shutdown()(worker.stop)
        self.huey.signal(SIGNAL_INTERRUPTED)(worker.interrupted)

    def enqueue(self, rel: str, priority: int, timeout: float, delay: float = 0) -> None:
        """Enqueue `rel` (to run after `delay` seconds), retrying while another process
        holds the database lock."""
        deadline = time.monotonic() + timeout
        pause = 0.05
        while True:
            try:
                task = self.convert.s(rel, priority=priority, delay=delay or None)
                self.huey.enqueue(task)
                return
            except sqlite3.OperationalError as exc:
                if time.monotonic() + pause > deadline:
                    raise
                log.warning("queue.enqueue_retry", source=rel, error=str(exc))
                time.sleep(pause)
                pause = min(pause * 2, 1.0)

    def depth(self) -> int:
        return self.huey.storage.queue_size()

    def queued_sources(self) -> set[str]:
        """Relative paths with a task waiting in the queue or scheduled for a retry (read
        without running anything)."""
        return {message.args[0] for message in self.waiting()}

    def waiting(self) -> Iterator[Message]:
        """The convert tasks waiting in the queue or the schedule, without running any."""
        name = self.huey._registry.task_to_string(self.convert.task_class)
        storage = self.huey.storage
        for raw in [*storage.enqueued_items(), *storage.scheduled_items()]:
            message = self.huey.serializer.deserialize(raw)
            if message.name == name and message.args:
                yield message


def queue_file(settings: Settings) -> Path:
    return settings.state_dir / "queue.db"


def build_queue(settings: Settings, repair: bool = True) -> Queue:
    """The queue with the convert task. SQLite: a file in the state dir (WAL, fsync on,
    results off), a damaged one replaced first unless `repair` is off (read-only callers).
    Redis: a priority queue (`PriorityRedisHuey`) named after `queue.namespace`."""
    if settings.queue.backend == "redis":
        from huey import PriorityRedisHuey

        from watcher.backends.redis import client

        pool = client(settings.queue.redis_url).connection_pool
        huey: Huey = PriorityRedisHuey(
            settings.queue.namespace, connection_pool=pool, results=False, utc=True
        )
    else:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        if repair:
            repair_queue(queue_file(settings))
        huey = RingingSqliteHuey(
            QUEUE_NAME,
            filename=str(queue_file(settings)),
            results=False,
            fsync=True,
            timeout=10,
            utc=True,
        )
        huey.bell = Doorbell(settings.state_dir / "queue.bell")

    def convert(rel: str, task: Task | None = None) -> None:
        if queue.handler is None:
            raise RuntimeError("this process does not run conversions")
        queue.handler(rel, task)

    queue = Queue(huey, huey.task(name=TASK_NAME, context=True)(convert))
    return queue


class RingingSqliteHuey(SqliteHuey):
    """huey's SQLite storage that rings this host's doorbell on every enqueue (ours, the
    scheduler's moves of due retries, a stop's put-backs): an idle worker starts the task
    at once instead of at its next poll. Redis needs none: its dequeue blocks."""

    bell: Doorbell

    def enqueue(self, task: Task) -> object:
        result = super().enqueue(task)
        self.bell.ring()
        return result


def repair_queue(path: Path) -> None:
    """A damaged queue file is set aside and a new one started. The queue is only the
    dispatcher: the reconciler re-enqueues every unfinished job from the sidecars."""
    if intact(path):
        return
    with exclusive(path.with_name(path.name + ".lock")):
        if intact(path):
            return  # another process repaired it meanwhile
        aside = set_aside(path)
    log.warning(
        "queue.damaged",
        moved_to=str(aside),
        hint="a new queue was started; the reconciler re-enqueues unfinished jobs",
    )


def intact(path: Path) -> bool:
    if not path.exists():
        return True
    try:
        db = sqlite3.connect(path, timeout=10)
        try:
            return db.execute("pragma quick_check").fetchone()[0] == "ok"
        finally:
            db.close()
    except sqlite3.OperationalError:
        return True  # busy or unreadable: not damage, and not ours to repair
    except sqlite3.DatabaseError:
        return False
