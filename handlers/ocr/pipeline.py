"""Scans and photos, read inside docling's native pipeline: a PDF page without a usable
text layer (every page, with ocr = "force") and every image page is rendered and read by
OCR. The result is a DoclingDocument like any other: one text item per paragraph, in
reading order, with its page and box; born-digital pages keep their exact text layer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from docling.backend.pdf_backend import PdfPageBackend
from docling.datamodel.base_models import Page
from docling.datamodel.document import ConversionResult
from docling.datamodel.pipeline_options import NativePdfPipelineOptions
from docling.pipeline.native_pdf_pipeline import NativePdfPipeline
from docling_core.types.doc.base import BoundingBox, CoordOrigin
from docling_core.types.doc.page import BoundingRectangle, SegmentedPdfPage, TextCell

from handlers.errors import JobError
from handlers.ocr.engine import OcrEngine, OcrOptions
from handlers.ocr.layout import Paragraph

if TYPE_CHECKING:
    from docling.pipeline.native_pdf_pipeline import _NativeBuildTimings

MAX_SIDE = 4000  # pixels: the longest side a page is rendered at for OCR
STAMP_CHARS = 32  # a text layer this small over a page-sized scan is a stamp, not the text
SCAN_COVER = 0.5  # share of the page an image must cover to count as a scan


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
        if not needs_ocr(
            self.options.ocr.mode, page.parsed_page, page.size.width * page.size.height
        ):
            return page
        scale = min(
            self.render_scale(page_backend), MAX_SIDE / max(page.size.width, page.size.height)
        )
        try:
            found = self.engine.read(page_backend.get_page_image(scale=scale))
        except JobError as exc:
            raise OcrUnavailable(exc) from exc
        if found:
            page.parsed_page = ocr_page(page.parsed_page, found, scale)
        return page

    def render_scale(self, page_backend: PdfPageBackend) -> float:
        """A page at the OCR resolution, or an image page at its own resolution if that is higher:
        a low-resolution scan is enlarged (recognition makes far fewer errors on it)."""
        dpi = getattr(page_backend, "_dpi", None)  # only docling's image pages have one
        return max(max(dpi) if dpi else 0.0, self.options.ocr.dpi) / 72


def needs_ocr(mode: str, parsed: SegmentedPdfPage, page_area: float) -> bool:
    """auto: a page with no text layer, or only a stamp of text over a page-sized scan."""
    if mode != "auto":
        return mode == "force"
    chars = sum(not c.isspace() for cell in parsed.textline_cells for c in cell.text)
    if chars == 0:
        return True
    covered = sum(bitmap.rect.to_bounding_box().area() for bitmap in parsed.bitmap_resources)
    return chars < STAMP_CHARS and covered >= SCAN_COVER * page_area


def ocr_page(parsed: SegmentedPdfPage, found: list[Paragraph], scale: float) -> SegmentedPdfPage:
    """The page as OCR read it: one line cell per paragraph, in reading order (the native
    assembly makes each a text item), and no bitmap: the scan is the page itself."""
    cells = [
        TextCell(
            index=index,
            text=paragraph.text,
            orig=paragraph.text,
            from_ocr=True,
            rect=BoundingRectangle.from_bounding_box(
                BoundingBox(
                    l=paragraph.box[0] / scale,
                    t=paragraph.box[1] / scale,
                    r=paragraph.box[2] / scale,
                    b=paragraph.box[3] / scale,
                    coord_origin=CoordOrigin.TOPLEFT,
                )
            ),
        )
        for index, paragraph in enumerate(found)
    ]
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
