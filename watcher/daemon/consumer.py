"""`hotfolder work`: huey's consumer with process workers, each holding a warm converter,
extended through huey's override points (worker class, environment, stop, health check)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import structlog
from huey.consumer import Consumer, ProcessEnvironment, WorkerRecycle
from huey.consumer import Worker as HueyWorker

from watcher.backends.doorbell import Doorbell
from watcher.daemon import inflight
from watcher.daemon.guard import WorkerGuard
from watcher.daemon.processes import die_with_parent
from watcher.daemon.sdnotify import Notifier
from watcher.daemon.worker import Worker
from watcher.services import Services, open_services
from watcher.settings import Settings

log = structlog.get_logger("hotfolder.work")
STOP_GRACE = 5.0  # seconds an interrupted worker gets to put its job back and exit


def run_work(settings: Settings) -> int:
    """Consume until SIGINT or SIGTERM, both graceful: running jobs finish within
    `workers.shutdown_timeout`, then are interrupted and put back in the queue."""
    # Offline machines must fail a model download at once instead of hanging on it; set
    # before docling is imported, as huggingface_hub reads it when it is imported.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Imported once here so every forked worker starts with docling already loaded.
    import docling.document_converter  # noqa: F401

    services = open_services(settings, daemon=True)
    worker = Worker(services)
    services.queue.serve(worker)
    consumer = HotfolderConsumer(services, Notifier(), worker)
    consumer.guard.recover_stale()
    try:
        consumer.run()
    finally:
        consumer.guard.heartbeat.stop()
    log.info("work.stopped")
    return 0


def queue_depth(services: Services) -> int | None:
    """For the start line only: a queue that cannot be reached now (Redis down) is waited
    for by the workers, as when it goes down later; it does not stop the start."""
    try:
        return services.queue.depth()
    except Exception as exc:  # the backend's own errors (redis-py's, sqlite3's)
        log.warning("work.queue_unreachable", error=str(exc))
        return None


class AnsweringWorker(HueyWorker):
    """An idle worker waits for the doorbell (a task enqueued, or a stop) rather than
    sleeping through its poll interval; with no bell (Redis blocks instead) it polls as
    huey would. After each task it asks `outgrown` whether to end for a fresh process
    (huey's own `max_tasks` counts tasks only)."""

    delay: float
    default_delay: float
    max_delay: float
    backoff: float
    task_count: int

    def __init__(self, *args: Any, outgrown: Callable[[], bool], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outgrown = outgrown

    def loop(self, now: Any = None) -> None:
        ran = self.task_count
        super().loop(now)
        if self.task_count > ran and self.outgrown():
            raise WorkerRecycle()

    def sleep(self) -> None:
        bell: Doorbell | None = getattr(self.huey, "bell", None)
        if bell is None:
            super().sleep()
            return
        self.delay = min(self.delay, self.max_delay)
        if bell.wait(self.delay):
            self.delay = self.default_delay
        else:
            self.delay *= self.backoff


class BoundProcessEnvironment(ProcessEnvironment):
    """Workers and the scheduler die with the consumer: orphans of a SIGKILLed consumer
    would go on taking jobs unsupervised. A job cut short this way is recovered by the
    next consumer or the reconciler (its lease is released with the process)."""

    def init_child(self, process: Any) -> None:
        die_with_parent(signal.SIGKILL)
        super().init_child(process)


class HotfolderConsumer(Consumer):
    worker_class = AnsweringWorker

    def __init__(self, services: Services, notifier: Notifier, worker: Worker) -> None:
        settings = self.settings = services.settings
        self.services = services
        self.notifier = notifier
        self.worker = worker
        super().__init__(
            services.queue.huey,
            workers=settings.worker_count,
            worker_type="process",
            initial_delay=0.1,
            backoff=1.15,
            max_delay=settings.workers.poll_max_delay,
            periodic=False,
            check_worker_health=True,
            health_check_interval=1,
            shutdown_timeout=settings.workers.shutdown_timeout,
            graceful_signal="INT",
        )
        # Workers ignore SIGINT (the graceful signal) and raise on SIGTERM, so huey's parent
        # interrupts them with SIGTERM after the timeout. For the parent itself SIGTERM (what
        # systemd sends) must be graceful too; `KillMode=mixed` keeps it away from the workers.
        self._signal_actions[signal.SIGTERM] = (False, True)
        self.guard = WorkerGuard(services, self, notifier)

    @property
    def bell(self) -> Doorbell | None:
        return getattr(self.huey, "bell", None)

    def _create_worker(self) -> AnsweringWorker:
        return AnsweringWorker(
            huey=self.huey,
            stop_flag=self.stop_flag,
            default_delay=self.default_delay,
            max_delay=self.max_delay,
            backoff=self.backoff,
            outgrown=self.worker.outgrown,
        )

    def get_environment(self, worker_type: str) -> ProcessEnvironment:
        return BoundProcessEnvironment(self._graceful_sig, self._interrupt_sig)

    def stop(self, graceful: bool = False) -> None:
        """STOPPING=1 as soon as huey begins to stop (its graceful wait for running jobs can
        take workers.shutdown_timeout), not once it is done; idle workers are woken to see it."""
        self.notifier.stopping()
        if graceful:
            self.say_what_stopping_waits_for()
        if self.bell is not None:
            self.stop_flag.set()
            self.bell.ring()
        super().stop(graceful)
        # A worker stuck in native code never sees huey's interrupt (a Python signal
        # handler runs between bytecodes): it is killed, and its job put back, so a stop
        # takes workers.shutdown_timeout and a few seconds, not forever.
        self.guard.kill_stuck(STOP_GRACE)

    def say_what_stopping_waits_for(self) -> None:
        running = [entry.source for entry in inflight.all_running(self.settings.workers_dir)]
        if not running:
            return
        log.info(
            "work.stopping",
            running=len(running),
            sources=running[:5],
            waiting_up_to_s=self.settings.workers.shutdown_timeout,
            hint=f"waiting for {len(running)} running job{'s' * (len(running) != 1)} to "
            "finish; Ctrl-C again "
            "(or a second SIGTERM) stops now and puts them back in the queue",
        )

    def start(self) -> None:
        """The first beat (the heartbeat `status` reads, READY for systemd) as soon as the
        workers are started, not at huey's first health check a second later: a job can
        complete before that, and `status` called the daemon not running meanwhile. Then
        the start line, once a stop signal is huey's to handle."""
        super().start()
        self.guard.beat()
        queue = queue_depth(self.services)
        log.info("work.started", workers=self.settings.worker_count, queue=queue)

    def loop(self, health_check_ts: float | None = None) -> float | None:
        """huey looks at its workers every `health_check_interval` (1 s); a worker that has
        ended (a recycle between jobs, or a death) is replaced within
        this loop's 0.1 s instead. Up to a second idle per recycle cost a burst of tiny
        files a quarter of its throughput."""
        ended = (not self.environment.is_alive(proc) for _, proc in self.worker_threads)
        if health_check_ts and any(ended):
            health_check_ts = time.monotonic() - self._health_check_interval  # due now
        result: float | None = super().loop(health_check_ts)
        return result

    def check_worker_health(self) -> bool:
        return self.guard.check(super().check_worker_health)
