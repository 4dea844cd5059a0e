"""The converted document written as `<rel>.<ext>` files that mirror the input tree."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from handlers.atomic import safe_join, write_all_atomic

if TYPE_CHECKING:
    from docling_core.types.doc import DoclingDocument

EXTENSIONS = {"md": "md", "json": "json", "html": "html", "text": "txt", "doctags": "doctags"}


def render(document: DoclingDocument, fmt: str) -> str:
    if fmt == "md":
        return document.export_to_markdown()
    if fmt == "json":
        return json.dumps(document.export_to_dict(), ensure_ascii=False)
    if fmt == "html":
        return document.export_to_html()
    if fmt == "text":
        return document.export_to_text()
    if fmt == "doctags":
        return document.export_to_doctags()
    raise ValueError(f"unknown output format {fmt!r}")


def output_path(output_dir: Path, rel: str, fmt: str) -> Path:
    """`report.pdf` -> `report.pdf.md`: the full name is kept so siblings never collide."""
    return safe_join(output_dir, f"{rel}.{EXTENSIONS[fmt]}")


def write_outputs(
    document: DoclingDocument, output_dir: Path, rel: str, formats: tuple[str, ...]
) -> dict[str, str]:
    """Write every requested format, all or none; returns format -> path relative to
    output_dir."""
    files = [
        (
            output_path(output_dir, rel, fmt),
            render(document, fmt).encode("utf-8", "surrogateescape"),
        )
        for fmt in formats
    ]
    write_all_atomic(files)
    paths = [path for path, _ in files]
    return {
        fmt: path.relative_to(output_dir).as_posix()
        for fmt, path in zip(formats, paths, strict=True)
    }
