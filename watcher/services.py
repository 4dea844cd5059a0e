"""What every hotfolder process opens once and passes down: the backend with its queue and
leases, the job ledger (sidecars mirrored into the job index) and the job policy."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property

from handlers.index import JobIndex
from handlers.lease import Leases
from handlers.ledger import Ledger
from handlers.lifecycle import JobPolicy
from handlers.outbox import Hook
from handlers.sidecar import now_iso
from watcher.backends import Backend, open_backend
from watcher.queue import Queue, build_queue
from watcher.settings import ProfileConfig, Settings


@dataclass
class Services:
    settings: Settings
    backend: Backend
    ledger: Ledger
    leases: Leases
    policy: JobPolicy
    repair: bool = True  # off for the commands that only read: nothing is made or replaced
    daemon: bool = False  # a daemon waits out a locked queue; a command gives up in time

    @cached_property
    def queue(self) -> Queue:
        """Built on first use: a command that never touches the queue never opens it."""
        patience = None if self.daemon else self.settings.queue.enqueue_timeout
        return build_queue(self.backend, self.repair, patience)

    @property
    def index(self) -> JobIndex:
        assert self.ledger.index is not None
        return self.ledger.index

    def fresh_index(self) -> JobIndex:
        """The job index, resynced from the sidecars first when this host's copy may have
        drifted: with several hosts it only sees its own writes between syncs, so it is
        resynced when no sync began within a reconcile interval (a host that runs only
        workers has no reconciler to do it)."""
        index = self.index
        if self.backend.shared and not index.read_only:
            synced = index.synced_at()
            if synced is None or synced < now_iso(-self.settings.jobs.reconcile_interval):
                index.sync(self.ledger.all(), now_iso())
        return index


def open_services(settings: Settings, repair: bool = True, daemon: bool = False) -> Services:
    backend = open_backend(settings)
    return Services(
        settings=settings,
        backend=backend,
        ledger=open_ledger(settings, read_only=not repair and not writable(settings)),
        leases=backend.leases(),
        policy=job_policy(settings),
        repair=repair,
        daemon=daemon,
    )


def writable(settings: Settings) -> bool:
    """Whether this user may write the job index that exists: a command that only reads
    then keeps it in step (on Redis, with the other hosts' sidecars); one that may not, or
    that finds none, reads it as it is and creates nothing."""
    index = settings.state_dir / "index.db"
    return index.exists() and os.access(index, os.W_OK) and os.access(index.parent, os.W_OK)


def open_ledger(settings: Settings, read_only: bool = False) -> Ledger:
    """The sidecars under the output dir, mirrored into the job index in the state dir
    (refilled from the sidecars if it had to be replaced). Read-only, nothing is created."""
    index = JobIndex(settings.state_dir / "index.db", read_only=read_only)
    ledger = Ledger(settings.output_dir, index, hooks=hook_plans(settings))
    if index.rebuilt:
        index.sync(ledger.all(), now_iso())
    return ledger


def hook_plans(settings: Settings) -> tuple[Hook, ...]:
    """The configured hooks, as the ledger plans their deliveries: a hook hears of the jobs
    of the top level, and of every profile that does not name its own hooks or names it."""
    hooks = settings.hooks
    restricted = any(profile.hooks is not None for profile in settings.profiles)

    def heard(name: str) -> frozenset[str | None] | None:
        if not restricted:
            return None
        chosen = [p.name for p in settings.profiles if p.hooks is None or name in p.hooks]
        return frozenset([None, *chosen])

    return tuple(
        Hook(hook.name, kind, frozenset(hook.on), heard(hook.name))
        for kind, configured in (("command", hooks.command), ("webhook", hooks.webhook))
        for hook in configured
    )


def job_policy(settings: Settings, profile: ProfileConfig | None = None) -> JobPolicy:
    """The job policy of `[jobs]`, as `profile` (if any) sets it."""
    _, jobs = settings.effective(profile)
    return JobPolicy(
        max_attempts=jobs.max_attempts,
        retry_backoff=jobs.retry_backoff,
        max_file_bytes=int(jobs.max_file_mb * 2**20),
        max_pages=jobs.max_pages,
        split_pages=jobs.split_pages,
        refuse_hard_links=jobs.refuse_hard_links,
        on_success=jobs.on_success,
        on_failure=jobs.on_failure,
        archive_dir=settings.paths.archive,
        quarantine_dir=settings.paths.quarantine,
    )
