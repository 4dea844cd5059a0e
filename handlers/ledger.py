"""The record of every job: its sidecar under the output dir, mirrored into the job index."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import structlog

from handlers.index import JobIndex
from handlers.sidecar import JobStatus, iter_sidecars, read_status, sidecar_path, write_status

log = structlog.get_logger("hotfolder.ledger")


class Ledger:
    def __init__(self, output_dir: Path, index: JobIndex | None = None) -> None:
        self.output_dir = output_dir
        self.index = index

    def path(self, rel: str) -> Path:
        return sidecar_path(self.output_dir, rel)

    def read(self, rel: str) -> JobStatus | None:
        return read_status(self.path(rel))

    def save(self, status: JobStatus) -> JobStatus:
        """Replace the sidecar atomically, then mirror it into the index."""
        write_status(self.path(status.source), status)
        if self.index is not None:
            try:
                self.index.upsert([status])
            except sqlite3.Error as exc:
                # The sidecar is written; the next reconciler pass resyncs the index.
                log.warning("index.write_failed", source=status.source, error=str(exc))
        return status

    def forget(self, rel: str) -> None:
        self.path(rel).unlink(missing_ok=True)
        if self.index is not None:
            self.index.delete([rel])

    def all(self) -> Iterator[JobStatus]:
        for sidecar in iter_sidecars(self.output_dir):
            status = read_status(sidecar)
            if status is not None:
                yield status
