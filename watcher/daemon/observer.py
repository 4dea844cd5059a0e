"""The watchdog observer and the settle tracker between it and the queue.

The observer callback only filters and hands paths on; the tracker waits until a file's
size and mtime have stopped changing for `settle_seconds`, then hands it to intake.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import stat
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import structlog
from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from watcher.daemon.ignore import IgnoreRules
from watcher.daemon.skips import Skips
from watcher.settings import WatchConfig

log = structlog.get_logger("hotfolder.observer")
Settled = Callable[[Path, "frozenset[str] | None"], object]
HANDED_ON = ("created", "modified", "moved", "closed")
# The events asked of the kernel: not opens, reads, deletions nor folders' own changes,
# which were seven events in ten of a burst (the watcher's and workers' reads included).
WATCHED = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileClosedEvent,
    DirCreatedEvent,
    DirMovedEvent,
]
RETRY_PAUSE = 5.0  # seconds before a file whose intake failed (a full disk) is tried again
# watchdog's warning (from this logger) when the kernel's inotify queue overflowed
LOST_EVENTS = ("watchdog.observers.inotify_c", "Inotify queue overflowed; filesystem events")


@dataclass
class Tracked:
    signature: tuple[int, int] | None
    since: float
    queued: frozenset[str] | None
    closed: bool = False  # its writer closed it (inotify) or moved it in: written whole


class SettleTracker:
    """Tracks files until they are stable; no give-up counter, a changing file is just
    tracked longer. Directories (moved-in folders, the startup scan) are expanded here.

    A file is taken in once its size and mtime have not changed for `settle_seconds` since
    its last event, or for only `closed_settle` when that event said its writer closed it
    or moved it in (inotify's IN_CLOSE_WRITE and IN_MOVED_TO; polling sees neither). The
    thread sleeps until the next file is due or an event arrives, not in fixed ticks."""

    def __init__(
        self,
        settle_seconds: float,
        rules: IgnoreRules,
        on_settled: Settled,
        skips: Skips | None = None,
        closed_settle: float | None = None,
        group: Callable[[], AbstractContextManager[None]] = nullcontext,
    ) -> None:
        self.settle_seconds = settle_seconds
        self.closed_settle = (
            settle_seconds if closed_settle is None else min(closed_settle, settle_seconds)
        )
        self.rules = rules
        self.on_settled = on_settled
        self.group = group  # around each pass's hand-ons: what they record, written together
        self.skips = skips or Skips()
        self.arrivals: queue.SimpleQueue[tuple[Path, frozenset[str] | None, bool]] = (
            queue.SimpleQueue()
        )
        self.tracked: dict[Path, Tracked] = {}
        self.tick = 0.25  # the longest sleep: how soon a stop is seen
        self.wake = threading.Event()
        self.lock = threading.Lock()
        self.offered = 0  # paths put in arrivals
        self.handled = 0  # paths taken out and expanded (arrivals are first in, first out)

    def offer(self, path: Path, queued: frozenset[str] | None = None, closed: bool = False) -> None:
        """Thread-safe and cheap: called from the observer thread."""
        with self.lock:
            self.offered += 1
            self.arrivals.put((path, queued, closed))
        self.wake.set()

    def wait_drained(self, stop: threading.Event) -> None:
        """Until every path offered so far is expanded (later ones are not waited for)."""
        with self.lock:
            target = self.offered
        while self.handled < target and not stop.wait(self.tick):
            pass

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.wake.clear()  # before draining: an event after this wakes the wait below
            self.drain()
            self.check(time.monotonic())
            self.wake.wait(self.pause(time.monotonic()))

    def quiet(self, entry: Tracked) -> float:
        return self.closed_settle if entry.closed else self.settle_seconds

    def pause(self, now: float) -> float:
        """Until the next tracked file is due, at most `tick`."""
        due = min((e.since + self.quiet(e) for e in self.tracked.values()), default=now + 1)
        return min(max(due - now, 0.0), self.tick)

    def drain(self) -> None:
        while True:
            try:
                path, queued, closed = self.arrivals.get_nowait()
            except queue.Empty:
                return
            self.expand(path, queued, closed)
            self.handled += 1

    def expand(self, path: Path, queued: frozenset[str] | None, closed: bool = False) -> None:
        """Track a file, or every file under a folder. Links are never followed, and a path
        that cannot be looked at or listed is logged once and passed over: never raised."""
        info = self.skips.lstat(path)
        if info is None:
            return
        if stat.S_ISDIR(info.st_mode):
            for file in self.rules.walk(path, self.skips.walk_error):
                self.track(file, queued, closed)
        else:
            self.track(path, queued, closed, (info.st_size, info.st_mtime_ns))

    def track(
        self,
        path: Path,
        queued: frozenset[str] | None,
        closed: bool = False,
        signature: tuple[int, int] | None = None,
    ) -> None:
        previous = self.tracked.get(path)
        if previous and queued is not None:
            return  # a rescan meets a file already being watched: its clock keeps running
        if previous and previous.queued is None:
            queued = None  # a live event since the scan: treat it as new activity
        # Every event restarts the quiet period, from what the file is now.
        signature = signature or self.signature(path)
        if signature is None:
            self.tracked.pop(path, None)  # gone already, or unusable (logged once)
            return
        self.tracked[path] = Tracked(signature, time.monotonic(), queued, closed)

    def check(self, now: float) -> None:
        """Hand on each file that is due and unchanged; one that changed without an event
        (a writer on another host) waits its full settle time again."""
        handed: list[Path] = []
        try:
            with self.group():
                for path, entry in list(self.tracked.items()):
                    if now < entry.since + self.quiet(entry):
                        continue
                    signature = self.signature(path)
                    if signature is None:
                        del self.tracked[path]  # gone before it settled, or unusable (logged)
                    elif signature != entry.signature:
                        entry.signature, entry.since, entry.closed = signature, now, False
                    else:
                        del self.tracked[path]
                        handed.append(path)
                        self.hand_on(path, entry.queued)
        except Exception as exc:  # the group's commit failed: its files are taken in again
            for path in handed:
                self.again(path, exc)

    def hand_on(self, path: Path, queued: frozenset[str] | None) -> None:
        try:
            self.on_settled(path, queued)
        except Exception as exc:  # per-file boundary: one bad file must not blind the watcher
            self.again(path, exc)

    def again(self, path: Path, exc: Exception) -> None:
        """Not enqueued (a full disk, a locked queue): look at it again after a pause, as a
        scan that saw no task for it would, so that a `pending` record written before the
        failure gets its task then."""
        self.skips.note(path, f"intake_failed: {type(exc).__name__}: {exc}", exc_info=True)
        since = time.monotonic() + RETRY_PAUSE
        self.tracked[path] = Tracked(self.signature(path), since, frozenset())

    def signature(self, path: Path) -> tuple[int, int] | None:
        info = self.skips.lstat(path)
        return None if info is None else (info.st_size, info.st_mtime_ns)


class Handoff(FileSystemEventHandler):
    """The watchdog callback: filter, hand on, never raise (that kills the observer thread)."""

    def __init__(self, tracker: SettleTracker, rules: IgnoreRules) -> None:
        self.tracker = tracker
        self.rules = rules

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            if event.event_type not in HANDED_ON:
                return
            if event.is_directory and event.event_type == "modified":
                return
            raw = event.dest_path if event.event_type == "moved" else event.src_path
            path = Path(os.fsdecode(raw))
            if not self.rules.ignored(path):
                # Closed after writing, or renamed into place: written whole.
                self.tracker.offer(path, closed=event.event_type in ("closed", "moved"))
        except Exception:  # per-event boundary, see the class docstring
            log.exception("watch.event_failed", event=repr(event))


class LostEvents(logging.Filter):
    """Calls `on_lost` when the kernel dropped file events: a burst filled its inotify queue
    (fs.inotify.max_queued_events). watchdog says so only in its log, so this filter sits
    on its logger; whatever arrived meanwhile is found by scanning the folder again."""

    def __init__(self, on_lost: Callable[[], object]) -> None:
        super().__init__()
        self.on_lost = on_lost
        self.logger = logging.getLogger(LOST_EVENTS[0])

    def install(self) -> LostEvents:
        # The warning must be made even where the log shows errors only; filter() then
        # keeps it out of the log as the log level asks.
        self.level = self.logger.level
        self.logger.setLevel(min(logging.WARNING, self.logger.getEffectiveLevel()))
        self.logger.addFilter(self)
        return self

    def remove(self) -> None:
        self.logger.removeFilter(self)
        self.logger.setLevel(self.level)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith(LOST_EVENTS[1]):
            log.warning(
                "watch.events_lost",
                hint="a burst filled the kernel's inotify queue (raise "
                "fs.inotify.max_queued_events); the input folder is scanned again now",
            )
            self.on_lost()
        return record.levelno >= logging.getLogger("watchdog").getEffectiveLevel()


# File systems whose writes on other hosts inotify never sees.
NETWORK_FILE_SYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "lustre", "afs"}
    | {"fuse.sshfs", "fuse.glusterfs", "fuse.cephfs", "fuse.s3fs", "fuse.rclone", "davfs"}
)


def file_system(path: Path) -> str:
    """The type of the file system `path` lies on (from the mount table)."""
    best, kind = "", ""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return ""
    target = str(path.resolve())
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        if (target == point or target.startswith(point.rstrip("/") + "/")) and len(point) > len(
            best
        ):
            best, kind = point, fields[2]
    return kind


class Lookout:
    """The observer of the input folder, started again when the folder is replaced (renamed
    away and made anew) or comes back after it was removed: an inotify watch follows the old
    folder, which no file will enter again. Checked from the watcher's main loop."""

    def __init__(
        self, config: WatchConfig, input_dir: Path, handler: Handoff, rescan: Callable[[], object]
    ) -> None:
        self.config, self.input_dir, self.handler, self.rescan = config, input_dir, handler, rescan
        self.identity = folder_identity(input_dir)
        self.observer = start_observer(config, input_dir, handler)

    def check(self) -> None:
        now = folder_identity(self.input_dir)
        if now == self.identity:
            return
        self.identity = now
        if now is None:
            log.error(
                "watch.input_missing",
                path=str(self.input_dir),
                hint="create the folder again: watching resumes by itself",
            )
            return
        log.warning("watch.input_replaced", path=str(self.input_dir), note="watching it anew")
        self.observer.stop()
        self.observer.join(5)
        self.observer = start_observer(self.config, self.input_dir, self.handler)
        self.rescan()  # what was moved in with the new folder


def folder_identity(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino) if stat.S_ISDIR(info.st_mode) else None


def uses_inotify(config: WatchConfig, input_dir: Path) -> bool:
    """Whether the watcher watches `input_dir` with inotify (`auto`: unless it lies on a
    network file system)."""
    return config.observer == "native" or (
        config.observer == "auto" and file_system(input_dir) not in NETWORK_FILE_SYSTEMS
    )


def start_observer(config: WatchConfig, input_dir: Path, handler: Handoff) -> BaseObserver:
    """inotify, or polling: when configured, when `auto` finds a network file system, or
    when inotify runs out of watches."""
    kind = file_system(input_dir)
    native = uses_inotify(config, input_dir)
    if config.observer == "auto" and not native:
        log.info("watch.polling", file_system=kind, reason="inotify misses other hosts' writes")
    if native:
        observer: BaseObserver = Observer()
        observer.schedule(handler, str(input_dir), recursive=config.recursive, event_filter=WATCHED)
        try:
            observer.start()
            return observer
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EMFILE):
                raise
            log.warning(
                "watch.inotify_exhausted",
                error=str(exc),
                hint="raise fs.inotify.max_user_watches; falling back to polling",
            )
    observer = PollingObserver(timeout=config.polling_interval)
    observer.schedule(handler, str(input_dir), recursive=config.recursive, event_filter=WATCHED)
    observer.start()
    return observer
