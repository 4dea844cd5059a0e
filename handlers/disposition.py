"""What happens to an input after its job ends: kept, archived, deleted or quarantined.

The input is reached as it was read (one folder at a time, no links followed) and must still
be the very file that was converted: whatever replaced it meanwhile is left alone.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from handlers.atomic import safe_join, stage, write_atomic
from handlers.source import FILE_FLAGS, open_parent


@dataclass(frozen=True)
class Origin:
    """Where an input lies, and which file it was when read (None: whatever file is there)."""

    input_dir: Path
    rel: str
    inode: tuple[int, int] | None = None


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
            if not stat.S_ISREG(info.st_mode) or (
                origin.inode and origin.inode != (info.st_dev, info.st_ino)
            ):
                return "kept (the input was replaced after it was read)"
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
