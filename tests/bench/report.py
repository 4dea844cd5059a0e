"""The benchmark's results as files: `<time>.json` and `latest.json` (everything measured,
with the machine's facts), `latest.md` (the tables the README shows) and `latest.png` (a
chart of the main comparisons, drawn with Pillow, which docling already needs)."""

from __future__ import annotations

import json
from pathlib import Path


def write(results: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2)
    moment = results["when"].replace(":", "").replace("+0000", "Z")
    paths = [out / f"{moment}.json", out / "latest.json", out / "latest.md", out / "latest.png"]
    paths[0].write_text(text)
    paths[1].write_text(text)
    paths[2].write_text(markdown(results))
    chart(results, paths[3])
    return paths


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [
        f"Measured {results['when']} on {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB,"
        f" Linux {m['kernel']}, Python {m['python']}, docling-slim {m['docling_slim']},"
        f" huey {m['huey']}, onnxruntime {m['onnxruntime']},"
        f" hotfolder {m['hotfolder_commit']};"
        f" {results['reps']} repetition(s){', quick run' if results['quick'] else ''}.",
    ]
    sections = results["sections"]
    for name, render in RENDERERS.items():
        if name in sections:
            lines += ["", *render(sections[name])]
    if "latency" in sections or "batch" in sections or "overhead" in sections:
        lines += ["", *memory(sections)]
    return "\n".join(lines) + "\n"


def table(title: str, columns: list[str], rows: list[list[object]]) -> list[str]:
    """A bold title, then a Markdown table: one header, one separator, a line per row."""
    cells = [columns, ["---"] * len(columns), *rows]
    lines = ["| " + " | ".join(map(str, row)) + " |" for row in cells]
    lines[1] = "|" + "---|" * len(columns)
    return [title, "", *lines]


def batch(s: dict) -> list[str]:
    runs = s["seconds"]
    warm, cold = runs["floor_warm"]["median"], runs["floor_cold"]["median"]
    rows = [
        ("in-process floor (plain docling), warm converters", "floor_warm", warm),
        ("in-process floor (plain docling), cold (start-up included)", "floor_cold", cold),
        (
            f"hotfolder, ready daemon (drop to last done, {s['settle_s_included']:g} s settle)",
            "ready",
            warm,
        ),
        ("hotfolder, cold start (files already in input/)", "cold", cold),
        ("`docling` CLI, same docling (2 calls)", "docling_cli", cold),
    ]
    lines = table(
        f"**Batch**: {s['files']} offline corpus documents, {s['processes']} processes"
        " (hotfolder: its default workers).",
        ["run", "min s", "median s", "vs floor"],
        [
            [label, f"{runs[key]['min']:.1f}", f"{runs[key]['median']:.1f}"]
            + [f"{runs[key]['median'] / base:.2f}x"]
            for label, key, base in rows
        ],
    )
    notes = "; ".join(s["docling_cli_notes"])
    lines += ["", f"Failed: {s['failed']}." + (f" docling CLI: {notes}." if notes else "")]
    return lines


def overhead(s: dict) -> list[str]:
    cpu, calls = s["cpu_per_job_ms"], s["syscalls_per_job"]
    rows: list[list[object]] = [
        ["CPU per job, hotfolder (all processes)", f"{cpu['hotfolder']:.1f} ms"],
        ["CPU per job, in-process floor", f"{cpu['floor']:.1f} ms"],
        ["overhead per job (the difference)", f"{cpu['overhead']:.1f} ms"],
        ["throughput, drop to last done", f"{s['jobs_per_s']:.0f} jobs/s"],
    ]
    if "skipped" not in calls:
        names = ("fsync", "fdatasync", "rename", "stat", "fcntl", "openat", "all")
        shown = ", ".join(f"{calls[n]:g} {n}" for n in names)
        rows.append([f"syscalls per job ({calls['jobs']} jobs, strace)", shown])
    return table(
        f"**Per-job overhead**: {s['files']} tiny Markdown files, 1 worker.",
        ["measure", "value"],
        rows,
    )


def hooks(s: dict) -> list[str]:
    cpu = s["cpu_per_job_ms"]
    rows: list[list[object]] = [
        ["hooks and metrics off", f"{cpu['off']:.2f} ms", "-"],
        [
            "a webhook (local receiver) and the metrics text file",
            f"{cpu['webhook']:.2f} ms",
            f"{cpu['webhook'] - cpu['off']:+.2f} ms",
        ],
        [
            "a command hook (`true`: a process per job)",
            f"{cpu['command']:.2f} ms",
            f"{cpu['command'] - cpu['off']:+.2f} ms",
        ],
    ]
    return table(
        f"**Hooks and metrics**: CPU per job of the whole daemon (start-up taken out),"
        f" {s['files']} tiny files, 1 worker; medians of {len(s['runs']['off'])} runs.",
        ["run", "CPU per job", "against off"],
        rows,
    )


def formats(s: dict) -> list[str]:
    docs = s["docs"]
    rows = [
        [f"`{name}`", *(f"{cost[doc]:.2f}" for doc in docs)]
        for name, cost in s["ms_per_page"].items()
    ]
    return table(
        "**Output formats**: ms per page to render each format from a converted document"
        " (medians of 3 renders).",
        ["format", *(f"`{Path(doc).name}`" for doc in docs)],
        rows,
    )


def ocr_check(s: dict) -> list[str]:
    rows = []
    for doc in s["docs"]:
        modes, ratio = s["seconds"][doc], s["auto / off"][doc]
        rows.append(
            [f"`{Path(doc).name}`"]
            + [
                f"{modes[mode][part]['median']:.2f}"
                for part in ("command", "convert")
                for mode in ("off", "auto")
            ]
            + [f"{ratio['command']:.2f}x", f"{ratio['convert']:.2f}x"]
        )
    return table(
        '**OCR check**: born-digital PDFs with `conversion.ocr = "auto"` against `"off"`,'
        " `hotfolder convert` in fresh processes (median seconds: the whole command, and the"
        " conversion alone from the sidecar).",
        ["document", "command off", "command auto", "convert off", "convert auto"]
        + ["command auto/off", "convert auto/off"],
        rows,
    )


def latency(s: dict) -> list[str]:
    w = s["beyond_settle_s"]
    return [
        *table(
            f"**Latency**: {s['drops']} single drops into a daemon idle for"
            f" {s['idle_s_first']} s; drop to `completed`, settle time subtracted.",
            ["p50", "p95", "max", "idle CPU"],
            [
                [f"{w['p50']:.2f} s", f"{w['p95']:.2f} s", f"{w['max']:.2f} s"]
                + [f"{s['idle_cpu_s_per_min']:.2f} CPU-s/min"]
            ],
        ),
        "",
        "Median steps: "
        + ", ".join(f"{step} {sec * 1000:.0f} ms" for step, sec in s["median_steps_s"].items())
        + " (taken in: beyond the settle time, until the `pending` sidecar).",
    ]


def burst(s: dict) -> list[str]:
    return table(
        f"**Burst**: {s['files']:,} tiny files written into input/ at once.",
        ["written", "taken in", "completed", "watcher peak RSS", "lost", "converted twice"],
        [
            [
                f"{s['write_files_per_s']:.0f} files/s",
                f"{s['intake_files_per_s']:.0f} files/s",
                f"{s['jobs_per_s']:.0f} jobs/s",
                f"{s['watcher_peak_rss_mb']:.0f} MiB",
                s["lost"],
                s["converted_twice"],
            ]
        ],
    )


def ocr(s: dict) -> list[str]:
    lines = table(
        f"**OCR**: {s['files']} corpus scans and photos, {s['pages']} pages.",
        ["engine", "seconds", "pages/s", "word similarity to groundtruth (mean)"],
        [
            [r["engine"], f"{r['seconds']:.1f}"]
            + [f"{r['pages_per_s']:.2f}", f"{r['similarity']:.2f}"]
            for r in s["engines"]
        ],
    )
    if s.get("notes"):
        lines += ["", "; ".join(s["notes"]) + "."]
    if "by_page" in s:
        lines += ["", *ocr_pages(s["by_page"])]
    return lines


def ocr_pages(s: dict) -> list[str]:
    engines = s["engines"]
    by_kind = table(
        "**OCR engines alone**, one thread each, page images already made: hotfolder's engine"
        " (warm, in process) and `tesseract` run on the same images. Pages/s and mean word"
        " similarity to the page's known text, by page type.",
        ["pages", *(f"{e} pages/s" for e in engines), *(f"{e} similarity" for e in engines)],
        [
            [kind]
            + [f"{engines_of[e]['pages_per_s']:.2f}" for e in engines]
            + [f"{engines_of[e]['similarity']:.3f}" for e in engines]
            for kind, engines_of in s["by_kind"].items()
        ],
    )
    names = sorted({stage for row in s["pages"] for stage in row["hotfolder"]["stages"]})
    stages = table(
        "Where hotfolder's OCR time goes, per page (seconds).",
        ["page", "type", *names, "hotfolder s", *(f"{e} s" for e in engines[1:])],
        [
            [row["page"], row["kind"]]
            + [f"{row['hotfolder']['stages'].get(name, 0.0):.2f}" for name in names]
            + [f"{row[e]['seconds']:.2f}" for e in engines]
            for row in s["pages"]
        ],
    )
    notes = ["", "; ".join(s["notes"]) + "."] if s["notes"] else []
    return [*by_kind, "", *stages, *notes]


def cli(s: dict) -> list[str]:
    return table(
        f"**Operator commands** at {s['jobs']:,} sidecars.",
        ["command", "s"],
        [[what, f"{sec:.3f}"] for what, sec in s["seconds"].items()],
    )


def memory(sections: dict) -> list[str]:
    idle = sections.get("latency", {}).get("idle_rss_mb", {})
    after = sections.get("batch", {}).get("rss_after_batch_mb", {})
    lines = table(
        "**Memory** (RSS, MiB).",
        ["process", "idle", "after the batch"],
        [
            [role, " + ".join(f"{v:.0f}" for v in idle.get(role, [])) or "-", after.get(role, "-")]
            for role in ("run", "watch", "work", "scheduler", "worker")
        ],
    )
    worker = sections.get("overhead", {}).get("worker_rss_mb")
    if worker:
        files = sections["overhead"]["files"]
        lines += [
            "",
            f"One worker over {files} tiny jobs (no recycling): {worker['first']:.0f} MiB at"
            f" start, {worker['max']:.0f} MiB at most, {worker['last']:.0f} MiB at the end.",
        ]
    return lines


def split(s: dict) -> list[str]:
    rows = [
        [name, f"{t['median']:.1f}", ", ".join(f"{run:.1f}" for run in t["runs"])]
        for name, t in s["seconds"].items()
    ]
    same = "the same" if s["same_markdown"] else "NOT the same"
    return table(
        f"**Long scan**: a {s['pages']}-page scanned PDF, from the job's start to its end"
        " (seconds). One worker gets both OCR threads and converts it whole; two workers (the"
        " default) get one each and share its parts, or, with `jobs.split_pages = 0`, one"
        f" of them converts it whole. Two workers / one: {s['2 workers / 1 worker']:.2f};"
        f" the Markdown is {same} every way.",
        ["workers", "median", "runs"],
        rows,
    )


RENDERERS = {
    f.__name__: f
    for f in (batch, overhead, hooks, formats, ocr_check, latency, burst, ocr, cli, split)
}


def panels(results: dict) -> list[tuple[str, list[tuple[str, float]], str]]:
    found = []
    sections = results["sections"]
    if "batch" in sections:
        runs = sections["batch"]["seconds"]
        found.append(
            (
                f"Batch of {sections['batch']['files']} documents (median seconds)",
                [
                    ("floor, warm", runs["floor_warm"]["median"]),
                    ("hotfolder, ready", runs["ready"]["median"]),
                    ("floor, cold", runs["floor_cold"]["median"]),
                    ("hotfolder, cold", runs["cold"]["median"]),
                    ("docling CLI", runs["docling_cli"]["median"]),
                ],
                "s",
            )
        )
    if "ocr" in sections:
        found.append(
            (
                "OCR of the corpus scans (pages/s)",
                [
                    (r["engine"].split(",")[0].split(" (")[0], r["pages_per_s"])
                    for r in sections["ocr"]["engines"]
                ],
                "p/s",
            )
        )
    if "burst" in sections:
        b = sections["burst"]
        found.append(
            (
                f"Burst of {b['files']:,} tiny files (files/s)",
                [("taken in", b["intake_files_per_s"]), ("completed", b["jobs_per_s"])],
                "/s",
            )
        )
    return found


def chart(results: dict, target: Path) -> None:
    from PIL import Image, ImageDraw

    groups = panels(results)
    width, bar, gap, label_w = 900, 26, 8, 190
    height = 20 + sum(40 + len(bars) * (bar + gap) for _, bars, _ in groups) + 10
    image = Image.new("RGB", (width, max(height, 60)), "white")
    draw = ImageDraw.Draw(image)
    y = 20
    colours = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2"]
    for title, bars, unit in groups:
        draw.text((10, y), title, fill="black")
        y += 24
        top = max(value for _, value in bars) or 1
        for n, (label, value) in enumerate(bars):
            length = int((width - label_w - 90) * value / top)
            draw.text((10, y + 7), label, fill="black")
            draw.rectangle(
                (label_w, y, label_w + max(length, 1), y + bar), fill=colours[n % len(colours)]
            )
            shown = (
                f"{value:.2f}" if value < 10 else f"{value:.0f}" if value >= 100 else f"{value:.1f}"
            )
            draw.text((label_w + length + 6, y + 7), f"{shown} {unit}", fill="black")
            y += bar + gap
        y += 16
    image.save(target)
