"""`make bench`: hotfolder measured against what a user would otherwise run, on the same
files, in one run. Results go to tests/bench/results/ (JSON with the machine's facts, a
Markdown table, a PNG chart); the README shows the latest.

    .venv/bin/python tests/bench/harness.py [--quick] [--reps N] [--only SECTION ...]

Sections (each a function below; `--only` picks some):
  batch     the offline corpus: hotfolder ready and cold against the in-process floor (warm
            and cold) and the `docling` CLI
  overhead  tiny files through one worker: CPU per job beyond the floor's, jobs/s, syscalls
            per job (strace), and one worker's RSS over the run
  hooks     CPU per job of the whole daemon with hooks and metrics off, with a webhook and
            the metrics text file, and with a command hook
  formats   ms per page to render each output format (md, json, ..., chunks, pdf) from a
            converted born-digital PDF, scanned PDF and DOCX
  ocr_check born-digital PDFs with conversion.ocr "auto" against "off", `hotfolder convert`
            in fresh processes: what checking pages for OCR costs where none needs it
  latency   drop-to-completed on a daemon idle for a minute, settle subtracted; idle CPU
  burst     10,000 tiny files at once: intake and completion rates, watcher peak RSS, lost
            and duplicated
  (memory)  RSS of each process idle (from `latency`) and after the batch (from `batch`),
            and one worker's over the tiny jobs (from `overhead`)
  ocr       the corpus scans: pages/s and word similarity, against OCRmyPDF with Tesseract
            (installed by the harness) writing a text layer that docling then reads
  cli       the operator commands at 100,000 sidecars
  split     a 24-page scanned PDF: one worker with both OCR threads, against the default
            two workers with one thread each, which share its parts (jobs.split_pages)

Every daemon runs with the shipped defaults (config.toml), as `make run` does.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.bench import bench_cli, report  # noqa: E402
from tests.helpers import (  # noqa: E402
    Daemon,
    corpus,
    descendants,
    hotfolder_argv,
    offline_rows,
    wait_for,
)
from watcher.settings import usable_cores  # noqa: E402

PYTHON = sys.executable
RESULTS = REPO / "tests" / "bench" / "results"
TERMINAL = ("job.completed", "job.failed", "job.cancelled")
# The shipped watch.closed_settle_seconds: the files here are written and closed locally.
SETTLE = 0.5
# The tools it compares against, installed on first use, outside the project.
TOOLS = Path(os.environ.get("HOTFOLDER_BENCH_TOOLS", "/var/tmp/hotfolder-bench"))


# ---------------------------------------------------------------- running hotfolder


def stamp(event: dict) -> float:
    return datetime.fromisoformat(event["timestamp"]).timestamp()


def start(root: Path, config: dict | None = None, wrap: list[str] | None = None) -> Daemon:
    """`hotfolder run` with the shipped defaults, returned once every worker is warm."""
    daemon = Daemon(root=root, config=config or {}, quick=False, wrap=wrap or [])
    daemon.start()
    workers = int((config or {}).get("workers", {}).get("count", 0)) or usable_cores()

    beat = daemon.root / "state" / "heartbeats" / "work.json"

    def ready() -> bool:
        daemon.check_running()
        log = daemon.log()
        warm = log.count('"worker.ready"') >= workers and '"watch.started"' in log
        return warm and beat.exists() and len(json.loads(beat.read_text())["workers"]) == workers

    wait_for(ready, 300, "hotfolder to be ready", every=0.2)
    return daemon


def count_terminal(daemon: Daemon) -> int:
    log = daemon.log()
    return sum(log.count(f'"event": "{name}"') for name in TERMINAL)


def wait_done(daemon: Daemon, count: int, timeout: float = 3600) -> None:
    """Until `count` jobs ended, read from the log (cheap at any scale)."""

    def done() -> bool:
        daemon.check_running()
        return count_terminal(daemon) >= count

    wait_for(done, timeout, f"{count} jobs", every=0.25)


def tree_pids(daemon: Daemon) -> dict[str, list[int]]:
    """The processes of `hotfolder run`, by role, from their command lines and parents; the
    consumer's children are its workers (from its heartbeat) and huey's scheduler."""
    assert daemon.process is not None
    roles: dict[str, list[int]] = {"run": [daemon.process.pid]}
    beat = daemon.root / "state" / "heartbeats" / "work.json"
    workers = set(json.loads(beat.read_text())["workers"]) if beat.exists() else set()
    for pid in descendants(daemon.process.pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        role = argv[-2].decode() if len(argv) > 1 and not argv[-1] else ""
        if role == "work" and parent != daemon.process.pid:
            role = "worker" if pid in workers else "scheduler"
        roles.setdefault(role, []).append(pid)
    return roles


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_s(pids: list[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def children_cpu() -> float:
    """CPU seconds of every process this one has waited for (and theirs, recursively)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def drop_all(files: list[Path], input_dir: Path) -> list[str]:
    names = []
    input_dir.mkdir(parents=True, exist_ok=True)
    for n, source in enumerate(files):
        name = f"{n:05d}-{source.name}"
        shutil.copyfile(source, input_dir / name)
        names.append(name)
    return names


def tiny_files(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for n in range(count):
        path = folder / f"note{n:05d}.md"
        path.write_text(f"# Note {n}\n\nA tiny document, number {n}.\n")
        files.append(path)
    return files


def floor(files: list[Path], procs: int, out: Path) -> dict:
    """The in-process floor (floor.py); `cold_s` is the whole command, start-up included."""
    started = time.perf_counter()
    done = subprocess.run(
        [PYTHON, str(REPO / "tests/bench/floor.py"), "--procs", str(procs), "--out", str(out)]
        + list(map(str, files)),
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["cold_s"] = time.perf_counter() - started
    return result


def spread(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "runs": values}


# ---------------------------------------------------------------- the sections


def batch(tmp: Path, quick: bool, reps: int) -> dict:
    rows = offline_rows()
    if quick:
        rows = rows[::4]
    files = [corpus(row["file"]) for row in rows]
    procs = usable_cores()
    runs: dict[str, list[float]] = {k: [] for k in ("floor_warm", "floor_cold", "ready", "cold")}
    runs["docling_cli"] = []
    failed: dict[str, int] = {}
    after_batch: dict[str, float] = {}
    for rep in range(reps):
        result = floor(files, procs, tmp / f"floor{rep}")
        runs["floor_warm"].append(result["warm_s"])
        runs["floor_cold"].append(result["cold_s"])
        failed["floor"] = result["failed"]

        daemon = start(tmp / f"ready{rep}")
        dropped = time.time()
        drop_all(files, daemon.input)
        wait_done(daemon, len(files))
        runs["ready"].append(max(map(stamp, daemon.events(*TERMINAL))) - dropped)
        failed["hotfolder"] = len(daemon.events("job.failed"))
        if rep == 0:
            after_batch = {
                role: round(sum(rss_mb(p) for p in pids), 1)
                for role, pids in tree_pids(daemon).items()
            }
        daemon.stop()

        root = tmp / f"cold{rep}"
        drop_all(files, root / "input")
        started = time.time()
        daemon = start(root)
        wait_done(daemon, len(files))
        runs["cold"].append(max(map(stamp, daemon.events(*TERMINAL))) - started)
        daemon.stop()

        cli_s, cli_notes = docling_cli(files, tmp / f"cli{rep}")
        runs["docling_cli"].append(cli_s)
    floor_warm = statistics.median(runs["floor_warm"])
    floor_cold = statistics.median(runs["floor_cold"])
    return {
        "files": len(files),
        "processes": procs,
        "seconds": {name: spread(values) for name, values in runs.items()},
        "ratios": {
            "ready / floor warm": statistics.median(runs["ready"]) / floor_warm,
            "cold / floor cold": statistics.median(runs["cold"]) / floor_cold,
            "docling CLI / hotfolder cold": statistics.median(runs["docling_cli"])
            / statistics.median(runs["cold"]),
        },
        "failed": failed,
        "docling_cli_notes": cli_notes,
        "rss_after_batch_mb": after_batch,
        "settle_s_included": SETTLE,
    }


DOCLING_VENV = TOOLS / "docling-venv"


def docling_command() -> str:
    """The full `docling` package's CLI, in a venv of its own: docling-slim's CLI (the one
    hotfolder has) refuses to convert without PyTorch. Installed on first use, with the
    docling release that matches hotfolder's docling-slim and the CPU PyTorch on this disk."""
    command = DOCLING_VENV / "bin" / "docling"
    if not command.exists():
        subprocess.run([PYTHON, "-m", "venv", str(DOCLING_VENV)], check=True)
        subprocess.run(
            [str(DOCLING_VENV / "bin" / "pip"), "install", "-q"]
            + [f"docling=={version('docling-slim')}", "torch==2.14.1", "torchvision==0.29.1"],
            check=True,
        )
    return str(command)


def docling_cli(files: list[Path], out: Path) -> tuple[float, list[str]]:
    """The `docling` CLI of the same docling release, with the flags that give the same
    outputs: PDFs through the native pipeline, everything else in a second call (one call
    cannot mix `--pipeline native` with other formats), ODF left out (the docling package
    does not install odfdo, and the CLI aborts on it)."""
    pdfs = [f for f in files if f.suffix.lower() == ".pdf"]
    odf = [f for f in files if f.suffix.lower() in (".odt", ".ods", ".odp")]
    rest = [f for f in files if f not in pdfs and f not in odf]
    base = [docling_command(), "convert", "--to", "md", "--to", "json", "--output", str(out)]
    started = time.perf_counter()
    for argv in ([*base, "--pipeline", "native", *map(str, pdfs)], [*base, *map(str, rest)]):
        subprocess.run(
            [*argv, "-q"], capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}
        )
    seconds = time.perf_counter() - started
    converted = len(list(out.glob("*.md")))
    notes = [f"converted {converted} of the {len(pdfs) + len(rest)} files it was given"]
    if odf:
        notes.append(f"left out: {', '.join(f.name for f in odf)} (ODF)")
    return seconds, notes


def overhead(tmp: Path, quick: bool, reps: int) -> dict:
    count = 200 if quick else 1000
    files = tiny_files(tmp / "tiny", count)
    one = {"workers": {"count": 1, "max_tasks_per_worker": 0}}
    result = floor(files, 1, tmp / "floor")

    before = children_cpu()
    start(tmp / "empty", one).stop()
    empty_cpu = children_cpu() - before

    before = children_cpu()
    daemon = start(tmp / "full", one)
    worker = tree_pids(daemon).get("worker", [0])[0]
    samples = [(0, rss_mb(worker))]
    dropped = time.time()
    drop_all(files, daemon.input)
    while (done := count_terminal(daemon)) < count:
        daemon.check_running()
        samples.append((done, rss_mb(worker)))
        time.sleep(0.5)
    samples.append((count, rss_mb(worker)))
    ends = [stamp(e) for e in daemon.events(*TERMINAL)]
    daemon.stop()
    full_cpu = children_cpu() - before
    per_job_ms = ((full_cpu - empty_cpu) - result["warm_cpu_s"]) / count * 1000
    return {
        "files": count,
        "workers": 1,
        "cpu_per_job_ms": {
            "hotfolder": (full_cpu - empty_cpu) / count * 1000,
            "floor": result["warm_cpu_s"] / count * 1000,
            "overhead": per_job_ms,
        },
        "jobs_per_s": count / (max(ends) - dropped),
        "worker_rss_mb": {
            "first": samples[0][1],
            "max": max(s[1] for s in samples),
            "last": samples[-1][1],
            "samples": samples[:: max(1, len(samples) // 20)],
        },
        "syscalls_per_job": syscalls(tmp, 50 if quick else 300),
    }


def hooks(tmp: Path, quick: bool, reps: int) -> dict:
    """CPU per job of the whole daemon (start-up taken out) with hooks and metrics off, with
    a webhook to a local receiver and the metrics text file, and with a command hook (a
    process per job: `true`); over the same tiny files, medians of `reps` (3 at least)."""
    count = 200 if quick else 1000
    files = tiny_files(tmp / "tiny", count)
    one = {"workers": {"count": 1, "max_tasks_per_worker": 0}}
    receiver = Receiver()
    metrics = {"textfile": str(tmp / "metrics.prom"), "interval": 1}
    runs = {
        "off": one,
        "webhook": {**one, "hooks": {"webhook": [{"url": receiver.url}]}, "metrics": metrics},
        "command": {**one, "hooks": {"command": [{"argv": ["true"]}]}},
    }
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    try:
        for rep in range(max(reps, 3)):
            for name, config in runs.items():
                before = children_cpu()
                start(tmp / f"{name}-empty{rep}", config).stop()
                empty = children_cpu() - before
                before = children_cpu()
                daemon = start(tmp / f"{name}{rep}", config)
                drop_all(files, daemon.input)
                wait_done(daemon, count)
                if name != "off":
                    wait_for(
                        lambda d=daemon: d.log().count('"hook.delivered"') >= count,
                        600,
                        "every delivery",
                        0.5,
                    )
                daemon.stop()
                cpu[name].append((children_cpu() - before - empty) / count * 1000)
    finally:
        receiver.close()
    medians = {name: statistics.median(values) for name, values in cpu.items()}
    return {"files": count, "cpu_per_job_ms": medians, "runs": cpu}


FORMAT_DOCS = ["pdf/redp5110_sampled.pdf", "pdf/nemotron_multipage.pdf", "docx/word_sample.docx"]


def formats(tmp: Path, quick: bool, reps: int) -> dict:
    """What each output format costs, per page, rendered from a document already converted
    (in this process, one converter): a born-digital PDF, a scanned one, a DOCX."""
    from handlers.converter import ConversionOptions, DoclingConverter
    from handlers.outputs import FORMATS, Rendition
    from handlers.sidecar import new_status

    converter = DoclingConverter(ConversionOptions())
    per_page: dict[str, dict[str, float]] = {}
    for rel in FORMAT_DOCS:
        source = corpus(rel)
        result = converter.convert(source, lambda done, total: None)
        rendition = Rendition(result.document, source, new_status(rel, "bench", "", 0, 0))
        pages = max(result.pages, 1)
        for name, output in FORMATS.items():
            seconds = []
            for _ in range(max(reps, 3)):
                began = time.perf_counter()
                output.render(rendition)
                seconds.append(time.perf_counter() - began)
            per_page.setdefault(name, {})[rel] = statistics.median(seconds) / pages * 1000
    return {"docs": FORMAT_DOCS, "ms_per_page": per_page}


AUTO_DOCS = ["pdf/redp5110_sampled.pdf", "pdf/picture_classification.pdf", "pdf/multi_page.pdf"]


def ocr_check(tmp: Path, quick: bool, reps: int) -> dict:
    """What `conversion.ocr = "auto"` costs on born-digital PDFs, against `"off"`: each
    `hotfolder convert` in a fresh process (whole command, start-up included, and the
    conversion alone from its sidecar), the two modes alternating."""
    config = tmp / "config.toml"
    config.write_text("")
    runs: dict[str, dict[str, dict[str, list[float]]]] = {}
    for rel in AUTO_DOCS[:1] if quick else AUTO_DOCS:
        source = corpus(rel)
        for rep in range(max(reps, 3)):
            for mode in ("off", "auto"):
                out = tmp / f"{mode}{rep}"
                began = time.perf_counter()
                subprocess.run(
                    hotfolder_argv("--config", str(config), "convert", str(source), "-o", str(out)),
                    check=True,
                    capture_output=True,
                    env={**os.environ, "HOTFOLDER_CONVERSION__OCR": mode, "HF_HUB_OFFLINE": "1"},
                )
                whole = time.perf_counter() - began
                status = json.loads((out / f"{source.name}.status.json").read_text())
                seconds = runs.setdefault(rel, {}).setdefault(mode, {"command": [], "convert": []})
                seconds["command"].append(whole)
                seconds["convert"].append(status["duration_s"])
    seconds_of = {
        rel: {
            mode: {part: spread(values) for part, values in parts.items()}
            for mode, parts in modes.items()
        }
        for rel, modes in runs.items()
    }
    ratios = {
        rel: {
            part: modes["auto"][part]["median"] / modes["off"][part]["median"]
            for part in ("command", "convert")
        }
        for rel, modes in seconds_of.items()
    }
    return {"docs": list(runs), "seconds": seconds_of, "auto / off": ratios}


class Receiver:
    """A local HTTP server that answers every POST with 200, for the webhook runs."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                self.rfile.read(int(self.headers["Content-Length"]))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


SYSCALLS = {
    "fsync": ("fsync",),
    "fdatasync": ("fdatasync",),
    "rename": ("rename", "renameat", "renameat2"),
    "stat": ("stat", "lstat", "fstat", "newfstatat", "statx"),
    "fcntl": ("fcntl", "flock"),
    "openat": ("open", "openat"),
    "all": (),
}


def strace_counts(root: Path, files: list[Path], count: int) -> Counter:
    """Syscalls made by a whole `hotfolder run` that converts `files` (already in its input)."""
    out = root / "strace.txt"
    drop_all(files, root / "input")
    daemon = Daemon(root=root, quick=False, wrap=["strace", "-f", "-c", "-o", str(out)])
    daemon.start()
    wait_for(lambda: count_terminal(daemon) >= count and daemon.log(), 600, "traced jobs", 0.5)
    if not count:
        wait_for(lambda: '"worker.ready"' in daemon.log(), 300, "a ready worker", 0.5)
    assert daemon.process is not None
    hotfolder = descendants(daemon.process.pid)[0]  # strace's child (setpriv execs in place)
    os.kill(hotfolder, signal.SIGINT)
    daemon.process.wait(120)
    calls: Counter = Counter()
    for line in out.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[0][0].isdigit() and fields[-1] != "total":
            calls[fields[-1]] = int(fields[3])
    return calls


def syscalls(tmp: Path, count: int) -> dict:
    if not shutil.which("strace"):
        return {"skipped": "strace is not installed"}
    files = tiny_files(tmp / "traced", count)
    empty = strace_counts(tmp / "strace0", [], 0)
    full = strace_counts(tmp / "straceN", files, count)
    result = {}
    for name, calls in SYSCALLS.items():
        pick = calls or tuple(full)
        result[name] = round(sum(full[c] - empty[c] for c in pick) / count, 1)
    result["jobs"] = count
    return result


def latency(tmp: Path, quick: bool, reps: int) -> dict:
    idle_s, drops = (10, 5) if quick else (60, 30)
    daemon = start(tmp / "latency")
    pids = [p for group in tree_pids(daemon).values() for p in group]
    idle_rss = {
        role: [round(rss_mb(p), 1) for p in group] for role, group in tree_pids(daemon).items()
    }
    cpu_before = cpu_s(pids)
    time.sleep(idle_s)
    idle_cpu_per_min = (cpu_s(pids) - cpu_before) / idle_s * 60
    waits, dropped_at = [], []
    for n in range(drops):
        name = f"drop{n:03d}.md"
        dropped = time.time()
        dropped_at.append(dropped)
        (daemon.input / name).write_text(f"# Drop {n}\n\nOne small file.\n")
        status = daemon.wait_state(name, ("completed", "failed"), timeout=120)
        finished = datetime.fromisoformat(status["finished_at"]).timestamp()
        waits.append(finished - dropped - SETTLE)
        time.sleep(1 + (n % 3))  # the worker goes back to idle polling
    daemon.stop()
    at: dict[str, dict[str, float]] = {}
    for event in daemon.events("job.pending", "job.started", "job.completed"):
        at.setdefault(event["source"], {})[event["event"]] = stamp(event)
    steps = {"taken in": [], "queued": [], "converted": []}
    for name, dropped in zip(sorted(at), dropped_at, strict=True):
        seen = at[name]
        steps["taken in"].append(seen["job.pending"] - dropped - SETTLE)
        steps["queued"].append(seen["job.started"] - seen["job.pending"])
        steps["converted"].append(seen["job.completed"] - seen["job.started"])
    waits.sort()
    return {
        "median_steps_s": {step: statistics.median(values) for step, values in steps.items()},
        "drops": drops,
        "idle_s_first": idle_s,
        "beyond_settle_s": {
            "p50": statistics.median(waits),
            "p95": waits[min(len(waits) - 1, round(0.95 * (len(waits) - 1)))],
            "max": waits[-1],
        },
        "idle_cpu_s_per_min": idle_cpu_per_min,
        "idle_rss_mb": idle_rss,
    }


def burst(tmp: Path, quick: bool, reps: int) -> dict:
    count = 1000 if quick else 10_000
    daemon = start(tmp / "burst")
    watcher = tree_pids(daemon)["watch"][0]
    started = time.time()
    for n in range(count):
        (daemon.input / f"b{n:05d}.md").write_text(f"# Burst {n}\n\nA tiny document.\n")
    written_s = time.time() - started
    wait_done(daemon, count)
    peak = rss_mb(watcher, "VmHWM")
    pending = [stamp(e) for e in daemon.events("job.pending")]
    starts = Counter(e["source"] for e in daemon.events("job.started"))
    ends = [stamp(e) for e in daemon.events(*TERMINAL)]
    states = Counter(daemon.states().values())
    daemon.stop()
    return {
        "files": count,
        "write_files_per_s": count / written_s,
        "intake_files_per_s": len(pending) / (max(pending) - min(pending)),
        "jobs_per_s": len(ends) / (max(ends) - started),
        "watcher_peak_rss_mb": peak,
        "completed": states["completed"],
        "lost": count - sum(states[s] for s in ("completed", "failed", "cancelled")),
        "converted_twice": sum(1 for n in starts.values() if n > 1),
    }


def ocr(tmp: Path, quick: bool, reps: int) -> dict:
    from tests.bench.ocr_compare import compare

    return compare(tmp, quick)


def cli(tmp: Path, quick: bool, reps: int) -> dict:
    jobs = 10_000 if quick else 100_000
    return {"jobs": jobs, "seconds": dict(bench_cli.measure(jobs, 3 if quick else 5))}


SCAN_PAGES = [
    ("pdf/redp5110_sampled.pdf", range(18)),
    ("pdf/multi_page.pdf", range(5)),
    ("pdf/normal_4pages.pdf", range(1)),
]  # 24 pages, of every density


def long_scan(target: Path) -> Path:
    """The born-digital pages above, rendered at 150 dpi into a PDF of images only."""
    from tests.bench.ocr_pages import rendered

    images = [rendered(rel, index, 150) for rel, pages in SCAN_PAGES for index in pages]
    images[0].save(target, "PDF", resolution=150, save_all=True, append_images=images[1:])
    return target


SPLIT_RUNS = {  # name -> config
    "1 worker": {"workers": {"count": 1}},
    "2 workers": {"workers": {"count": 2}},
    "2 workers, not split": {"workers": {"count": 2}, "jobs": {"split_pages": 0}},
}


def split(tmp: Path, quick: bool, reps: int) -> dict:
    """The scan through one worker (which gets both OCR threads, and never splits),
    through two (one thread each, sharing its parts), and through two with splitting off,
    in turn; seconds from the job's start to its end, and whether the Markdown is the same."""
    scan = long_scan(tmp / "scan.pdf")
    seconds: dict[str, list[float]] = {name: [] for name in SPLIT_RUNS}
    markdown: dict[str, set[bytes]] = {name: set() for name in seconds}
    for rep in range(1 if quick else max(reps, 2)):
        for n, (name, config) in enumerate(SPLIT_RUNS.items()):
            daemon = start(tmp / f"run{n}-{rep}", config)
            shutil.copyfile(scan, daemon.input / ".scan.pdf")
            os.replace(daemon.input / ".scan.pdf", daemon.input / "scan.pdf")
            status = daemon.wait_state("scan.pdf", ("completed", "failed"), timeout=3600)
            daemon.stop()
            assert status["state"] == "completed", status
            seconds[name].append(status["duration_s"])
            markdown[name].add((daemon.output / "scan.pdf.md").read_bytes())
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    return {
        "pages": sum(len(pages) for _, pages in SCAN_PAGES),
        "seconds": {name: spread(values) for name, values in seconds.items()},
        "2 workers / 1 worker": medians["2 workers"] / medians["1 worker"],
        "same_markdown": len(set().union(*markdown.values())) == 1,
    }


SECTIONS: dict[str, Callable[[Path, bool, int], dict]] = {
    f.__name__: f
    for f in (batch, overhead, hooks, formats, ocr_check, latency, burst, ocr, cli, split)
}


# ---------------------------------------------------------------- the machine, the run


def machine() -> dict:
    cpu = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
    memory_kb = int(re.search(r"MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text())[1])
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {
        "cpu": cpu[1] if cpu else platform.processor(),
        "cores": usable_cores(),
        "memory_gib": round(memory_kb / 1024**2, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "docling_slim": version("docling-slim"),
        "huey": version("huey"),
        "onnxruntime": version("onnxruntime"),  # OCR speed moves with it and with the CPU
        "hotfolder_commit": commit + ("+changes" if dirty else ""),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short version of every section")
    parser.add_argument("--reps", type=int, default=0, help="repetitions (default 3, quick 1)")
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    reps = args.reps or (1 if args.quick else 3)
    results: dict = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "reps": reps,
        "machine": machine(),
        "sections": {},
    }
    for name in args.only:
        began = time.monotonic()
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix=f"hotfolder-bench-{name}-") as tmp:
            results["sections"][name] = SECTIONS[name](Path(tmp), args.quick, reps)
        results["sections"][name]["took_s"] = round(time.monotonic() - began, 1)
        print(f"bench: {name} took {time.monotonic() - began:.0f} s", file=sys.stderr)
    written = report.write(results, args.out)
    print((args.out / "latest.md").read_text())
    print("wrote " + ", ".join(map(str, written)), file=sys.stderr)


if __name__ == "__main__":
    main()
