"""`hotfolder status`: job counts by state from the sidecars (the record) and the queue depth."""

from __future__ import annotations

import json
from collections import Counter

from handlers.sidecar import iter_sidecars, read_status
from watcher.queue import build_queue, queue_file
from watcher.settings import Settings

STATES = ("pending", "processing", "completed", "failed", "cancelled")


def collect(settings: Settings) -> dict[str, object]:
    counts: Counter[str] = Counter()
    for sidecar in iter_sidecars(settings.output_dir):
        status = read_status(sidecar)
        counts[status.state if status else "unreadable"] += 1
    depth = build_queue(settings).depth() if queue_file(settings).exists() else 0
    return {
        "states": {state: counts.get(state, 0) for state in STATES},
        "unreadable": counts.get("unreadable", 0),
        "total": sum(counts.values()),
        "queue_depth": depth,
        "input": str(settings.input_dir),
        "output": str(settings.output_dir),
    }


def render_table(report: dict[str, object]) -> str:
    states = report["states"]
    assert isinstance(states, dict)
    rows = [(state, states[state]) for state in STATES]
    if report["unreadable"]:
        rows.append(("unreadable", report["unreadable"]))
    rows += [("total", report["total"]), ("queue depth", report["queue_depth"])]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value:>7}" for name, value in rows]
    return "\n".join([f"input  {report['input']}", f"output {report['output']}", "", *lines])


def show_status(settings: Settings, as_json: bool) -> int:
    report = collect(settings)
    print(json.dumps(report, indent=2) if as_json else render_table(report))
    return 0
