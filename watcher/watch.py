"""`hotfolder watch`: the observer, the settle tracker and the startup scan, supervised."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import structlog

from watcher.ignore import IgnoreRules
from watcher.intake import Intake
from watcher.observer import Handoff, SettleTracker, start_observer
from watcher.queue import build_queue
from watcher.settings import Settings

log = structlog.get_logger("hotfolder.watch")


def run_watch(settings: Settings) -> int:
    """Watch until SIGINT/SIGTERM (exit 0) or until a thread dies (exit 1, systemd restarts)."""
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    queue = build_queue(settings)
    intake = Intake(settings, queue)
    rules = IgnoreRules(
        settings.input_dir, settings.watch.ignore, [settings.output_dir, settings.state_dir]
    )
    tracker = SettleTracker(settings.watch.settle_seconds, rules, intake.submit)
    tracker_thread = threading.Thread(target=tracker.run, args=(stop,), name="settle", daemon=True)
    tracker_thread.start()
    observer = start_observer(settings.watch, settings.input_dir, Handoff(tracker, rules))
    # The startup scan goes through the same settle check: a file may be mid-copy right now.
    tracker.notify(settings.input_dir, frozenset(queue.queued_sources()))
    log.info("watch.started", input=str(settings.input_dir), observer=type(observer).__name__)
    try:
        while not stop.wait(0.5):
            if not observer.is_alive() or not tracker_thread.is_alive():
                log.error("watch.thread_died", observer=observer.is_alive())
                return 1
    finally:
        stop.set()
        observer.stop()
        observer.join(timeout=5)
        tracker_thread.join(timeout=5)
    log.info("watch.stopped")
    return 0
