"""The job index: the sidecars' key fields in SQLite, so operator queries stay fast at
100,000 jobs. A cache only: the sidecars stay the record, and the index is rebuilt from
them (`sync`) whenever it may have drifted."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import structlog

from handlers.atomic import set_aside
from handlers.lease import exclusive
from handlers.outbox import tally
from handlers.sidecar import JobStatus

log = structlog.get_logger("hotfolder.index")
SYNC_BATCH = 500  # changed rows written at a time by a sync

COLUMNS = (
    "job_id",
    "state",
    "priority",
    "attempts",
    "progress",
    "pages_done",
    "pages_total",
    "size_bytes",
    "created_at",
    "started_at",
    "finished_at",
    "updated_at",
    "duration_s",
    "error_type",
    "worker",
    "input_format",
    "pages",
    "hooks_pending",
    "hooks_delivered",
    "hooks_given_up",
    "profile",
    "settings",
)
TABLES = f"""
create table if not exists jobs (
    source_key blob primary key,
    source text not null,
    {", ".join(COLUMNS)}
);
create table if not exists meta (key text primary key, value text not null);
"""
INDEXES = """
create index if not exists jobs_state on jobs (state, created_at);
create index if not exists jobs_job_id on jobs (job_id);
create index if not exists jobs_finished on jobs (finished_at);
create index if not exists jobs_created on jobs (created_at);
create index if not exists jobs_hooks on jobs (hooks_pending) where hooks_pending > 0;
"""
SCHEMA = TABLES + INDEXES


def source_key(rel: str) -> bytes:
    """File names may hold undecodable bytes (surrogate escapes), which SQLite text cannot."""
    return rel.encode("utf-8", "surrogateescape")


def row_of(status: JobStatus) -> tuple[object, ...]:
    error_type = status.error.get("type") if status.error else None
    hooks = {f"hooks_{state}": count for state, count in tally(status).items()}
    values = {**status.model_dump(include=set(COLUMNS)), "error_type": error_type, **hooks}
    shown = source_key(status.source).decode("utf-8", "backslashreplace")
    return (source_key(status.source), shown, *(values[column] for column in COLUMNS))


def open_read_only(path: Path, timeout: float = 10) -> sqlite3.Connection:
    """`path` opened for reading only: nothing is created or changed, so a member of the
    service's group (files 0640) can read it. A WAL database whose -shm this user cannot
    write is read through a private copy of it; one with no -wal (no writer since its last
    close) is read as it lies on disk."""
    uri = path.resolve().as_uri()
    try:
        db = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=timeout, isolation_level=None)
        db.execute("select count(*) from sqlite_master").fetchone()
        return db
    except sqlite3.OperationalError:
        if path.with_name(path.name + "-wal").exists() or not path.exists():
            raise
    return sqlite3.connect(
        f"{uri}?mode=ro&immutable=1", uri=True, timeout=timeout, isolation_level=None
    )


class JobIndex:
    def __init__(self, path: Path, read_only: bool = False) -> None:
        self.path = path
        self.read_only = read_only  # for the commands that only read: nothing is created
        # (pid, thread) -> (connection, inode of the file it opened)
        self.connections: dict[tuple[int, int], tuple[sqlite3.Connection, int | None]] = {}
        self.rebuilt = False  # True when a damaged index was replaced: refill it
        if read_only:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.create()
        except sqlite3.OperationalError:
            raise  # busy or unwritable: not damage
        except sqlite3.DatabaseError:
            self.replace_damaged()

    def create(self) -> None:
        with self.connect() as db:
            db.executescript(TABLES)
            db.execute("select count(*) from jobs").fetchone()
            present = {row[1] for row in db.execute("pragma table_info(jobs)")}
            if not set(COLUMNS) <= present:  # an index of an older version: start afresh
                db.executescript("drop table jobs; delete from meta;" + TABLES)
                self.rebuilt = True  # the caller refills it from the sidecars
            db.executescript(INDEXES)

    def replace_damaged(self) -> None:
        """The index is a cache: a damaged one is set aside and started afresh, and the
        caller refills it from the sidecars. One process repairs; the others wait."""
        with exclusive(self.path.with_name(self.path.name + ".lock")):
            try:
                self.create()
                return  # another process repaired it meanwhile
            except sqlite3.DatabaseError as exc:
                aside = set_aside(self.path)
                log.warning("index.damaged", error=str(exc), moved_to=str(aside))
            self.create()
            self.rebuilt = True

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection, opened once (opening one per call cost a worker more
        than converting a small file). Reopened when the file was replaced (a damaged index
        set aside by another process) or after an error."""
        key = (os.getpid(), threading.get_ident())
        try:
            inode = os.stat(self.path).st_ino
        except FileNotFoundError:
            inode = None
        cached = self.connections.get(key)
        if cached is None or cached[1] != inode:
            if cached is not None:
                cached[0].close()
            if self.read_only:
                db = self.open_for_reading(inode is not None)
            else:
                db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
                db.execute("pragma journal_mode=wal")
                db.execute("pragma synchronous=normal")  # a cache: losing the last write is fine
                if cached is not None:  # a new file (replaced, or deleted by hand): no tables
                    db.executescript(SCHEMA)
                inode = os.stat(self.path).st_ino
            cached = self.connections[key] = (db, inode)
        try:
            yield cached[0]
        except BaseException:
            self.connections.pop(key, None)
            cached[0].close()  # and with it any transaction left open
            raise

    def open_for_reading(self, exists: bool) -> sqlite3.Connection:
        """The index as it is, or an empty one where there is none yet (no job seen)."""
        if exists:
            return open_read_only(self.path)
        db = sqlite3.connect(":memory:", isolation_level=None)
        db.executescript(SCHEMA)
        return db

    def upsert(self, statuses: Iterable[JobStatus]) -> None:
        """Insert or update rows; a row is never replaced by an older version of itself
        (a sidecar read before a newer one was written)."""
        self.upsert_rows([row_of(status) for status in statuses])

    def upsert_rows(self, rows: list[tuple[object, ...]]) -> None:
        """`upsert` of rows made by `row_of`, in one transaction."""
        marks = ", ".join("?" * (len(COLUMNS) + 2))
        updates = ", ".join(f"{column} = excluded.{column}" for column in ("source", *COLUMNS))
        with self.connect() as db:
            db.execute("begin immediate")
            db.executemany(
                f"insert into jobs (source_key, source, {', '.join(COLUMNS)}) values ({marks}) "
                f"on conflict (source_key) do update set {updates} "
                "where excluded.updated_at >= jobs.updated_at",
                rows,
            )
            db.execute("commit")

    def delete(self, sources: Iterable[str]) -> None:
        with self.connect() as db:
            db.executemany(
                "delete from jobs where source_key = ?", [(source_key(s),) for s in sources]
            )

    def counts(self) -> dict[str, int]:
        """Jobs by state."""
        with self.connect() as db:
            return dict(db.execute("select state, count(*) from jobs group by state"))

    def oldest_pending(self) -> str | None:
        """When the oldest job still waiting was created (None: none waits)."""
        with self.connect() as db:
            row = db.execute("select min(created_at) from jobs where state = 'pending'")
            oldest: str | None = row.fetchone()[0]
        return oldest

    def deliveries(self) -> dict[str, int]:
        """Hook deliveries on record, by state (pending, delivered, given_up)."""
        states = ("pending", "delivered", "given_up")
        sums = ", ".join(f"coalesce(sum(hooks_{state}), 0)" for state in states)
        with self.connect() as db:
            row = db.execute(f"select {sums} from jobs").fetchone()
        return dict(zip(states, row, strict=True))

    def updated(self) -> dict[bytes, str]:
        """source_key -> updated_at of every indexed job."""
        with self.connect() as db:
            return dict(db.execute("select source_key, updated_at from jobs"))

    def refresh(self, changed: list[JobStatus], was_known: set[bytes]) -> int:
        """Upsert `changed`, except the rows forgotten (`purge`) since the sync began: the
        walk may have read their sidecars just before they were deleted."""
        if was_known:
            marks = ", ".join("?" * len(was_known))
            with self.connect() as db:
                query = f"select source_key from jobs where source_key in ({marks})"
                still = {bytes(row[0]) for row in db.execute(query, list(was_known))}
            forgotten = was_known - still
            changed = [s for s in changed if source_key(s.source) not in forgotten]
        if changed:
            self.upsert(changed)
        return len(changed)

    def synced_at(self) -> str | None:
        """When a full sync from the sidecars last began (None: never)."""
        with self.connect() as db:
            row = db.execute("select value from meta where key = 'synced_at'").fetchone()
        return row[0] if row else None

    def sync(self, statuses: Iterable[JobStatus], since: str) -> int:
        """Make the index match these sidecars, all of those found by a walk that began
        at `since`; rows written after that are left alone. Returns rows changed."""
        known = self.updated()
        changed: list[JobStatus] = []
        was_known: set[bytes] = set()
        count = 0
        for status in statuses:  # streamed: 100,000 records are never all in memory
            key = source_key(status.source)
            recorded = known.pop(key, None)
            if recorded != status.updated_at:
                changed.append(status)
                if recorded is not None:
                    was_known.add(key)
            if len(changed) >= SYNC_BATCH:
                count += self.refresh(changed, was_known)
                changed, was_known = [], set()
        count += self.refresh(changed, was_known)
        gone = [(key,) for key, updated_at in known.items() if updated_at < since]
        with self.connect() as db:
            db.executemany("delete from jobs where source_key = ?", gone)
            db.execute("insert or replace into meta values ('synced_at', ?)", (since,))
        return count + len(gone)
