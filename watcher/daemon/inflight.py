"""Which job each worker process is running: `state/workers/<pid>.json`, written at job start
and removed at its end. A file left behind names the job of a worker that died, and, when
the worker guard killed it, why: whoever recovers the job (the guard or the reconciler,
whichever comes first) records the same cause."""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from handlers.atomic import write_atomic


@dataclass(frozen=True)
class Running:
    pid: int
    source: str
    started: float  # time.time() of the job start
    killed: str | None = None  # why the worker guard killed the worker ("timeout", "memory")


def entry_file(workers_dir: Path, pid: int) -> Path:
    return workers_dir / f"{pid}.json"


def mark_running(workers_dir: Path, source: str) -> None:
    pid = os.getpid()
    record = {"pid": pid, "source": source, "started": time.time()}
    # Not fsynced: it speaks of a live process, and no process outlives a power cut.
    data = json.dumps(record, ensure_ascii=True).encode()
    write_atomic(entry_file(workers_dir, pid), data, durable=False)


def mark_killed(workers_dir: Path, entry: Running, reason: str) -> None:
    """Said before the kill, so the cause outlives the process."""
    record = {"pid": entry.pid, "source": entry.source, "started": entry.started, "killed": reason}
    write_atomic(entry_file(workers_dir, entry.pid), json.dumps(record, ensure_ascii=True).encode())


def lost_reason(workers_dir: Path, worker: str | None) -> str:
    """Why the worker `host:pid` of a job is gone: what the guard said when it killed it
    (a worker of this host), else "crashed"."""
    host, _, pid = (worker or "").rpartition(":")
    entry = read(workers_dir, int(pid)) if host == socket.gethostname() and pid.isdigit() else None
    return entry.killed if entry and entry.killed else "crashed"


def clear(workers_dir: Path, pid: int) -> None:
    entry_file(workers_dir, pid).unlink(missing_ok=True)


def read(workers_dir: Path, pid: int) -> Running | None:
    try:
        record = json.loads(entry_file(workers_dir, pid).read_bytes())
    except (FileNotFoundError, ValueError):
        return None
    return Running(record["pid"], record["source"], record["started"], record.get("killed"))


def all_running(workers_dir: Path) -> list[Running]:
    found = []
    for path in workers_dir.glob("*.json"):
        entry = read(workers_dir, int(path.stem)) if path.stem.isdigit() else None
        if entry:
            found.append(entry)
    return found
