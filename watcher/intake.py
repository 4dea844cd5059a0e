"""A settled file enters the queue: unless its current content already has a sidecar,
it gets a `pending` sidecar and then a task."""

from __future__ import annotations

import os
import stat
from fnmatch import fnmatchcase
from pathlib import Path

import structlog

from handlers.ledger import Ledger
from handlers.lock import clear_cancel
from handlers.sidecar import TERMINAL, JobStatus, new_status, now_iso
from handlers.source import digest, job_id
from watcher.queue import Queue
from watcher.settings import Settings

log = structlog.get_logger("hotfolder.intake")


class Intake:
    def __init__(self, settings: Settings, queue: Queue, ledger: Ledger) -> None:
        self.input_dir = settings.input_dir
        self.ledger = ledger
        self.locks_dir = settings.locks_dir
        self.priority = settings.queue.default_priority
        self.rules = settings.queue.priority_rules
        self.enqueue_timeout = settings.queue.enqueue_timeout
        self.queue = queue

    def submit(
        self,
        path: Path,
        queued: frozenset[str] | None = None,
        priority: int | None = None,
        force: bool = False,
    ) -> str:
        """Hand `path` on; returns what happened. `queued` is the queue snapshot of a scan
        (None for a live event, where a job already pending for this content is left alone).
        `force` converts again even when the current content already has an outcome."""
        info = self.eligible(path)
        if info is None:
            return "ineligible"
        rel = os.fsdecode(path.relative_to(self.input_dir))
        priority = self.priority_for(rel) if priority is None else priority
        recorded = self.ledger.read(rel)
        if queued is not None and unchanged_since(recorded, info):
            sha, size = recorded.sha256, recorded.size_bytes  # type: ignore[union-attr]
        else:
            sha, size = digest(path)
        if recorded and recorded.state == "processing" and force:
            return "in_flight"
        if recorded and recorded.sha256 == sha and not force:
            if recorded.state in TERMINAL:
                # A scan meets every finished file again; only a live re-drop is news.
                emit = log.info if queued is None else log.debug
                emit("intake.unchanged", source=rel, state=recorded.state)
                return "unchanged"
            # `processing` is the sweep's to judge (is its worker alive?), not intake's.
            if queued is None or rel in queued or recorded.state == "processing":
                return "in_flight"
            if retry_due_later(recorded) or rel in self.queue.queued_sources():
                return "in_flight"  # the scan's queue snapshot is older than this job's task
            self.queue.enqueue(rel, recorded.priority, self.enqueue_timeout)
            log.info("job.requeued", source=rel, job_id=recorded.job_id)
            return "requeued"
        if force:
            clear_cancel(self.locks_dir, rel)  # a person asks again
        status = new_status(rel, job_id(rel, sha), sha, size, priority)
        status.mtime_ns = info.st_mtime_ns
        self.ledger.save(status)
        self.queue.enqueue(rel, priority, self.enqueue_timeout)
        log.info("job.pending", source=rel, job_id=status.job_id, size_bytes=size)
        return "enqueued"

    def priority_for(self, rel: str) -> int:
        """The first `queue.priority_rules` glob matching the path, else the default."""
        for pattern, priority in self.rules.items():
            if fnmatchcase(rel, pattern):
                return priority
        return self.priority

    def eligible(self, path: Path) -> os.stat_result | None:
        """The stat of a regular file whose real location is inside the input dir (no
        symlink escapes), else None."""
        try:
            info = path.stat()
        except OSError:
            return None
        if not stat.S_ISREG(info.st_mode):
            return None
        return info if path.resolve().is_relative_to(self.input_dir.resolve()) else None


def retry_due_later(recorded: JobStatus) -> bool:
    return bool(recorded.retry_at and recorded.retry_at > now_iso())


def unchanged_since(recorded: JobStatus | None, info: os.stat_result) -> bool:
    """Size and mtime as recorded: a rescan need not read the whole file again."""
    return bool(
        recorded
        and recorded.sha256
        and recorded.mtime_ns == info.st_mtime_ns
        and recorded.size_bytes == info.st_size
    )
