"""`hotfolder watch`: the observer, the settle tracker and the startup scan, supervised."""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType

import structlog

from handlers.lease import Leases
from watcher.backends.redis import open_leases
from watcher.commands.control import FINISHED, purge
from watcher.daemon.ignore import IgnoreRules
from watcher.daemon.intake import Intake
from watcher.daemon.observer import Handoff, SettleTracker, start_observer
from watcher.daemon.recovery import sweep
from watcher.daemon.sdnotify import Notifier
from watcher.daemon.skips import Skips
from watcher.heartbeat import Heartbeat
from watcher.queue import Queue, build_queue
from watcher.settings import Settings, open_index, open_ledger

log = structlog.get_logger("hotfolder.watch")


def run_watch(settings: Settings) -> int:
    """Watch until SIGINT/SIGTERM (exit 0) or until a thread dies (exit 1, systemd restarts)."""
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    queue = build_queue(settings)
    skips = Skips()
    intake = Intake(settings, queue, open_ledger(settings), skips)
    rules = IgnoreRules.of(settings)
    tracker = SettleTracker(
        settings.watch.settle_seconds,
        rules,
        intake.submit,
        skips,
        closed_settle=settings.watch.closed_settle_seconds,
    )
    tracker_thread = threading.Thread(target=tracker.run, args=(stop,), name="settle", daemon=True)
    tracker_thread.start()
    observer = start_observer(settings.watch, settings.input_dir, Handoff(tracker, rules))
    scanned = threading.Event()  # set once the start-up scan and sweep are done
    reconciler = threading.Thread(
        target=reconcile_forever,
        args=(settings, queue, open_leases(settings), tracker, stop, scanned),
        name="reconcile",
        daemon=True,
    )
    reconciler.start()
    log.info("watch.started", input=str(settings.input_dir), observer=type(observer).__name__)
    threads = {"observer": observer, "settle": tracker_thread, "reconcile": reconciler}
    heartbeat = Heartbeat(settings, "watch")
    notifier = Notifier()
    index = open_index(settings)
    try:
        while not stop.wait(0.5):
            heartbeat.beat(observer=type(observer).__name__, tracked=len(tracker.tracked))
            dead = [name for name, thread in threads.items() if not thread.is_alive()]
            if dead and not stop.is_set():  # threads end on their own once a stop is asked
                log.error("watch.thread_died", thread=dead[0])
                return 1
            notifier.alive()
            if scanned.is_set():  # READY only once the start-up scan is done
                notifier.report(index.counts)
    finally:
        notifier.stopping()
        stop.set()
        observer.stop()
        for thread in threads.values():
            thread.join(timeout=5)
        heartbeat.stop()
    log.info("watch.stopped")
    return 0


def reconcile_forever(
    settings: Settings,
    queue: Queue,
    leases: Leases,
    tracker: SettleTracker,
    stop: threading.Event,
    scanned: threading.Event,
) -> None:
    """At start and every `jobs.reconcile_interval`: rescan the input tree (through the
    settle check, since a file may be mid-copy) and resync the index; and, if this watcher
    leads (one at a time across hosts), sweep the unfinished sidecars."""
    while not stop.is_set():
        started = time.monotonic()
        leading = leases.lead()
        try:
            tracker.notify(settings.input_dir, frozenset(queue.queued_sources()))
        except Exception as exc:  # the queue cannot be read (Redis down): rescan next pass
            log.warning("reconcile.queue_unreadable", error=str(exc))
            leading = False
        tracker.wait_drained(stop)
        sweep(settings, queue, leases, leading)
        scanned.set()
        if leading and settings.jobs.retention_days:
            forgotten, _ = purge(
                settings, settings.jobs.retention_days * 86400, FINISHED, False, False
            )
            if forgotten:
                log.info("retention.purged", jobs=len(forgotten))
        log.info("reconcile.pass", seconds=round(time.monotonic() - started, 3), leading=leading)
        stop.wait(settings.jobs.reconcile_interval)
