"""Benchmark: operator commands against an output folder of N jobs (default 100,000).

    .venv/bin/python tests/bench/bench_cli.py [--jobs N] [--runs R]

Writes N schema-valid sidecars into a temp folder (the setup, not measured), then measures:
the reconciler's index sync from scratch and when nothing changed, and the wall time of
`hotfolder status --json`, `jobs`, `jobs --state failed` and `show <id prefix>` as a
person runs them (new process each, Python start-up included). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from handlers.index import JobIndex
from handlers.ledger import Ledger
from handlers.sidecar import new_status
from handlers.source import job_id
from watcher.commands.status import EX_NOT_RUNNING

STATES = ["completed"] * 90 + ["failed"] * 6 + ["pending"] * 3 + ["cancelled"]


def make_sidecars(output: Path, count: int) -> str:
    """Write `count` sidecars in folders of 1,000; returns one job id."""
    for n in range(count):
        rel = f"batch{n // 1000:03d}/doc{n:06d}.pdf"
        status = new_status(rel, job_id(rel, f"{n:064x}"), f"{n:064x}", 1000 + n, n % 3)
        status.state = STATES[n % len(STATES)]  # type: ignore[assignment]
        if status.state != "pending":
            status.finished_at = status.updated_at
        path = output / f"{rel}.status.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(status.model_dump()))
    return status.job_id


def timed(argv: list[str], runs: int, expect: int = 0) -> float:
    """Median seconds of `argv`, which must exit with `expect` each time."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True)
        times.append(time.perf_counter() - started)
        if done.returncode != expect:
            raise RuntimeError(f"{argv} exited {done.returncode}, not {expect}: {done.stderr}")
    return statistics.median(times)


def measure(jobs: int, runs: int) -> list[tuple[str, float]]:
    """(what, median seconds) for each row of the table."""
    with tempfile.TemporaryDirectory(prefix="hotfolder-bench-") as tmp:
        root = Path(tmp)
        (root / "config.toml").write_text("")
        some_id = make_sidecars(root / "output", jobs)
        index = JobIndex(root / "state" / "index.db")
        ledger = Ledger(root / "output", index)
        started = time.perf_counter()
        statuses = list(ledger.all())
        read_s = time.perf_counter() - started
        started = time.perf_counter()
        index.sync(statuses, since="9999")
        first_sync_s = time.perf_counter() - started
        started = time.perf_counter()
        index.sync(statuses, since="9999")
        idle_sync_s = time.perf_counter() - started
        cli = [sys.executable, "-m", "watcher.cli", "--config", str(root / "config.toml")]
        return [
            ("reconciler: read every sidecar", read_s),
            ("reconciler: index sync, empty index", first_sync_s),
            ("reconciler: index sync, nothing changed", idle_sync_s),
            (
                "`hotfolder status --json`",
                # No daemon runs here, so `status` says so with its exit code.
                timed([*cli, "status", "--json"], runs, expect=EX_NOT_RUNNING),
            ),
            ("`hotfolder jobs` (50 newest)", timed([*cli, "jobs"], runs)),
            (
                "`hotfolder jobs --state failed --limit 1000`",
                timed([*cli, "jobs", "--state", "failed", "--limit", "1000"], runs),
            ),
            ("`hotfolder show <8-char id prefix>`", timed([*cli, "show", some_id[:8]], runs)),
            (
                "`python -c pass` (interpreter start, for reference)",
                timed([sys.executable, "-c", "pass"], runs),
            ),
        ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"| {args.jobs:,} jobs | seconds |\n|---|---|")
    for name, seconds in measure(args.jobs, args.runs):
        print(f"| {name} | {seconds:.3f} |")


if __name__ == "__main__":
    main()
