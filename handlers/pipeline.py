"""One file's journey: lock -> digest -> already done? -> processing -> convert -> outputs
-> completed (or failed / pending for a retry / cancelled) -> input disposition."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from handlers import converter as conv
from handlers.disposition import dispose
from handlers.errors import JobError, classify
from handlers.ledger import Ledger
from handlers.lock import cancel_requested, clear_cancel, job_lock
from handlers.outputs import write_outputs
from handlers.sidecar import TERMINAL, JobStatus, new_status, now_iso
from handlers.source import digest, job_id, open_source, vanished

if TYPE_CHECKING:
    from docling.document_converter import DocumentConverter

log = structlog.get_logger("hotfolder.job")


class JobCancelled(BaseException):
    """Raised from docling's progress callback, which swallows ordinary exceptions."""


@dataclass(frozen=True)
class JobPolicy:
    """Limits, retries and what happens to the input afterwards."""

    max_attempts: int = 3
    retry_backoff: float = 10.0
    max_file_bytes: int = 0
    max_pages: int = 0
    on_success: str = "keep"
    on_failure: str = "keep"
    archive_dir: Path | None = None
    quarantine_dir: Path | None = None

    def retry_delay(self, attempts: int) -> float:
        return self.retry_backoff * 2 ** max(attempts - 1, 0)


@dataclass
class JobContext:
    """What a worker process holds for every job: folders, policy and its warm converter."""

    input_dir: Path
    ledger: Ledger
    locks_dir: Path
    options: conv.ConversionOptions
    converter: DocumentConverter
    policy: JobPolicy = JobPolicy()
    worker: str = f"{socket.gethostname()}:{os.getpid()}"
    on_progress: Callable[[JobStatus], None] | None = None


def process_file(rel: str, ctx: JobContext, priority: int = 0) -> JobStatus | None:
    """Convert `input/<rel>` once. Returns the recorded status, whose state is `pending`
    when a retry is due, or None when another worker is converting this file right now."""
    with job_lock(ctx.locks_dir, rel) as held:
        if not held:
            log.info("job.busy", source=rel)
            return None
        try:
            return run_locked(rel, ctx, priority)
        finally:
            clear_cancel(ctx.locks_dir, rel)


def run_locked(rel: str, ctx: JobContext, priority: int) -> JobStatus:
    recorded = ctx.ledger.read(rel)
    try:
        source = open_source(ctx.input_dir, rel)
        mtime_ns = source.stat().st_mtime_ns
        sha, size = digest(source)
    except (JobError, OSError) as exc:
        status = recorded or new_status(rel, job_id(rel, ""), "", 0, priority)
        return fail(ctx.ledger, status, classify(exc), ctx.policy, source=None)
    # An outcome for this content stands until a person asks again (`retry` and
    # `enqueue --force` reopen the record first); a stray duplicate task is a no-op.
    if recorded and recorded.state in TERMINAL and recorded.sha256 == sha:
        log.info("job.skipped", source=rel, job_id=recorded.job_id, reason=recorded.state)
        return recorded
    status = start(ctx.ledger, recorded, rel, sha, size, priority, ctx.worker)
    status.mtime_ns = mtime_ns
    started = time.monotonic()
    try:
        check_size(size, ctx.policy)
        result = conv.convert(
            ctx.converter, source, progress_writer(status, ctx), ctx.policy.max_pages
        )
        check_cancel(status, ctx)
        status.outputs = write_outputs(result.document, ctx.ledger.output_dir, rel, ctx.options.to)
    except JobCancelled:
        return cancel(ctx.ledger, status)
    except Exception as exc:  # per-job boundary: whatever happens, the job ends recorded
        error = classify(exc)
        return fail(ctx.ledger, status, error, ctx.policy, source, time.monotonic() - started)
    status.input_format = result.input.format.value if result.input.format else None
    status.pages = len(result.document.pages)
    status.warnings, status.partial = conv.warnings_of(result), conv.is_partial(result)
    return complete(ctx.ledger, status, ctx.policy, source, time.monotonic() - started)


def start(
    ledger: Ledger,
    recorded: JobStatus | None,
    rel: str,
    sha: str,
    size: int,
    priority: int,
    worker: str,
) -> JobStatus:
    status = new_status(rel, job_id(rel, sha), sha, size, priority)
    if recorded and recorded.job_id == status.job_id:
        status.created_at, status.attempts = recorded.created_at, recorded.attempts
        status.error = recorded.error  # the last error stays visible while it is retried
    status.state, status.started_at, status.worker = "processing", now_iso(), worker
    status.attempts += 1
    status.docling_version = conv.DOCLING_VERSION
    log.info("job.started", source=rel, job_id=status.job_id, attempt=status.attempts)
    return ledger.save(status)


def check_size(size: int, policy: JobPolicy) -> None:
    if policy.max_file_bytes and size > policy.max_file_bytes:
        raise JobError(
            "too_large",
            f"The file is {size / 2**20:.1f} MiB, over the limit of "
            f"{policy.max_file_bytes / 2**20:.1f} MiB (jobs.max_file_mb).",
        )


def check_cancel(status: JobStatus, ctx: JobContext) -> None:
    if cancel_requested(ctx.locks_dir, status.source, status.job_id):
        raise JobCancelled(status.source)


def progress_writer(status: JobStatus, ctx: JobContext) -> conv.Progress:
    throttle = conv.Throttle(ctx.options.progress_interval)

    def on_pages(done: int, total: int) -> None:
        status.pages_done, status.pages_total = done, total
        status.progress = min(99, done * 100 // max(total, 1))
        check_cancel(status, ctx)
        if ctx.on_progress:
            ctx.on_progress(status)
        if throttle.ready():
            ctx.ledger.save(status)

    return on_pages


def complete(
    ledger: Ledger, status: JobStatus, policy: JobPolicy, source: Path, duration: float
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
    return settle_input(ledger, status, source, policy.on_success, policy.archive_dir)


def cancel(ledger: Ledger, status: JobStatus) -> JobStatus:
    status.state, status.finished_at, status.retry_at = "cancelled", now_iso(), None
    log.info("job.cancelled", source=status.source, job_id=status.job_id)
    return ledger.save(status)


def fail(
    ledger: Ledger,
    status: JobStatus,
    error: JobError,
    policy: JobPolicy,
    source: Path | None,
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
    if source is None:
        return status
    reason = f"{error.type}: {status.error['message']}"
    return settle_input(ledger, status, source, policy.on_failure, policy.quarantine_dir, reason)


def recover_lost(
    rel: str, input_dir: Path, ledger: Ledger, locks_dir: Path, policy: JobPolicy, lost: JobError
) -> JobStatus | None:
    """A `processing` job whose worker is gone counts a failed attempt: it is set to retry
    (`pending`) or, once attempts run out, to `failed`. None if nothing was to recover."""
    with job_lock(locks_dir, rel) as held:
        status = ledger.read(rel) if held else None
        if status is None or status.state != "processing":
            return None  # a live worker holds it, or it ended meanwhile
        log.warning("job.worker_lost", source=rel, job_id=status.job_id, error_type=lost.type)
        source = input_dir / rel
        return fail(ledger, status, lost, policy, source if source.is_file() else None)


def end_vanished(rel: str, ledger: Ledger, locks_dir: Path, policy: JobPolicy) -> bool:
    """A waiting job whose input was deleted or renamed ends `failed: source_vanished`."""
    with job_lock(locks_dir, rel) as held:
        status = ledger.read(rel) if held else None
        if status is None or status.state != "pending":
            return False
        fail(ledger, status, vanished(), policy, source=None)
        return True


def settle_input(
    ledger: Ledger,
    status: JobStatus,
    source: Path,
    action: str,
    target_root: Path | None,
    reason: str = "",
) -> JobStatus:
    """Archive, delete or quarantine the input once its outcome is on record."""
    if action == "keep":
        return status
    try:
        status.disposition = dispose(source, status.source, action, target_root, reason)
    except OSError as exc:
        status.disposition = f"kept ({action} failed: {exc})"
        log.error("job.disposition_failed", source=status.source, action=action, error=str(exc))
    return ledger.save(status)
