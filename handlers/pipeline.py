"""One file's journey: digest -> already done? -> processing -> convert -> outputs -> completed."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from handlers import converter as conv
from handlers.errors import JobError, classify
from handlers.outputs import write_outputs
from handlers.sidecar import JobStatus, new_status, now_iso, read_status, sidecar_path, write_status
from handlers.source import digest, job_id, open_source

if TYPE_CHECKING:
    from docling.document_converter import DocumentConverter

log = structlog.get_logger("hotfolder.job")


@dataclass
class JobContext:
    """What a worker process holds for every job: folders, options and its warm converter."""

    input_dir: Path
    output_dir: Path
    options: conv.ConversionOptions
    converter: DocumentConverter
    worker: str = f"{socket.gethostname()}:{os.getpid()}"


def process_file(rel: str, ctx: JobContext, priority: int = 0) -> JobStatus:
    """Convert `input/<rel>` once; returns the final status recorded in its sidecar."""
    sidecar = sidecar_path(ctx.output_dir, rel)
    try:
        source = open_source(ctx.input_dir, rel)
        sha, size = digest(source)
    except (JobError, OSError) as exc:
        return fail(sidecar, read_status(sidecar), classify(exc), rel)
    recorded = read_status(sidecar)
    if recorded and recorded.state == "completed" and recorded.sha256 == sha:
        log.info("job.skipped", source=rel, job_id=recorded.job_id, reason="already converted")
        return recorded
    status = start(sidecar, recorded, rel, sha, size, priority, ctx.worker)
    started = time.monotonic()
    try:
        result = conv.convert(ctx.converter, source, progress_writer(sidecar, status, ctx))
        status.outputs = write_outputs(result.document, ctx.output_dir, rel, ctx.options.to)
    except Exception as exc:  # per-job boundary: whatever happens, the job ends recorded
        return fail(sidecar, status, classify(exc), rel, time.monotonic() - started)
    status.input_format = result.input.format.value if result.input.format else None
    status.pages = len(result.document.pages)
    status.warnings = conv.warnings_of(result)
    return complete(sidecar, status, time.monotonic() - started)


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
    status.state, status.started_at, status.worker = "processing", now_iso(), worker
    status.attempts += 1
    status.docling_version = conv.DOCLING_VERSION
    log.info("job.started", source=rel, job_id=status.job_id, attempt=status.attempts)
    return write_status(sidecar, status)


def progress_writer(sidecar: Path, status: JobStatus, ctx: JobContext) -> conv.Progress:
    throttle = conv.Throttle(ctx.options.progress_interval)

    def on_pages(done: int, total: int) -> None:
        status.pages_done, status.pages_total = done, total
        status.progress = min(99, done * 100 // max(total, 1))
        if throttle.ready():
            write_status(sidecar, status)

    return on_pages


def complete(sidecar: Path, status: JobStatus, duration: float) -> JobStatus:
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
    return status


def fail(
    sidecar: Path,
    status: JobStatus | None,
    error: JobError,
    rel: str,
    duration: float | None = None,
) -> JobStatus:
    if status is None:
        status = new_status(rel, job_id(rel, ""), "", 0, 0)
    status.state, status.error = "failed", error.as_dict()
    status.finished_at = now_iso()
    status.duration_s = round(duration, 3) if duration is not None else None
    write_status(sidecar, status)
    log.warning(
        "job.failed",
        source=rel,
        job_id=status.job_id,
        error_type=error.type,
        error=error.message,
        retryable=error.retryable,
    )
    return status
