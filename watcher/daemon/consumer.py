"""`hotfolder work`: the huey consumer with process workers, each holding a warm converter."""

from __future__ import annotations

import signal

import structlog
from huey.consumer import Consumer
from huey.consumer import Worker as HueyWorker

from watcher.backends.doorbell import Doorbell
from watcher.daemon.processes import die_with_parent
from watcher.daemon.recovery import WorkerGuard
from watcher.daemon.sdnotify import Notifier
from watcher.daemon.worker import Worker
from watcher.queue import build_queue
from watcher.settings import Settings

log = structlog.get_logger("hotfolder.work")


def run_work(settings: Settings) -> int:
    """Consume until SIGINT or SIGTERM, both graceful: running jobs finish within
    `workers.shutdown_timeout`, then are interrupted and put back in the queue."""
    # Imported once here so every forked worker starts with docling already loaded.
    import docling.document_converter  # noqa: F401

    queue = build_queue(settings)
    queue.serve(Worker(settings, queue))
    consumer = queue.huey.create_consumer(
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
        max_tasks=settings.workers.max_tasks_per_worker or None,
    )
    # Workers ignore SIGINT (the graceful signal) and raise on SIGTERM, so huey's parent
    # interrupts them with SIGTERM after the timeout. For the parent itself SIGTERM (what
    # systemd sends) must be graceful too; `KillMode=mixed` keeps it away from the workers.
    consumer._signal_actions[signal.SIGTERM] = (False, True)
    bind_children(consumer)
    bell = getattr(queue.huey, "bell", None)
    if bell is not None:
        answer_the_bell(consumer, bell)
    notifier = Notifier()
    announce_stop(consumer, notifier, bell)
    guard = WorkerGuard(settings, queue, consumer, notifier)
    guard.install()
    guard.recover_stale()
    log.info("work.started", workers=settings.worker_count, queue=queue.depth())
    try:
        consumer.run()
    finally:
        guard.heartbeat.stop()
    log.info("work.stopped")
    return 0


def bind_children(consumer: Consumer) -> None:
    """Workers and the scheduler die with the consumer: orphans of a SIGKILLed consumer
    would go on taking jobs unsupervised. A job cut short this way is recovered by the
    next consumer or the reconciler (its file lock is released with the process)."""
    init_child = consumer.environment.init_child

    def init_bound_child(process: object) -> None:
        die_with_parent(signal.SIGKILL)
        init_child(process)

    consumer.environment.init_child = init_bound_child  # type: ignore[method-assign]


def answer_the_bell(consumer: Consumer, bell: Doorbell) -> None:
    """An idle worker waits for the doorbell (a task enqueued, or a stop) rather than
    sleeping through its poll interval; with no ring it polls as huey would. For the
    workers huey has made (not yet started) and those it makes later."""

    def answering(worker: HueyWorker) -> HueyWorker:
        def doze() -> None:
            worker.delay = min(worker.delay, worker.max_delay)
            if bell.wait(worker.delay):
                worker.delay = worker.default_delay
            else:
                worker.delay *= worker.backoff

        worker.sleep = doze  # type: ignore[method-assign]
        return worker

    for worker, _ in consumer.worker_threads:
        answering(worker)
    create = consumer._create_worker
    consumer._create_worker = lambda: answering(create())  # type: ignore[method-assign]


def announce_stop(consumer: Consumer, notifier: Notifier, bell: Doorbell | None) -> None:
    """STOPPING=1 as soon as huey begins to stop (its graceful wait for running jobs can take
    workers.shutdown_timeout), not once it is done; idle workers are woken to see it."""
    stop = consumer.stop

    def stopping(graceful: bool = False) -> None:
        notifier.stopping()
        if bell is not None:
            consumer.stop_flag.set()
            bell.ring()
        stop(graceful)

    consumer.stop = stopping  # type: ignore[method-assign]
