"""`hotfolder status`: totals by state, throughput, queue depth and liveness, from the job
index, huey's storage and the heartbeats; `--watch` redraws it with a bar per running job."""

from __future__ import annotations

import json
import signal
import sys
import time
from typing import TYPE_CHECKING

from handlers.sidecar import STATES, age_of, now_iso

if TYPE_CHECKING:
    from rich.console import Group
from watcher.commands.render import STATE_STYLES, bar, on_terminal, plural, reader_gone
from watcher.heartbeat import read_heartbeat
from watcher.services import Services

RATE_WINDOW_MIN = 5
EX_NOT_RUNNING = 3  # `status` when the watcher or the workers are not running
RUNNING = ("job_id", "source", "progress", "pages_done", "pages_total", "started_at", "worker")


def collect(services: Services) -> dict[str, object]:
    settings, backend = services.settings, services.backend
    index = services.fresh_index()
    counts = index.counts()
    with index.connect() as db:
        finished = db.execute(
            "select count(*) from jobs where finished_at >= ? and state = 'completed'",
            (now_iso(-RATE_WINDOW_MIN * 60),),
        ).fetchone()[0]
        running = db.execute(
            f"select {', '.join(RUNNING)} from jobs where state = 'processing' order by started_at"
        ).fetchall()
        converted_with = db.execute(
            "select profile, settings, count(*) from jobs where state = 'completed' "
            "and settings is not null group by profile, settings"
        ).fetchall()
    now = settings.fingerprints()
    stale = sum(count for profile, shaping, count in converted_with if now.get(profile) != shaping)
    oldest, deliveries = index.oldest_pending(), index.deliveries()
    depth: int | None
    scheduled: int | None
    queue_error: str | None
    try:
        depth, scheduled = backend.queue_sizes()
        queue_error = None
    except Exception as exc:  # any storage failure (damaged, unreachable) is the finding
        depth = scheduled = None
        queue_error = backend.unreachable(exc)  # reported, not repaired: status only reads
    return {
        "states": {state: counts.get(state, 0) for state in STATES},
        "total": sum(counts.values()),
        "queue_depth": depth,
        "scheduled_retries": scheduled,
        "queue_error": queue_error,
        "jobs_per_minute": round(finished / RATE_WINDOW_MIN, 2),
        "oldest_pending_age_s": age_of(oldest),
        "workers": read_heartbeat(settings.state_dir, "work"),
        "watcher": read_heartbeat(settings.state_dir, "watch"),
        "processing": [dict(zip(RUNNING, row, strict=True)) for row in running],
        "hook_deliveries": {state: deliveries[state] for state in ("pending", "given_up")},
        "stale_settings": stale,
        "hosts": backend.alive_hosts() if queue_error is None else [],
        "input": str(settings.input_dir),
        "output": str(settings.output_dir),
    }


def liveness(beat: dict[str, object], what: str) -> str:
    if not beat["alive"]:
        return f"{what}: NOT RUNNING" + (
            f" (last seen {beat['age_s']} s ago)" if beat["age_s"] else ""
        )
    workers = beat.get("workers")
    extra = f", {plural(len(workers), 'worker process')}" if isinstance(workers, list) else ""
    return f"{what}: running (pid {beat['pid']}{extra})"


def queue_line(report: dict[str, object]) -> str:
    if report["queue_error"] is not None:
        return f"queue depth unknown: {report['queue_error']}"
    return f"queue depth {report['queue_depth']} (+{report['scheduled_retries']} retries scheduled)"


def render(report: dict[str, object]) -> str:
    states = report["states"]
    assert isinstance(states, dict)
    oldest = report["oldest_pending_age_s"]
    lines = [
        f"input  {report['input']}",
        f"output {report['output']}",
        liveness(report["watcher"], "watcher"),  # type: ignore[arg-type]
        liveness(report["workers"], "workers"),  # type: ignore[arg-type]
        "",
        *(f"{state:<12}{states[state]:>8}" for state in STATES),
        f"{'total':<12}{report['total']:>8}",
        "",
        queue_line(report),
        f"throughput  {report['jobs_per_minute']} jobs/min (last {RATE_WINDOW_MIN} min)",
        f"oldest pending {'-' if oldest is None else f'{oldest:.0f} s'}",
    ]
    if report["stale_settings"]:
        lines.append(
            f"settings    {report['stale_settings']} completed jobs were converted with settings "
            "changed since (hotfolder enqueue --force converts them again)"
        )
    deliveries = report["hook_deliveries"]
    assert isinstance(deliveries, dict)
    if any(deliveries.values()):
        lines.append(
            f"hooks       {deliveries['pending']} deliveries pending, "
            f"{deliveries['given_up']} given up"
        )
    alive = report["hosts"]
    assert isinstance(alive, list)
    if alive:
        lines += ["", "hosts:"] + [
            f"  {beat['host']:<20} {beat['role']:<6} pid {beat['pid']}"
            + (f", {plural(len(beat['workers']), 'worker process')}" if beat.get("workers") else "")
            for beat in alive
        ]
    running = report["processing"]
    assert isinstance(running, list)
    if running:
        lines += ["", "processing:"]
        for job in running:
            progress = (
                bar(job["pages_done"], job["pages_total"])
                if job["pages_total"]
                else f"{job['progress']:3d}%"
            )
            lines.append(f"  {job['job_id'][:12]}  {progress}  {job['source']}")
    return "\n".join(lines)


def running(report: dict[str, object]) -> bool:
    """The watcher and the workers are both running (on this host)."""
    return all(report[part]["alive"] for part in ("watcher", "workers"))  # type: ignore[index]


def show_status(services: Services, as_json: bool) -> int:
    """Exit 0 when everything runs, EX_NOT_RUNNING (as `systemctl status`) when not."""
    report = collect(services)
    print(json.dumps(report, indent=2) if as_json else render(report))
    return 0 if running(report) else EX_NOT_RUNNING


def watch_status(services: Services, interval: float, as_json: bool = False) -> int:
    """Redraw until Ctrl-C: a live view on a terminal, frame after frame otherwise; with
    `as_json`, one JSON object per line, stamped."""
    # Ctrl-C (and SIGTERM) end it even when started with SIGINT ignored, as a background
    # job of a script is: Python keeps an inherited SIG_IGN.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if on_terminal() and not as_json:
        return live_status(services, interval)
    try:
        while True:
            report = collect(services)
            if as_json:
                sys.stdout.write(json.dumps({"at": now_iso(), **report}) + "\n")
            else:
                stamp = time.strftime("%H:%M:%S %Z")
                frame = render(report)
                sys.stdout.write(f"\nhotfolder status  {stamp}  (Ctrl-C to stop)\n{frame}\n")
            sys.stdout.flush()
            if reader_gone():
                return 0
            time.sleep(interval)
    except KeyboardInterrupt:
        return 0


def live_status(services: Services, interval: float) -> int:
    """The status redrawn in place (rich's Live), a progress bar per running job."""
    from rich.live import Live

    try:
        with Live(view(collect(services)), auto_refresh=False, screen=False) as live:
            while True:
                time.sleep(interval)
                live.update(view(collect(services)), refresh=True)
    except KeyboardInterrupt:
        return 0


def view(report: dict[str, object]) -> Group:
    """`render`'s content for a terminal: liveness in colour, the counts in a table, a bar
    per running job."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    def alive(part: str) -> Text:
        line = liveness(report[part], part)  # type: ignore[arg-type]
        return Text(line, style="green" if "running (" in line else "bold red")

    states = report["states"]
    assert isinstance(states, dict)
    counts = Table(box=None, show_header=False, pad_edge=False)
    counts.add_column(no_wrap=True)
    counts.add_column(justify="right")
    for state in STATES:
        counts.add_row(Text(state, style=STATE_STYLES[state]), str(states[state]))
    counts.add_row(Text("total", style="bold"), str(report["total"]))
    oldest = report["oldest_pending_age_s"]
    stamp = time.strftime("%H:%M:%S %Z")
    parts: list[object] = [
        Text(f"hotfolder status  {stamp}  (Ctrl-C to stop)", style="bold"),
        f"input  {report['input']}\noutput {report['output']}",
        alive("watcher"),
        alive("workers"),
        counts,
        queue_line(report),
        f"throughput  {report['jobs_per_minute']} jobs/min (last {RATE_WINDOW_MIN} min)",
        f"oldest pending {'-' if oldest is None else f'{oldest:.0f} s'}",
    ]
    if report["stale_settings"]:
        parts.append(
            Text(
                f"{report['stale_settings']} completed jobs ran with settings changed since",
                style="yellow",
            )
        )
    running = report["processing"]
    assert isinstance(running, list)
    if running:
        jobs = Table(box=None, header_style="bold", pad_edge=False, title_justify="left")
        for name in ("JOB ID", "PROGRESS", "", "SOURCE"):
            jobs.add_column(name, no_wrap=name != "SOURCE")
        for job in running:
            total = job["pages_total"] or 100
            done = job["pages_done"] if job["pages_total"] else job["progress"]
            unit = f"{done}/{total} pages" if job["pages_total"] else f"{done}%"
            jobs.add_row(
                job["job_id"][:12],
                ProgressBar(total=total, completed=done, width=24),
                unit,
                job["source"],
            )
        parts.append(jobs)
    return Group(*parts)  # type: ignore[arg-type]
