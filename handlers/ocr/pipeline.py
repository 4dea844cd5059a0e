"""Scans and photos, read inside docling's native pipeline: a PDF page without a usable
text layer (every page, with ocr = "force") and every image page is rendered and read by
OCR. The result is a DoclingDocument like any other: one text item per paragraph, in
reading order, with one provenance per line (its box and its span of the text); born-digital
pages keep their exact text layer. How the text lay on each OCR'd page (upright, sideways,
upside down) is kept beside the document: `text_turns(result)`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from docling.backend.pdf_backend import PdfPageBackend
from docling.datamodel.base_models import Page
from docling.datamodel.document import ConversionResult
from docling.datamodel.pipeline_options import NativePdfPipelineOptions
from docling.pipeline.native_pdf_pipeline import NativePdfPipeline
from docling_core.types.doc.base import BoundingBox, CoordOrigin, Size
from docling_core.types.doc.common.reference import ProvenanceItem
from docling_core.types.doc.document import DoclingDocument
from docling_core.types.doc.labels import DocItemLabel
from docling_core.types.doc.page import BoundingRectangle, SegmentedPdfPage, TextCell

from handlers.errors import JobError
from handlers.ocr.engine import OcrEngine, OcrOptions, PageText
from handlers.ocr.layout import Box

if TYPE_CHECKING:
    from docling.pipeline.native_pdf_pipeline import _NativeAssemblyTimings, _NativeBuildTimings

MAX_SIDE = 4000  # pixels: the longest side a page is rendered at for OCR
STAMP_CHARS = 32  # a text layer this small over a page-sized scan is a stamp, not the text
SCAN_COVER = 0.5  # share of the page an image must cover to count as a scan
TURNS = "_hotfolder_turns"  # the Page attribute that keeps how its OCR'd text lies


class OcrUnavailable(BaseException):  # noqa: N818 - a carrier, like JobCancelled
    """OCR cannot run (its model is missing). A BaseException, so docling's per-page and
    per-document handlers, which catch Exception, let it through with its JobError."""

    def __init__(self, error: JobError) -> None:
        super().__init__(error.message)
        self.error = error


class ScanPipelineOptions(NativePdfPipelineOptions):
    ocr: OcrOptions = OcrOptions()


class ScanPdfPipeline(NativePdfPipeline):
    """NativePdfPipeline, plus OCR for the pages that need it. The OCR engine is loaded on
    the first such page, so born-digital documents never pay for it."""

    def __init__(self, pipeline_options: ScanPipelineOptions) -> None:
        super().__init__(pipeline_options)
        self.options = pipeline_options
        self.engine = OcrEngine(pipeline_options.ocr)

    def _parse_page(
        self,
        timings: _NativeBuildTimings,
        conv_res: ConversionResult,
        page_backend: PdfPageBackend,
    ) -> Page | None:
        page = super()._parse_page(timings, conv_res, page_backend)
        if page is None or page.parsed_page is None or page.size is None:
            return page
        if not needs_ocr(self.options.ocr.mode, page.parsed_page, page.size, page_backend):
            return page
        scale = min(
            self.render_scale(page_backend), MAX_SIDE / max(page.size.width, page.size.height)
        )
        try:
            found = self.engine.read(page_backend.get_page_image(scale=scale))
        except JobError as exc:
            raise OcrUnavailable(exc) from exc
        setattr(page, TURNS, found.turns)  # pydantic keeps an undeclared _name as is
        if found.paragraphs:
            page.parsed_page = ocr_page(page.parsed_page, found, scale)
        return page

    def render_scale(self, page_backend: PdfPageBackend) -> float:
        """A page at the OCR resolution, or an image page at its own resolution if that is higher:
        a low-resolution scan is enlarged (recognition makes far fewer errors on it)."""
        dpi = getattr(page_backend, "_dpi", None)  # only docling's image pages have one
        return max(max(dpi) if dpi else 0.0, self.options.ocr.dpi) / 72

    def _add_text_items(
        self,
        timings: _NativeAssemblyTimings,
        doc: DoclingDocument,
        page_no: int,
        parsed_page: SegmentedPdfPage,
        size: Size,
    ) -> None:
        """An OCR'd paragraph is one text item with a provenance per line."""
        cells = parsed_page.textline_cells
        if not any(isinstance(cell, OcrCell) for cell in cells):
            super()._add_text_items(timings, doc, page_no, parsed_page, size)
            return
        for cell in cells:
            assert isinstance(cell, OcrCell)
            provenance = [
                ProvenanceItem(
                    page_no=page_no,
                    bbox=top_left(box).to_bottom_left_origin(page_height=size.height),
                    charspan=span,
                )
                for box, span in cell.lines
            ]
            item = doc.add_text(
                label=DocItemLabel.TEXT, text=cell.text, orig=cell.text, prov=provenance[0]
            )
            item.prov.extend(provenance[1:])
        timings.n_text_items += len(cells)


def text_turns(result: ConversionResult) -> dict[int, int]:
    """Page number -> quarter turns clockwise its OCR'd text lies at, for the pages whose
    text is not upright."""
    turned = {page.page_no: getattr(page, TURNS, 0) for page in result.pages}
    return {number: turns for number, turns in turned.items() if turns}


def ocr_count(result: ConversionResult) -> int:
    """How many pages OCR read (whether or not it found text on them)."""
    return sum(getattr(page, TURNS, None) is not None for page in result.pages)


class OcrCell(TextCell):
    """A paragraph read by OCR, with its lines: a box (page points, top-left origin) and
    the span of the paragraph's text each holds."""

    lines: list[tuple[Box, tuple[int, int]]]


def top_left(box: Box) -> BoundingBox:
    return BoundingBox(l=box[0], t=box[1], r=box[2], b=box[3], coord_origin=CoordOrigin.TOPLEFT)


def needs_ocr(
    mode: str, parsed: SegmentedPdfPage, size: Size, page_backend: PdfPageBackend
) -> bool:
    """auto: a page with no text layer but something drawn on it (an image or vector
    paths, which may be text turned to outlines), or only a stamp of text over a page-sized
    scan. Decided from what the parser already found, before anything is rendered: a
    blank page (a separator, the back of a sheet) is not OCR'd, so a born-digital document
    never loads the OCR engine."""
    if mode != "auto":
        return mode == "force"
    chars = sum(not c.isspace() for cell in parsed.textline_cells for c in cell.text)
    if chars == 0:
        whole = BoundingBox(l=0, t=0, r=size.width, b=size.height, coord_origin=CoordOrigin.TOPLEFT)
        return page_backend.has_content_in(bbox=whole, shapes=True, bitmaps=True) is not False
    covered = sum(bitmap.rect.to_bounding_box().area() for bitmap in parsed.bitmap_resources)
    return chars < STAMP_CHARS and covered >= SCAN_COVER * size.width * size.height


def ocr_page(parsed: SegmentedPdfPage, found: PageText, scale: float) -> SegmentedPdfPage:
    """The page as OCR read it: one cell per paragraph, in reading order, with its lines
    (the assembly makes each a text item), and no bitmap: the scan is the page itself."""

    def points(box: Box) -> Box:
        return (box[0] / scale, box[1] / scale, box[2] / scale, box[3] / scale)

    cells = []
    for index, paragraph in enumerate(found.paragraphs):
        lines, start = [], 0
        for line in paragraph.lines or (paragraph,):
            lines.append((points(line.box), (start, start + len(line.text))))
            start += len(line.text) + 1  # the space that joins two lines
        cells.append(
            OcrCell(
                index=index,
                text=paragraph.text,
                orig=paragraph.text,
                from_ocr=True,
                rect=BoundingRectangle.from_bounding_box(top_left(points(paragraph.box))),
                lines=lines,
            )
        )
    return parsed.model_copy(
        update={
            "textline_cells": cells,
            "word_cells": [],
            "char_cells": [],
            "bitmap_resources": [],
            "has_lines": True,
            "has_words": False,
            "has_chars": False,
        }
    )
