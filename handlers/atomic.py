"""Atomic file writes: a reader sees the old file or the new one, never half of either."""

from __future__ import annotations

import errno
import functools
import itertools
import os
import stat
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
        while temps:
            os.replace(*temps[0])
            temps.pop(0)
    finally:
        # Whatever failed (disk full, an interrupt), no temp file is left behind.
        for temp, _ in temps:
            Path(temp).unlink(missing_ok=True)


TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
names = itertools.count()  # with the pid, a temp name no other writer here uses


def stage(path: Path, data: bytes, durable: bool = True) -> str:
    """`data` in a new hidden temp file beside `path` (fsynced if `durable`); returns its
    name. Opened exclusively with its final mode: mkstemp's random names, fchmod and
    buffered file object made writing and renaming a small record cost about 108 us of CPU
    here instead of 84."""
    fd, temp = create_temp(path)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if durable:
            os.fsync(fd)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    return temp


def create_temp(path: Path) -> tuple[int, str]:
    """A new file `.<name>.<pid>.<n>.tmp` in `path`'s folder, made if missing; a name
    taken already (a writer on another host with this pid) is passed over."""
    folder = os.fspath(path.parent)
    for _ in range(100):
        temp = os.path.join(folder, f".{path.name}.{os.getpid()}.{next(names)}.tmp")
        try:
            return open_in_folder(temp, TEMP_FLAGS, MODE), temp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temp name", folder)


def open_in_folder(path: str | Path, flags: int, mode: int) -> int:
    """os.open, making the file's folder first if it is missing: looked for only then,
    not at every open of a file that is written for each job."""
    try:
        return os.open(path, flags, mode)
    except FileNotFoundError:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, flags, mode)


class PathEscapes(ValueError):
    """A path that would land outside its base folder (through a link planted there)."""


def safe_join(base: Path, rel: str) -> Path:
    """`base / rel`, refusing anything that would land outside `base` (absolute, `..`, symlinks)."""
    parts = Path(rel).parts
    if not rel or Path(rel).is_absolute() or ".." in parts:
        raise ValueError(f"unsafe relative path: {rel!r}")
    joined = base / rel
    if links_below(base, parts) and not joined.resolve().is_relative_to(resolved(base)):
        raise PathEscapes(f"path escapes {base}: {rel!r}")
    return joined


def links_below(base: Path, parts: tuple[str, ...]) -> bool:
    """Whether a link lies on the way from `base` down to `base/<parts>`. Only these few
    steps are looked at (resolving the whole path from the root, twice a record, cost
    intake a tenth of its time); a step that is not there ends the way, as nothing below
    it can be a link."""
    path = os.fspath(base)
    for part in parts:
        path = os.path.join(path, part)
        try:
            if stat.S_ISLNK(os.lstat(path).st_mode):
                return True
        except OSError:
            return False
    return False


@functools.lru_cache(maxsize=64)
def resolved(base: Path) -> Path:
    """The real path of a folder of this configuration, found once per process: it is
    the operator's to place, where a link inside it is anyone's who can write there."""
    return base.resolve()


def set_aside(path: Path) -> Path:
    """Rename a damaged file to `<name>.damaged-<time>` (kept for a look), and drop its
    SQLite companions; returns the new name."""
    aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(path, aside)
    for companion in ("-wal", "-shm", "-journal"):
        path.with_name(path.name + companion).unlink(missing_ok=True)
    return aside
