"""The record of every job: its sidecar under the output dir, mirrored into the job index.

A sidecar whose place cannot hold it (the name too long, another input's outputs in the
way) is kept under `output/.hotfolder/records/` instead, so every job still has a record.

Every saved record is handed to the ledger's listeners once it is durably in place: the
one place where a consumer of "a job changed" (a job ended: hooks, metrics) plugs in,
whichever process or path made the change.
"""

from __future__ import annotations

import errno
import hashlib
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import structlog

from handlers.atomic import PathEscapes
from handlers.index import JobIndex, row_of
from handlers.outbox import Hook, plan
from handlers.sidecar import (
    SUFFIX,
    TERMINAL,
    JobStatus,
    iter_sidecars,
    read_status,
    sidecar_path,
    write_status,
)

log = structlog.get_logger("hotfolder.ledger")
UNUSABLE = frozenset({errno.ENAMETOOLONG, errno.ENOTDIR, errno.EISDIR, errno.EEXIST})
RECORDS = Path(".hotfolder") / "records"
Listener = Callable[[JobStatus], None]
GROUP_ROWS = 200  # index rows a group holds back at most before it writes them


class Ledger:
    def __init__(
        self, output_dir: Path, index: JobIndex | None = None, hooks: tuple[Hook, ...] = ()
    ) -> None:
        self.output_dir = output_dir
        self.index = index
        self.hooks = hooks  # a terminal record is saved with its deliveries planned
        self.listeners: list[Listener] = []
        self.held = threading.local()  # .rows: the index rows this thread's group holds back

    def listen(self, listener: Listener) -> None:
        """Call `listener` with every record saved from now on, after it is written."""
        self.listeners.append(listener)

    def path(self, rel: str) -> Path:
        return sidecar_path(self.output_dir, rel)

    def fallback(self, rel: str) -> Path:
        key = hashlib.sha256(rel.encode("utf-8", "surrogateescape")).hexdigest()[:32]
        return self.output_dir / RECORDS / f"{key}{SUFFIX}"

    def read(self, rel: str) -> JobStatus | None:
        try:
            return read_status(self.path(rel))
        except PathEscapes:
            return read_status(self.fallback(rel))
        except OSError as exc:
            if exc.errno not in UNUSABLE:
                raise
            return read_status(self.fallback(rel))

    def save(self, status: JobStatus, durable: bool | None = None) -> JobStatus:
        """Replace the sidecar atomically, then mirror it into the index. An outcome is
        fsynced (`durable`, by default for a terminal state); the record of a job under
        way need not be: after a power cut, whatever it says (or an older record, or a
        torn file, read as none), the input file is still there and the reconciler
        takes it in again."""
        plan(status, self.hooks)
        durable = status.state in TERMINAL if durable is None else durable
        try:
            write_status(self.path(status.source), status, durable)
        except PathEscapes:  # a link planted in the output folder: never followed
            write_status(self.fallback(status.source), status, durable)
        except OSError as exc:
            if exc.errno not in UNUSABLE:
                raise
            write_status(self.fallback(status.source), status, durable)
        if self.index is not None:
            held: list[tuple[object, ...]] | None = getattr(self.held, "rows", None)
            if held is None:
                self.mirror([row_of(status)])
            else:
                held.append(row_of(status))
                if len(held) >= GROUP_ROWS:
                    self.mirror(held)
                    held.clear()
        for listener in self.listeners:
            try:
                listener(status)
            except Exception:  # per-listener boundary: one that reports an outcome never
                # changes it, nor stops the job or the other listeners
                log.exception("ledger.listener_failed", source=status.source)
        return status

    @contextmanager
    def grouped(self) -> Iterator[None]:
        """Within: the index rows of the records this thread saves are written together, in
        one transaction at the end (or every GROUP_ROWS rows), not one each: a burst's
        intake writes hundreds of `pending` records in one pass. Only the index waits;
        every sidecar is written at once, as always."""
        if getattr(self.held, "rows", None) is not None:
            yield  # inside another group: that one writes them
            return
        self.held.rows = []
        try:
            yield
        finally:
            rows, self.held.rows = self.held.rows, None
            if rows:
                self.mirror(rows)

    def mirror(self, rows: list[tuple[object, ...]]) -> None:
        assert self.index is not None
        try:
            self.index.upsert_rows(rows)
        except sqlite3.Error as exc:
            # The sidecars are written; the next reconciler pass resyncs the index.
            sources = [str(row[1]) for row in rows[:3]]
            log.warning("index.write_failed", sources=sources, rows=len(rows), error=str(exc))

    def forget(self, rel: str) -> None:
        for path in self.places(rel):
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                if exc.errno not in UNUSABLE:
                    raise
        if self.index is not None:
            self.index.delete([rel])

    def places(self, rel: str) -> list[Path]:
        """Where the record of `rel` may be: beside its outputs, or the fallback."""
        try:
            return [self.path(rel), self.fallback(rel)]
        except PathEscapes:
            return [self.fallback(rel)]

    def all(self) -> Iterator[JobStatus]:
        for sidecar in iter_sidecars(self.output_dir):
            try:
                status = read_status(sidecar)
            except OSError as exc:  # one unreadable sidecar must not hide the others
                log.warning("ledger.unreadable", sidecar=str(sidecar), error=exc.strerror)
                continue
            if status is not None:
                yield status
