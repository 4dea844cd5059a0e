"""Fault injection for the fault tests only: put this folder on PYTHONPATH and set
HOTFOLDER_FAULTS to rules like "hang:hang*;abort:crash*;slow:slow*:3;deaf:stuck*" (kind, file-name
glob, argument, and optionally the first page of the one part of a long document it is for).
Every hotfolder process then converts matching files with the fault. "stall" sleeps like
"slow", but only in the first process to get there, which writes its pid to the file
`$HOTFOLDER_FAULT_MARKS/stall-<glob>-<page>` (so a test knows whom to kill)."""

from __future__ import annotations

import ctypes
import fnmatch
import os
import signal
import time

RULES = [rule.split(":") for rule in os.environ.get("HOTFOLDER_FAULTS", "").split(";") if rule]


def install() -> None:
    import handlers.converter as conv

    real_convert = conv.convert

    def convert(converter, source, *args, **kwargs):  # type: ignore[no-untyped-def]
        pages = args[3] if len(args) > 3 else kwargs.get("page_range")
        for kind, pattern, *arg in RULES:
            if not fnmatch.fnmatch(source.name, pattern):
                continue
            if len(arg) > 1 and (pages is None or pages[0] != int(arg[1])):
                continue
            if kind == "stall" and first_here(f"stall-{pattern}-{arg[1] if len(arg) > 1 else ''}"):
                time.sleep(float(arg[0]))
            if kind == "hang":
                ctypes.CDLL(None).sleep(3600)  # stuck in native code, deaf to Python
            elif kind == "deaf":  # stuck in native code that no signal brings back
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
                ctypes.CDLL(None).sleep(3600)
            elif kind == "abort":
                os.abort()  # SIGABRT, as a crashing native library would
            elif kind == "slow":
                time.sleep(float(arg[0]))
        return real_convert(converter, source, *args, **kwargs)

    conv.convert = convert


def first_here(mark: str) -> bool:
    try:
        fd = os.open(
            os.path.join(os.environ["HOTFOLDER_FAULT_MARKS"], mark),
            os.O_WRONLY | os.O_CREAT | os.O_EXCL,
        )
    except FileExistsError:
        return False
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


if RULES:
    install()
