"""Every change of a job's state, in one module: a new job, start, complete, fail (or
retry), cancel, reopen, put back, recover a lost one, end a vanished one, and what happens
to the input afterwards. The states themselves are defined once, in `handlers.sidecar`.

Each function writes the record through the ledger (sidecar first, then the index, then
the ledger's listeners), so a change of state made anywhere is seen the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import structlog

from handlers import converter as conv
from handlers.disposition import Origin, dispose
from handlers.errors import JobError
from handlers.lease import Leases
from handlers.ledger import Ledger
from handlers.sidecar import TERMINAL, JobStatus, new_status, now_iso
from handlers.source import Snapshot, job_id, vanished

log = structlog.get_logger("hotfolder.job")
MAX_RETRY_DELAY = 7 * 86400.0  # seconds: backoff doubles, but never past a week
GAVE_UP = "Gave up after"


@dataclass(frozen=True)
class JobPolicy:
    """Limits, retries and what happens to the input afterwards."""

    max_attempts: int = 3
    retry_backoff: float = 10.0
    max_file_bytes: int = 0
    max_pages: int = 0
    split_pages: int = 0  # a PDF of more pages is converted in parts (0: never)
    refuse_hard_links: bool = False
    on_success: str = "keep"
    on_failure: str = "keep"
    archive_dir: Path | None = None
    quarantine_dir: Path | None = None

    def check(self, info: os.stat_result) -> None:
        """The limits that can be judged from a file's stat, before a byte of it is read:
        at intake (its lstat), in the worker (the fstat of what it opened) and in `enqueue`."""
        if self.max_file_bytes and info.st_size > self.max_file_bytes:
            raise JobError(
                "too_large",
                f"The file is {info.st_size / 2**20:.1f} MiB, over the limit of "
                f"{self.max_file_bytes / 2**20:.1f} MiB (jobs.max_file_mb).",
            )
        if self.refuse_hard_links and info.st_nlink > 1:
            raise JobError(
                "unsafe_path",
                f"The file has {info.st_nlink} hard links and jobs.refuse_hard_links is on: a "
                "hard link can bring in a file from outside the input folder.",
            )

    def retry_delay(self, attempts: int) -> float:
        return float(min(self.retry_backoff * 2 ** max(attempts - 1, 0), MAX_RETRY_DELAY))


def admit(
    ledger: Ledger,
    rel: str,
    sha256: str,
    size: int,
    mtime_ns: int,
    priority: int,
    durable: bool = False,
) -> JobStatus:
    """A new job for the current content of `rel`: `pending`, waiting for a worker. Its
    record is fsynced only when asked (a person's `enqueue --force`): the input file is
    the record that the reconciler finds again after a power cut."""
    status = new_status(rel, job_id(rel, sha256), sha256, size, priority)
    status.mtime_ns = mtime_ns
    return ledger.save(status, durable)


def start(
    ledger: Ledger,
    recorded: JobStatus | None,
    copy: Snapshot,
    rel: str,
    priority: int,
    worker: str,
    profile: str | None = None,
    settings: str | None = None,
) -> JobStatus:
    status = new_status(rel, job_id(rel, copy.sha256), copy.sha256, copy.size, priority)
    status.profile, status.settings = profile, settings
    status.mtime_ns = copy.mtime_ns
    if recorded and recorded.job_id == status.job_id:
        status.created_at, status.attempts = recorded.created_at, recorded.attempts
        status.error = recorded.error  # the last error stays visible while it is retried
    status.state, status.started_at, status.worker = "processing", now_iso(), worker
    status.attempts += 1
    status.docling_version = conv.DOCLING_VERSION
    log.info("job.started", source=rel, job_id=status.job_id, attempt=status.attempts)
    return ledger.save(status)


def refuse(
    ledger: Ledger,
    policy: JobPolicy,
    recorded: JobStatus | None,
    rel: str,
    priority: int,
    error: JobError,
) -> JobStatus:
    """The input could not be read, or is refused. An outcome on record stands (this is a
    stray task); otherwise the attempt counts, so a cause that may pass (permissions fixed
    later) is retried with backoff, and the job ends `failed` when attempts run out."""
    if recorded and recorded.state in TERMINAL:
        log.info("job.skipped", source=rel, job_id=recorded.job_id, reason=recorded.state)
        return recorded
    status = recorded or new_status(rel, job_id(rel, ""), "", 0, priority)
    status.attempts += 1
    return fail(ledger, status, error, policy, origin=None)


def refuse_unread(
    ledger: Ledger,
    policy: JobPolicy,
    rel: str,
    info: os.stat_result,
    priority: int,
    error: JobError,
) -> JobStatus:
    """Refused at intake from its stat alone (too large, hard links): `failed` without a
    byte read, so a huge file never holds up the files behind it. Its job is named after
    its size and mtime; new content under the name is judged again."""
    status = new_status(
        rel, job_id(rel, f"unread:{info.st_size}:{info.st_mtime_ns}"), "", 0, priority
    )
    status.size_bytes, status.mtime_ns, status.attempts = info.st_size, info.st_mtime_ns, 1
    return fail(ledger, status, error, policy, origin=None)


def complete(
    ledger: Ledger, status: JobStatus, policy: JobPolicy, origin: Origin, duration: float
) -> JobStatus:
    status.state, status.progress, status.error = "completed", 100, None
    status.finished_at, status.duration_s = now_iso(), round(duration, 3)
    ledger.save(status)
    log.info(
        "job.completed",
        source=status.source,
        job_id=status.job_id,
        pages=status.pages,
        duration_s=status.duration_s,
    )
    return settle_input(ledger, status, origin, policy.on_success, policy.archive_dir)


def cancel(ledger: Ledger, status: JobStatus) -> JobStatus:
    """Ended by a person: at a progress point of its run, or (not running) at once."""
    status.state, status.finished_at, status.retry_at = "cancelled", now_iso(), None
    log.info("job.cancelled", source=status.source, job_id=status.job_id)
    return ledger.save(status)


def fail(
    ledger: Ledger,
    status: JobStatus,
    error: JobError,
    policy: JobPolicy,
    origin: Origin | None,
    duration: float | None = None,
) -> JobStatus:
    """Record the error: `pending` with a retry time while a retry may help, else `failed`."""
    status.error = error.as_dict()
    status.duration_s = round(duration, 3) if duration is not None else None
    if error.retryable and status.attempts < policy.max_attempts:
        delay = policy.retry_delay(status.attempts)
        status.state, status.retry_at, status.worker = "pending", now_iso(delay), None
        ledger.save(status)
        log.warning("job.retrying", source=status.source, error_type=error.type, delay_s=delay)
        return status
    if error.retryable and GAVE_UP not in error.message:
        status.error["message"] = f"{error.message} {GAVE_UP} {status.attempts} attempts."
    status.state, status.finished_at, status.retry_at = "failed", now_iso(), None
    ledger.save(status)
    log.warning(
        "job.failed",
        source=status.source,
        job_id=status.job_id,
        error_type=error.type,
        error=error.message,
        attempts=status.attempts,
    )
    if origin is None:
        return status
    reason = f"{error.type}: {status.error['message']}"
    return settle_input(ledger, status, origin, policy.on_failure, policy.quarantine_dir, reason)


def exhausted(recorded: JobStatus, sha256: str, policy: JobPolicy) -> bool:
    """An unfinished job of this content whose attempts have all been made: the last one
    could not record its end (the disk of its record was full)."""
    return (
        recorded.state not in TERMINAL
        and recorded.sha256 == sha256
        and recorded.attempts >= policy.max_attempts
    )


def give_up(ledger: Ledger, status: JobStatus, policy: JobPolicy) -> JobStatus:
    """End an exhausted job `failed` with its last error, without another attempt."""
    last = status.error or {}
    kind = str(last.get("type") or "internal_error")
    message = str(last.get("message") or "Its last attempt ended without a record.")
    return fail(ledger, status, JobError(kind, message, retryable=True), policy, origin=None)


def reopen(ledger: Ledger, status: JobStatus) -> JobStatus:
    """Back to `pending` for a fresh round of attempts (`retry`); the old outcome is cleared."""
    status.state, status.progress, status.attempts = "pending", 0, 0
    status.error = status.retry_at = status.finished_at = status.started_at = None
    status.pages_done = status.pages_total = None
    status.created_at = now_iso()
    return ledger.save(status, durable=True)  # a person's request outlives a power cut


def cancel_if_asked(ledger: Ledger, leases: Leases, status: JobStatus) -> JobStatus | None:
    """A cancel request for this job wins over any retry, whoever handles the job's end
    (its worker, the worker guard, the reconciler, a stop): the job ends `cancelled`."""
    if not leases.cancel_requested(status.source, status.job_id):
        return None
    leases.clear_cancel(status.source)
    return cancel(ledger, status)


def put_back(ledger: Ledger, leases: Leases, rel: str) -> JobStatus | None:
    """A stop cut the job short (its task is back in the queue): `pending` again, and the
    attempt is not counted, since a stop is not the document's fault."""
    status = ledger.read(rel)
    if status is None or status.state != "processing":
        return status
    if cancelled := cancel_if_asked(ledger, leases, status):
        return cancelled
    status.state, status.progress, status.worker = "pending", 0, None
    status.attempts = max(status.attempts - 1, 0)
    return ledger.save(status)


def recover_lost(
    rel: str, input_dir: Path, ledger: Ledger, leases: Leases, policy: JobPolicy, lost: JobError
) -> JobStatus | None:
    """A `processing` job whose worker is gone counts a failed attempt: it is set to retry
    (`pending`) or, once attempts run out, to `failed`. None if nothing was to recover."""
    with leases.hold(rel) as lease:
        status = ledger.read(rel) if lease else None
        if status is None or status.state != "processing":
            return None  # a live worker holds it, or it ended meanwhile
        log.warning("job.worker_lost", source=rel, job_id=status.job_id, error_type=lost.type)
        if cancelled := cancel_if_asked(ledger, leases, status):
            return cancelled
        return fail(ledger, status, lost, policy, Origin.of_record(input_dir, status))


def end_vanished(rel: str, ledger: Ledger, leases: Leases, policy: JobPolicy) -> bool:
    """A waiting job whose input was deleted or renamed ends `failed: source_vanished`."""
    with leases.hold(rel) as lease:
        status = ledger.read(rel) if lease else None
        if status is None or status.state != "pending":
            return False
        fail(ledger, status, vanished(), policy, origin=None)
        return True


def settle_input(
    ledger: Ledger,
    status: JobStatus,
    origin: Origin,
    action: str,
    target_root: Path | None,
    reason: str = "",
) -> JobStatus:
    """Archive, delete or quarantine the input once its outcome is on record."""
    if action == "keep":
        return status
    try:
        status.disposition = dispose(origin, action, target_root, reason)
    except (OSError, JobError) as exc:  # the input is gone, or a link now: it stays put
        status.disposition = f"kept ({action} failed: {exc})"
        log.error("job.disposition_failed", source=status.source, action=action, error=str(exc))
    return ledger.save(status)
