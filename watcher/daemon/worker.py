"""What runs inside each consumer worker process: a warm converter and the task body."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import structlog
from huey.api import Task

from handlers.converter import DoclingConverter
from handlers.lifecycle import put_back
from handlers.pipeline import JobContext, process_file, process_part
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
                offer=self.offer_part if self.shares_parts() else None,
            )
        return self.contexts[name]

    def shares_parts(self) -> bool:
        """A long document is split only where another worker may take its parts."""
        return self.settings.worker_count > 1 or self.settings.queue.backend == "redis"

    def offer_part(self, rel: str, job_id: str, pages: tuple[int, int], priority: int) -> None:
        self.queue.offer_part(rel, job_id, pages, priority, self.settings.queue.enqueue_timeout)

    @contextmanager
    def running(self, rel: str) -> Iterator[JobContext]:
        """The context of `rel`'s jobs, with this process marked as running `rel`."""
        self.taken += 1
        if self.context is None:
            self.start()
        context = self.context_of(self.settings.profile_for(rel))
        try:
            inflight.mark_running(self.settings.workers_dir, rel)
            yield context
        finally:
            inflight.clear(self.settings.workers_dir, os.getpid())

    def run(self, rel: str, task: Task | None = None) -> None:
        priority = int(task.priority or 0) if task else 0
        retry_delay = self.services.policy.retry_delay(1)
        try:
            with self.running(rel) as context:
                retry_delay = context.policy.retry_delay(1)
                status = process_file(rel, context, priority)
        except OSError as exc:
            # The record itself could not be written (a full output or state disk):
            # nothing is lost, the file is simply tried again later.
            log.error("job.record_failed", source=rel, error=str(exc))
            self.requeue(rel, priority, retry_delay)
            return
        if status is None:
            self.requeue(rel, priority, BUSY_DELAY)
        elif status.state == "pending":
            self.requeue(rel, priority, context.policy.retry_delay(status.attempts))

    def run_part(self, rel: str, job_id: str, first: int, last: int) -> None:
        """A part of a long document. Nothing is put back if it cannot be done here (the
        record cannot be written, a stop): its job's coordinator takes it over."""
        try:
            with self.running(rel) as context:
                process_part(rel, job_id, (first, last), context)
        except OSError as exc:
            log.error("job.part_record_failed", source=rel, pages=[first, last], error=str(exc))

    def stop(self) -> None:
        """huey's shutdown hook in each worker process: after its last task before a
        recycle, exit with RECYCLED (huey catches Exception, not SystemExit)."""
        limit = self.settings.workers.max_tasks_per_worker
        if limit and self.taken >= limit:
            raise SystemExit(RECYCLED)

    def requeue(self, rel: str, priority: int, delay: float) -> None:
        self.queue.enqueue(rel, priority, self.settings.queue.enqueue_timeout, delay=delay)

    def interrupted(self, signal: str, task: Task) -> None:
        """A stop cut the job short: put it back and show it as pending again. A part is
        left to its job's coordinator (or to the next one, if the stop ends that too)."""
        rel = task.args[0]
        if self.queue.is_part(task):
            log.info("job.part_interrupted", source=rel, pages=list(task.args[2:4]))
            return
        try:
            self.queue.huey.enqueue(task)
        except Exception as exc:  # any backend's error (a locked file, Redis down): the
            # sidecar stays non-terminal, so the reconciler enqueues it again.
            log.error("job.requeue_failed", source=rel, error=str(exc))
        put_back(self.services.ledger, self.services.leases, rel)
        log.warning("job.interrupted", source=rel, requeued=True)
