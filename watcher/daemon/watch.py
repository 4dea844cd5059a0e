"""`hotfolder watch`: the observer, the settle tracker and the startup scan, supervised."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import structlog

from watcher.daemon.deliveries import Deliverer
from watcher.daemon.ignore import IgnoreRules
from watcher.daemon.intake import Intake
from watcher.daemon.metrics import serve_metrics
from watcher.daemon.observer import Handoff, Lookout, LostEvents, SettleTracker
from watcher.daemon.reconcile import reconcile_forever
from watcher.daemon.sdnotify import Notifier
from watcher.daemon.skips import Skips
from watcher.heartbeat import Heartbeat
from watcher.services import Services, open_services
from watcher.settings import Settings

log = structlog.get_logger("hotfolder.watch")


def start_reporting(services: Services, stop: threading.Event) -> dict[str, threading.Thread]:
    """The hook deliverer and the metrics writer, where configured."""
    started: dict[str, threading.Thread] = {}
    hooks, metrics = services.settings.hooks, services.settings.metrics
    if hooks.command or hooks.webhook:
        deliverer = Deliverer(services)
        started["hooks"] = threading.Thread(target=deliverer.run, args=(stop,), name="hooks")
    if metrics.textfile or metrics.listen:
        started["metrics"] = threading.Thread(
            target=serve_metrics, args=(services, stop), name="metrics"
        )
    for thread in started.values():
        thread.daemon = True
        thread.start()
    return started


def run_watch(settings: Settings) -> int:
    """Watch until SIGINT/SIGTERM (exit 0) or until a thread dies (exit 1, systemd restarts)."""
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    services = open_services(settings, daemon=True)
    skips = Skips()
    intake = Intake(services, skips)
    rules = IgnoreRules.of(settings)
    tracker = SettleTracker(
        settings.watch.settle_seconds,
        rules,
        intake.submit,
        skips,
        closed_settle=settings.watch.closed_settle_seconds,
        group=intake.together,
    )
    tracker_thread = threading.Thread(target=tracker.run, args=(stop,), name="settle", daemon=True)
    tracker_thread.start()
    lost = threading.Event()  # file events were dropped: the reconciler rescans at once
    losses = LostEvents(lost.set).install()
    lookout = Lookout(
        settings.watch,
        settings.input_dir,
        Handoff(tracker, rules),
        rescan=lambda: tracker.offer(settings.input_dir),
    )
    scanned = threading.Event()  # set once the start-up scan and sweep are done
    reconciler = threading.Thread(
        target=reconcile_forever,
        args=(services, tracker, stop, scanned, lost),
        name="reconcile",
        daemon=True,
    )
    reconciler.start()
    observer = type(lookout.observer).__name__
    log.info("watch.started", input=str(settings.input_dir), observer=observer)
    threads = {"observer": lookout.observer, "settle": tracker_thread, "reconcile": reconciler}
    threads |= start_reporting(services, stop)
    heartbeat = Heartbeat(settings, "watch", services.backend)
    notifier = Notifier()
    index = services.fresh_index()
    try:
        while not stop.wait(0.5):
            lookout.check()
            threads["observer"] = lookout.observer
            heartbeat.beat(observer=observer, tracked=len(tracker.tracked))
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
        lost.set()  # wakes the reconciler
        losses.remove()
        lookout.observer.stop()
        for thread in threads.values():
            thread.join(timeout=5)
        heartbeat.stop()
    log.info("watch.stopped")
    return 0
