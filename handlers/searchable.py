"""The `pdf` output: a searchable PDF. For a PDF input, the original with an invisible text
layer (render mode 3) added to every page that has no text layer of its own, placed where
docling found the text; other pages, and every page image, stay as they were. A PDF with
no such page is written unchanged. For an image input, a PDF of the images at their own
resolution (JPEG embedded as is, other formats lossless), with the text layer on top."""

from __future__ import annotations

import io
import math
import unicodedata
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from handlers.errors import JobError

if TYPE_CHECKING:
    import pikepdf
    from docling_core.types.doc.base import BoundingBox
    from docling_core.types.doc.document import DoclingDocument

    from handlers.outputs import Rendition

STAMP_CHARS = 32  # a page with fewer characters of its own text than this gets a layer
FONT = "/HotfolderOcr"
EM = 0.5  # a character's mean width in em, for the lines a box of text would fill
# Helvetica's advance widths (from its AFM, in thousandths of an em) for the characters 32
# to 126. The layer's glyphs are as wide as these, each line stretched to its box: a word
# falls nearer where it is printed than with every glyph alike (printed text is rarely
# monospaced), so search and selection mark the word under them.
ASCII_WIDTHS = (
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278,
    556, 556, 556, 556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584, 556,
    1015, 667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833, 722, 778,
    667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 278, 278, 278, 469, 556,
    333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500, 222, 833, 556, 556,
    556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584,
)  # fmt: skip


def glyph_width(code: int) -> int:
    """The layer font's width of the Windows-1252 character `code`: Helvetica's for ASCII,
    an accented letter's base letter's for the rest of Latin, a mean width otherwise."""
    if 32 <= code <= 126:
        return ASCII_WIDTHS[code - 32]
    base = unicodedata.normalize("NFD", bytes([code]).decode("cp1252", "replace"))[:1]
    return ASCII_WIDTHS[ord(base) - 32] if " " <= base <= "~" else int(EM * 1000)


WIDTHS = tuple(glyph_width(code) for code in range(32, 256))  # the font's /Widths, 32 on


def render_pdf(rendition: Rendition) -> bytes | None:
    """The searchable PDF, or None for an input that is neither a PDF nor an image."""
    try:
        import pikepdf
    except ImportError as exc:
        raise JobError("missing_dependency", f"The pdf output needs pikepdf ({exc}).") from exc
    source, document = rendition.source, rendition.document
    data = source.read_bytes()
    if data.lstrip()[:5] == b"%PDF-":
        try:
            pdf = pikepdf.open(io.BytesIO(data))
        except pikepdf.PasswordError:
            return None  # protected: no copy of it is written without its password
        bare = pages_without_text(data)
        if not bare:
            return data  # born digital: the original, byte for byte
    elif not is_image(source):
        return None  # a DOCX, an HTML page...: it has no pages to keep
    else:
        pdf, bare = image_pdf(data, document), set(range(1, len(document.pages) + 1))
    for number in sorted(bare):
        turns = rendition.turns.get(number, 0)
        add_text_layer(pdf, pdf.pages[number - 1], lines_on(document, number, turns))
    out = io.BytesIO()
    pdf.save(out, stream_decode_level=pikepdf.StreamDecodeLevel.none)
    return out.getvalue()


def is_image(path: Path) -> bool:
    """Whether Pillow reads `path` as an image (from its header; nothing is decoded)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path):
            return True
    except (UnidentifiedImageError, OSError):
        return False


def pages_without_text(data: bytes) -> set[int]:
    """1-based numbers of the pages whose own text layer is empty or a stamp."""
    import pypdfium2

    document = pypdfium2.PdfDocument(data)
    try:
        bare = set()
        for index in range(len(document)):
            text = document[index].get_textpage().get_text_range()
            if sum(not c.isspace() for c in text) < STAMP_CHARS:
                bare.add(index + 1)
        return bare
    finally:
        document.close()


def image_pdf(data: bytes, document: DoclingDocument) -> pikepdf.Pdf:
    """One page per image frame, the size docling gave the page, the image drawn over it."""
    import pikepdf
    from PIL import Image, ImageSequence

    pdf = pikepdf.new()
    with Image.open(io.BytesIO(data)) as image:
        frames = [frame.copy() for frame in ImageSequence.Iterator(image)]  # one object
        jpeg = image.format == "JPEG" and len(frames) == 1
        for number, frame in enumerate(frames, 1):
            size = document.pages[number].size if number in document.pages else None
            width = size.width if size else frame.width
            height = size.height if size else frame.height
            xobject = jpeg_image(pdf, data, frame) if jpeg else lossless_image(pdf, frame)
            draw = f"q {width:.4f} 0 0 {height:.4f} 0 0 cm /Im0 Do Q".encode()
            page = pikepdf.Dictionary(
                Type=pikepdf.Name.Page,
                MediaBox=[0, 0, width, height],
                Resources=pikepdf.Dictionary(XObject=pikepdf.Dictionary(Im0=xobject)),
                Contents=pikepdf.Stream(pdf, draw),
            )
            pdf.pages.append(pikepdf.Page(page))
    return pdf


def jpeg_image(pdf: pikepdf.Pdf, data: bytes, frame: object) -> pikepdf.Stream:
    import pikepdf

    spaces = {"L": "/DeviceGray", "RGB": "/DeviceRGB", "CMYK": "/DeviceCMYK"}
    mode = frame.mode  # type: ignore[attr-defined]
    return pikepdf.Stream(
        pdf,
        data,  # the JPEG as it came: no re-encoding
        Type=pikepdf.Name.XObject,
        Subtype=pikepdf.Name.Image,
        Width=frame.width,  # type: ignore[attr-defined]
        Height=frame.height,  # type: ignore[attr-defined]
        ColorSpace=pikepdf.Name(spaces.get(mode, "/DeviceRGB")),
        BitsPerComponent=8,
        Filter=pikepdf.Name.DCTDecode,
    )


def lossless_image(pdf: pikepdf.Pdf, frame: object) -> pikepdf.Stream:
    """The pixels, Flate-compressed; an alpha channel becomes a soft mask."""

    picture = frame
    mode = picture.mode  # type: ignore[attr-defined]
    alpha = None
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in picture.info):  # type: ignore[attr-defined]
        rgba = picture.convert("RGBA")  # type: ignore[attr-defined]
        alpha = rgba.getchannel("A")
        picture = rgba.convert("RGB")
    elif mode not in ("L", "RGB"):
        picture = picture.convert("L" if mode in ("1", "I", "I;16", "F") else "RGB")  # type: ignore[attr-defined]
    space = "/DeviceGray" if picture.mode == "L" else "/DeviceRGB"  # type: ignore[attr-defined]
    stream = flate_image(pdf, picture, space)
    if alpha is not None:
        stream.SMask = flate_image(pdf, alpha, "/DeviceGray")
    return stream


def flate_image(pdf: pikepdf.Pdf, picture: object, space: str) -> pikepdf.Stream:
    import pikepdf

    return pikepdf.Stream(
        pdf,
        zlib.compress(picture.tobytes(), 6),  # type: ignore[attr-defined]
        Type=pikepdf.Name.XObject,
        Subtype=pikepdf.Name.Image,
        Width=picture.width,  # type: ignore[attr-defined]
        Height=picture.height,  # type: ignore[attr-defined]
        ColorSpace=pikepdf.Name(space),
        BitsPerComponent=8,
        Filter=pikepdf.Name.FlateDecode,
    )


Box = tuple[float, float, float, float]  # left, bottom, right, top: displayed, origin bottom-left
Matrix = tuple[float, float, float, float, float, float]


@dataclass(frozen=True)
class Line:
    """One line of the layer: its text, its box on the displayed page, and the quarter
    turns clockwise it lies at (1: read from top to bottom)."""

    text: str
    box: Box
    turns: int = 0


def lines_on(document: DoclingDocument, number: int, turns: int = 0) -> Iterator[Line]:
    """The text docling found on page `number`, line by line. An OCR'd paragraph has a
    provenance per line; any other text box is spread over as many lines as would fill it."""
    height = document.pages[number].size.height
    for item in document.texts:
        provenance = [prov for prov in item.prov if prov.page_no == number]
        if len(item.prov) > 1:  # one per line, each with its span of the text
            for prov in provenance:
                text = item.text[prov.charspan[0] : prov.charspan[1]].strip()
                if text:
                    yield Line(text, displayed(prov.bbox, height), turns)
        for prov in provenance if len(item.prov) == 1 and item.text.strip() else ():
            yield from spread(item.text.split(), displayed(prov.bbox, height), turns)


def displayed(bbox: BoundingBox, height: float) -> Box:
    box = bbox.to_bottom_left_origin(height)
    return (box.l, box.b, box.r, box.t)


def spread(words: list[str], box: Box, turns: int) -> Iterator[Line]:
    """`words` in the lines that would fill `box` in text of its own proportions, the first
    line on the side the text's top faces."""
    length, thickness = extent(box, turns)
    if length <= 0 or thickness <= 0:
        return
    chars = sum(len(word) + 1 for word in words)
    count = max(1, min(len(words), round(math.sqrt(EM * chars * thickness / length))))
    left, bottom, right, top = box
    for k, text in enumerate(split_evenly(words, count)):
        near, far = k / count, (k + 1) / count  # from the top of the text
        if turns % 4 == 0:
            band = (left, top - far * (top - bottom), right, top - near * (top - bottom))
        elif turns % 4 == 1:
            band = (right - far * (right - left), bottom, right - near * (right - left), top)
        elif turns % 4 == 2:
            band = (left, bottom + near * (top - bottom), right, bottom + far * (top - bottom))
        else:
            band = (left + near * (right - left), bottom, left + far * (right - left), top)
        yield Line(text, band, turns)


def extent(box: Box, turns: int) -> tuple[float, float]:
    """A line box's length along its text and its thickness across it."""
    width, height = box[2] - box[0], box[3] - box[1]
    return (height, width) if turns % 2 else (width, height)


def line_matrix(line: Line) -> tuple[Matrix, float, float]:
    """The text matrix that writes `line` along its box on the displayed page, the font
    size, and the line's length: the baseline a fifth of the box above its bottom edge."""
    length, thickness = extent(line.box, line.turns)
    left, bottom, right, top = line.box
    rise = 0.2 * thickness
    matrix: Matrix = {
        0: (1, 0, 0, 1, left, bottom + rise),
        1: (0, -1, 1, 0, left + rise, top),
        2: (-1, 0, 0, -1, right, top - rise),
        3: (0, 1, -1, 0, right - rise, bottom),
    }[line.turns % 4]
    return matrix, 0.8 * thickness, length


def times(m: Matrix, n: Matrix) -> Matrix:
    """The PDF matrix product m x n: first m, then n."""
    a, b, c, d, e, f = m
    p, q, r, s, t, u = n
    return (
        a * p + b * r,
        a * q + b * s,
        c * p + d * r,
        c * q + d * s,
        e * p + f * r + t,
        e * q + f * s + u,
    )


def split_evenly(words: list[str], count: int) -> list[str]:
    """`words` in `count` lines of about the same number of characters."""
    total = sum(len(w) + 1 for w in words)
    lines: list[str] = []
    current: list[str] = []
    size = 0
    for word in words:
        current.append(word)
        size += len(word) + 1
        if size >= total * (len(lines) + 1) / count and len(lines) < count - 1:
            lines.append(" ".join(current))
            current = []
    if current:
        lines.append(" ".join(current))
    return lines


def add_text_layer(pdf: pikepdf.Pdf, page: pikepdf.Page, lines: Iterator[Line]) -> None:
    """Append an invisible text layer to `page` (its own streams are left untouched)."""
    import pikepdf

    box = [float(v) for v in page.cropbox]
    width, height = box[2] - box[0], box[3] - box[1]
    # displayed space -> the page's own, then the crop box's offset
    own = times(undisplay(int(page.obj.get("/Rotate", 0)), width, height), shift(box[0], box[1]))
    ops = ["q", "BT", "3 Tr"]
    for line in lines:
        matrix, size, length = line_matrix(line)
        encoded = line.text.encode("cp1252", "replace")
        advance = sum(WIDTHS[code - 32] for code in encoded if code >= 32) / 1000
        scale = 100 * length / max(size * advance, 0.01)
        literal = encoded.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")
        ops += [
            f"{FONT} {size:.3f} Tf {scale:.2f} Tz",
            " ".join(f"{v:.4f}" for v in times(matrix, own)) + " Tm",
            f"({literal.decode('latin-1')}) Tj",
        ]
    ops += ["ET", "Q"]
    font = pikepdf.Dictionary(
        Type=pikepdf.Name.Font,
        Subtype=pikepdf.Name.Type1,
        BaseFont=pikepdf.Name.Helvetica,
        Encoding=pikepdf.Name.WinAnsiEncoding,
        FirstChar=32,
        LastChar=255,
        Widths=list(WIDTHS),  # below 32: none (no width)
    )
    if "/Resources" not in page.obj:  # inherited from the page tree, or none: a copy
        page.obj.Resources = pikepdf.Dictionary(inherited_resources(page.obj))
    resources = page.obj.Resources
    if "/Font" not in resources:
        resources.Font = pikepdf.Dictionary()
    resources.Font[FONT] = font
    # The page's own streams are wrapped in q/Q (left as they are), so a transformation
    # they leave behind (a flip, say) does not move the layer.
    page.contents_add(pikepdf.Stream(pdf, b"q\n"), prepend=True)
    layer = "Q\n" + "\n".join(ops)
    page.contents_add(pikepdf.Stream(pdf, layer.encode("latin-1")), prepend=False)


def inherited_resources(page: pikepdf.Object) -> dict[str, object]:
    node = page
    while "/Parent" in node:
        node = node.Parent
        if "/Resources" in node:
            return dict(node.Resources.items())
    return {}


def undisplay(turn: int, width: float, height: float) -> Matrix:
    """The matrix from the displayed page (turned by /Rotate, clockwise) to the page's own
    space; `width` and `height` are the page's own."""
    return {
        90: (0, 1, -1, 0, width, 0),
        180: (-1, 0, 0, -1, width, height),
        270: (0, -1, 1, 0, 0, height),
    }.get(turn % 360, (1, 0, 0, 1, 0, 0))


def shift(x: float, y: float) -> Matrix:
    return (1, 0, 0, 1, x, y)
