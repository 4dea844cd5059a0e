"""One conversion of a file at a time, across processes: an flock per source path.

The kernel drops the lock when its holder dies, even by SIGKILL, so a free lock on a
`processing` job proves its worker is gone. Lock files live on the local state disk.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def lock_file(locks_dir: Path, rel: str) -> Path:
    key = hashlib.sha256(rel.encode("utf-8", "surrogateescape")).hexdigest()[:24]
    return locks_dir / f"{key}.lock"


@contextmanager
def job_lock(locks_dir: Path, rel: str) -> Iterator[bool]:
    """Yield True while holding the lock for `rel`, or False at once if another holds it."""
    locks_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file(locks_dir, rel), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextmanager
def exclusive(lock: Path) -> Iterator[None]:
    """Hold an flock on `lock`, waiting for it: one process at a time repairs a database."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def cancel_file(locks_dir: Path, rel: str) -> Path:
    return lock_file(locks_dir, rel).with_suffix(".cancel")


def request_cancel(locks_dir: Path, rel: str, job_id: str) -> None:
    """Ask the worker converting job `job_id` of `rel` to stop at its next progress point."""
    locks_dir.mkdir(parents=True, exist_ok=True)
    cancel_file(locks_dir, rel).write_text(job_id)


def cancel_requested(locks_dir: Path, rel: str, job_id: str) -> bool:
    """A request for this very job: one left over from an earlier job of `rel` (a request
    that arrived as that job ended) does not cancel later ones."""
    try:
        return cancel_file(locks_dir, rel).read_text() == job_id
    except FileNotFoundError:
        return False


def clear_cancel(locks_dir: Path, rel: str) -> None:
    cancel_file(locks_dir, rel).unlink(missing_ok=True)
