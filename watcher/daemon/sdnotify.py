"""systemd's notify protocol (sd_notify), spoken over its documented datagram socket:
READY=1, STATUS=..., WATCHDOG=1 and STOPPING=1. Without NOTIFY_SOCKET (`make run`, a
terminal) every call does nothing."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping

from handlers.sidecar import STATES

STATUS_INTERVAL = 2.0  # seconds between STATUS updates


class Notifier:
    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        address = environ.get("NOTIFY_SOCKET", "")
        # "@name" is a socket in the abstract namespace.
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.socket = (
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            if self.address
            else None
        )
        self.interval = watchdog_interval(environ)
        self.last_ping = 0.0
        self.last_status = ""
        self.last_status_at = 0.0
        self.is_ready = False

    def send(self, *fields: str) -> None:
        if self.socket is None:
            return
        try:
            self.socket.sendto("\n".join(fields).encode(), self.address)
        except OSError:
            pass  # systemd gone, or its queue full: never a reason to stop working

    def due(self) -> bool:
        """Time for a STATUS update (never without systemd: nothing is then computed)."""
        now = time.monotonic()
        if self.socket is None or now - self.last_status_at < STATUS_INTERVAL:
            return False
        self.last_status_at = now
        return True

    def report(self, counts: Callable[[], Mapping[str, int]]) -> None:
        """READY with a STATUS line the first time, STATUS updates after; `counts` (jobs by
        state) is only called when an update is due."""
        if self.due():
            text = summary(counts())
            if self.is_ready:
                self.status(text)
            else:
                self.ready(text)

    def ready(self, status: str) -> None:
        """Once: the process does what it is for (the start-up scan is done, the workers
        take jobs)."""
        if not self.is_ready:
            self.is_ready = True
            self.last_status = status
            self.send("READY=1", f"STATUS={status}")

    def status(self, text: str) -> None:
        if text != self.last_status:
            self.last_status = text
            self.send(f"STATUS={text}")

    def alive(self) -> None:
        """A keep-alive from the main loop, at half of WatchdogSec: a loop that hangs stops
        sending them, and systemd restarts the service."""
        now = time.monotonic()
        if self.interval and now - self.last_ping >= self.interval:
            self.last_ping = now
            self.send("WATCHDOG=1")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")


def watchdog_interval(environ: Mapping[str, str]) -> float:
    """Half of WatchdogSec (systemd passes it as WATCHDOG_USEC), if it is meant for us."""
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or (pid.isdigit() and int(pid) != os.getpid()):
        return 0.0
    return int(usec) / 2e6


def summary(counts: Mapping[str, int]) -> str:
    """`3 pending, 2 processing, 118 completed, 1 failed` (states with no jobs left out)."""
    parts = [f"{counts[state]} {state}" for state in STATES if counts.get(state)]
    return ", ".join(parts) or "no jobs yet"
