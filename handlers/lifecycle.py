"""Every change of a job's state, in one module: a new job, start, complete, fail (or
retry), cancel, reopen, put back, recover a lost one, end a vanished one, and what happens
to the input afterwards. The states themselves are defined once, in `handlers.sidecar`.

Each function writes the record through the ledger (sidecar first, then the index, then
the ledger's listeners), so a change of state made anywhere is seen the same way.
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class JobPolicy:
    """Limits, retries and what happens to the input afterwards."""

    max_attempts: int = 3
    retry_backoff: float = 10.0
    max_file_bytes: int = 0
    max_pages: int = 0
    refuse_hard_links: bool = False
    on_success: str = "keep"
    on_failure: str = "keep"
    archive_dir: Path | None = None
    quarantine_dir: Path | None = None

    def retry_delay(self, attempts: int) -> float:
        return float(self.retry_backoff * 2 ** max(attempts - 1, 0))


def admit(
    ledger: Ledger, rel: str, sha256: str, size: int, mtime_ns: int, priority: int
) -> JobStatus:
    """A new job for the current content of `rel`: `pending`, waiting for a worker."""
    status = new_status(rel, job_id(rel, sha256), sha256, size, priority)
    status.mtime_ns = mtime_ns
    return ledger.save(status)


def start(
    ledger: Ledger,
    recorded: JobStatus | None,
    copy: Snapshot,
    rel: str,
    priority: int,
    worker: str,
) -> JobStatus:
    status = new_status(rel, job_id(rel, copy.sha256), copy.sha256, copy.size, priority)
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
    if error.retryable:
        status.error["message"] = f"{error.message} Gave up after {status.attempts} attempts."
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


def reopen(ledger: Ledger, status: JobStatus) -> JobStatus:
    """Back to `pending` for a fresh round of attempts (`retry`); the old outcome is cleared."""
    status.state, status.progress, status.attempts = "pending", 0, 0
    status.error = status.retry_at = status.finished_at = status.started_at = None
    status.pages_done = status.pages_total = None
    status.created_at = now_iso()
    return ledger.save(status)


def put_back(ledger: Ledger, rel: str) -> JobStatus | None:
    """A stop cut the job short (its task is back in the queue): `pending` again, and the
    attempt is not counted, since a stop is not the document's fault."""
    status = ledger.read(rel)
    if status is None or status.state != "processing":
        return status
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
        return fail(ledger, status, lost, policy, Origin(input_dir, rel))


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
