"""`hotfolder run`: the watcher and the workers as two child processes under one parent."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

import structlog

from watcher.daemon.processes import die_with_parent
from watcher.settings import Settings

log = structlog.get_logger("hotfolder.run")


def stop_with_parent() -> None:
    """In the child before exec: a graceful stop if the parent dies, even by SIGKILL."""
    die_with_parent(signal.SIGTERM)


def spawn(config_file: Path, command: str) -> subprocess.Popen[bytes]:
    # A new session keeps a terminal's Ctrl-C away from the children; the parent
    # forwards exactly one SIGTERM each, so huey never sees a second (interrupting) one.
    return subprocess.Popen(
        [sys.executable, "-m", "watcher.cli", "--config", str(config_file), command],
        start_new_session=True,
        preexec_fn=stop_with_parent,
    )


def run_all(settings: Settings) -> int:
    """Run both until a stop signal (exit 0) or until one of them exits (exit 1)."""
    assert settings.config_file is not None
    stopping = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    children = {name: spawn(settings.config_file, name) for name in ("work", "watch")}
    log.info("run.started", pids={name: child.pid for name, child in children.items()})
    code = 0
    # A stop signal ends the wait at once; a child's exit is seen within a second.
    while not stopping.wait(1.0):
        dead = [name for name, child in children.items() if child.poll() is not None]
        if dead:
            log.error("run.child_exited", child=dead[0], code=children[dead[0]].returncode)
            code = 1
            break
    stop_children(children, settings.workers.shutdown_timeout + 10)
    log.info("run.stopped", code=code)
    return code


def stop_children(children: dict[str, subprocess.Popen[bytes]], timeout: float) -> None:
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for name, child in children.items():
        try:
            child.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            log.error("run.child_killed", child=name)
            child.kill()
            child.wait()
