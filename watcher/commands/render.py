"""What the commands share on a terminal: the progress bar of `status --watch`, `enqueue`
and `convert`."""

from __future__ import annotations


def bar(done: int | None, total: int | None, unit: str = "pages", width: int = 24) -> str:
    """`[######------------------]  25% 9/36 pages`"""
    fraction = min((done or 0) / total, 1.0) if total else 0.0
    filled = int(round(fraction * width))
    return (
        f"[{'#' * filled}{'-' * (width - filled)}] {int(fraction * 100):3d}% {done}/{total} {unit}"
    )
