"""Atomic file writes: a reader sees the old file or the new one, never half of either."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path


def file_mode() -> int:
    """0o666 less the process umask: what open() would give, not mkstemp's private 0o600."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


MODE = file_mode()  # read once at start-up: umask() cannot be read without setting it


def write_atomic(path: Path, data: bytes, durable: bool = True) -> None:
    """Write `data` to `path` through a temp file in the same folder, fsync (unless it need
    not survive a crash: `durable` off), then os.replace."""
    write_all_atomic([(path, data)], durable)


def write_all_atomic(files: list[tuple[Path, bytes]], durable: bool = True) -> None:
    """Write every file to a temp file first; replace the targets only once all are on
    disk, so a full disk leaves the old set of files, never part of the new one."""
    temps: list[tuple[str, Path]] = []
    try:
        for path, data in files:
            temps.append((stage(path, data, durable), path))
        for temp, path in temps:
            os.replace(temp, path)
    finally:
        # Whatever failed (disk full, an interrupt), no temp file is left behind.
        for temp, _ in temps:
            Path(temp).unlink(missing_ok=True)


def stage(path: Path, data: bytes, durable: bool = True) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    try:
        os.fchmod(fd, MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return temp


class PathEscapes(ValueError):
    """A path that would land outside its base folder (through a link planted there)."""


def safe_join(base: Path, rel: str) -> Path:
    """`base / rel`, refusing anything that would land outside `base` (absolute, `..`, symlinks)."""
    if not rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
        raise ValueError(f"unsafe relative path: {rel!r}")
    joined = base / rel
    resolved_base = base.resolve()
    if not joined.resolve().is_relative_to(resolved_base):
        raise PathEscapes(f"path escapes {base}: {rel!r}")
    return joined


def set_aside(path: Path) -> Path:
    """Rename a damaged file to `<name>.damaged-<time>` (kept for a look), and drop its
    SQLite companions; returns the new name."""
    aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(path, aside)
    for companion in ("-wal", "-shm", "-journal"):
        path.with_name(path.name + companion).unlink(missing_ok=True)
    return aside
