"""The `pdf` output: a searchable PDF. For a PDF input, the original with an invisible text
layer (render mode 3) added to every page that has no text layer of its own, placed where
docling found the text; other pages, and every page image, stay as they were. A PDF with
no such page is written unchanged. For an image input, a PDF of the images at their own
resolution (JPEG embedded as is, other formats lossless), with the text layer on top."""

from __future__ import annotations

import io
import math
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from handlers.errors import JobError

if TYPE_CHECKING:
    import pikepdf
    from docling_core.types.doc.document import DoclingDocument

    from handlers.outputs import Rendition

STAMP_CHARS = 32  # a page with fewer characters of its own text than this gets a layer
FONT = "/HotfolderOcr"
EM = 0.5  # Helvetica's average glyph width, in em: the layer is stretched to each box


def render_pdf(rendition: Rendition) -> bytes | None:
    """The searchable PDF, or None for an input that is neither a PDF nor an image."""
    try:
        import pikepdf
    except ImportError as exc:
        raise JobError("missing_dependency", f"The pdf output needs pikepdf ({exc}).") from exc
    source, document = rendition.source, rendition.document
    data = source.read_bytes()
    if data.lstrip()[:5] == b"%PDF-":
        pdf = pikepdf.open(io.BytesIO(data))
        bare = pages_without_text(data)
        if not bare:
            return data  # born digital: the original, byte for byte
    elif not is_image(source):
        return None  # a DOCX, an HTML page...: it has no pages to keep
    else:
        pdf, bare = image_pdf(data, document), set(range(1, len(document.pages) + 1))
    for number in sorted(bare):
        add_text_layer(pdf, pdf.pages[number - 1], lines_on(document, number))
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


Line = tuple[str, float, float, float, float]  # text, left, baseline, width, size (display)


def lines_on(document: DoclingDocument, number: int) -> Iterator[Line]:
    """The text docling found on page `number`, as lines in the page's displayed space
    (origin bottom-left): a box's text is spread over as many lines as would fill it."""
    for item in document.texts:
        for prov in item.prov:
            if prov.page_no != number or not item.text.strip():
                continue
            box = prov.bbox.to_bottom_left_origin(document.pages[number].size.height)
            width, height = box.r - box.l, box.t - box.b
            if width <= 0 or height <= 0:
                continue
            words = item.text.split()
            count = max(1, min(len(words), round(math.sqrt(EM * len(item.text) * height / width))))
            step = height / count
            for k, chunk in enumerate(split_evenly(words, count)):
                yield chunk, box.l, box.t - (k + 1) * step + 0.2 * step, width, step * 0.8


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
    turn = int(page.obj.get("/Rotate", 0)) % 360
    ops = ["q", "BT", "3 Tr"]
    for text, left, base, span, size in lines:
        a, b, c, d, e, f = placement(turn, left, base, width, height)
        encoded = text.encode("cp1252", "replace")
        scale = 100 * span / max(size * EM * len(encoded), 0.01)
        literal = encoded.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")
        ops += [
            f"{FONT} {size:.3f} Tf {scale:.2f} Tz",
            f"{a} {b} {c} {d} {e + box[0]:.3f} {f + box[1]:.3f} Tm",
            f"({literal.decode('latin-1')}) Tj",
        ]
    ops += ["ET", "Q"]
    font = pikepdf.Dictionary(
        Type=pikepdf.Name.Font,
        Subtype=pikepdf.Name.Type1,
        BaseFont=pikepdf.Name.Helvetica,
        Encoding=pikepdf.Name.WinAnsiEncoding,
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


def placement(turn: int, x: float, y: float, width: float, height: float) -> tuple[float, ...]:
    """The text matrix that puts a line read upright on the displayed page, for a page
    turned by /Rotate; (x, y) is in the displayed space, the result in the page's own."""
    if turn == 90:
        return (0, 1, -1, 0, width - y, x)
    if turn == 180:
        return (-1, 0, 0, -1, width - x, height - y)
    if turn == 270:
        return (0, -1, 1, 0, y, height - x)
    return (1, 0, 0, 1, x, y)
