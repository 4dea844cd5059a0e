"""The reconciler: at start and every `jobs.reconcile_interval`, the input tree is rescanned,
the index resynced, and (by the one leading watcher) every unfinished sidecar looked at: a job
whose worker is gone is recovered, one whose input vanished is ended, old ones are purged.
The sidecars are the record; the queue is only the dispatcher."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from handlers import parts
from handlers.errors import lost_worker
from handlers.ledger import Ledger
from handlers.lifecycle import end_vanished, recover_lost
from handlers.outputs import remove_outputs
from handlers.sidecar import TERMINAL, JobStatus, now_iso
from watcher.daemon.inflight import lost_reason
from watcher.logs import Complaint
from watcher.services import Services

if TYPE_CHECKING:  # the work process, which reconciles too, never loads watchdog
    from watcher.daemon.observer import SettleTracker

log = structlog.get_logger("hotfolder.recovery")


def reconcile_forever(
    services: Services,
    tracker: SettleTracker,
    stop: threading.Event,
    scanned: threading.Event,
    lost: threading.Event,
) -> None:
    """At start and every `jobs.reconcile_interval`: rescan the input tree (through the
    settle check, since a file may be mid-copy) and resync the index; and, if this watcher
    leads (one at a time across hosts), sweep the unfinished sidecars. In between, the input
    tree is rescanned as soon as `lost` is set (file events were dropped), and `lost` is set
    on a stop too, so that this thread sees it at once."""
    trouble = Complaint("reconcile.pass_failed")
    while not stop.is_set():
        started = time.monotonic()
        try:
            leading = reconcile(services, tracker, stop)
        except Exception as exc:  # per-pass boundary: a full or locked state disk passes;
            # the thread lives on and the next pass tries again
            trouble.report(exc)
        else:
            trouble.resolved()
            seconds = round(time.monotonic() - started, 3)
            log.info("reconcile.pass", seconds=seconds, leading=leading)
        finally:
            scanned.set()  # READY even when the first pass failed: the daemon is watching
        due = time.monotonic() + services.settings.jobs.reconcile_interval
        while lost.wait(max(due - time.monotonic(), 0)) and not stop.is_set():
            lost.clear()
            started = time.monotonic()
            rescan(services, tracker, stop)
            log.info("watch.rescanned", seconds=round(time.monotonic() - started, 3))


def reconcile(services: Services, tracker: SettleTracker, stop: threading.Event) -> bool:
    """One pass; returns whether this watcher led it."""
    settings = services.settings
    leading = services.leases.lead()
    leading = rescan(services, tracker, stop) and leading  # not with the queue unread
    sweep(services, leading)
    if leading and (stale := parts.sweep(settings.output_dir)):
        log.info("reconcile.parts_removed", folders=stale)
    if leading and settings.jobs.retention_days:
        age = settings.jobs.retention_days * 86400
        forgotten, _ = purge(services, age, sorted(TERMINAL), False, False)
        if forgotten:
            log.info("retention.purged", jobs=len(forgotten))
    return leading


def rescan(services: Services, tracker: SettleTracker, stop: threading.Event) -> bool:
    """Offer the input tree to the settle tracker, with the queue as it is (a file already
    recorded is not read again, nor one queued enqueued again), and wait until it has been
    looked through. False if the queue cannot be read."""
    try:
        tracker.offer(services.settings.input_dir, frozenset(services.queue.queued_sources()))
        return True
    except Exception as exc:  # the queue cannot be read (Redis down): rescan next pass
        log.warning("reconcile.queue_unreadable", error=str(exc))
        return False
    finally:
        tracker.wait_drained(stop)


def sweep(services: Services, leading: bool = True) -> None:
    """The sidecar half of a reconciler pass: the index is resynced and, by the leader, a
    `processing` job whose worker is gone (its lease free) is recovered, and a waiting job
    whose input vanished is ended."""
    settings, ledger = services.settings, services.ledger
    since = now_iso()
    unfinished: list[JobStatus] = []  # the few to look at; the finished are only indexed

    def walk() -> Iterator[JobStatus]:
        for status in ledger.all():
            if status.state not in TERMINAL:
                unfinished.append(status)
            yield status

    services.index.sync(walk(), since)  # what the pass changes is mirrored as written
    for status in unfinished if leading else ():
        try:
            if status.state == "processing":
                lost = lost_reason(settings.workers_dir, status.worker)
                recover(services, status.source, lost)  # if its lease is free
            elif not os.path.lexists(settings.input_dir / status.source):
                end_vanished(status.source, ledger, services.leases, services.policy)
        except Exception:  # per-job boundary: one bad record must not stop the pass
            log.exception("recovery.failed", source=status.source)


def recover(services: Services, rel: str, reason: str) -> None:
    """Count the lost attempt; enqueue a retry unless attempts have run out."""
    settings, policy = services.settings, services.policy
    lost = lost_worker(reason, settings.jobs.hard_timeout, settings.memory_cap_mb)
    status = recover_lost(rel, settings.input_dir, services.ledger, services.leases, policy, lost)
    if status and status.state == "pending":
        delay = policy.retry_delay(status.attempts)
        services.queue.enqueue(rel, status.priority, settings.queue.enqueue_timeout, delay=delay)


def purge(
    services: Services, age_s: float, states: list[str], outputs: bool, dry_run: bool
) -> tuple[list[str], int]:
    """Forget finished jobs older than `age_s`: sidecar and index row (and outputs). A job
    whose input is still in the input folder is kept (it would be converted again)."""
    settings, ledger = services.settings, services.ledger
    marks = ", ".join("?" * len(states))
    with services.index.connect() as db:
        keys = db.execute(
            f"select source_key from jobs where state in ({marks}) and finished_at < ?",
            (*states, now_iso(-age_s)),
        ).fetchall()
    forgotten, kept = [], 0
    for (key,) in keys:
        rel = bytes(key).decode("utf-8", "surrogateescape")
        if os.path.lexists(settings.input_dir / rel):
            kept += 1
            continue
        forgotten.append(rel)
        if not dry_run:
            forget(ledger, settings.output_dir, rel, outputs)
    return forgotten, kept


def forget(ledger: Ledger, output_dir: Path, rel: str, outputs: bool) -> None:
    if outputs:
        remove_outputs(output_dir, rel)
    ledger.forget(rel)
