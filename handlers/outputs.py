"""The converted document written as `<rel>.<ext>` files that mirror the input tree, and
the names refused because those files would not fit, or would land on another job's.

`FORMATS` is the one registry of output formats (`conversion.to`): a renderer gets a
`Rendition` (the document, the private copy of the input that was converted, the job's
record) and returns the file's bytes. A new format is one decorated function here.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from handlers.atomic import PathEscapes, safe_join, write_all_atomic
from handlers.errors import FULL, JobError, disk_full
from handlers.sidecar import SUFFIX, JobStatus

if TYPE_CHECKING:
    from docling_core.types.doc.document import DoclingDocument

    from handlers.converter import ConversionOptions

NAME_MAX = 255  # bytes in one file name, on every common Linux file system
# A file where a folder is needed, a folder where a file is, a path too long.
MISPLACED = frozenset({errno.EEXIST, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG})


def check_name(rel: str) -> None:
    """Refuse names whose outputs could not sit beside them as the contract says."""
    name = rel.rsplit("/", 1)[-1]
    if name.casefold().endswith(".status"):
        raise JobError(
            "invalid_name",
            f"File names ending in '.status' are refused: the JSON output of {name!r} would "
            f"be the status file of {name[:-7]!r}. Rename the file.",
        )
    size = len(os.fsencode(name))
    if size + len(SUFFIX) > NAME_MAX:
        raise JobError(
            "invalid_name",
            f"The file name is {size} bytes long: with '{SUFFIX}' added, its status file "
            f"would pass the limit of {NAME_MAX} bytes per name. Shorten the name.",
        )


@dataclass(frozen=True)
class Rendition:
    """What a renderer gets. `job` is None outside a job (the benchmark's floor)."""

    document: DoclingDocument
    source: Path
    job: JobStatus | None = None
    options: ConversionOptions | None = None
    turns: Mapping[int, int] = field(default_factory=dict)  # page -> quarter turns clockwise


Renderer = Callable[[Rendition], "bytes | None"]  # None: not for this input


@dataclass(frozen=True)
class OutputFormat:
    name: str  # as written in conversion.to
    extension: str  # `<rel>.<extension>` in the output folder
    render: Renderer


FORMATS: dict[str, OutputFormat] = {}


def output_format(name: str, extension: str) -> Callable[[Renderer], Renderer]:
    """Register the decorated renderer as the output format `name`."""

    def register(render: Renderer) -> Renderer:
        FORMATS[name] = OutputFormat(name, extension, render)
        return render

    return register


def text(data: str) -> bytes:
    return data.encode("utf-8", "surrogateescape")


@output_format("md", "md")
def markdown(r: Rendition) -> bytes:
    return text(r.document.export_to_markdown())


@output_format("json", "json")
def docling_json(r: Rendition) -> bytes:
    return text(json.dumps(r.document.export_to_dict(), ensure_ascii=False))


@output_format("html", "html")
def html(r: Rendition) -> bytes:
    return text(r.document.export_to_html())


@output_format("text", "txt")
def plain_text(r: Rendition) -> bytes:
    return text(r.document.export_to_text())


@output_format("doctags", "doctags")
def doctags(r: Rendition) -> bytes:
    return text(r.document.export_to_doctags())


@output_format("chunks", "chunks.jsonl")
def chunks(r: Rendition) -> bytes:
    from handlers.chunks import render_chunks  # loads transformers: only when asked for

    return render_chunks(r)


@output_format("pdf", "pdf")
def searchable_pdf(r: Rendition) -> bytes | None:
    from handlers.searchable import render_pdf

    return render_pdf(r)


def output_path(output_dir: Path, rel: str, fmt: str) -> Path:
    """`report.pdf` -> `report.pdf.md`: the full name is kept so siblings never collide."""
    return safe_join(output_dir, f"{rel}.{FORMATS[fmt].extension}")


def write_outputs(
    rendition: Rendition, output_dir: Path, rel: str, formats: tuple[str, ...]
) -> dict[str, str]:
    """Write every requested format, all or none; returns format -> path relative to
    output_dir."""
    try:
        paths = [output_path(output_dir, rel, fmt) for fmt in formats]
    except PathEscapes as exc:
        raise JobError(
            "unsafe_path",
            "Its outputs would be written outside the output folder, through a symbolic "
            "link in it; hotfolder never follows one. Remove the link from the output folder.",
        ) from exc
    rendered = [FORMATS[fmt].render(rendition) for fmt in formats]
    written = [(fmt, path, data) for fmt, path, data in zip(formats, paths, rendered, strict=True)]
    files = [(path, data) for _, path, data in written if data is not None]
    try:
        write_all_atomic(files)
    except OSError as exc:
        if exc.errno in FULL:
            raise disk_full("output", output_dir) from exc
        if exc.errno not in MISPLACED:
            raise
        where = os.fsdecode(exc.filename2 or exc.filename or output_dir)
        raise JobError(
            "invalid_name",
            f"Its outputs cannot be written at {where}: {exc.strerror}. Another input's "
            "outputs are in the way (a file where a folder is needed, or the reverse), or "
            "the path is too long. Rename the file or its folder.",
        ) from exc
    return {
        fmt: path.relative_to(output_dir).as_posix()
        for fmt, path, data in written
        if data is not None
    }


def remove_outputs(output_dir: Path, rel: str) -> None:
    """Delete every output `rel` may have (a name that could have none is passed over)."""
    for fmt in FORMATS:
        try:
            output_path(output_dir, rel, fmt).unlink(missing_ok=True)
        except PathEscapes:
            return  # outputs never written through a link: none to remove
        except OSError as exc:
            if exc.errno not in MISPLACED:
                raise
