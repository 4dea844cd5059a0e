"""The status sidecar `<rel>.status.json`: the record of one job, always valid JSON."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError

from handlers.atomic import safe_join, write_atomic

SCHEMA_VERSION = 1
SUFFIX = ".status.json"
State = Literal["pending", "processing", "completed", "failed", "cancelled"]
STATES: tuple[str, ...] = get_args(State)  # in the order a job goes through them
TERMINAL: frozenset[str] = frozenset(STATES[2:])  # a job ends in one of these


class JobStatus(BaseModel):
    """One job's record; field names are the output contract documented in the README."""

    schema_version: int = SCHEMA_VERSION
    job_id: str
    source: str
    sha256: str
    size_bytes: int
    mtime_ns: int | None = None
    state: State = "pending"
    progress: int = 0
    pages_done: int | None = None
    pages_total: int | None = None
    priority: int = 0
    profile: str | None = None  # the profile whose settings converted it (None: the top level)
    settings: str | None = None  # the fingerprint of the conversion settings it ran with
    attempts: int = 0
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    updated_at: str
    input_format: str | None = None
    outputs: dict[str, str] = {}
    pages: int | None = None
    duration_s: float | None = None
    error: dict[str, object] | None = None
    retry_at: str | None = None
    disposition: str | None = None
    partial: bool = False
    decrypted: bool = False  # a protected PDF opened with a password from the password file
    ocr_pages: int | None = None  # pages read by OCR (None: not converted, or an old record)
    parts: int | None = None  # page ranges it was converted in by several workers (None: whole)
    warnings: list[str] = []
    docling_version: str | None = None
    worker: str | None = None
    # Deliveries of this outcome to the configured hooks, by hook name: delivery (its id,
    # the same on every retry), event, state (pending, delivered, given_up), attempts,
    # next_at, last_error.
    hooks: dict[str, dict[str, object]] = {}


def now_iso(delay: float = 0.0) -> str:
    moment = datetime.now(UTC) + timedelta(seconds=delay)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def age_of(stamp: str | None) -> float | None:
    """Seconds since the time stamp `stamp` (None for none)."""
    if not stamp:
        return None
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return round((datetime.now(UTC) - moment).total_seconds(), 1)


def sidecar_path(output_dir: Path, rel: str) -> Path:
    return safe_join(output_dir, rel + SUFFIX)


def read_status(sidecar: Path) -> JobStatus | None:
    """The recorded status, or None when there is none (or it cannot be read as one).
    An OSError other than a missing file is raised: the path itself may be unusable."""
    try:
        # json (not pydantic's parser) accepts the \udcxx escapes of undecodable file names.
        return JobStatus.model_validate(json.loads(sidecar.read_bytes()))
    except FileNotFoundError:
        return None
    except (ValidationError, ValueError):
        # A sidecar from a future schema or damaged by hand: treat the job as unknown,
        # so it is converted again and the sidecar rewritten.
        return None


def write_status(sidecar: Path, status: JobStatus, durable: bool = True) -> JobStatus:
    """Stamp `updated_at` and replace the sidecar atomically (fsynced if `durable`)."""
    status.updated_at = now_iso()
    write_atomic(sidecar, encode(status), durable)
    return status


def encode(status: JobStatus) -> bytes:
    """The sidecar's bytes: indented JSON, ASCII only. pydantic writes it in 9 us instead
    of json's 50; a name with undecodable bytes (surrogate escapes), which pydantic cannot
    write, goes through json, which writes the same bytes for everything else."""
    try:
        return status.model_dump_json(indent=2, ensure_ascii=True).encode("ascii") + b"\n"
    except PydanticSerializationError:
        return (json.dumps(status.model_dump(), ensure_ascii=True, indent=2) + "\n").encode()


def new_status(rel: str, job_id: str, sha256: str, size: int, priority: int) -> JobStatus:
    stamp = now_iso()
    return JobStatus(
        job_id=job_id,
        source=rel,
        sha256=sha256,
        size_bytes=size,
        priority=priority,
        created_at=stamp,
        updated_at=stamp,
    )


def iter_sidecars(output_dir: Path) -> Iterator[Path]:
    """Every sidecar under `output_dir`, in no particular order."""
    for folder, _, names in os.walk(output_dir):
        for name in names:
            if name.endswith(SUFFIX):
                yield Path(folder) / name
