"""Liveness of the daemon's processes: each main loop rewrites `state/heartbeats/<role>.json`
every few seconds (and, with Redis, a key every host can read); the operator commands read
them."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from handlers.atomic import write_atomic
from watcher.backends import Backend
from watcher.logs import Complaint
from watcher.settings import Settings

INTERVAL = 2.0  # seconds between beats
STALE = 10.0  # a heartbeat older than this means the process is gone or stuck


class Heartbeat:
    def __init__(self, settings: Settings, role: str, backend: Backend) -> None:
        self.backend = backend
        self.role = role
        self.path = settings.state_dir / "heartbeats" / f"{role}.json"
        self.trouble = Complaint("heartbeat.write_failed", role=role)
        self.started = time.time()
        self.last = 0.0

    def beat(self, **details: object) -> None:
        now = time.time()
        if now - self.last < INTERVAL:
            return
        self.last = now
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": self.started,
            "updated": now,
            **details,
        }
        try:
            # Liveness only, rewritten every few seconds: not worth an fsync.
            write_atomic(self.path, json.dumps(record).encode(), durable=False)
        except OSError as exc:  # a full state disk: `status` shows it as stale meanwhile
            self.trouble.report(exc)
        else:
            self.trouble.resolved()
        self.backend.publish_alive(self.role, record)

    def stop(self) -> None:
        self.path.unlink(missing_ok=True)


def read_heartbeat(state_dir: Path, role: str) -> dict[str, object]:
    """The last beat of `role` with `alive` and `age_s` added; alive False if none."""
    try:
        record = json.loads((state_dir / "heartbeats" / f"{role}.json").read_bytes())
    except (FileNotFoundError, ValueError):
        return {"alive": False, "age_s": None}
    age = time.time() - float(record["updated"])
    alive = age < STALE and (record["host"] != socket.gethostname() or pid_exists(record["pid"]))
    return {**record, "alive": alive, "age_s": round(age, 1)}


def pid_exists(pid: object) -> bool:
    try:
        os.kill(int(str(pid)), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
