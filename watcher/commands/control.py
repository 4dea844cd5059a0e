"""The operator's levers: enqueue files or folders, retry, cancel, and purge old jobs. The
changes of state they make are `handlers.lifecycle`'s, under the job's lease."""

from __future__ import annotations

import sys
from pathlib import Path

from handlers.errors import JobError
from handlers.lifecycle import cancel, reopen
from handlers.sidecar import TERMINAL
from watcher.commands.jobs import find_status, input_rel, parse_age
from watcher.commands.render import bar, plural
from watcher.commands.submit import Refused, bring_in
from watcher.daemon.intake import Intake
from watcher.daemon.reconcile import purge
from watcher.heartbeat import read_heartbeat
from watcher.services import Services


def enqueue_paths(services: Services, paths: list[Path], priority: int | None, force: bool) -> int:
    """Submit files and folders. Ones outside the input dir are first copied into it (the
    input dir stays the one record of what was submitted); returns the exit code."""
    intake = Intake(services)
    files, failures = [], 0
    for path in paths:
        try:
            files.extend(bring_in(services.settings, path))
        except (OSError, Refused, JobError) as exc:
            print(f"hotfolder: cannot enqueue {path}: {exc}", file=sys.stderr)
            failures += 1
    outcomes: dict[str, int] = {}
    for n, file in enumerate(files, 1):
        outcome = intake.submit(file, priority=priority, force=force)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        progress(n, len(files))
    summary = ", ".join(f"{count} {name}" for name, count in sorted(outcomes.items()))
    print(f"{plural(len(files), 'file')}: {summary or 'nothing to do'}")
    return 1 if failures else 0


def progress(done: int, total: int) -> None:
    if sys.stderr.isatty() and total:
        sys.stderr.write(f"\r{bar(done, total, 'files')}" + ("\n" if done == total else ""))


def retry_jobs(services: Services, targets: list[str], all_failed: bool) -> int:
    ledger, leases = services.ledger, services.leases
    input_dir = services.settings.input_dir
    if all_failed:
        statuses = [s for s in map(ledger.read, failed_sources(services)) if s is not None]
    else:
        statuses = [find_status(services, target) for target in targets]
    code = 0
    for status in statuses:
        if status.state not in ("failed", "cancelled"):
            again = (
                f"; to convert it again: hotfolder enqueue --force {input_dir / status.source}"
                if status.state == "completed"
                else ""
            )
            print(
                f"hotfolder: {status.source} is {status.state}: only failed or cancelled jobs "
                f"are retried{again}",
                file=sys.stderr,
            )
            code = 1
            continue
        with leases.hold(status.source) as lease:
            if lease:
                leases.clear_cancel(status.source)  # a person asks again
                reopen(ledger, status)
        if lease:  # enqueued once the lease is let go, so a worker does not find it busy
            timeout = services.settings.queue.enqueue_timeout
            services.queue.enqueue(status.source, status.priority, timeout)
        print(f"{status.job_id}  retry queued  {status.source}")
    if not statuses:
        print("no failed jobs")
    return code


def failed_sources(services: Services) -> list[str]:
    return sources_in(services, ("failed",), "")


def cancel_jobs(
    services: Services, targets: list[str], pending_under: str | None, everything: bool
) -> int:
    """Cancel the jobs named, every pending one (under a folder of the input dir), or every
    pending and processing one; a line per job, then the totals."""
    if targets:
        statuses = [find_status(services, target) for target in targets]
    else:
        states = ("pending", "processing") if everything else ("pending",)
        prefix = "" if everything else folder_prefix(services, pending_under or "")
        ledger = services.ledger
        sources = sources_in(services, states, prefix)
        statuses = [s for s in map(ledger.read, sources) if s is not None and s.state in states]
    ledger, leases = services.ledger, services.leases
    closed, asked, code = [], [], 0
    for status in statuses:
        if status.state in TERMINAL:
            print(
                f"hotfolder: {status.source} is already {status.state}: nothing to cancel",
                file=sys.stderr,
            )
            code = 1
            continue
        with leases.hold(status.source) as lease:
            if lease:  # not running: close the record; its tasks are dropped below
                cancel(ledger, ledger.read(status.source) or status)
                closed.append(status.source)
                print(f"{status.job_id}  cancelled  {status.source}")
                continue
        leases.request_cancel(status.source, status.job_id)
        asked.append(status.source)
        print(
            f"{status.job_id}  cancel requested: stops at its next progress point  {status.source}"
        )
    if closed:
        services.queue.revoke(*closed)
    if asked and not read_heartbeat(services.settings.state_dir, "work")["alive"]:
        print("(no workers are running: the running jobs stop when they come back)")
    if not targets:
        print(f"cancelled {plural(len(closed), 'job')}, asked {len(asked)} running to stop")
    return code


def folder_prefix(services: Services, given: str) -> str:
    """A folder of the input dir, as given (relative to it, or a path to it), as the
    prefix of its jobs' sources: `scans/` for `input/scans`; "" for all."""
    if not given.strip("/."):
        return ""
    rel = input_rel(services.settings.input_dir, Path(given))
    if rel is None:
        rel = given.strip("/")
    return rel.rstrip("/") + "/"


def sources_in(services: Services, states: tuple[str, ...], prefix: str) -> list[str]:
    query = f"select source_key from jobs where state in ({', '.join('?' * len(states))})"
    with services.fresh_index().connect() as db:
        keys = [bytes(key) for (key,) in db.execute(query, states)]
    sources = [key.decode("utf-8", "surrogateescape") for key in keys]
    return [source for source in sources if source.startswith(prefix)]


def purge_jobs(
    services: Services, older_than: str, states: list[str], outputs: bool, dry_run: bool
) -> int:
    forgotten, kept = purge(services, parse_age(older_than), states, outputs, dry_run)
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
