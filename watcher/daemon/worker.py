"""What runs inside each consumer worker process: a warm converter and the task body."""

from __future__ import annotations

import os
import socket

import structlog
from huey.api import Task

from handlers.converter import DoclingConverter
from handlers.lifecycle import put_back
from handlers.pipeline import JobContext, process_file
from watcher.daemon import inflight
from watcher.services import Services, job_policy
from watcher.settings import ProfileConfig

log = structlog.get_logger("hotfolder.worker")
# The exit status of a worker process that ends after workers.max_tasks_per_worker tasks,
# so the consumer tells a planned recycle from a death (huey logs both as "died").
RECYCLED = 75
BUSY_DELAY = 5.0  # seconds before a job whose file another worker holds is tried again


class Worker:
    """Built in the consumer before fork; `start` runs in each worker process after it."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.settings = services.settings
        self.queue = services.queue
        self.context: JobContext | None = None
        self.contexts: dict[str | None, JobContext] = {}  # by profile name
        self.taken = 0  # tasks this process has run

    def start(self) -> None:
        # Offline machines must fail a model download at once instead of hanging on it.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.context = self.context_of(None)
        log.info("worker.ready", pid=os.getpid())

    def context_of(self, profile: ProfileConfig | None) -> JobContext:
        """The context of the jobs of `profile` (None: the top level's settings), each with
        its warm converter, built on its first job."""
        name = profile.name if profile else None
        if name not in self.contexts:
            options = self.settings.conversion_options(self.settings.worker_count, profile)
            self.contexts[name] = JobContext(
                input_dir=self.settings.input_dir,
                ledger=self.services.ledger,
                leases=self.services.leases,
                scratch_dir=self.settings.scratch_dir,
                options=options,
                converter=DoclingConverter(options),
                policy=job_policy(self.settings, profile) if profile else self.services.policy,
                worker=f"{socket.gethostname()}:{os.getpid()}",
                profile=name,
            )
        return self.contexts[name]

    def run(self, rel: str, task: Task | None = None) -> None:
        self.taken += 1
        if self.context is None:
            self.start()
        context = self.context_of(self.settings.profile_for(rel))
        priority = int(task.priority or 0) if task else 0
        workers_dir = self.settings.workers_dir
        try:
            inflight.mark_running(workers_dir, rel)
            status = process_file(rel, context, priority)
        except OSError as exc:
            # The record itself could not be written (a full output or state disk):
            # nothing is lost, the file is simply tried again later.
            log.error("job.record_failed", source=rel, error=str(exc))
            self.requeue(rel, priority, context.policy.retry_delay(1))
            return
        finally:
            inflight.clear(workers_dir, os.getpid())
        if status is None:
            self.requeue(rel, priority, BUSY_DELAY)
        elif status.state == "pending":
            self.requeue(rel, priority, context.policy.retry_delay(status.attempts))

    def stop(self) -> None:
        """huey's shutdown hook in each worker process: after its last task before a
        recycle, exit with RECYCLED (huey catches Exception, not SystemExit)."""
        limit = self.settings.workers.max_tasks_per_worker
        if limit and self.taken >= limit:
            raise SystemExit(RECYCLED)

    def requeue(self, rel: str, priority: int, delay: float) -> None:
        self.queue.enqueue(rel, priority, self.settings.queue.enqueue_timeout, delay=delay)

    def interrupted(self, signal: str, task: Task) -> None:
        """A stop cut the job short: put it back and show it as pending again."""
        rel = task.args[0]
        try:
            self.queue.huey.enqueue(task)
        except Exception as exc:  # any backend's error (a locked file, Redis down): the
            # sidecar stays non-terminal, so the reconciler enqueues it again.
            log.error("job.requeue_failed", source=rel, error=str(exc))
        put_back(self.services.ledger, self.services.leases, rel)
        log.warning("job.interrupted", source=rel, requeued=True)
