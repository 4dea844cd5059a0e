"""`hotfolder jobs` and `hotfolder show`: the job list from the index, one job in full from
its sidecar; and finding a job by id prefix or by path."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from handlers.sidecar import JobStatus, now_iso
from watcher.commands.render import STATE_STYLES, local_time, local_zone, on_terminal, show
from watcher.services import Services
from watcher.settings import Settings

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_AGE = 100 * 365 * 86400.0  # seconds; longer overflows a date
SORTS = {
    "created": "created_at desc",
    "finished": "finished_at desc",
    "priority": "priority desc, created_at asc",
}
LISTED = (
    "job_id",
    "state",
    "profile",
    "progress",
    "priority",
    "attempts",
    "created_at",
    "finished_at",
    "duration_s",
    "error_type",
)


class JobNotFound(Exception):
    """An id or path that names no job, or more than one; the message says which."""


def parse_age(text: str) -> float:
    """ "90s", "30m", "1h", "7d", "2w" -> seconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhdw])", text.strip())
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30m, 1h, 7d)")
    seconds = float(match.group(1)) * UNITS[match.group(2)]
    if seconds > MAX_AGE:
        raise ValueError(f"too long a duration: {text!r} (at most 100 years)")
    return seconds


def list_jobs(
    services: Services,
    states: list[str] | None,
    since: str | None,
    sort: str,
    limit: int | None,
    profile: str | None = None,
) -> tuple[list[dict[str, object]], int]:
    """The jobs asked for, at most `limit` (None: all), and how many more match."""
    where: list[str] = []
    params: list[object] = []
    if profile is not None:
        where.append("profile = ?")
        params.append(profile)
    if states:
        where.append(f"state in ({', '.join('?' * len(states))})")
        params.extend(states)
    if since:
        where.append("created_at >= ?")
        params.append(now_iso(-parse_age(since)))
    clause = f"where {' and '.join(where)}" if where else ""
    query = f"select source, {', '.join(LISTED)} from jobs {clause} order by {SORTS[sort]}"
    with services.fresh_index().connect() as db:
        more = 0
        if limit is None:
            rows = db.execute(query, params).fetchall()
        else:
            rows = db.execute(f"{query} limit ?", (*params, limit)).fetchall()
            if len(rows) == limit:
                total = db.execute(f"select count(*) from jobs {clause}", params).fetchone()[0]
                more = total - limit
    return [dict(zip(("source", *LISTED), row, strict=True)) for row in rows], more


def render_jobs(rows: list[dict[str, object]]) -> str:
    if not rows:
        return "no jobs"
    zone = local_zone()
    lines = [
        f"{'JOB ID':<12}  {'STATE':<10}  {'PROG':>4}  {'PRIO':>4}  {'TRY':>3}  "
        f"{'CREATED (' + zone + ')':<19}  {'FINISHED (' + zone + ')':<19}  SOURCE"
    ]
    for row in rows:
        note = f"  ({row['error_type']})" if row["error_type"] else ""
        lines.append(
            f"{str(row['job_id'])[:12]:<12}  {row['state']:<10}  {row['progress']:>3}%  "
            f"{row['priority']:>4}  {row['attempts']:>3}  {local_time(row['created_at']):<19}  "
            f"{local_time(row['finished_at']):<19}  {printable(row['source'])}{note}"
        )
    return "\n".join(lines)


def jobs_table(rows: list[dict[str, object]], more: int) -> object:
    """The jobs as a rich table, for a terminal."""
    from rich.table import Table
    from rich.text import Text

    zone = local_zone()
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name, justify in (
        ("JOB ID", "left"),
        ("STATE", "left"),
        ("PROG", "right"),
        ("PRIO", "right"),
        ("TRY", "right"),
        (f"CREATED ({zone})", "left"),
        (f"FINISHED ({zone})", "left"),
        ("SOURCE", "left"),
    ):
        table.add_column(name, justify=justify, no_wrap=name != "SOURCE")  # type: ignore[arg-type]
    for row in rows:
        state = str(row["state"])
        source = Text(printable(row["source"]))
        if row["error_type"]:
            source.append(f"  ({row['error_type']})", style="red")
        table.add_row(
            str(row["job_id"])[:12],
            Text(state, style=STATE_STYLES.get(state, "")),
            f"{row['progress']}%",
            str(row["priority"]),
            str(row["attempts"]),
            local_time(row["created_at"]),
            local_time(row["finished_at"]),
            source,
        )
    if more:
        table.caption = f"... and {more} more (--limit N or --all to see them)"
    return table


def printable(text: object) -> str:
    """Control characters (a newline in a file name) escaped, so one job stays one line."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in str(text))


def resolve(services: Services, target: str) -> str:
    """The source (relative path) named by a job id prefix or by a path."""
    if not target.strip():
        raise JobNotFound("no job given: name a job id (or a prefix of one) or a path")
    rel = as_input_rel(services, target)
    if rel is not None:
        return rel
    if not re.fullmatch(r"[0-9a-f]{1,16}", target):
        raise JobNotFound(
            f"no job for {target!r}: not a job id, nor a file in {services.settings.input_dir}"
        )
    with services.fresh_index().connect() as db:
        rows = db.execute(
            "select job_id, source_key from jobs where job_id like ? limit 6", (target + "%",)
        ).fetchall()
    if not rows:
        raise JobNotFound(f"no job with id {target!r}")
    if len(rows) > 1:
        shown = ", ".join(job for job, _ in rows[:5])
        raise JobNotFound(
            f"job id {target!r} is ambiguous: {shown}{'...' if len(rows) > 5 else ''}"
        )
    return bytes(rows[0][1]).decode("utf-8", "surrogateescape")


def as_input_rel(services: Services, target: str) -> str | None:
    """A path to a file in the input dir (as given, or relative to it) that has a record
    or exists. A path inside the input dir is taken as written, never through a link."""
    ledger, input_dir = services.ledger, services.settings.input_dir
    for candidate in (Path(target), input_dir / target):
        rel = input_rel(input_dir, candidate)
        if rel and (ledger.read(rel) is not None or os.path.lexists(candidate)):
            return rel
    return None


def input_rel(input_dir: Path, path: Path) -> str | None:
    absolute = Path(os.path.abspath(path))
    if not absolute.is_relative_to(input_dir):
        try:
            absolute = absolute.resolve()
        except (OSError, RuntimeError):  # RuntimeError: a symlink loop, in Python 3.11
            return None
    if absolute == input_dir or not absolute.is_relative_to(input_dir):
        return None
    return os.fsdecode(absolute.relative_to(input_dir))


def find_status(services: Services, target: str) -> JobStatus:
    rel = resolve(services, target)
    status = services.ledger.read(rel)
    if status is None:
        raise JobNotFound(f"no job for {rel!r}: it has no sidecar (not seen yet, or purged)")
    return status


def render_show(status: JobStatus) -> str:
    data = status.model_dump()
    zone = local_zone()
    lines = [
        f"{key:<16}{shown(key, value, zone)}"
        for key, value in data.items()
        if key not in ("error", "outputs", "warnings", "hooks")
    ]
    if status.outputs:
        lines += ["outputs:"] + [f"  {fmt:<6}{path}" for fmt, path in status.outputs.items()]
    if status.error:
        lines += [
            f"error type      {status.error['type']}",
            f"error message   {status.error['message']}",
            f"retryable       {status.error['retryable']}",
        ]
    lines += [f"warning         {w}" for w in status.warnings]
    if status.hooks:
        lines += ["hooks:"] + [
            f"  {name:<14}{entry.get('state')} after {entry.get('attempts')} attempt(s)"
            + (f"; last error: {entry['last_error']}" if entry.get("last_error") else "")
            for name, entry in status.hooks.items()
        ]
    return "\n".join(lines)


def shown(key: str, value: object, zone: str) -> str:
    if value is None:
        return ""
    if key.endswith("_at"):
        return f"{local_time(value)} {zone}"
    return printable(value)


def show_job(services: Services, target: str, as_json: bool) -> int:
    status = find_status(services, target)
    if as_json:
        print(json.dumps(status.model_dump(), indent=2, ensure_ascii=True))
        return 0
    print(render_show(status))
    print(effective_settings(services.settings, status))
    return 0


def effective_settings(settings: Settings, status: JobStatus) -> str:
    """The conversion settings in force for the job's path (its profile's, or the top
    level's), and whether they are those it ran with."""
    profile = settings.profile_for(status.source)
    options = settings.conversion_options(1, profile)
    ocr = options.ocr
    pages = options.page_range
    span = "all" if pages is None else f"{pages[0]}-{'end' if pages[1] >= 2**31 else pages[1]}"
    shown = [
        f"  to            {', '.join(options.to)}",
        f"  ocr           {ocr.mode} ({ocr.language}, {ocr.dpi:g} dpi)",
        f"  pdf pipeline  {options.pdf_pipeline}",
        f"  page range    {span}",
        f"  chunker       {options.chunker}",
    ]
    name = profile.name if profile else "the top level"
    same = status.settings is None or status.settings == options.fingerprint()
    note = "" if same else " (changed since this job ran: enqueue --force converts it again)"
    return "\n".join([f"settings now   {name}{note}", *shown])


def jobs_command(
    services: Services,
    states: list[str] | None,
    since: str | None,
    sort: str,
    limit: int | None,
    as_json: bool,
    profile: str | None = None,
) -> int:
    rows, more = list_jobs(services, states, since, sort, limit, profile)
    if as_json:
        print(json.dumps(rows, indent=2))
    elif on_terminal() and rows:  # a script asks for what it needs with --limit/--all
        show(jobs_table(rows, more))
    else:
        print(render_jobs(rows))
    return 0
