"""Markup built to eat time, refused before docling parses it: XML entity bombs (declared
entities that expand to far more text than the file holds; docling's USPTO parser takes
minutes on a few megabytes of expansion, well under expat's own limit), and elements nested
thousands deep (docling's HTML backend holds a worker at full CPU for minutes on 100,000
nested <div>s)."""

from __future__ import annotations

import mmap
import re
from collections import Counter
from pathlib import Path
from xml.parsers import expat

from handlers.errors import JobError

MAX_EXPANSION = 1 << 20  # characters of entity replacement text, in all
MAX_DEPTH = 64  # entities nested deeper than this are refused outright
MAX_NESTING = 1000  # levels of nested container elements; real documents stay far below
REFERENCE = re.compile(r"&([^\s&#;]+);")
# Container elements that are closed in practice (a <p> or <li> often is not), and any
# element of an XML document.
CONTAINER = re.compile(
    rb"<(/?)(div|span|section|article|aside|main|nav|blockquote|table|ul|ol|dl|font|em|"
    rb"strong|b|i|u|a|sub|sup)\b[^>]*?(/?)>",
    re.IGNORECASE,
)
ELEMENT = re.compile(rb"<(/?)[A-Za-z_][^\s/>]*[^>]*?(/?)>")


def check_markup(path: Path) -> None:
    """Raise too_large for an entity bomb, or elements nested past MAX_NESTING."""
    head = markup_head(path)
    if head is None:
        return
    check_nesting(path, xml=head.startswith(b"<?xml"))
    check_entities(path)


def markup_head(path: Path) -> bytes | None:
    """The start of a markup file (XML, HTML), or None: binary formats (PDF, ZIP-based
    Office files, images) are passed over without a search."""
    with path.open("rb") as handle:
        head = handle.read(1024).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head if head.startswith(b"<") else None


def check_nesting(path: Path, xml: bool) -> None:
    depth = deepest = 0
    pattern = ELEMENT if xml else CONTAINER
    with path.open("rb") as handle:
        try:
            data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # an empty file cannot be mapped
            return
        with data:
            for match in pattern.finditer(data):
                closing, self_closing = match.group(1), match.groups()[-1]
                if self_closing:
                    continue
                depth = max(depth - 1, 0) if closing else depth + 1
                deepest = max(deepest, depth)
                if deepest > MAX_NESTING:
                    raise JobError(
                        "too_large",
                        f"The document nests its elements more than {MAX_NESTING} levels "
                        "deep; a document built this way holds a converter for minutes, and "
                        "hotfolder refuses it.",
                    )


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
    """Whether the markup declares an entity anywhere (a search, not a parse)."""
    with path.open("rb") as handle:
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
