"""Leases: one conversion of a file at a time, across processes (and, with Redis, across
hosts). The journey asks a `Leases` for a file's lease and never knows which kind it has.

Here, the one-host kind: a lock on the one byte of one file in the local state dir that a
source path's key names, an open file description lock. Like an flock, the kernel drops it
when its holder dies, even by SIGKILL, so a free lease on a `processing` job proves its
worker is gone, and such a lease cannot be lost while its holder lives. One file for every
path: taking a new file in creates no lock file, and none is left behind.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import struct
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

from handlers.atomic import open_in_folder


class Lease(Protocol):
    def held(self) -> bool:
        """Still ours, and for long enough to write the result (a lease that can expire is
        renewed here): checked before a job's outputs and record are written."""
        ...

    @property
    def lost(self) -> bool:
        """Known to be someone else's now (checked at each progress point)."""
        ...


class Leases(Protocol):
    def hold(self, rel: str) -> AbstractContextManager[Lease | None]:
        """The lease of `rel` while the block runs, or None at once if another holds it."""
        ...

    def lead(self) -> bool:
        """Whether this process may run the reconciler's pass now (one at a time)."""
        ...

    def request_cancel(self, rel: str, job_id: str) -> None: ...

    def cancel_requested(self, rel: str, job_id: str) -> bool: ...

    def clear_cancel(self, rel: str) -> None: ...


def key_of(rel: str) -> str:
    return hashlib.sha256(rel.encode("utf-8", "surrogateescape")).hexdigest()[:24]


def byte_of(rel: str) -> int:
    """The byte of the leases file that stands for `rel`: 60 bits of its key (should two
    paths ever share one, one of them waits while the other converts)."""
    return int(key_of(rel)[:15], 16)


def lock_byte(fd: int, offset: int, kind: int) -> bool:
    """Take (F_WRLCK) or let go of (F_UNLCK) one byte without waiting, as an open file
    description lock (`struct flock`: type, whence, start, length, pid 0)."""
    request = struct.pack("hhqqi4x", kind, os.SEEK_SET, offset, 1, 0)
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, request)
    except (BlockingIOError, PermissionError):  # EAGAIN or EACCES: another holds it
        return False
    return True


class KernelLease:
    """A lock the kernel keeps: held until released or its holder dies."""

    def held(self) -> bool:
        return True

    @property
    def lost(self) -> bool:
        return False


class FileLeases:
    """Leases as byte locks on `locks_dir/leases`, for the processes of one host."""

    def __init__(self, locks_dir: Path) -> None:
        self.locks_dir = locks_dir
        self.path = locks_dir / "leases"

    @contextmanager
    def hold(self, rel: str) -> Iterator[Lease | None]:
        # A descriptor per hold: two holds in one process exclude each other, as flocks did.
        fd = open_in_folder(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            offset = byte_of(rel)
            if not lock_byte(fd, offset, fcntl.F_WRLCK):
                yield None
                return
            try:
                yield KernelLease()
            finally:
                lock_byte(fd, offset, fcntl.F_UNLCK)
        finally:
            os.close(fd)

    def lead(self) -> bool:
        return True  # every watcher of the host reconciles; the per-file leases keep it safe

    def cancel_file(self, rel: str) -> Path:
        return self.locks_dir / f"{key_of(rel)}.cancel"

    def request_cancel(self, rel: str, job_id: str) -> None:
        """Ask the worker converting job `job_id` of `rel` to stop at its next progress point."""
        self.locks_dir.mkdir(parents=True, exist_ok=True)
        self.cancel_file(rel).write_text(job_id)

    def cancel_requested(self, rel: str, job_id: str) -> bool:
        """A request for this very job: one left over from an earlier job of `rel` (a request
        that arrived as that job ended) does not cancel later ones."""
        try:
            return self.cancel_file(rel).read_text() == job_id
        except FileNotFoundError:
            return False

    def clear_cancel(self, rel: str) -> None:
        self.cancel_file(rel).unlink(missing_ok=True)


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
