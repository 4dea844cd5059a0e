"""Wakes the idle workers of this host when a task is enqueued on the SQLite queue, instead
of leaving the task until their next poll (up to `workers.poll_max_delay`).

The bell is a file in the state dir: ringing touches it, and each idle worker waits on an
inotify watch of it. inotify goes through the file system, so it reaches workers in other
systemd units (each with its own network namespace and /tmp), and no ring is lost between a
worker's empty dequeue and its wait: the watch is in place from its first wait on, and the
kernel queues the event. A worker that misses a ring anyway (the state dir on a file
system without inotify) still polls, as before.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
from pathlib import Path

IN_ATTRIB = 0x00000004
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class Doorbell:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None  # the inotify fd, opened in the process that waits

    def ring(self) -> None:
        """Wake every worker waiting on this bell (one `utime`: cheap enough per enqueue)."""
        try:
            os.utime(self.path)
        except FileNotFoundError:
            self.create()  # nobody waits yet: a worker's first wait creates it too
        except OSError:
            pass  # best effort: the workers still poll

    def wait(self, timeout: float) -> bool:
        """Until a ring or `timeout` seconds; True if rung."""
        if self.fd is None:
            self.fd = self.watch()
        if self.fd < 0:
            select.select([], [], [], timeout)
            return False
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return False
        try:
            while os.read(self.fd, 4096):  # every ring since the last wait: one wake-up
                pass
        except BlockingIOError:
            pass
        return True

    def watch(self) -> int:
        self.create()
        fd = LIBC.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            return -1
        if LIBC.inotify_add_watch(fd, os.fsencode(self.path), IN_ATTRIB) < 0:
            os.close(fd)
            return -1
        return int(fd)

    def create(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o666))
        except OSError:
            pass
