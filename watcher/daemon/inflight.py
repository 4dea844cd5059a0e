"""Which job each worker process is running: `state/workers/<pid>.json`, written at job start
and removed at its end. A file left behind names the job of a worker that died."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from handlers.atomic import write_atomic


@dataclass(frozen=True)
class Running:
    pid: int
    source: str
    started: float  # time.time() of the job start


def entry_file(workers_dir: Path, pid: int) -> Path:
    return workers_dir / f"{pid}.json"


def mark_running(workers_dir: Path, source: str) -> None:
    pid = os.getpid()
    record = {"pid": pid, "source": source, "started": time.time()}
    write_atomic(entry_file(workers_dir, pid), json.dumps(record, ensure_ascii=True).encode())


def clear(workers_dir: Path, pid: int) -> None:
    entry_file(workers_dir, pid).unlink(missing_ok=True)


def read(workers_dir: Path, pid: int) -> Running | None:
    try:
        record = json.loads(entry_file(workers_dir, pid).read_bytes())
    except (FileNotFoundError, ValueError):
        return None
    return Running(record["pid"], record["source"], record["started"])


def all_running(workers_dir: Path) -> list[Running]:
    found = []
    for path in workers_dir.glob("*.json"):
        entry = read(workers_dir, int(path.stem)) if path.stem.isdigit() else None
        if entry:
            found.append(entry)
    return found
