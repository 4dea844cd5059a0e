"""What the commands share on a terminal: the progress bar of `status --watch`, `enqueue`
and `convert`, counted nouns, and times in the local zone."""

from __future__ import annotations

import sys
from datetime import datetime


def reader_gone() -> bool:
    """Whether whoever read stdout has gone (`status --watch | head`): see TolerantStdout."""
    return bool(getattr(sys.stdout, "gone", False))


def plural(count: int, noun: str) -> str:
    """`1 file`, `2 files`, `1 worker process`, `3 worker processes`."""
    if count == 1:
        return f"{count} {noun}"
    return f"{count} {noun}es" if noun.endswith(("s", "sh", "ch", "x")) else f"{count} {noun}s"


def local_time(stamp: object) -> str:
    """An ISO-8601 time stamp (UTC, as the status files keep them) in this machine's zone,
    to the second: `2026-12-01 04:05:06`; the zone is `local_zone()`."""
    if not stamp:
        return "-"
    moment = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def local_zone() -> str:
    return datetime.now().astimezone().strftime("%Z")


def bar(done: int | None, total: int | None, unit: str = "pages", width: int = 24) -> str:
    """`[######------------------]  25% 9/36 pages`"""
    fraction = min((done or 0) / total, 1.0) if total else 0.0
    filled = int(round(fraction * width))
    return (
        f"[{'#' * filled}{'-' * (width - filled)}] {int(fraction * 100):3d}% {done}/{total} {unit}"
    )


STATE_STYLES = {
    "pending": "yellow",
    "processing": "cyan",
    "completed": "green",
    "failed": "bold red",
    "cancelled": "dim",
}


def on_terminal() -> bool:
    """A person reads stdout: rich tables and a live view; a script gets plain text."""
    return sys.stdout.isatty()


def show(renderable: object) -> None:
    """Print a rich renderable on the terminal (soft-wrapped to its width)."""
    from rich.console import Console

    Console().print(renderable)
