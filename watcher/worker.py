"""What runs inside each consumer worker process: a warm converter and the task body."""

from __future__ import annotations

import os
import socket
import sqlite3

import structlog
from huey import Huey
from huey.api import Task

from handlers.converter import build_converter
from handlers.pipeline import JobContext, process_file
from handlers.sidecar import read_status, sidecar_path, write_status
from watcher.settings import Settings

log = structlog.get_logger("hotfolder.worker")


class Worker:
    """Built in the consumer before fork; `start` runs in each worker process after it."""

    def __init__(self, settings: Settings, huey: Huey) -> None:
        self.settings = settings
        self.huey = huey
        self.context: JobContext | None = None

    def start(self) -> None:
        # Offline machines must fail a model download at once instead of hanging on it.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        options = self.settings.conversion.options()
        self.context = JobContext(
            input_dir=self.settings.input_dir,
            output_dir=self.settings.output_dir,
            options=options,
            converter=build_converter(options),
            worker=f"{socket.gethostname()}:{os.getpid()}",
        )
        log.info("worker.ready", pid=os.getpid())

    def run(self, rel: str, task: Task | None = None) -> None:
        if self.context is None:
            self.start()
        assert self.context is not None
        process_file(rel, self.context, priority=int(task.priority or 0) if task else 0)

    def interrupted(self, signal: str, task: Task) -> None:
        """A stop cut the job short: put it back and show it as pending again."""
        rel = task.args[0]
        try:
            self.huey.enqueue(task)
        except sqlite3.OperationalError as exc:
            # The sidecar stays non-terminal, so the next startup scan enqueues it again.
            log.error("job.requeue_failed", source=rel, error=str(exc))
        sidecar = sidecar_path(self.settings.output_dir, rel)
        status = read_status(sidecar)
        if status and status.state == "processing":
            status.state, status.progress, status.worker = "pending", 0, None
            write_status(sidecar, status)
        log.warning("job.interrupted", source=rel, requeued=True)
