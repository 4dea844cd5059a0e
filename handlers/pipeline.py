"""One file's journey: lock -> digest -> already done? -> processing -> convert -> outputs
-> completed (or failed / pending for a retry) -> input disposition."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from handlers import converter as conv
from handlers.disposition import dispose
from handlers.errors import JobError, classify
from handlers.lock import job_lock
from handlers.outputs import write_outputs
from handlers.sidecar import JobStatus, new_status, now_iso, read_status, sidecar_path, write_status
from handlers.source import digest, job_id, open_source, vanished

if TYPE_CHECKING:
    from docling.document_converter import DocumentConverter

log = structlog.get_logger("hotfolder.job")


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
    output_dir: Path
    locks_dir: Path
    options: conv.ConversionOptions
    converter: DocumentConverter
    policy: JobPolicy = JobPolicy()
    worker: str = f"{socket.gethostname()}:{os.getpid()}"


def process_file(rel: str, ctx: JobContext, priority: int = 0) -> JobStatus | None:
    """Convert `input/<rel>` once. Returns the recorded status, whose state is `pending`
    when a retry is due, or None when another worker is converting this file right now."""
    with job_lock(ctx.locks_dir, rel) as held:
        if not held:
            log.info("job.busy", source=rel)
            return None
        return run_locked(rel, sidecar_path(ctx.output_dir, rel), ctx, priority)


def run_locked(rel: str, sidecar: Path, ctx: JobContext, priority: int) -> JobStatus:
    recorded = read_status(sidecar)
    try:
        source = open_source(ctx.input_dir, rel)
        mtime_ns = source.stat().st_mtime_ns
        sha, size = digest(source)
    except (JobError, OSError) as exc:
        status = recorded or new_status(rel, job_id(rel, ""), "", 0, priority)
        return fail(sidecar, status, classify(exc), ctx.policy, source=None)
    if recorded and recorded.state == "completed" and recorded.sha256 == sha:
        log.info("job.skipped", source=rel, job_id=recorded.job_id, reason="already converted")
        return recorded
    status = start(sidecar, recorded, rel, sha, size, priority, ctx.worker)
    status.mtime_ns = mtime_ns
    started = time.monotonic()
    try:
        check_size(size, ctx.policy)
        result = conv.convert(
            ctx.converter, source, progress_writer(sidecar, status, ctx), ctx.policy.max_pages
        )
        status.outputs = write_outputs(result.document, ctx.output_dir, rel, ctx.options.to)
    except Exception as exc:  # per-job boundary: whatever happens, the job ends recorded
        return fail(sidecar, status, classify(exc), ctx.policy, source, time.monotonic() - started)
    status.input_format = result.input.format.value if result.input.format else None
    status.pages = len(result.document.pages)
    status.warnings, status.partial = conv.warnings_of(result), conv.is_partial(result)
    return complete(sidecar, status, ctx, source, time.monotonic() - started)


def start(
    sidecar: Path,
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
    return write_status(sidecar, status)


def check_size(size: int, policy: JobPolicy) -> None:
    if policy.max_file_bytes and size > policy.max_file_bytes:
        raise JobError(
            "too_large",
            f"The file is {size / 2**20:.1f} MiB, over the limit of "
            f"{policy.max_file_bytes / 2**20:.1f} MiB (jobs.max_file_mb).",
        )


def progress_writer(sidecar: Path, status: JobStatus, ctx: JobContext) -> conv.Progress:
    throttle = conv.Throttle(ctx.options.progress_interval)

    def on_pages(done: int, total: int) -> None:
        status.pages_done, status.pages_total = done, total
        status.progress = min(99, done * 100 // max(total, 1))
        if throttle.ready():
            write_status(sidecar, status)

    return on_pages


def complete(
    sidecar: Path, status: JobStatus, ctx: JobContext, source: Path, duration: float
) -> JobStatus:
    status.state, status.progress, status.error = "completed", 100, None
    status.finished_at, status.duration_s = now_iso(), round(duration, 3)
    write_status(sidecar, status)
    log.info(
        "job.completed",
        source=status.source,
        job_id=status.job_id,
        pages=status.pages,
        duration_s=status.duration_s,
    )
    return settle_input(sidecar, status, source, ctx.policy.on_success, ctx.policy.archive_dir)


def fail(
    sidecar: Path,
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
        write_status(sidecar, status)
        log.warning("job.retrying", source=status.source, error_type=error.type, delay_s=delay)
        return status
    if error.retryable:
        status.error["message"] = f"{error.message} Gave up after {status.attempts} attempts."
    status.state, status.finished_at, status.retry_at = "failed", now_iso(), None
    write_status(sidecar, status)
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
    return settle_input(sidecar, status, source, policy.on_failure, policy.quarantine_dir, reason)


def recover_lost(
    rel: str,
    input_dir: Path,
    output_dir: Path,
    locks_dir: Path,
    policy: JobPolicy,
    lost: JobError,
) -> JobStatus | None:
    """A `processing` job whose worker is gone counts a failed attempt: it is set to retry
    (`pending`) or, once attempts run out, to `failed`. None if nothing was to recover."""
    with job_lock(locks_dir, rel) as held:
        sidecar = sidecar_path(output_dir, rel)
        status = read_status(sidecar) if held else None
        if status is None or status.state != "processing":
            return None  # a live worker holds it, or it ended meanwhile
        log.warning("job.worker_lost", source=rel, job_id=status.job_id, error_type=lost.type)
        source = input_dir / rel
        return fail(sidecar, status, lost, policy, source if source.is_file() else None)


def end_vanished(rel: str, output_dir: Path, locks_dir: Path, policy: JobPolicy) -> bool:
    """A waiting job whose input was deleted or renamed ends `failed: source_vanished`."""
    with job_lock(locks_dir, rel) as held:
        sidecar = sidecar_path(output_dir, rel)
        status = read_status(sidecar) if held else None
        if status is None or status.state != "pending":
            return False
        fail(sidecar, status, vanished(), policy, source=None)
        return True


def settle_input(
    sidecar: Path,
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
    return write_status(sidecar, status)
