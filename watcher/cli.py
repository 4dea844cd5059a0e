"""The `hotfolder` command: run, watch, work, status. Exit codes: 0 ok, 1 failure, 2 usage,
78 configuration."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from watcher.settings import EX_CONFIG, ConfigError, Settings, load_settings


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="hotfolder", description=__doc__)
    top.add_argument(
        "--config",
        type=Path,
        default=Path("config.toml"),
        help="configuration file (default: ./config.toml)",
    )
    sub = top.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="watcher and workers together, in the foreground")
    sub.add_parser("watch", help="the folder watcher and startup scan only")
    sub.add_parser("work", help="the conversion workers only")
    status = sub.add_parser("status", help="job counts by state and queue depth")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
        if args.command != "status":
            from watcher.preflight import prepare_dirs

            prepare_dirs(settings)
    except ConfigError as exc:
        print(f"hotfolder: config error: {exc}", file=sys.stderr)
        return EX_CONFIG
    return dispatch(args, settings)


def dispatch(args: argparse.Namespace, settings: Settings) -> int:
    from watcher.logs import configure_logging

    configure_logging(settings.log, process=args.command)
    if args.command == "run":
        from watcher.supervisor import run_all

        return run_all(settings)
    if args.command == "watch":
        from watcher.watch import run_watch

        return run_watch(settings)
    if args.command == "work":
        from watcher.consumer import run_work

        return run_work(settings)
    from watcher.status import show_status

    return show_status(settings, args.json)


if __name__ == "__main__":
    sys.exit(main())
