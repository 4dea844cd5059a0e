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
from watcher.daemon.processes import resident_mb
from watcher.services import Services, job_policy
from watcher.settings import ProfileConfig

log = structlog.get_logger("hotfolder.worker")
# The exit status of a worker process replaced between jobs (it grew past
# workers.recycle_memory_mb, or ran workers.max_tasks_per_worker jobs), so the consumer tells
# a planned recycle from a death (huey logs both as "died").
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
        self.recycling = False  # this process ends after its current task
        # The top level's converter, built before fork: every worker process, and every
        # one that replaces a recycled worker, starts with it (building one takes 0.13 s,
        # and a worker is replaced when it outgrows its memory or task limit).
        options = self.settings.conversion_options(self.settings.worker_count, None)
        self.converter = DoclingConverter(options)

    def start(self) -> None:
        self.context = self.context_of(None)
        log.info("worker.ready", pid=os.getpid())

    def context_of(self, profile: ProfileConfig | None) -> JobContext:
        """The context of the jobs of `profile` (None: the top level's settings), each with
        its warm converter: the top level's built before fork, a profile's on its first job."""
        name = profile.name if profile else None
        if name not in self.contexts:
            converter = self.converter
            if profile is not None:
                workers = self.settings.worker_count
                converter = DoclingConverter(self.settings.conversion_options(workers, profile))
            self.contexts[name] = JobContext(
                input_dir=self.settings.input_dir,
                ledger=self.services.ledger,
                leases=self.services.leases,
                scratch_dir=self.settings.scratch_dir,
                options=converter.options,
                converter=converter,
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

    def outgrown(self) -> bool:
        """Asked between tasks: whether this process should be replaced by a fresh one, as
        it has grown past `workers.recycle_memory_mb` (a leak, or what a large document
        left behind) or run `workers.max_tasks_per_worker` tasks. Memory is what the limit
        is for; a count alone replaces healthy workers as often as leaking ones."""
        if self.recycling:
            return True
        tasks = self.settings.workers.max_tasks_per_worker
        grown_to = resident_mb(os.getpid())
        if (limit := self.settings.recycle_mb) and grown_to > limit:
            reason = f"resident memory {grown_to:.0f} MiB, over {limit} MiB"
        elif tasks and self.taken >= tasks:
            reason = f"{self.taken} tasks run"
        else:
            return False
        log.info("worker.recycling", pid=os.getpid(), reason=reason, tasks=self.taken)
        self.recycling = True
        return True

    def stop(self) -> None:
        """huey's shutdown hook in each worker process: after its last task before a
        recycle, exit with RECYCLED (huey catches Exception, not SystemExit)."""
        if self.recycling:
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
