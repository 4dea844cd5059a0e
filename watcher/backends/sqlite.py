"""One host: huey's SQLite storage in the state dir, kernel-lock leases, heartbeat files only."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import structlog
from huey import SqliteHuey
from huey.api import Huey, Task
from huey.storage import SqliteStorage

from handlers.atomic import set_aside
from handlers.index import open_read_only
from handlers.lease import FileLeases, Leases, exclusive
from watcher.backends.doorbell import Doorbell
from watcher.logs import Complaint
from watcher.settings import Settings

QUEUE_NAME = "hotfolder"
LOCK_WAIT = 10  # seconds SQLite waits for a lock before it reports "database is locked"
log = structlog.get_logger("hotfolder.queue")


class SqliteBackend:
    shared: ClassVar[bool] = False
    title = "queue database"
    advice = "check paths.state is on a local disk and writable"

    def __init__(self, settings: Settings) -> None:
        self.state_dir = settings.state_dir
        self.locks_dir = settings.locks_dir
        self.path = settings.state_dir / "queue.db"

    def busy(self, exc: Exception) -> bool:
        return busy(exc)

    def huey(self, repair: bool = True, patience: float | None = None) -> Huey:
        """A file in the state dir: WAL, commits not fsynced (`QueueStorage`), results off;
        its doorbell wakes the idle workers of this host on every enqueue."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if repair:
            repair_queue(self.path)
        deadline = None if patience is None else time.monotonic() + patience
        trouble = Complaint("queue.locked", path=str(self.path))
        while True:
            try:
                huey = RingingSqliteHuey(
                    QUEUE_NAME,
                    filename=str(self.path),
                    results=False,
                    timeout=LOCK_WAIT if repair else 1,  # a reader does not wait long
                    utc=True,
                    bell=Doorbell(self.state_dir / "queue.bell"),
                )
            except sqlite3.OperationalError as exc:
                if not busy(exc) or (deadline is not None and time.monotonic() > deadline):
                    raise
                trouble.report(exc)  # another process holds the database: wait it out
                continue
            trouble.resolved()
            return huey

    def leases(self) -> Leases:
        return FileLeases(self.locks_dir)

    def publish_alive(self, role: str, record: dict[str, object]) -> None:
        pass  # the heartbeat file is the record on one host

    def alive_hosts(self) -> list[dict[str, object]]:
        return []

    def queue_sizes(self) -> tuple[int, int]:
        """Tasks waiting and retries scheduled, read without writing (huey's own storage
        would create its tables): a member of the service's group can ask."""
        if not self.path.exists():
            return 0, 0
        db = open_read_only(self.path, timeout=1)
        try:
            waiting, scheduled = (
                db.execute(
                    f"select count(*) from {table} where queue = ?", (QUEUE_NAME,)
                ).fetchone()[0]
                for table in ("task", "schedule")
            )
            return waiting, scheduled
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return 0, 0  # created, not yet set up
            raise
        finally:
            db.close()

    def unreachable(self, exc: Exception) -> str:
        if busy(exc):
            return f"the queue database is locked by another process ({exc}); try again"
        if isinstance(exc, sqlite3.OperationalError):
            return f"the queue database cannot be read ({exc})"
        if isinstance(exc, sqlite3.DatabaseError):
            return f"the queue database is damaged ({exc}); the daemon replaces it at start"
        return f"the queue database cannot be read ({exc})"


def busy(exc: BaseException) -> bool:
    """SQLite's "database is locked" or "busy": another process holds the file for now
    (a full disk, say, is not cured by waiting a second)."""
    text = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


class QueueStorage(SqliteStorage):
    """huey's SQLite storage, its commits not fsynced (`synchronous=normal`: the WAL is
    synced at checkpoints, and the file stays whole through a power cut). The queue is
    only the dispatcher: a task lost with the last commits before a power cut is
    enqueued again by the reconciler at start, from the input files and sidecars."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.gathering = threading.local()  # .rows: the task rows `gathered` holds back

    def _create_connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection = super()._create_connection()
        conn.execute("pragma synchronous=normal")
        return conn

    def enqueue(self, data: bytes, priority: int | None = None) -> None:
        rows: list[tuple[str, object, int]] | None = getattr(self.gathering, "rows", None)
        if rows is None:
            super().enqueue(data, priority)
        else:
            rows.append((self.name, self.to_blob(data), priority or 0))

    @contextmanager
    def gathered(self) -> Iterator[None]:
        """Within: this thread's enqueues are inserted at the end, in one transaction."""
        self.gathering.rows = []
        try:
            yield
            rows = self.gathering.rows
        finally:
            self.gathering.rows = None
        with self.db(commit=True) as cursor:
            cursor.executemany("insert into task (queue, data, priority) values (?, ?, ?)", rows)


class RingingSqliteHuey(SqliteHuey):
    """huey's SQLite storage that rings this host's doorbell on every enqueue (ours, the
    scheduler's moves of due retries, a stop's put-backs): an idle worker starts the task
    at once instead of at its next poll. Redis needs none: its dequeue blocks."""

    storage_class = QueueStorage

    def __init__(self, *args: object, bell: Doorbell, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.bell = bell

    def enqueue(self, task: Task) -> object:
        result = super().enqueue(task)
        self.bell.ring()
        return result

    def enqueue_all(self, tasks: Sequence[Task]) -> None:
        """Enqueue `tasks` in one transaction (huey's own enqueue for each: its signals and
        expiry), and ring once: a burst's intake commits a settle pass's tasks together."""
        storage: QueueStorage = self.storage
        with storage.gathered():
            for task in tasks:
                super().enqueue(task)
        self.bell.ring()


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
        db = sqlite3.connect(path, timeout=1)
        try:
            return bool(db.execute("pragma quick_check").fetchone()[0] == "ok")
        finally:
            db.close()
    except sqlite3.OperationalError:
        return True  # busy or unreadable: not damage, and not ours to repair
    except sqlite3.DatabaseError:
        return False
