"""The worker guard, in the consumer's health check: a worker whose job runs past
`jobs.hard_timeout` or whose memory passes the cap is killed, and the job of every worker
that died is recovered (huey replaces the process, not the job)."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable

import structlog
from huey.consumer import Consumer

from handlers.lifecycle import put_back
from handlers.source import copy_owners, discard_copies
from watcher.daemon import inflight
from watcher.daemon.processes import resident_mb
from watcher.daemon.reconcile import recover
from watcher.daemon.sdnotify import Notifier
from watcher.daemon.worker import RECYCLED
from watcher.heartbeat import Heartbeat, pid_exists
from watcher.services import Services

log = structlog.get_logger("hotfolder.recovery")
DIED = "Worker %d died, restarting."  # huey's warning (tests/test_consumer.py pins it)


class WorkerGuard:
    """Hooks huey's worker health check: kills a worker whose job runs past
    `jobs.hard_timeout` or whose memory passes `workers.max_memory_mb`, and recovers the job
    of every worker that died (huey replaces the process, not the job)."""

    def __init__(self, services: Services, consumer: Consumer, notifier: Notifier) -> None:
        settings = self.settings = services.settings
        self.services = services
        self.consumer = consumer
        self.notifier = notifier
        self.recycled: set[int] = set()  # numbers of the workers that just ended a recycle
        self.heartbeat = Heartbeat(settings, "work", services.backend)
        self.ledger = services.ledger
        logging.getLogger("huey.consumer").addFilter(self.planned)

    def check(self, check: Callable[[], bool]) -> bool:
        """huey's health check (`check`, which replaces dead workers) wrapped: beat, police
        the running jobs, tell planned recycles from deaths, and recover the dead's jobs."""
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
                log.info("worker.recycled", pid=proc.pid)
        healthy = check()
        for _, proc in dead:
            self.recover_pid(proc.pid)
        return healthy

    def planned(self, record: logging.LogRecord) -> bool:
        """Drops huey's "Worker N died, restarting." for a planned recycle (logged above as
        `worker.recycled`, at info level); a real death keeps its warning."""
        died = record.msg == DIED
        number = record.args[0] if isinstance(record.args, tuple) and record.args else None
        return not (died and number in self.recycled)

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
        for pid in inflight.pids(self.settings.workers_dir):
            if not pid_exists(pid):
                self.recover_pid(pid)
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
                self.kill(entry, "timeout")
            elif (used := resident_mb(proc.pid)) > cap:
                log.error(
                    "job.memory_exceeded",
                    source=entry.source,
                    pid=proc.pid,
                    resident_mb=round(used),
                    cap_mb=cap,
                )
                self.kill(entry, "memory")

    def kill(self, entry: inflight.Running, reason: str) -> None:
        pid = entry.pid
        inflight.mark_killed(self.settings.workers_dir, entry, reason)
        os.kill(pid, signal.SIGKILL)
        for _, proc in self.consumer.worker_threads:
            if proc.pid == pid:
                proc.join(5)

    def kill_stuck(self, grace: float) -> None:
        """At a stop: the workers still alive `grace` seconds after huey interrupted them
        are killed, and their jobs put back in the queue (a stop is not the job's fault)."""
        deadline = time.monotonic() + grace
        for _, proc in self.consumer.worker_threads:
            proc.join(max(deadline - time.monotonic(), 0))
        for _, proc in self.consumer.worker_threads:
            if not proc.is_alive():
                continue
            entry = inflight.read(self.settings.workers_dir, proc.pid)
            log.warning("worker.killed_at_stop", pid=proc.pid, source=entry and entry.source)
            os.kill(proc.pid, signal.SIGKILL)
            proc.join(5)
            discard_copies(self.settings.scratch_dir, proc.pid)
            if entry is None:
                inflight.clear(self.settings.workers_dir, proc.pid)
                continue
            try:
                self.put_back(entry.source)
            except Exception:  # per-job boundary: the reconciler finds it pending anyway
                log.exception("recovery.failed", source=entry.source)
                continue
            inflight.clear(self.settings.workers_dir, proc.pid)

    def put_back(self, rel: str) -> None:
        leases = self.services.leases
        with leases.hold(rel) as lease:
            status = put_back(self.ledger, leases, rel) if lease else None
        if status is not None and status.state == "pending":
            timeout = self.settings.queue.enqueue_timeout
            self.services.queue.enqueue(rel, status.priority, timeout)

    def recover_pid(self, pid: int) -> None:
        discard_copies(self.settings.scratch_dir, pid)
        entry = inflight.read(self.settings.workers_dir, pid)
        if entry is None:
            inflight.clear(self.settings.workers_dir, pid)  # it died idle
            return
        reason = entry.killed or "crashed"
        try:
            recover(self.services, entry.source, reason)
        except Exception:  # per-job boundary: one bad record must not stop the consumer
            log.exception("recovery.failed", source=entry.source)
            return
        inflight.clear(self.settings.workers_dir, pid)
