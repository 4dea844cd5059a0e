"""The operator's levers: enqueue files or folders, retry, cancel, and purge old jobs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import structlog

from handlers.errors import JobError
from handlers.ledger import Ledger
from handlers.outputs import remove_outputs
from handlers.sidecar import JobStatus, now_iso
from watcher.backends.redis import open_leases
from watcher.commands.jobs import find_status, parse_age
from watcher.commands.status import bar
from watcher.commands.submit import Refused, bring_in
from watcher.daemon.intake import Intake
from watcher.heartbeat import read_heartbeat
from watcher.queue import Queue, build_queue
from watcher.settings import Settings, open_ledger

log = structlog.get_logger("hotfolder.control")
FINISHED = ("completed", "failed", "cancelled")


def enqueue_paths(settings: Settings, paths: list[Path], priority: int | None, force: bool) -> int:
    """Submit files and folders. Ones outside the input dir are first copied into it (the
    input dir stays the one record of what was submitted); returns the exit code."""
    queue = build_queue(settings)
    intake = Intake(settings, queue, open_ledger(settings))
    files, failures = [], 0
    for path in paths:
        try:
            files.extend(bring_in(settings, path))
        except (OSError, Refused, JobError) as exc:
            print(f"hotfolder: cannot enqueue {path}: {exc}", file=sys.stderr)
            failures += 1
    outcomes: dict[str, int] = {}
    for n, file in enumerate(files, 1):
        outcome = intake.submit(file, priority=priority, force=force)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        progress(n, len(files))
    summary = ", ".join(f"{count} {name}" for name, count in sorted(outcomes.items()))
    print(f"{len(files)} files: {summary or 'nothing to do'}")
    return 1 if failures else 0


def progress(done: int, total: int) -> None:
    if sys.stderr.isatty() and total:
        sys.stderr.write(f"\r{bar(done, total, 'files')}" + ("\n" if done == total else ""))


def retry_jobs(settings: Settings, targets: list[str], all_failed: bool) -> int:
    ledger = open_ledger(settings)
    queue = build_queue(settings)
    if all_failed:
        statuses = [s for s in map(ledger.read, failed_sources(ledger)) if s is not None]
    else:
        statuses = [find_status(settings, target) for target in targets]
    code = 0
    leases = open_leases(settings)
    for status in statuses:
        if status.state not in ("failed", "cancelled"):
            print(
                f"{status.source}: is {status.state}, only failed or cancelled jobs are retried",
                file=sys.stderr,
            )
            code = 1
            continue
        with leases.hold(status.source) as lease:
            if lease:
                reopen(status)
                leases.clear_cancel(status.source)  # a person asks again
                ledger.save(status)
        if lease:  # enqueued once the lease is let go, so a worker does not find it busy
            queue.enqueue(status.source, status.priority, settings.queue.enqueue_timeout)
        print(f"{status.job_id}  retry queued  {status.source}")
    if not statuses:
        print("no failed jobs")
    return code


def failed_sources(ledger: Ledger) -> list[str]:
    assert ledger.index is not None
    with ledger.index.connect() as db:
        keys = db.execute("select source_key from jobs where state = 'failed'").fetchall()
    return [bytes(key).decode("utf-8", "surrogateescape") for (key,) in keys]


def reopen(status: JobStatus) -> None:
    """Back to `pending` for a fresh round of attempts; the old outcome is cleared."""
    status.state, status.progress, status.attempts = "pending", 0, 0
    status.error = status.retry_at = status.finished_at = status.started_at = None
    status.pages_done = status.pages_total = None
    status.created_at = now_iso()


def cancel_job(settings: Settings, target: str) -> int:
    status = find_status(settings, target)
    if status.state in FINISHED:
        print(f"{status.source}: already {status.state}, nothing to cancel", file=sys.stderr)
        return 1
    ledger = open_ledger(settings)
    leases = open_leases(settings)
    with leases.hold(status.source) as lease:
        if lease:  # not running: drop its tasks and close the record
            revoke(build_queue(settings), status.source)
            current = ledger.read(status.source) or status
            current.state, current.finished_at, current.retry_at = "cancelled", now_iso(), None
            ledger.save(current)
            log.info("job.cancelled", source=status.source, job_id=status.job_id)
            print(f"{status.job_id}  cancelled  {status.source}")
            return 0
    leases.request_cancel(status.source, status.job_id)
    note = (
        "" if read_heartbeat(settings.state_dir, "work")["alive"] else " (no workers are running)"
    )
    stops = f"cancel requested: stops at its next progress point{note}"
    print(f"{status.job_id}  {stops}  {status.source}")
    return 0


def revoke(queue: Queue, rel: str) -> None:
    """Drop the waiting tasks for `rel`; a worker that dequeues them discards them."""
    huey = queue.huey
    for message in queue.waiting():
        if message.args[0] == rel:
            huey.revoke_by_id(message.id)


def purge_jobs(
    settings: Settings, older_than: str, states: list[str], outputs: bool, dry_run: bool
) -> int:
    forgotten, kept = purge(settings, parse_age(older_than), states, outputs, dry_run)
    verb = "would forget" if dry_run else "forgot"
    jobs = f"{len(forgotten)} job{'' if len(forgotten) == 1 else 's'}"
    print(
        f"{verb} {jobs} finished over {older_than} ago ({', '.join(states)})"
        + (", outputs included" if outputs else "")
    )
    if kept:
        print(f"kept {kept} whose input is still in the input folder (it would be converted again)")
    for rel in forgotten[:20] if dry_run else []:
        print(f"  {rel}")
    return 0


def purge(
    settings: Settings, age_s: float, states: list[str], outputs: bool, dry_run: bool
) -> tuple[list[str], int]:
    """Forget finished jobs older than `age_s`: sidecar and index row (and outputs)."""
    ledger = open_ledger(settings)
    assert ledger.index is not None
    marks = ", ".join("?" * len(states))
    with ledger.index.connect() as db:
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
            forget(ledger, settings, rel, outputs)
    return forgotten, kept


def forget(ledger: Ledger, settings: Settings, rel: str, outputs: bool) -> None:
    if outputs:
        remove_outputs(settings.output_dir, rel)
    ledger.forget(rel)
