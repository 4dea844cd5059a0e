"""docling, wrapped: one warm DocumentConverter per worker, and conversion with progress."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

from handlers.errors import JobError, classify, models_missing

if TYPE_CHECKING:
    from docling.datamodel.document import ConversionResult
    from docling.document_converter import DocumentConverter

DOCLING_VERSION = version("docling-slim")
Progress = Callable[[int, int], None]
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".gif"})


@dataclass(frozen=True)
class ConversionOptions:
    """The part of the configuration that shapes a conversion."""

    to: tuple[str, ...] = ("md", "json")
    pdf_pipeline: str = "native"
    page_images: bool = False
    document_timeout: float = 0.0
    progress_interval: float = 1.0


def build_converter(options: ConversionOptions) -> DocumentConverter:
    """A DocumentConverter for every format; PDFs through the model-free native pipeline."""
    from docling.datamodel.base_models import InputFormat
    from docling.datamodel.pipeline_options import NativePdfPipelineOptions
    from docling.document_converter import DocumentConverter, PdfFormatOption
    from docling.pipeline.native_pdf_pipeline import NativePdfPipeline

    timeout = options.document_timeout or None
    if options.pdf_pipeline == "native":
        pdf = PdfFormatOption(
            pipeline_cls=NativePdfPipeline,
            pipeline_options=NativePdfPipelineOptions(
                generate_page_images=options.page_images,
                generate_picture_images=False,
                document_timeout=timeout,
            ),
        )
    else:
        # The standard pipeline (layout, tables, OCR) needs torch and model weights; it is
        # loaded lazily on the first PDF, and a missing model fails that job, not the worker.
        pdf = PdfFormatOption()
    return DocumentConverter(format_options={InputFormat.PDF: pdf})


def convert(
    converter: DocumentConverter, source: Path, on_pages: Progress, max_pages: int = 0
) -> ConversionResult:
    """Convert `source`; a result that is not usable raises JobError."""
    from docling.datamodel.base_models import ConversionStatus, FailureCategory
    from docling.datamodel.progress import PageCompletedProgress

    def forward(event: object) -> None:
        if isinstance(event, PageCompletedProgress):
            on_pages(event.completed_pages, event.total_pages)

    try:
        result = converter.convert(
            source,
            raises_on_error=False,
            progress_callback=forward,
            max_num_pages=max_pages or sys.maxsize,
        )
    except Exception as exc:  # per-conversion boundary: docling backends raise anything
        error = classify(exc)
        if error.type == "models_missing" and source.suffix.lower() in IMAGE_SUFFIXES:
            error = models_missing("Reading text from an image")
        raise error from exc
    if result.status == ConversionStatus.SKIPPED:
        raise JobError(
            "unsupported_format",
            f"hotfolder cannot convert this kind of file ({source.suffix or 'no extension'}): "
            "docling did not recognise it as a supported document format.",
        )
    if result.status not in (ConversionStatus.SUCCESS, ConversionStatus.PARTIAL_SUCCESS):
        if any(error.category == FailureCategory.POLICY for error in result.errors):
            detail = "; ".join(error.error_message for error in result.errors)
            raise JobError("too_large", f"{detail} (jobs.max_pages).")
        raise JobError("corrupt", failure_sentence(result))
    check_text_layer(result)
    return result


def failure_sentence(result: ConversionResult) -> str:
    detail = "; ".join(error.error_message for error in result.errors)[:500]
    kind = result.input.format.value.upper() if result.input.format else "document"
    return (
        f"The {kind} file could not be read; it may be damaged, encrypted or incomplete. ({detail})"
    )


def check_text_layer(result: ConversionResult) -> None:
    """A scanned PDF converts to image placeholders only: without OCR that output is empty."""
    from docling.datamodel.base_models import InputFormat

    document = result.document
    if result.input.format == InputFormat.PDF and not document.texts and document.pictures:
        raise JobError(
            "ocr_required",
            "This PDF has no text layer (scanned pages). "
            + models_missing("Reading scanned pages").message,
        )


def is_partial(result: ConversionResult) -> bool:
    from docling.datamodel.base_models import ConversionStatus

    return result.status == ConversionStatus.PARTIAL_SUCCESS


def warnings_of(result: ConversionResult) -> list[str]:
    notes = [error.error_message for error in result.errors]
    if is_partial(result):
        notes.insert(0, "partial: some pages could not be converted or the time limit was hit")
    return notes


class Throttle:
    """Call through at most once per `interval` seconds (sidecar progress writes)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.last = 0.0

    def ready(self) -> bool:
        now = time.monotonic()
        if now - self.last < self.interval:
            return False
        self.last = now
        return True
