"""XML entity bombs: a document whose declared entities expand to far more text than the
file holds is refused before docling expands them (its USPTO parser takes minutes on a
few megabytes of expansion in one element, well under expat's own amplification limit)."""

from __future__ import annotations

import mmap
import re
from collections import Counter
from pathlib import Path
from xml.parsers import expat

from handlers.errors import JobError

MAX_EXPANSION = 1 << 20  # characters of entity replacement text, in all
MAX_DEPTH = 64  # entities nested deeper than this are refused outright
REFERENCE = re.compile(r"&([^\s&#;]+);")


def check_entities(path: Path) -> None:
    """Raise too_large if the internal entities of an XML file expand past MAX_EXPANSION."""
    if not declares_entities(path):
        return
    total = expansion(path)
    if total > MAX_EXPANSION:
        raise JobError(
            "too_large",
            f"The XML declares entities that expand to {total / 2**20:.1f} MiB of text (an "
            f"entity expansion bomb); hotfolder refuses documents whose entities "
            f"expand past {MAX_EXPANSION / 2**20:g} MiB.",
        )


def declares_entities(path: Path) -> bool:
    """Markup (XML, HTML) that declares an entity somewhere; binary formats (PDF, ZIP-based
    Office files, images) are passed over without a search."""
    with path.open("rb") as handle:
        if not handle.read(1024).lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<"):
            return False
        try:
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return data.find(b"<!ENTITY") != -1
        except ValueError:  # an empty file cannot be mapped
            return False


def expansion(path: Path) -> int:
    """Characters the entity references of the document would expand to, counted without
    expanding any: expat reports references to a default handler instead."""
    values: dict[str, str] = {}
    uses: Counter[str] = Counter()

    def declare(name: str, parameter: bool, value: str | None, *_: object) -> None:
        if not parameter and value is not None:
            values[name] = value

    def default(data: str) -> None:
        if data.startswith("&") and data.endswith(";"):
            uses[data[1:-1]] += 1

    parser = expat.ParserCreate()
    parser.EntityDeclHandler = declare
    parser.DefaultHandler = default  # not DefaultHandlerExpand: references stay unexpanded
    try:
        with path.open("rb") as handle:
            parser.ParseFile(handle)
    except expat.ExpatError:
        pass  # not XML, or malformed: what was seen so far still counts
    sizes: dict[str, int] = {}
    return sum(count * expanded_size(name, values, sizes) for name, count in uses.items())


def expanded_size(name: str, values: dict[str, str], sizes: dict[str, int], depth: int = 0) -> int:
    if name in sizes:
        return sizes[name]
    value = values.get(name)
    if value is None:
        return 0  # predefined (&amp;) or external: nothing to expand here
    if depth > MAX_DEPTH:
        return MAX_EXPANSION + 1
    sizes[name] = MAX_EXPANSION + 1  # a reference cycle counts as too large
    references = REFERENCE.findall(value)
    size = len(REFERENCE.sub("", value)) + sum(
        expanded_size(ref, values, sizes, depth + 1) for ref in references
    )
    sizes[name] = size
    return size
