"""One file's journey: lease -> read once (a private copy and its digest) -> already done?
-> processing -> convert -> outputs -> completed (or failed / pending for a retry /
cancelled) -> input disposition. The changes of state are `handlers.lifecycle`'s."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from handlers import converter as conv
from handlers.disposition import Origin
from handlers.errors import JobError, classify
from handlers.lease import Lease, Leases
from handlers.ledger import Ledger
from handlers.lifecycle import (
    JobPolicy,
    cancel,
    cancel_if_asked,
    complete,
    exhausted,
    fail,
    give_up,
    refuse,
    start,
)
from handlers.markup import check_markup
from handlers.outputs import Rendition, check_name, write_outputs
from handlers.parts import Coordinator, Offer, PartStore, by_weight, lease_key, plan
from handlers.sidecar import TERMINAL, JobStatus
from handlers.source import Snapshot, private_folder, read_input

log = structlog.get_logger("hotfolder.job")


class JobCancelled(BaseException):
    """Raised from docling's progress callback, which swallows ordinary exceptions."""


class LeaseLost(BaseException):  # noqa: N818 - a carrier, like JobCancelled
    """The job's lease expired and another worker took the file over: this run's result is
    dropped rather than written over the newer record."""


@dataclass
class JobContext:
    """What a worker process holds for every job: folders, policy and its warm converter."""

    input_dir: Path
    ledger: Ledger
    leases: Leases
    scratch_dir: Path
    options: conv.ConversionOptions
    converter: conv.Converter
    policy: JobPolicy = JobPolicy()
    worker: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    on_progress: Callable[[JobStatus], None] | None = None
    profile: str | None = None  # the profile whose settings these are (None: the top level)
    offer: Offer | None = None  # hands a part of a long document to the queue (None: no split)


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
    with private_folder(ctx.scratch_dir) as folder:
        try:
            check_name(rel)
            copy = read_input(ctx.input_dir, rel, folder, ctx.policy.check)
        except (JobError, OSError) as exc:
            return refuse(ctx.ledger, ctx.policy, recorded, rel, priority, classify(exc))
        # An outcome for this content stands until a person asks again (`retry` and
        # `enqueue --force` reopen the record first); a stray duplicate task is a no-op.
        if recorded and recorded.state in TERMINAL and recorded.sha256 == copy.sha256:
            log.info("job.skipped", source=rel, job_id=recorded.job_id, reason=recorded.state)
            return recorded
        if recorded and exhausted(recorded, copy.sha256, ctx.policy):
            return give_up(ctx.ledger, recorded, ctx.policy)
        shaping = ctx.options.fingerprint()
        status = start(ctx.ledger, recorded, copy, rel, priority, ctx.worker, ctx.profile, shaping)
        return convert_copy(status, copy, ctx, lease)


def convert_copy(status: JobStatus, copy: Snapshot, ctx: JobContext, lease: Lease) -> JobStatus:
    origin = Origin.of_copy(ctx.input_dir, status.source, copy)
    started = time.monotonic()
    try:
        check_markup(copy.path)
        result = convert_input(status, copy, ctx, progress_writer(status, ctx, lease))
        check_cancel(status, ctx)
        fence(lease, ctx.ledger, status)
        rendition = Rendition(result.document, copy.path, status, ctx.options, result.turns)
        status.outputs = write_outputs(
            rendition, ctx.ledger.output_dir, status.source, ctx.options.to
        )
    except JobCancelled:
        return ended(cancel(ctx.ledger, status), ctx)
    except LeaseLost:
        return dropped(ctx.ledger, status)
    except Exception as exc:  # per-job boundary: whatever happens, the job ends recorded
        if not ours(lease, ctx.ledger, status):
            return dropped(ctx.ledger, status)
        if cancelled := cancel_if_asked(ctx.ledger, ctx.leases, status):
            return ended(cancelled, ctx)
        error = named_after_input(classify(exc), copy, status.source)
        duration = time.monotonic() - started
        return ended(fail(ctx.ledger, status, error, ctx.policy, origin, duration), ctx)
    status.input_format, status.pages = result.input_format, result.pages
    status.warnings, status.partial = result.warnings, result.partial
    status.decrypted, status.ocr_pages = result.decrypted, result.ocr_pages
    duration = time.monotonic() - started
    return ended(complete(ctx.ledger, status, ctx.policy, origin, duration), ctx)


def convert_input(
    status: JobStatus, copy: Snapshot, ctx: JobContext, on_pages: conv.Progress
) -> conv.Conversion:
    """The whole document at once, or, a long PDF with workers to share it, in parts."""
    count = conv.page_count(copy.path) if ctx.offer else 0
    parts = plan(count, ctx.policy.split_pages, ctx.options.page_range)
    if not parts or ctx.offer is None or too_many(count, ctx.policy):
        return ctx.converter.convert(copy.path, on_pages, ctx.policy.max_pages)
    status.parts = len(parts)

    def convert_part(pages: conv.PageRange, progress: conv.Progress) -> conv.Conversion:
        try:
            return ctx.converter.convert(copy.path, progress, 0, pages)
        except JobError as exc:
            raise named_after_input(exc, copy, status.source) from None

    store = PartStore.of(ctx.ledger.output_dir, status)
    coordinator = Coordinator(status, store, ctx.leases, convert_part, on_pages)
    order = by_weight(parts, conv.ocr_weights(copy.path, ctx.options.ocr.mode))
    return coordinator.run(order, ctx.offer, ctx.options.ocr.mode == "off")


def too_many(pages: int, policy: JobPolicy) -> bool:
    """Over jobs.max_pages (counted over the whole document, as docling counts them even
    with a page range): converted whole, where docling refuses it with the reason."""
    return bool(policy.max_pages) and pages > policy.max_pages


def ended(status: JobStatus, ctx: JobContext) -> JobStatus:
    """A split job's parts are kept until it ends (or is to be tried again): only a
    coordinator cut short leaves them, for the next one."""
    if status.parts:
        PartStore.of(ctx.ledger.output_dir, status).remove()
    return status


def process_part(rel: str, job_id: str, pages: conv.PageRange, ctx: JobContext) -> bool:
    """Convert part `pages` of job `job_id`, if the job still runs and nobody converts the
    part; whatever is not done here, the job's coordinator does. True if it was done here."""
    with ctx.leases.hold(lease_key(rel, job_id, pages)) as lease:
        status = ctx.ledger.read(rel)
        if lease is None or status is None or not part_of(status, job_id, ctx):
            return False
        store = PartStore.of(ctx.ledger.output_dir, status)
        if not store.is_open() or store.read(pages) is not None:
            return False
        outcome = convert_part_copy(status, pages, ctx, lease)
        if outcome is None or not (lease.held() and part_of(ctx.ledger.read(rel), job_id, ctx)):
            return False
        store.write(pages, outcome)
        log.info("job.part_done", source=rel, job_id=job_id, pages=list(pages), worker=ctx.worker)
        return True


def convert_part_copy(
    status: JobStatus, pages: conv.PageRange, ctx: JobContext, lease: Lease
) -> conv.Conversion | JobError | None:
    """Part `pages`, converted from a private copy of the input: its outcome, or None when
    it is not this worker's to finish (the input changed or cannot be read here, the job
    stops or the lease is lost)."""
    with private_folder(ctx.scratch_dir) as folder:
        try:
            copy = read_input(ctx.input_dir, status.source, folder, ctx.policy.check)
        except (JobError, OSError) as exc:
            log.warning("job.part_unreadable", source=status.source, error=str(exc))
            return None
        if copy.sha256 != status.sha256:
            return None  # new content under the name: that is another job
        try:
            return ctx.converter.convert(copy.path, part_progress(status, ctx, lease), 0, pages)
        except JobError as exc:
            return named_after_input(exc, copy, status.source)
        except (JobCancelled, LeaseLost) as exc:
            log.info("job.part_dropped", source=status.source, pages=list(pages), why=repr(exc))
            return None


def part_of(status: JobStatus | None, job_id: str, ctx: JobContext) -> bool:
    """Whether `status` is a run of job `job_id` that this worker's settings can help."""
    return (
        status is not None
        and status.state == "processing"
        and status.job_id == job_id
        and status.settings == ctx.options.fingerprint()
    )


def part_progress(status: JobStatus, ctx: JobContext, lease: Lease) -> conv.Progress:
    """A part stops at its next page when its job is cancelled, ends, or its lease is lost."""
    throttle = conv.Throttle(ctx.options.progress_interval)

    def on_pages(done: int, total: int) -> None:
        check_cancel(status, ctx)
        if lease.lost:
            raise LeaseLost
        if throttle.ready() and not part_of(ctx.ledger.read(status.source), status.job_id, ctx):
            raise JobCancelled(status.source)

    return on_pages


def named_after_input(error: JobError, copy: Snapshot, rel: str) -> JobError:
    """Messages name the input, not the private copy that was converted."""
    message = error.message.replace(str(copy.path), rel)
    return JobError(error.type, message, error.retryable)


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
        note=(
            "this run no longer owns the job (its lease expired and another worker took the "
            "file over, or its record changed or vanished): this result is dropped"
        ),
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
