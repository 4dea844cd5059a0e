"""The `hotfolder` command. Exit codes: 0 ok, 1 something failed, 2 usage, 78 configuration."""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from handlers.sidecar import STATES, TERMINAL
from watcher.settings import EX_CONFIG, ConfigError, Settings, load_settings, used_dirs

if TYPE_CHECKING:
    from watcher.services import Services

DAEMONS = ("run", "watch", "work")
LEVELS = ["debug", "info", "warning", "error"]
FINISHED = tuple(state for state in STATES if state in TERMINAL)
READ_ONLY = ("status", "jobs", "show")  # commands that never repair nor replace anything


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="hotfolder", description=__doc__)
    top.add_argument(
        "--config",
        type=Path,
        default=Path("config.toml"),
        help="configuration file (default: ./config.toml)",
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("run", help="watcher and workers together, in the foreground")
    sub.add_parser("watch", help="the folder watcher and reconciler only")
    sub.add_parser("work", help="the conversion workers only")

    status = sub.add_parser("status", help="totals, throughput, queue depth, liveness")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--watch", action="store_true", help="live view until Ctrl-C")
    status.add_argument("--interval", type=float, default=1.0, help="seconds between redraws")

    jobs = sub.add_parser("jobs", help="a table of jobs, newest first")
    jobs.add_argument("--state", choices=STATES)
    jobs.add_argument("--since", help="only jobs created within this long, e.g. 1h, 7d")
    jobs.add_argument("--limit", type=positive, default=50)
    jobs.add_argument("--sort", choices=("created", "finished", "priority"), default="created")
    jobs.add_argument("--json", action="store_true")

    show = sub.add_parser("show", help="one job in full")
    show.add_argument("job", metavar="JOB_ID|PATH")
    show.add_argument("--json", action="store_true")

    enqueue = sub.add_parser("enqueue", help="submit files or folders")
    enqueue.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    enqueue.add_argument("--priority", type=int, help="higher runs first (default from config)")
    enqueue.add_argument("--force", action="store_true", help="convert again even if done")

    retry = sub.add_parser("retry", help="re-enqueue failed or cancelled jobs")
    retry.add_argument("jobs", nargs="*", metavar="JOB_ID|PATH")
    retry.add_argument("--failed", action="store_true", help="every failed job")

    cancel = sub.add_parser("cancel", help="cancel a pending or processing job")
    cancel.add_argument("job", metavar="JOB_ID|PATH")

    purge = sub.add_parser("purge", help="forget old finished jobs")
    purge.add_argument("--older-than", required=True, help="e.g. 7d, 12h")
    purge.add_argument(
        "--state",
        default=",".join(FINISHED),
        help=f"comma-separated states (default: {','.join(FINISHED)})",
    )
    purge.add_argument("--outputs", action="store_true", help="delete their outputs too")
    purge.add_argument("--dry-run", action="store_true")

    sub.add_parser("doctor", help="check the installation and the running daemon")

    convert = sub.add_parser("convert", help="convert one file in the foreground")
    convert.add_argument("file", type=Path)
    convert.add_argument("-o", "--output", type=Path, default=Path("."), help="output folder")
    return top


def main(argv: list[str] | None = None) -> int:
    top = parser()
    args = top.parse_args(argv)
    if args.command == "retry" and not (args.jobs or args.failed):
        top.error("retry needs JOB_ID|PATH or --failed")
    if args.command == "purge":
        states = args.state.split(",")
        if not set(states) <= TERMINAL:
            top.error(f"purge --state takes {', '.join(FINISHED)}")
    try:
        settings = load_settings(args.config)
        if args.command in (*DAEMONS, "enqueue"):
            prepare_dirs(settings)
    except ConfigError as exc:
        print(f"hotfolder: config error: {exc}", file=sys.stderr)
        return EX_CONFIG
    from watcher.commands.jobs import JobNotFound

    try:
        return dispatch(args, settings)
    except (JobNotFound, ValueError) as exc:
        print(f"hotfolder: {exc}", file=sys.stderr)
        return 1
    except (OSError, sqlite3.DatabaseError) as exc:
        # An operator command meets a file it cannot read: one line, not a traceback.
        print(f"hotfolder: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def prepare_dirs(settings: Settings) -> None:
    """Create the folders in use before any thread starts; raise ConfigError naming the key
    at fault. (Whether they are apart was checked when the configuration was loaded.)"""
    for key, path in used_dirs(settings).items():
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"{key}: cannot create {path}: {exc.strerror}") from None
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"{key}: {path} is not writable by this user")


def dispatch(args: argparse.Namespace, settings: Settings) -> int:
    from watcher.logs import configure_logging

    command = args.command
    if command in DAEMONS:
        configure_logging(settings.log, command, sys.stdout)
    else:  # an operator command answers on stdout; only warnings and errors go to stderr
        quiet = settings.log.model_copy(
            update={"level": max(settings.log.level, "warning", key=LEVELS.index)}
        )
        configure_logging(quiet, command, sys.stderr)
    if command in DAEMONS:
        return run_daemon(command, settings)
    if command == "doctor":
        from watcher.commands.doctor import run_doctor

        return run_doctor(settings)
    if command == "convert":
        from watcher.commands.convert import convert_one

        return convert_one(settings, args.file, args.output)
    from watcher.services import open_services

    services = open_services(settings, repair=command not in READ_ONLY)
    if command == "status":
        from watcher.commands.status import show_status, watch_status

        if args.watch:
            return watch_status(services, args.interval)
        return show_status(services, args.json)
    if command in ("jobs", "show"):
        from watcher.commands.jobs import jobs_command, show_job

        if command == "jobs":
            return jobs_command(services, args.state, args.since, args.sort, args.limit, args.json)
        return show_job(services, args.job, args.json)
    return control(args, services)


def run_daemon(command: str, settings: Settings) -> int:
    if command == "run":
        from watcher.daemon.supervisor import run_all

        return run_all(settings)
    if command == "watch":
        from watcher.daemon.watch import run_watch

        return run_watch(settings)
    from watcher.daemon.consumer import run_work

    return run_work(settings)


def control(args: argparse.Namespace, services: Services) -> int:
    from watcher.commands import control

    if args.command == "enqueue":
        return control.enqueue_paths(services, args.paths, args.priority, args.force)
    if args.command == "retry":
        return control.retry_jobs(services, args.jobs, args.failed)
    if args.command == "cancel":
        return control.cancel_job(services, args.job)
    return control.purge_jobs(
        services, args.older_than, args.state.split(","), args.outputs, args.dry_run
    )


if __name__ == "__main__":
    sys.exit(main())
