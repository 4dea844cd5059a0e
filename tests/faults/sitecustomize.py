"""Fault injection for the fault tests only: put this folder on PYTHONPATH and set
HOTFOLDER_FAULTS to rules like "hang:hang*;abort:crash*;slow:slow*:3;deaf:stuck*" (kind, file-name
glob, argument). Every hotfolder process then converts matching files with the fault."""

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
        for kind, pattern, *arg in RULES:
            if not fnmatch.fnmatch(source.name, pattern):
                continue
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


if RULES:
    install()
