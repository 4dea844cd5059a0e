"""A settled file enters the queue: unless its current content already has a sidecar,
it gets a `pending` sidecar and then a task."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from fnmatch import fnmatchcase
from pathlib import Path

import structlog

from handlers.errors import JobError
from handlers.lease import Lease
from handlers.lifecycle import admit, refuse_unread
from handlers.sidecar import TERMINAL, JobStatus, now_iso
from handlers.source import digest_input
from watcher.daemon.skips import Skips, kind_of
from watcher.services import Services

log = structlog.get_logger("hotfolder.intake")


class Intake:
    def __init__(self, services: Services, skips: Skips | None = None) -> None:
        settings = self.settings = services.settings
        self.input_dir = settings.input_dir
        self.ledger = services.ledger
        self.leases = services.leases
        self.policy = services.policy
        self.priority = settings.queue.default_priority
        self.rules = settings.queue.priority_rules
        self.enqueue_timeout = settings.queue.enqueue_timeout
        self.queue = services.queue
        self.skips = skips or Skips()

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
        rel = self.relative(path)
        info = self.look(path) if rel else None
        if rel is None or info is None:
            return "ineligible"
        priority = self.priority_for(rel) if priority is None else priority
        # Held while the record is read, judged and written: two watchers (or a watcher and
        # `enqueue`) that meet the same file take it in once. The task is enqueued once the
        # lease is let go, so a worker that takes it at once does not find the file busy.
        with self.leases.hold(rel) as lease:
            outcome, job = self.take_in(path, rel, info, priority, queued, force, lease)
        if job is not None:
            self.queue.enqueue(rel, job.priority, self.enqueue_timeout)
            event = "job.requeued" if outcome == "requeued" else "job.pending"
            log.info(event, source=rel, job_id=job.job_id, size_bytes=job.size_bytes)
        return outcome

    @contextmanager
    def together(self) -> Iterator[None]:
        """Around a settle pass: the index rows of its records are written together, then
        its tasks are committed together (`Ledger.grouped`, `Queue.together`)."""
        with self.queue.together(self.enqueue_timeout), self.ledger.grouped():
            yield

    def take_in(
        self,
        path: Path,
        rel: str,
        info: os.stat_result,
        priority: int,
        queued: frozenset[str] | None,
        force: bool,
        lease: Lease | None,
    ) -> tuple[str, JobStatus | None]:
        """What happens to `rel`, and the job to enqueue, if any (its record is written)."""
        recorded = self.ledger.read(rel)
        try:
            self.policy.check(info)  # by its size, before a byte of it is read
        except JobError as exc:
            return self.refuse(rel, recorded, info, priority, force, lease, exc)
        if queued is not None and unchanged_since(recorded, info):
            sha, size = recorded.sha256, recorded.size_bytes  # type: ignore[union-attr]
        else:
            read = self.digest(path, rel, info)
            if read is None:
                return "ineligible", None
            sha, size, info = read
        if lease is None or (recorded and recorded.state == "processing"):
            # A worker holds it (the sweep judges whether it is alive); new content waits
            # for the lease. Another watcher taking it in holds it too, for a moment.
            if recorded and recorded.sha256 != sha:
                self.follow_up(rel, priority)
            return "in_flight", None
        if recorded and recorded.sha256 == sha and not force:
            if recorded.state in TERMINAL:
                # A scan meets every finished file again; only a live re-drop is news.
                emit = log.info if queued is None else log.debug
                emit("intake.unchanged", source=rel, state=recorded.state)
                return "unchanged", None
            if queued is None or rel in queued:
                return "in_flight", None
            if retry_due_later(recorded) or rel in self.queue.queued_sources():
                return "in_flight", None  # the scan's queue snapshot is older than the task
            return "requeued", recorded
        if force:
            self.leases.clear_cancel(rel)  # a person asks again
        return "enqueued", admit(self.ledger, rel, sha, size, info.st_mtime_ns, priority, force)

    def refuse(
        self,
        rel: str,
        recorded: JobStatus | None,
        info: os.stat_result,
        priority: int,
        force: bool,
        lease: Lease | None,
        error: JobError,
    ) -> tuple[str, JobStatus | None]:
        if lease is None or (recorded and recorded.state == "processing"):
            if recorded and recorded.state == "processing":
                self.follow_up(rel, priority)  # its worker refuses it, from the fstat
            return "in_flight", None
        same = recorded and (recorded.size_bytes, recorded.mtime_ns) == (
            info.st_size,
            info.st_mtime_ns,
        )
        if recorded and same and not recorded.sha256 and recorded.state in TERMINAL and not force:
            return "unchanged", None
        refuse_unread(self.ledger, self.policy, rel, info, priority, error)
        return "refused", None

    def relative(self, path: Path) -> str | None:
        try:
            return os.fsdecode(path.relative_to(self.input_dir))
        except ValueError:
            return None

    def look(self, path: Path) -> os.stat_result | None:
        """The lstat of a regular file, else None: a link is never followed, and anything
        else but a folder (a FIFO, socket, device) is logged once and passed over."""
        info = self.skips.lstat(path)
        if info is None:
            return None
        kind = kind_of(info.st_mode)
        if kind == "file":
            return info
        if kind != "folder":
            self.skips.note(path, kind)
        return None

    def digest(
        self, path: Path, rel: str, seen: os.stat_result
    ) -> tuple[str, int, os.stat_result] | None:
        """sha256, size and stat of the file as opened (no link followed), or None if it
        cannot be a job. An unreadable file gets an empty digest: its job is recorded,
        and the worker retries it with backoff, in case the permissions are fixed."""
        try:
            return digest_input(self.input_dir, rel)
        except JobError as exc:
            if exc.retryable:
                self.skips.note(path, "unreadable", error=exc.message)
                return "", seen.st_size, seen
            if exc.type != "source_vanished":
                self.skips.note(path, exc.type, error=exc.message)
            return None

    def follow_up(self, rel: str, priority: int) -> None:
        """Content replaced while its old content converts: one task waits for the new
        content (it runs once the lock is free); the record stays the running job's."""
        if rel not in self.queue.queued_sources():
            self.queue.enqueue(rel, priority, self.enqueue_timeout)
            log.info("intake.changed_while_running", source=rel)

    def priority_for(self, rel: str) -> int:
        """The priority of the profile the path matches, if it sets one; else the first
        `queue.priority_rules` glob matching the path; else the default."""
        profile = self.settings.profile_for(rel)
        if profile is not None and profile.priority is not None:
            return profile.priority
        for pattern, priority in self.rules.items():
            if fnmatchcase(rel, pattern):
                return priority
        return self.priority


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
