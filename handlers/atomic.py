"""Atomic file writes: a reader sees the old file or the new one, never half of either."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temp file in the same folder, fsync, then os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        # Any failure (disk full, interrupt) must not leave the temp file behind.
        Path(tmp).unlink(missing_ok=True)
        raise


def safe_join(base: Path, rel: str) -> Path:
    """`base / rel`, refusing anything that would land outside `base` (absolute, `..`, symlinks)."""
    if not rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
        raise ValueError(f"unsafe relative path: {rel!r}")
    joined = base / rel
    resolved_base = base.resolve()
    if not joined.resolve().is_relative_to(resolved_base):
        raise ValueError(f"path escapes {base}: {rel!r}")
    return joined
