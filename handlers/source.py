"""The input file: resolved safely inside the input folder, and its content digest."""

from __future__ import annotations

import hashlib
from pathlib import Path

from handlers.atomic import safe_join
from handlers.errors import JobError

CHUNK = 1 << 20


def open_source(input_dir: Path, rel: str) -> Path:
    """The input file for `rel`, if it is a regular file that resolves inside `input_dir`."""
    try:
        source = safe_join(input_dir, rel)
    except ValueError as exc:
        raise JobError("unsafe_path", f"Refusing to read {rel!r}: {exc}.") from exc
    if not source.exists():
        raise vanished()
    if not source.is_file():
        raise JobError("unsupported_format", "The input is not a regular file.")
    return source


def vanished() -> JobError:
    return JobError(
        "source_vanished", "The input file was deleted or renamed before it could be converted."
    )


def digest(source: Path) -> tuple[str, int]:
    """sha256 hex digest and size in bytes of the file's current content."""
    sha = hashlib.sha256()
    size = 0
    with source.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return sha.hexdigest(), size


def job_id(rel: str, sha256: str) -> str:
    """A job is one content at one path: the same bytes dropped again are the same job."""
    key = f"{rel}\0{sha256}".encode("utf-8", "surrogateescape")
    return hashlib.sha256(key).hexdigest()[:16]
