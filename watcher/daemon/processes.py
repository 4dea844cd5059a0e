"""Child processes: the ones that must not outlive their parent (a parent killed with
SIGKILL cannot clean up, and an orphaned worker would go on taking jobs unsupervised), and
how much memory one holds."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

PR_SET_PDEATHSIG = 1
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def die_with_parent(signum: int) -> None:
    """Ask the kernel to send `signum` to this process when its parent dies."""
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signum)
    if os.getppid() != parent:  # the parent died before the request was in place
        os.kill(os.getpid(), signum)


def resident_mb(pid: int) -> float:
    """Resident memory of `pid` in MiB (0 if it is gone)."""
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * PAGE_SIZE / 2**20
