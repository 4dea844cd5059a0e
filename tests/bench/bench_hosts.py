"""Benchmark: one batch on 1 host x 1 worker against 2 hosts x 1 worker, on a Redis queue.

    .venv/bin/python tests/bench/bench_hosts.py [--docs N] [--reps R]

Starts a redis-server of its own (free port, temp dir), one watcher, and one or two worker
"hosts" (process groups in their own UTS namespaces, with their own host names and state
dirs, sharing the input and output folders), as `make test` does. Needs root for the
namespaces. Once every worker is ready, drops the corpus (all of it by default: documents,
scans and photos, which go through OCR) at once and measures the span from the first
`job.started` to the last terminal event in the workers' logs, so start-up and settle time
are left out. Each host is pinned to a core of its own (`taskset`), as if it were a machine
with one core, so its workers and OCR threads size themselves to it. Prints the spans
(min/median over R repetitions) and their ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.harness import TERMINAL, stamp  # noqa: E402
from tests.helpers import (  # noqa: E402
    Daemon,
    RedisServer,
    as_host,
    corpus,
    drop,
    manifest,
    offline_rows,
    wait_for,
)
from watcher.settings import usable_cores  # noqa: E402

CORES = usable_cores()


def config(url: str, shared: Path) -> dict:
    return {
        "paths": {"input": str(shared / "input"), "output": str(shared / "output")},
        "queue": {"backend": "redis", "redis_url": url},
        "workers": {"count": 1, "poll_max_delay": 0.25},
    }


def ready(daemons: list[Daemon]) -> bool:
    for daemon in daemons:
        daemon.check_running()
    return all(daemon.events("worker.ready") for daemon in daemons[1:])


def one_run(root: Path, docs: list[Path], hosts: int) -> dict:
    server = RedisServer(root / "redis")
    shared = root / "shared"
    daemons: list[Daemon] = []
    try:
        settings = config(server.url, shared)
        daemons.append(Daemon(root=shared, command="watch", config=settings).start())
        for n in range(hosts):
            name = f"host{n}"
            host = Daemon(root=root / name, command="work", config=settings)
            # A core of its own, as a machine of its own would have (the watcher floats).
            host.wrap, host.session = as_host(name, "taskset", "-c", str(n % CORES)), True
            daemons.append(host.start())
        wait_for(lambda: ready(daemons), 120, "every worker to be ready")
        names = []
        for i, doc in enumerate(docs):
            name = f"d{i:03d}-{doc.name}"
            drop(doc, shared / "input" / name)
            names.append(name)
        watch = daemons[0]

        def done() -> bool:
            for daemon in daemons:
                daemon.check_running()
            states = watch.states()
            return all(states.get(n) in ("completed", "failed", "cancelled") for n in names)

        wait_for(done, 1800, "the batch", every=2)  # the span is read from the logs
        starts = [e for d in daemons[1:] for e in d.events("job.started")]
        ends = [e for d in daemons[1:] for e in d.events(*TERMINAL)]
        per_host = {d.root.name: len(d.events("job.started")) for d in daemons[1:]}
        began = {e["source"]: stamp(e) for e in starts}
        longest = max(stamp(e) - began[e["source"]] for e in ends)
        states = watch.states()
        return {
            "hosts": hosts,
            "span_s": max(map(stamp, ends)) - min(map(stamp, starts)),
            "longest_job_s": longest,
            "jobs_per_host": per_host,
            "completed": sum(states[n] == "completed" for n in names),
            "failed": sum(states[n] == "failed" for n in names),
            "started": len(starts),
        }
    finally:
        for daemon in daemons:
            daemon.stop()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--batch",
        choices=["corpus", "digital"],
        default="corpus",
        help="corpus: all 58 files, scans included; digital: the born-digital ones, twice",
    )
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the runs here")
    args = parser.parse_args()
    if args.batch == "corpus":
        docs = [corpus(row["file"]) for row in manifest()]
    else:
        docs = [corpus(row["file"]) for row in offline_rows()] * 2
    runs: list[dict] = []
    for rep in range(args.reps):
        for hosts in (1, 2):
            with tempfile.TemporaryDirectory(prefix="hotfolder-bench-hosts-") as tmp:
                run = one_run(Path(tmp), docs, hosts)
            run["rep"] = rep
            runs.append(run)
            print(json.dumps(run), file=sys.stderr)
    spans = {h: [r["span_s"] for r in runs if r["hosts"] == h] for h in (1, 2)}
    longest = max(r["longest_job_s"] for r in runs)
    print(
        f"{args.batch} batch: {len(docs)} files, {args.reps} repetitions, 1 worker and"
        f" 1 core per host; the longest single job took {longest:.1f} s\n"
    )
    print("| setup | min s | median s |")
    print("|---|---|---|")
    for hosts, label in ((1, "1 host x 1 worker"), (2, "2 hosts x 1 worker")):
        print(f"| {label} | {min(spans[hosts]):.1f} | {statistics.median(spans[hosts]):.1f} |")
    ratio = statistics.median(spans[2]) / statistics.median(spans[1])
    print(f"\n2 hosts / 1 host (medians): {ratio:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "ratio_of_medians": ratio}, indent=2))


if __name__ == "__main__":
    main()
