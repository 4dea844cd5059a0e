"""Paths the watcher passes over (links, FIFOs, devices, unreadable folders, errors): one
log line each, however often a rescan meets them again, and never a dead thread."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import structlog

log = structlog.get_logger("hotfolder.watch")
REMEMBERED = 10_000  # paths kept before the memory starts afresh


class Skips:
    def __init__(self) -> None:
        self.seen: set[str] = set()

    def note(self, path: Path | str, reason: str, **details: object) -> bool:
        """Log `watch.skipped` for `path` unless it was logged already (for whatever
        reason); returns whether it was logged."""
        shown = os.fsdecode(path)
        if shown in self.seen:
            return False
        if len(self.seen) >= REMEMBERED:
            self.seen.clear()
        self.seen.add(shown)
        log.warning("watch.skipped", path=shown, reason=reason, **details)
        return True

    def lstat(self, path: Path) -> os.stat_result | None:
        """The lstat of `path` (a link is never followed); None if it is gone, or cannot be
        looked at (logged once)."""
        try:
            return os.lstat(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self.note(path, "unreadable", error=exc.strerror)
            return None

    def walk_error(self, exc: OSError) -> None:
        """os.walk's onerror: a folder that cannot be listed."""
        self.note(exc.filename or "?", "unreadable_folder", error=exc.strerror)


def kind_of(mode: int) -> str:
    """`file`, `folder`, or what else sits at a path (`symlink`, `fifo`, `socket`, ...)."""
    for test, name in (
        (stat.S_ISREG, "file"),
        (stat.S_ISDIR, "folder"),
        (stat.S_ISLNK, "symlink"),
        (stat.S_ISFIFO, "fifo"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character_device"),
        (stat.S_ISBLK, "block_device"),
    ):
        if test(mode):
            return name
    return "special_file"
