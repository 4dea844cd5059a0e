"""One file's journey: lock -> read once (a private copy and its digest) -> already done?
-> processing -> convert -> outputs -> completed (or failed / pending for a retry /
cancelled) -> input disposition."""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from handlers import converter as conv
from handlers.disposition import Origin, dispose
from handlers.entities import check_entities
from handlers.errors import JobError, classify
from handlers.lease import Lease, Leases
from handlers.ledger import Ledger
from handlers.outputs import check_name, write_outputs
from handlers.sidecar import TERMINAL, JobStatus, new_status, now_iso
from handlers.source import Snapshot, job_id, read_input, vanished

if TYPE_CHECKING:
    from docling.document_converter import DocumentConverter

log = structlog.get_logger("hotfolder.job")


class JobCancelled(BaseException):
    """Raised from docling's progress callback, which swallows ordinary exceptions."""


class LeaseLost(BaseException):  # noqa: N818 - a carrier, like JobCancelled
    """The job's lease expired and another worker took the file over: this run's result is
    dropped rather than written over the newer record."""


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
        return self.retry_backoff * 2 ** max(attempts - 1, 0)


@dataclass
class JobContext:
    """What a worker process holds for every job: folders, policy and its warm converter."""

    input_dir: Path
    ledger: Ledger
    leases: Leases
    scratch_dir: Path
    options: conv.ConversionOptions
    converter: DocumentConverter
    policy: JobPolicy = JobPolicy()
    worker: str = f"{socket.gethostname()}:{os.getpid()}"
    on_progress: Callable[[JobStatus], None] | None = None


def process_file(rel: str, ctx: JobContext, priority: int = 0) -> JobStatus | None:
    """Convert `input/<rel>` once. Returns the recorded status, whose state is `pending`
    when a retry is due, or None when another worker is converting this file right now."""
    with ctx.leases.hold(rel) as lease:
        if lease is None:
            log.info("job.busy", source=rel)
            return None
        try:
            return run_locked(rel, ctx, priority, lease)
        finally:
            ctx.leases.clear_cancel(rel)


def run_locked(rel: str, ctx: JobContext, priority: int, lease: Lease) -> JobStatus:
    recorded = ctx.ledger.read(rel)
    ctx.scratch_dir.mkdir(parents=True, exist_ok=True)
    with private_folder(ctx.scratch_dir) as folder:
        try:
            check_name(rel)
            copy = read_input(ctx.input_dir, rel, Path(folder), partial(check_input, ctx.policy))
        except (JobError, OSError) as exc:
            return refuse(ctx, recorded, rel, priority, classify(exc))
        # An outcome for this content stands until a person asks again (`retry` and
        # `enqueue --force` reopen the record first); a stray duplicate task is a no-op.
        if recorded and recorded.state in TERMINAL and recorded.sha256 == copy.sha256:
            log.info("job.skipped", source=rel, job_id=recorded.job_id, reason=recorded.state)
            return recorded
        status = start(ctx.ledger, recorded, copy, rel, priority, ctx.worker)
        return convert_copy(status, copy, ctx, lease)


def private_folder(scratch_dir: Path) -> tempfile.TemporaryDirectory[str]:
    """Where this job's copy of its input lives; named by pid, so the copies of a worker
    that was killed can be found and removed."""
    return tempfile.TemporaryDirectory(
        prefix=f"{os.getpid()}-", dir=scratch_dir, ignore_cleanup_errors=True
    )


def convert_copy(status: JobStatus, copy: Snapshot, ctx: JobContext, lease: Lease) -> JobStatus:
    origin = Origin(ctx.input_dir, status.source, copy.inode)
    started = time.monotonic()
    try:
        check_entities(copy.path)
        result = conv.convert(
            ctx.converter,
            copy.path,
            progress_writer(status, ctx, lease),
            ctx.policy.max_pages,
            ctx.options.ocr,
        )
        check_cancel(status, ctx)
        fence(lease, ctx.ledger, status)
        status.outputs = write_outputs(
            result.document, ctx.ledger.output_dir, status.source, ctx.options.to
        )
    except JobCancelled:
        return cancel(ctx.ledger, status)
    except LeaseLost:
        return dropped(ctx.ledger, status)
    except Exception as exc:  # per-job boundary: whatever happens, the job ends recorded
        if not ours(lease, ctx.ledger, status):
            return dropped(ctx.ledger, status)
        error = named_after_input(classify(exc), copy, status.source)
        return fail(ctx.ledger, status, error, ctx.policy, origin, time.monotonic() - started)
    status.input_format = result.input.format.value if result.input.format else None
    status.pages = len(result.document.pages)
    status.warnings, status.partial = conv.warnings_of(result), conv.is_partial(result)
    return complete(ctx.ledger, status, ctx.policy, origin, time.monotonic() - started)


def named_after_input(error: JobError, copy: Snapshot, rel: str) -> JobError:
    """Messages name the input, not the private copy that was converted."""
    message = error.message.replace(str(copy.path), rel)
    return JobError(error.type, message, error.retryable)


def refuse(
    ctx: JobContext, recorded: JobStatus | None, rel: str, priority: int, error: JobError
) -> JobStatus:
    """The input could not be read, or is refused. An outcome on record stands (this is a
    stray task); otherwise the attempt counts, so a cause that may pass (permissions fixed
    later) is retried with backoff, and the job ends `failed` when attempts run out."""
    if recorded and recorded.state in TERMINAL:
        log.info("job.skipped", source=rel, job_id=recorded.job_id, reason=recorded.state)
        return recorded
    status = recorded or new_status(rel, job_id(rel, ""), "", 0, priority)
    status.attempts += 1
    return fail(ctx.ledger, status, error, ctx.policy, origin=None)


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


def check_input(policy: JobPolicy, info: os.stat_result) -> None:
    """The limits that can be judged from the open file, before any of it is read."""
    if policy.max_file_bytes and info.st_size > policy.max_file_bytes:
        raise JobError(
            "too_large",
            f"The file is {info.st_size / 2**20:.1f} MiB, over the limit of "
            f"{policy.max_file_bytes / 2**20:.1f} MiB (jobs.max_file_mb).",
        )
    if policy.refuse_hard_links and info.st_nlink > 1:
        raise JobError(
            "unsafe_path",
            f"The file has {info.st_nlink} hard links and jobs.refuse_hard_links is on: a "
            "hard link can bring in a file from outside the input folder.",
        )


def check_cancel(status: JobStatus, ctx: JobContext) -> None:
    if ctx.leases.cancel_requested(status.source, status.job_id):
        raise JobCancelled(status.source)


def ours(lease: Lease, ledger: Ledger, status: JobStatus) -> bool:
    """Whether this run may still write `status`'s file: its record is still this very run
    (a worker that lost its lease finds the record changed by whoever took over), and the
    lease is still held (checking renews it, so the writes that follow have a whole TTL)."""
    current = ledger.read(status.source)
    mine = (
        current is not None
        and current.state == "processing"
        and (current.job_id, current.worker, current.started_at)
        == (status.job_id, status.worker, status.started_at)
    )
    return mine and not lease.lost and lease.held()


def fence(lease: Lease, ledger: Ledger, status: JobStatus) -> None:
    if not ours(lease, ledger, status):
        raise LeaseLost


def dropped(ledger: Ledger, status: JobStatus) -> JobStatus:
    log.warning(
        "job.lease_lost",
        source=status.source,
        job_id=status.job_id,
        note="the lease expired and another worker took the file over; this result is dropped",
    )
    return ledger.read(status.source) or status


def progress_writer(status: JobStatus, ctx: JobContext, lease: Lease) -> conv.Progress:
    throttle = conv.Throttle(ctx.options.progress_interval)

    def on_pages(done: int, total: int) -> None:
        status.pages_done, status.pages_total = done, total
        status.progress = min(99, done * 100 // max(total, 1))
        check_cancel(status, ctx)
        if lease.lost:
            raise LeaseLost
        if ctx.on_progress:
            ctx.on_progress(status)
        if throttle.ready():
            fence(lease, ctx.ledger, status)
            ctx.ledger.save(status)

    return on_pages


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
