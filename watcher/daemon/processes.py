"""Child processes that must not outlive their parent (a parent killed with SIGKILL cannot
clean up, and an orphaned worker would go on taking jobs unsupervised)."""

from __future__ import annotations

import ctypes
import os

PR_SET_PDEATHSIG = 1


def die_with_parent(signum: int) -> None:
    """Ask the kernel to send `signum` to this process when its parent dies."""
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signum)
    if os.getppid() != parent:  # the parent died before the request was in place
        os.kill(os.getpid(), signum)
