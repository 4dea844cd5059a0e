"""What happens to an input after its job ends: kept, archived, deleted or quarantined."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from handlers.atomic import safe_join, write_atomic


def move_into(source: Path, target_root: Path, rel: str) -> Path:
    """Move `source` to `target_root/rel` (mirroring the input tree), never overwriting."""
    target = safe_join(target_root, rel)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        stem, n = target.name, 1
        while target.exists():
            target = target.with_name(f"{stem}.{n}")
            n += 1
    try:
        os.rename(source, target)
    except OSError:
        # Another filesystem: copy under a hidden name, rename into place, then delete.
        temp = target.with_name(f".{target.name}.moving")
        shutil.copy2(source, temp)
        os.replace(temp, target)
        source.unlink()
    return target


def dispose(source: Path, rel: str, action: str, target_root: Path | None, reason: str = "") -> str:
    """Apply `action` ("keep", "archive", "delete", "quarantine"); returns what was done.
    `target_root` is the archive or quarantine dir, needed by those two actions."""
    if action == "keep":
        return "kept"
    if action == "delete":
        source.unlink(missing_ok=True)
        return "deleted"
    if target_root is None:
        raise ValueError(f"{action} needs a target folder")
    target = move_into(source, target_root, rel)
    if action == "quarantine":
        note = target.with_name(target.name + ".reason.txt")
        write_atomic(note, (reason.rstrip() + "\n").encode("utf-8", "surrogateescape"))
    return f"{'archived' if action == 'archive' else 'quarantined'}: {target}"
