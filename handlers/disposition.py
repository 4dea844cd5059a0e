"""What happens to an input after its job ends: kept, archived, deleted or quarantined.

The input is reached as it was read (one folder at a time, no links followed) and must still
hold the very bytes that were converted: content written over it meanwhile (in place, or as
a new file under the name) is left alone, for its own job to convert.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from handlers.atomic import safe_join, stage, write_atomic
from handlers.sidecar import JobStatus
from handlers.source import FILE_FLAGS, Snapshot, consume, open_parent


@dataclass(frozen=True)
class Origin:
    """Where an input lies, and the content that was converted: its digest, size and
    mtime, and, when this process read it, its inode and ctime."""

    input_dir: Path
    rel: str
    sha256: str
    size: int
    mtime_ns: int | None
    inode: tuple[int, int] | None = None
    ctime_ns: int | None = None

    @classmethod
    def of_copy(cls, input_dir: Path, rel: str, copy: Snapshot) -> Origin:
        return cls(input_dir, rel, copy.sha256, copy.size, copy.mtime_ns, copy.inode, copy.ctime_ns)

    @classmethod
    def of_record(cls, input_dir: Path, status: JobStatus) -> Origin:
        """The content a job's record names (its worker is gone, and with it the read)."""
        return cls(input_dir, status.source, status.sha256, status.size_bytes, status.mtime_ns)


def dispose(origin: Origin, action: str, target_root: Path | None, reason: str = "") -> str:
    """Apply `action` ("keep", "archive", "delete", "quarantine"); returns what was done.
    `target_root` is the archive or quarantine dir, needed by those two actions."""
    if action == "keep":
        return "kept"
    if action != "delete" and target_root is None:
        raise ValueError(f"{action} needs a target folder")
    try:
        with open_parent(origin.input_dir, origin.rel) as (folder, name):
            info = os.stat(name, dir_fd=folder, follow_symlinks=False)
            if not stat.S_ISREG(info.st_mode) or not converted(folder, name, info, origin):
                return "kept (the input changed after it was read; its new content is converted)"
            if action == "delete":
                os.unlink(name, dir_fd=folder)
                return "deleted"
            target = free_path(safe_join(target_root, origin.rel))  # type: ignore[arg-type]
            move(folder, name, target)
    except FileNotFoundError:
        return "none (the input is gone)"
    if action == "quarantine":
        note = free_path(target.with_name(target.name + ".reason.txt"))
        write_atomic(note, (reason.rstrip() + "\n").encode("utf-8", "surrogateescape"))
    return f"{'archived' if action == 'archive' else 'quarantined'}: {target}"


def converted(folder: int, name: str, info: os.stat_result, origin: Origin) -> bool:
    """Whether `name` still holds the content that was converted. Size and mtime tell a
    change apart at once; the same inode with the same ctime proves nothing was written
    since; in doubt (a record without a read, or an inode changed or touched since), the
    bytes are hashed and compared."""
    if not origin.sha256 or (info.st_size, info.st_mtime_ns) != (origin.size, origin.mtime_ns):
        return False
    if origin.inode == (info.st_dev, info.st_ino) and origin.ctime_ns == info.st_ctime_ns:
        return True
    fd = os.open(name, FILE_FLAGS, dir_fd=folder)
    try:
        sha, _ = consume(fd, None)
    finally:
        os.close(fd)
    return sha == origin.sha256


def free_path(target: Path) -> Path:
    """`target`, or `<name>.1`, `<name>.2`... if it is taken; never an existing file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    stem, n = target.name, 1
    while os.path.lexists(target):
        target = target.with_name(f"{stem}.{n}")
        n += 1
    return target


def move(folder: int, name: str, target: Path) -> None:
    try:
        os.rename(name, target, src_dir_fd=folder)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    # Another filesystem: copy into place (a temp file, then rename), then delete.
    with os.fdopen(os.open(name, FILE_FLAGS, dir_fd=folder), "rb") as source:
        temp = stage(target, b"")
        try:
            with open(temp, "r+b") as copy:
                shutil.copyfileobj(source, copy)
                copy.flush()
                os.fsync(copy.fileno())
            os.replace(temp, target)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
    os.unlink(name, dir_fd=folder)
