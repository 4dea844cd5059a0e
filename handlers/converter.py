"""docling, wrapped: one warm DocumentConverter per worker, and conversion with progress.
The journey sees a `Converter` and the small `Conversion` it returns, never docling's
result; a fake converter stands in for docling where a test injects a fault."""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from handlers.errors import JobError, classify, models_missing
from handlers.ocr.engine import OcrOptions

if TYPE_CHECKING:
    from docling.datamodel.document import ConversionResult
    from docling.document_converter import DocumentConverter
    from docling_core.types.doc.document import DoclingDocument

DOCLING_VERSION = version("docling-slim")
Progress = Callable[[int, int], None]
PageRange = tuple[int, int]  # 1-based, inclusive
NO_TEXT = "no text was found in this document"
PARTIAL = "partial: some pages could not be converted or the time limit was hit"
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".gif"})


@dataclass(frozen=True)
class ConversionOptions:
    """The part of the configuration that shapes a conversion."""

    to: tuple[str, ...] = ("md", "json")
    pdf_pipeline: str = "native"
    page_images: bool = False
    document_timeout: float = 0.0
    progress_interval: float = 1.0
    ocr: OcrOptions = OcrOptions()
    chunker: str = "hierarchical"  # or "hybrid": split and merged to chunk_max_tokens
    chunk_tokenizer: str = ""  # a folder with the hybrid chunker's tokenizer files
    chunk_max_tokens: int = 512
    pdf_passwords_file: str = ""  # candidate passwords for protected PDFs, one per line
    page_range: tuple[int, int] | None = None  # 1-based, inclusive: only these pages

    def fingerprint(self) -> str:
        """A short hash of what shapes the outputs (not of time limits, progress, threads
        or where passwords come from): two conversions with one fingerprint wrote the
        same outputs from the same input."""
        shaping = (
            self.to,
            self.pdf_pipeline,
            self.page_images,
            (self.ocr.mode, self.ocr.dpi, self.ocr.language, self.ocr.model, self.ocr.models_dir),
            (self.chunker, self.chunk_tokenizer, self.chunk_max_tokens),
            self.page_range,
        )
        return hashlib.sha256(repr(shaping).encode()).hexdigest()[:12]


@dataclass
class Conversion:
    """What the journey keeps of a conversion."""

    document: DoclingDocument
    input_format: str | None = None
    pages: int = 0
    warnings: list[str] = field(default_factory=list)
    partial: bool = False
    turns: dict[int, int] = field(default_factory=dict)  # page -> how its OCR'd text lies
    decrypted: bool = False  # a password from jobs.pdf_passwords_file opened it
    ocr_pages: int = 0  # pages read by OCR


class Converter(Protocol):
    def convert(
        self, source: Path, on_pages: Progress, max_pages: int = 0, pages: PageRange | None = None
    ) -> Conversion:
        """Convert `source` (only `pages`, a part of a long document, if given); a result
        that is not usable raises JobError."""
        ...


class DoclingConverter:
    """docling's DocumentConverter, built once per worker process and kept warm."""

    def __init__(self, options: ConversionOptions) -> None:
        self.options = options
        self.docling = build_converter(options)

    def convert(
        self, source: Path, on_pages: Progress, max_pages: int = 0, pages: PageRange | None = None
    ) -> Conversion:
        from handlers.ocr.pipeline import ocr_count, text_turns
        from handlers.passwords import unlock

        options = self.options
        unlocked = unlock(source, options.pdf_passwords_file)
        result = convert(
            self.docling,
            unlocked or source,
            on_pages,
            max_pages,
            # A part may hold no text where the whole does: the joined document is judged.
            options.ocr.mode == "off" and not pages,
            pages or options.page_range,
        )
        return Conversion(
            document=result.document,
            input_format=result.input.format.value if result.input.format else None,
            pages=len(result.document.pages),
            warnings=warnings_of(result),
            partial=is_partial(result),
            turns=text_turns(result),
            decrypted=unlocked is not None,
            ocr_pages=ocr_count(result),
        )


def build_converter(options: ConversionOptions) -> DocumentConverter:
    """A DocumentConverter for every format. PDFs and images go through docling's model-free
    native pipeline, extended with OCR for the pages that have no text layer."""
    from docling.backend.image_backend import ImageDocumentBackend
    from docling.datamodel.base_models import InputFormat
    from docling.document_converter import DocumentConverter, ImageFormatOption, PdfFormatOption

    from handlers.ocr.pipeline import ScanPdfPipeline, ScanPipelineOptions

    if options.pdf_pipeline != "native":
        # The standard pipeline (layout, tables, OCR) needs torch and model weights; it is
        # loaded lazily on the first PDF, and a missing model fails that job, not the worker.
        return DocumentConverter(format_options={InputFormat.PDF: PdfFormatOption()})
    scan = ScanPipelineOptions(
        generate_page_images=options.page_images,
        generate_picture_images=False,
        document_timeout=options.document_timeout or None,
        ocr=options.ocr,
    )
    return DocumentConverter(
        format_options={
            InputFormat.PDF: PdfFormatOption(pipeline_cls=ScanPdfPipeline, pipeline_options=scan),
            InputFormat.IMAGE: ImageFormatOption(
                pipeline_cls=ScanPdfPipeline, pipeline_options=scan, backend=ImageDocumentBackend
            ),
        }
    )


def convert(
    converter: DocumentConverter,
    source: Path,
    on_pages: Progress,
    max_pages: int = 0,
    require_text: bool = False,
    page_range: PageRange | None = None,
) -> ConversionResult:
    """Convert `source` (only the pages of `page_range`, if given); a result that is not
    usable raises JobError, and so does one with no text when `require_text` (OCR off)."""
    from docling.datamodel.base_models import ConversionStatus, FailureCategory
    from docling.datamodel.progress import PageCompletedProgress

    from handlers.ocr.pipeline import OcrUnavailable

    def forward(event: object) -> None:
        if isinstance(event, PageCompletedProgress):
            on_pages(event.completed_pages, event.total_pages)

    try:
        result = converter.convert(
            source,
            raises_on_error=False,
            progress_callback=forward,
            max_num_pages=max_pages or sys.maxsize,
            page_range=page_range or (1, sys.maxsize),
        )
    except OcrUnavailable as exc:
        raise exc.error from None
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
    if require_text:
        check_text_layer(result)
    return result


def failure_sentence(result: ConversionResult) -> str:
    detail = "; ".join(error.error_message for error in result.errors)[:500]
    kind = result.input.format.value.upper() if result.input.format else "document"
    return (
        f"The {kind} file could not be read; it may be damaged, encrypted or incomplete. ({detail})"
    )


def check_text_layer(result: ConversionResult) -> None:
    """With OCR off, a scan converts to image placeholders only: that output is empty."""
    fmt = result.input.format
    check_has_text(result.document, fmt.value if fmt else None)


def check_has_text(document: DoclingDocument, input_format: str | None) -> None:
    if document.texts or input_format not in ("pdf", "image"):
        return
    what = "image" if input_format == "image" else "PDF has no text layer"
    raise JobError(
        "ocr_required",
        f'This {what} needs OCR to be read, and OCR is off (conversion.ocr = "off"). '
        'Set conversion.ocr to "auto" to read it.',
    )


def is_partial(result: ConversionResult) -> bool:
    from docling.datamodel.base_models import ConversionStatus

    return result.status == ConversionStatus.PARTIAL_SUCCESS


def warnings_of(result: ConversionResult) -> list[str]:
    notes = [error.error_message for error in result.errors]
    if is_partial(result):
        notes.insert(0, PARTIAL)
    if not result.document.texts:
        notes.append(NO_TEXT)
    return notes


def page_count(source: Path) -> int:
    """The pages of a PDF or the frames of a TIFF, read without converting a page (0 when it
    is neither, or one this cannot open: the conversion then says what is wrong with it)."""
    kind = paged_kind(source)
    if kind == "pdf":
        return pdf_pages(source)
    if kind == "tiff":
        return tiff_frames(source)
    return 0


def ocr_weights(source: Path, mode: str) -> list[int]:
    """What each page of a PDF or frame of a TIFF gives OCR to read: the bytes of its image
    data as stored (nothing is decoded or drawn), which a scanned page's OCR time goes
    with. A PDF page that names a font weighs nothing: its text is in its text layer (and
    where OCR reads it anyway, under "force", its images say nothing of what that costs).
    Empty under `ocr = "off"`, or when the file cannot be read so (a password, damage):
    the conversion says what is wrong with it."""
    kind = None if mode == "off" else paged_kind(source)
    try:
        if kind == "pdf":
            return pdf_image_bytes(source)
        if kind == "tiff":
            return tiff_frame_bytes(source)
    except Exception:  # decoder boundary: qpdf and PIL raise anything; docling reports it
        return []
    return []


TIFF_MAGIC = (b"II*\0", b"MM\0*")


def paged_kind(source: Path) -> str | None:
    """ "pdf" or "tiff" by the file's first bytes, else None."""
    try:
        with source.open("rb") as handle:
            magic = handle.read(5)
    except OSError:
        return None
    if magic == b"%PDF-":
        return "pdf"
    return "tiff" if magic[:4] in TIFF_MAGIC else None


def pdf_image_bytes(source: Path) -> list[int]:
    """Per page, the stored length of the images it draws, also through its forms, or 0
    if it names a font. qpdf reads the page dictionaries only, about 0.1 ms a page, where
    loading a page in pdfium parses its content (up to 18 ms a page of text)."""
    import pikepdf

    with pikepdf.open(source) as pdf:
        weights = []
        for page in pdf.pages:
            resources = page.get_resources()  # inherited from the page tree too
            fonts = resources.get("/Font") if resources is not None else None
            has_fonts = isinstance(fonts, pikepdf.Dictionary) and len(fonts.keys()) > 0
            weights.append(0 if has_fonts else image_bytes(resources))
        return weights


def image_bytes(resources: object, seen: set[tuple[int, int]] | None = None) -> int:
    """The stored length of the images in `resources` and the forms it names, each once."""
    import pikepdf

    seen = set() if seen is None else seen
    found = resources.get("/XObject") if isinstance(resources, pikepdf.Dictionary) else None
    if not isinstance(found, pikepdf.Dictionary):
        return 0
    total = 0
    for name in found.keys():
        item = found[name]
        if not isinstance(item, pikepdf.Stream) or item.objgen in seen:
            continue
        seen.add(item.objgen)
        if item.get("/Subtype") == "/Image":
            total += int(item.get("/Length", 0))
        elif item.get("/Subtype") == "/Form":
            total += image_bytes(item.get("/Resources"), seen)
    return total


def tiff_frame_bytes(source: Path) -> list[int]:
    """Per frame, the stored length of its strips or tiles."""
    import warnings

    from PIL import Image

    strips, tiles = 279, 325  # StripByteCounts, TileByteCounts
    sizes = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Image.open(source) as image:
            for frame in range(int(getattr(image, "n_frames", 1))):
                image.seek(frame)
                tags = image.tag_v2  # type: ignore[attr-defined]
                sizes.append(sum(tags.get(strips, ()) or tags.get(tiles, ())))
    return sizes


def pdf_pages(source: Path) -> int:
    """The pages in a PDF's page tree, without parsing a page."""
    import pypdfium2

    try:
        document = pypdfium2.PdfDocument(source)
    except (OSError, pypdfium2.PdfiumError):
        return 0
    try:
        return len(document)
    finally:
        document.close()


def tiff_frames(source: Path) -> int:
    """The frames of a TIFF, which docling converts as its pages (0 when PIL cannot say)."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():  # a broken tag is docling's to report, not PIL's
            warnings.simplefilter("ignore")
            with Image.open(source) as image:
                return int(getattr(image, "n_frames", 1))
    except Exception:  # decoder boundary: PIL raises anything; converted whole, docling reports it
        return 0


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
