"""`hotfolder run`: the watcher and the workers as two child processes under one parent."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
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
    claim = claim_state(settings.state_dir)
    if isinstance(claim, str):
        log.error(
            "run.already_running",
            holder=claim,
            state=str(settings.state_dir),
            hint="another `hotfolder run` uses these folders; stop it first",
        )
        return 1
    stopping = threading.Event()
    signals: list[int] = []

    def request_stop(signum: int, frame: FrameType | None) -> None:
        signals.append(signum)  # a second one: stop now (forwarded to the workers)
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
    stop_children(children, settings.workers.shutdown_timeout + 10, lambda: len(signals) > 1)
    log.info("run.stopped", code=code)
    return code


def claim_state(state_dir: Path) -> int | str:
    """One `run` per state folder: an flock on `state/run.lock` (the kernel drops it when
    this process dies, even by SIGKILL). Returns the descriptor that holds it, or the pid
    written by the `run` that holds it already."""
    lock = state_dir / "run.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
        os.close(fd)
        return f"pid {holder}"
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def stop_children(
    children: dict[str, subprocess.Popen[bytes]], timeout: float, now: Callable[[], bool]
) -> None:
    """SIGTERM to each child (graceful); once `now()` says a second stop signal came, a
    second SIGTERM to the workers, which puts their running jobs back in the queue at once."""
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    hurried = False
    for name, child in children.items():
        while child.poll() is None and time.monotonic() < deadline:
            if now() and not hurried and children["work"].poll() is None:
                children["work"].send_signal(signal.SIGTERM)
                hurried = True
            time.sleep(0.1)
        if child.poll() is None:
            log.error("run.child_killed", child=name)
            child.kill()
        child.wait()
