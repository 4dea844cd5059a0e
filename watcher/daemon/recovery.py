"""Jobs whose worker died: found by the consumer (a dead or overdue worker process) and by
the reconciler (a `processing` sidecar whose file lock is free), and retried or failed."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import structlog
from huey.consumer import Consumer

from handlers.errors import lost_worker
from handlers.lease import Leases
from handlers.ledger import Ledger
from handlers.pipeline import end_vanished, recover_lost
from handlers.sidecar import TERMINAL, now_iso
from handlers.source import copy_owners, discard_copies
from watcher.backends.redis import open_leases
from watcher.daemon import inflight
from watcher.daemon.sdnotify import Notifier
from watcher.daemon.worker import RECYCLED
from watcher.heartbeat import Heartbeat, pid_exists
from watcher.queue import Queue
from watcher.settings import Settings, job_policy, open_ledger

log = structlog.get_logger("hotfolder.recovery")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def recover(
    settings: Settings, queue: Queue, ledger: Ledger, leases: Leases, rel: str, reason: str
) -> None:
    """Count the lost attempt; enqueue a retry unless attempts have run out."""
    policy = job_policy(settings)
    lost = lost_worker(reason, settings.jobs.hard_timeout, settings.memory_cap_mb)
    status = recover_lost(rel, settings.input_dir, ledger, leases, policy, lost)
    if status and status.state == "pending":
        delay = policy.retry_delay(status.attempts)
        queue.enqueue(rel, status.priority, settings.queue.enqueue_timeout, delay=delay)


def sweep(settings: Settings, queue: Queue, leases: Leases, leading: bool = True) -> None:
    """The sidecar half of a reconciler pass: the index is resynced and, by the leader, a
    `processing` job whose worker is gone (its lease free) is recovered, and a waiting job
    whose input vanished is ended."""
    policy = job_policy(settings)
    ledger = open_ledger(settings)
    since = now_iso()
    statuses = list(ledger.all())
    if ledger.index is not None:
        ledger.index.sync(statuses, since)  # what the pass changes is mirrored as written
    for status in statuses if leading else ():
        if status.state in TERMINAL:
            continue
        try:
            if status.state == "processing":
                recover(settings, queue, ledger, leases, status.source, "crashed")  # if free
            elif not os.path.lexists(settings.input_dir / status.source):
                end_vanished(status.source, ledger, leases, policy)
        except Exception:  # per-job boundary: one bad record must not stop the pass
            log.exception("recovery.failed", source=status.source)


class WorkerGuard:
    """Hooks huey's worker health check: kills a worker whose job runs past
    `jobs.hard_timeout` or whose memory passes `workers.max_memory_mb`, and recovers the job
    of every worker that died (huey replaces the process, not the job)."""

    def __init__(
        self, settings: Settings, queue: Queue, consumer: Consumer, notifier: Notifier
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.consumer = consumer
        self.notifier = notifier
        self.killed: dict[int, str] = {}  # pid -> why it was killed
        self.recycled: set[int] = set()  # numbers of the workers that just ended a recycle
        self.max_tasks = settings.workers.max_tasks_per_worker
        self.heartbeat = Heartbeat(settings, "work")
        self.ledger = open_ledger(settings)
        self.leases = open_leases(settings)

    def install(self) -> None:
        check: Callable[[], bool] = self.consumer.check_worker_health

        def guarded() -> bool:
            self.beat()
            self.police()
            dead = [
                (number, proc)
                for number, (_, proc) in enumerate(self.consumer.worker_threads, 1)
                if not proc.is_alive()
            ]
            self.recycled = {number for number, proc in dead if proc.exitcode == RECYCLED}
            for number, proc in dead:
                if number in self.recycled:
                    log.info("worker.recycled", pid=proc.pid, after_tasks=self.max_tasks)
            healthy = check()
            for _, proc in dead:
                self.recover_pid(proc.pid)
            return healthy

        self.consumer.check_worker_health = guarded  # type: ignore[method-assign]
        logging.getLogger("huey.consumer").addFilter(self.planned)

    def planned(self, record: logging.LogRecord) -> bool:
        """Drops huey's "Worker N died, restarting." for a planned recycle (logged above as
        `worker.recycled`, at info level); a real death keeps its warning."""
        died = record.msg == "Worker %d died, restarting."
        return not (died and record.args and record.args[0] in self.recycled)

    def beat(self) -> None:
        """Liveness, for `hotfolder status` and for systemd (READY once the workers run,
        then STATUS lines and watchdog keep-alives from this, the consumer's main loop)."""
        pids = [proc.pid for _, proc in self.consumer.worker_threads if proc.is_alive()]
        self.heartbeat.beat(workers=pids, configured=len(self.consumer.worker_threads))
        self.notifier.alive()
        if self.ledger.index is not None:
            self.notifier.report(self.ledger.index.counts)

    def recover_stale(self) -> None:
        """Entries and private copies left by workers of an earlier consumer that was killed."""
        for entry in inflight.all_running(self.settings.workers_dir):
            if not pid_exists(entry.pid):
                self.recover_pid(entry.pid)
        for pid in copy_owners(self.settings.scratch_dir):
            if not pid_exists(pid):
                discard_copies(self.settings.scratch_dir, pid)

    def police(self) -> None:
        limit = self.settings.jobs.hard_timeout
        cap = self.settings.memory_cap_mb
        for _, proc in self.consumer.worker_threads:
            entry = inflight.read(self.settings.workers_dir, proc.pid) if proc.pid else None
            if entry is None or not proc.is_alive():
                continue
            if limit and time.time() - entry.started > limit:
                log.error("job.hard_timeout", source=entry.source, pid=proc.pid, limit_s=limit)
                self.kill(proc.pid, "timeout")
            elif (used := resident_mb(proc.pid)) > cap:
                log.error(
                    "job.memory_exceeded",
                    source=entry.source,
                    pid=proc.pid,
                    resident_mb=round(used),
                    cap_mb=cap,
                )
                self.kill(proc.pid, "memory")

    def kill(self, pid: int, reason: str) -> None:
        self.killed[pid] = reason
        os.kill(pid, signal.SIGKILL)
        for _, proc in self.consumer.worker_threads:
            if proc.pid == pid:
                proc.join(5)

    def recover_pid(self, pid: int) -> None:
        discard_copies(self.settings.scratch_dir, pid)
        entry = inflight.read(self.settings.workers_dir, pid)
        reason = self.killed.pop(pid, "crashed")
        if entry is None:
            return
        try:
            recover(self.settings, self.queue, self.ledger, self.leases, entry.source, reason)
        except Exception:  # per-job boundary: one bad record must not stop the consumer
            log.exception("recovery.failed", source=entry.source)
            return
        inflight.clear(self.settings.workers_dir, pid)


def resident_mb(pid: int) -> float:
    """Resident memory of `pid` in MiB (0 if it is gone)."""
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * PAGE_SIZE / 2**20
