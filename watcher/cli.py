"""The `hotfolder` command. Exit codes: 0 ok, 1 something failed, 2 usage, 78 configuration."""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import shtab

from handlers.sidecar import STATES, TERMINAL
from watcher.settings import EX_CONFIG, ConfigError, Settings, load_settings, used_dirs

if TYPE_CHECKING:
    from watcher.services import Services

# transformers (imported with docling-core's chunkers) says on stderr, outside the logs,
# that PyTorch is missing: hotfolder never uses it.
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
DAEMONS = ("run", "watch", "work")
LEVELS = ["debug", "info", "warning", "error"]
FINISHED = tuple(state for state in STATES if state in TERMINAL)
READ_ONLY = ("status", "jobs", "show")  # commands that never create, repair nor replace
CONFIG_PLACES = (Path("config.toml"), Path("/etc/hotfolder/config.toml"))
MIN_INTERVAL = 0.1  # seconds between redraws of `status --watch`


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def interval(text: str) -> float:
    value = float(text)
    if not value >= MIN_INTERVAL:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be {MIN_INTERVAL} s or more, not {text}")
    return value


def duration(text: str) -> str:
    """A duration such as 30m, 1h or 7d, checked here so a bad one is a usage error."""
    from watcher.commands.jobs import parse_age

    try:
        parse_age(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def states_of(allowed: tuple[str, ...]) -> Callable[[str], list[str]]:
    """`--state a,b` (and `--state a --state b`): a list of states, each one of `allowed`."""

    def parse(text: str) -> list[str]:
        states = [state.strip() for state in text.split(",") if state.strip()]
        wrong = [state for state in states if state not in allowed]
        if wrong or not states:
            raise argparse.ArgumentTypeError(
                f"{text!r}: states are {', '.join(allowed)} (comma-separated)"
            )
        return states

    return parse


def describe(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    text: str,
    config: argparse.ArgumentParser,
) -> argparse.ArgumentParser:
    """A subcommand whose one-line help is also its description, taking --config too."""
    return sub.add_parser(
        name, help=text, description=text[0].upper() + text[1:] + ".", parents=[config]
    )


def parser() -> argparse.ArgumentParser:
    # --config is taken before or after the command: `hotfolder status --config X` works.
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help="configuration file (default: $HOTFOLDER_CONFIG, else ./config.toml, "
        "else /etc/hotfolder/config.toml)",
    )
    top = argparse.ArgumentParser(prog="hotfolder", description=__doc__, parents=[config])
    top.add_argument("--version", action="version", version=version_line())
    shtab.add_argument_to(top, ["--print-completion"], help="print a shell completion script")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    describe(sub, "run", "watcher and workers together, in the foreground", config)
    describe(sub, "watch", "the folder watcher and reconciler only", config)
    describe(sub, "work", "the conversion workers only (hotfolder's huey_consumer)", config)

    status = describe(
        sub, "status", "totals, throughput, queue depth, liveness; exit 3 when not running", config
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument(
        "--watch", action="store_true", help="redraw until Ctrl-C (with --json: JSON lines)"
    )
    status.add_argument(
        "--interval",
        type=interval,
        default=1.0,
        help=f"seconds between redraws, {MIN_INTERVAL} or more (default: %(default)s)",
    )

    jobs = describe(sub, "jobs", "a table of jobs, newest first", config)
    jobs.add_argument(
        "--state",
        type=states_of(STATES),
        action="extend",
        help=f"only jobs in these states, comma-separated ({', '.join(STATES)})",
    )
    jobs.add_argument(
        "--since", type=duration, help="only jobs created within this long, e.g. 1h, 7d"
    )
    jobs.add_argument("--profile", help="only jobs converted with this profile's settings")
    shown = jobs.add_mutually_exclusive_group()
    shown.add_argument(
        "--limit", type=positive, default=50, help="at most this many rows (default: %(default)s)"
    )
    shown.add_argument("--all", action="store_true", help="every matching job, no limit")
    jobs.add_argument(
        "--sort",
        choices=("created", "finished", "priority"),
        default="created",
        help="newest created first (default), newest finished first, or highest priority",
    )
    jobs.add_argument("--json", action="store_true", help="a JSON array, times in ISO-8601 UTC")

    show = describe(sub, "show", "one job in full, from its status file", config)
    show.add_argument("job", metavar="JOB_ID|PATH", help="a job id, a prefix of one, or a path")
    show.add_argument("--json", action="store_true", help="the status file's JSON")

    enqueue = describe(
        sub, "enqueue", "submit files or folders (copied in if outside input/)", config
    )
    enqueue.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="files or folders")
    enqueue.add_argument("--priority", type=int, help="higher runs first (default from config)")
    enqueue.add_argument("--force", action="store_true", help="convert again even if done")

    retry = describe(sub, "retry", "re-enqueue failed or cancelled jobs", config)
    retry.add_argument("jobs", nargs="*", metavar="JOB_ID|PATH", help="the jobs to retry")
    retry.add_argument("--failed", action="store_true", help="every failed job")

    cancel = describe(sub, "cancel", "cancel pending or processing jobs", config)
    cancel.add_argument("jobs", nargs="*", metavar="JOB_ID|PATH", help="the jobs to cancel")
    cancel.add_argument(
        "--pending",
        nargs="?",
        const="",
        metavar="PATH_PREFIX",
        help="every pending job (under PATH_PREFIX in input/, if given)",
    )
    cancel.add_argument(
        "--all", action="store_true", help="every pending and processing job (drains the queue)"
    )

    purge = describe(
        sub,
        "purge",
        "forget old finished jobs (their records; waiting jobs are never touched)",
        config,
    )
    purge.add_argument("--older-than", required=True, type=duration, help="e.g. 7d, 12h")
    purge.add_argument(
        "--state",
        type=states_of(FINISHED),
        action="extend",
        help=f"comma-separated states (default: {','.join(FINISHED)})",
    )
    purge.add_argument("--outputs", action="store_true", help="delete their outputs too")
    purge.add_argument("--dry-run", action="store_true", help="say what would be forgotten")

    describe(sub, "doctor", "check the installation and the running daemon", config)

    convert = describe(sub, "convert", "convert one file in the foreground", config)
    convert.add_argument("file", type=Path, help="the document")
    convert.add_argument(
        "-o", "--output", type=Path, default=Path("."), help="output folder (default: .)"
    )
    return top


def version_line() -> str:
    from importlib.metadata import PackageNotFoundError, version

    def of(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "not installed"

    return f"hotfolder {of('hotfolder')} (docling {of('docling-slim')}, huey {of('huey')})"


def config_file(given: Path | None) -> Path:
    """--config, else $HOTFOLDER_CONFIG, else the first of ./config.toml and
    /etc/hotfolder/config.toml that exists (none: ./config.toml, which the error names)."""
    if given is not None:
        return given
    named = os.environ.get("HOTFOLDER_CONFIG")
    if named:
        return Path(named)
    return next((place for place in CONFIG_PLACES if place.is_file()), CONFIG_PLACES[0])


def main(argv: list[str] | None = None) -> int:
    tolerate_closed_pipe()
    top = parser()
    args = top.parse_args(argv)
    if args.command == "retry" and not (args.jobs or args.failed):
        top.error("retry needs JOB_ID|PATH or --failed")
    if (
        args.command == "cancel"
        and sum(map(bool, (args.jobs, args.pending is not None, args.all))) != 1
    ):
        top.error("cancel takes JOB_ID|PATH ..., --pending [PATH_PREFIX] or --all (one of them)")
    try:
        settings = load_settings(config_file(getattr(args, "config", None)))
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
    except PermissionError as exc:
        print(
            f"hotfolder: {needs_permission(exc.filename, exc, args.command, settings)}",
            file=sys.stderr,
        )
        return 1
    except sqlite3.OperationalError as exc:
        if "readonly" not in str(exc) and "unable to open" not in str(exc):
            print(f"hotfolder: OperationalError: {exc}", file=sys.stderr)
            return 1
        print(
            f"hotfolder: {needs_permission(settings.state_dir, exc, args.command, settings)}",
            file=sys.stderr,
        )
        return 1
    except (OSError, sqlite3.DatabaseError) as exc:
        # An operator command meets a file it cannot read: one line, not a traceback.
        print(f"hotfolder: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def needs_permission(path: object, exc: Exception, command: str, settings: Settings) -> str:
    """A file this user may read but not write: say what the command needs, and who has it."""
    return (
        f"{command} needs write access to {path}, which this user does not have "
        f"({type(exc).__name__}: {exc}); run it as the service's user "
        f"(sudo -u {service_user(settings)} hotfolder {command} ...)"
    )


def service_user(settings: Settings) -> str:
    import pwd

    try:
        return pwd.getpwuid(settings.state_dir.stat().st_uid).pw_name
    except (OSError, KeyError):
        return "hotfolder"


class TolerantStdout:
    """stdout that goes quiet once its reader has gone (`hotfolder jobs | head -1`): the
    command finishes what it does, without a BrokenPipeError, and exits as it would."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.gone = False  # the reader has gone: a loop that only writes should end

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except BrokenPipeError:
            self.silence()
            return len(text)

    def flush(self) -> None:
        try:
            self.stream.flush()
        except BrokenPipeError:
            self.silence()

    def silence(self) -> None:
        self.gone = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self.stream.fileno())  # what is still buffered goes nowhere
        os.close(devnull)

    def __getattr__(self, name: str) -> object:
        return getattr(self.stream, name)


def tolerate_closed_pipe() -> None:
    if not isinstance(sys.stdout, TolerantStdout):
        sys.stdout = TolerantStdout(sys.stdout)


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
        # `convert` says how it went in its last line: its log says only errors.
        least = "error" if command == "convert" else "warning"
        quiet = settings.log.model_copy(
            update={"level": max(settings.log.level, least, key=LEVELS.index)}
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
            return watch_status(services, args.interval, args.json)
        return show_status(services, args.json)
    if command in ("jobs", "show"):
        from watcher.commands.jobs import jobs_command, show_job

        if command == "jobs":
            limit = None if args.all else args.limit
            return jobs_command(
                services, args.state, args.since, args.sort, limit, args.json, args.profile
            )
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
        return control.cancel_jobs(services, args.jobs, args.pending, args.all)
    states = args.state or list(FINISHED)
    return control.purge_jobs(services, args.older_than, states, args.outputs, args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
