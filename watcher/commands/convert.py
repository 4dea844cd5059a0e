"""`hotfolder convert FILE`: one file in the foreground, with the same outputs and sidecar as
the daemon's, and a progress bar; for trying things out."""

from __future__ import annotations

import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from handlers.converter import DoclingConverter
from handlers.lease import FileLeases
from handlers.ledger import Ledger
from handlers.pipeline import JobContext, process_file
from handlers.sidecar import JobStatus
from watcher.commands.render import bar
from watcher.services import job_policy
from watcher.settings import Settings


def show_progress(status: JobStatus) -> None:
    if sys.stderr.isatty() and status.pages_total:
        sys.stderr.write(f"\r{bar(status.pages_done, status.pages_total)}")


def convert_one(settings: Settings, file: Path, output_dir: Path) -> int:
    try:
        source = file.resolve(strict=True)
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop, in Python 3.11
        source = None
    if source is None:
        print(f"hotfolder: {file}: no such file", file=sys.stderr)
        return 1
    if not source.is_file():
        print(f"hotfolder: {file}: not a regular file", file=sys.stderr)
        return 1
    options = settings.conversion_options(1)
    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hotfolder-convert-") as private:
        context = JobContext(
            input_dir=source.parent,
            ledger=Ledger(output_dir.resolve()),
            leases=FileLeases(Path(private) / "locks"),
            scratch_dir=Path(private) / "scratch",
            options=options,
            converter=DoclingConverter(options),
            # In the foreground: one attempt, and the file is left where it is.
            policy=replace(
                job_policy(settings), max_attempts=1, on_success="keep", on_failure="keep"
            ),
            on_progress=show_progress,
        )
        status = process_file(source.name, context)
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    assert status is not None
    if status.state != "completed":
        error = status.error or {}
        print(f"failed: {error.get('type')}: {error.get('message')}", file=sys.stderr)
        return 1
    for fmt, path in status.outputs.items():
        print(f"{fmt:<6} {output_dir / path}")
    read = f", {status.ocr_pages} by OCR" if status.ocr_pages else ""
    summary = f"({status.pages or 0} pages{read}, {status.duration_s} s)"
    print(f"{'status':<6} {context.ledger.path(source.name)}  {summary}")
    return 0
