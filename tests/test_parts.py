"""Long documents in parts, in this process: real docling on a long corpus PDF, real
sidecars, leases and part files. Another worker is played by calling `process_part` when
a part is offered; the processes, kills and hosts are in test_split.py."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from handlers.converter import (
    NO_TEXT,
    Conversion,
    ConversionOptions,
    DoclingConverter,
    PageRange,
    ocr_weights,
    page_count,
)
from handlers.converter import Progress as ConvProgress
from handlers.errors import JobError
from handlers.lease import FileLeases
from handlers.ledger import Ledger
from handlers.lifecycle import JobPolicy
from handlers.parts import PARTS, PartStore, by_weight, join, plan
from handlers.pipeline import JobContext, process_file, process_part
from tests.helpers import corpus, long_pdf

REL = "long.pdf"


@pytest.fixture(scope="module")
def docling() -> DoclingConverter:
    return DoclingConverter(ConversionOptions(progress_interval=0))


@pytest.fixture(scope="module")
def long(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A 36-page PDF (two of the corpus's redp5110 in a row)."""
    return long_pdf(tmp_path_factory.mktemp("long") / REL, copies=2).read_bytes()


@pytest.fixture(scope="module")
def whole(
    tmp_path_factory: pytest.TempPathFactory, docling: DoclingConverter, long: bytes
) -> dict[str, bytes]:
    """The outputs of the long PDF converted whole (no split)."""
    root = tmp_path_factory.mktemp("whole")
    ctx = context(root, docling)
    (ctx.input_dir / REL).write_bytes(long)
    status = process_file(REL, ctx)
    assert status is not None and status.state == "completed" and status.parts is None
    return {
        fmt: (ctx.ledger.output_dir / path).read_bytes() for fmt, path in status.outputs.items()
    }


def context(
    root: Path, converter: object, offer: object = None, split_pages: int = 8
) -> JobContext:
    (root / "input").mkdir(parents=True, exist_ok=True)
    return JobContext(
        input_dir=root / "input",
        ledger=Ledger(root / "output"),
        leases=FileLeases(root / "locks"),
        scratch_dir=root / "scratch",
        options=ConversionOptions(progress_interval=0),
        converter=converter,  # type: ignore[arg-type]
        policy=JobPolicy(max_attempts=1, split_pages=split_pages),
        offer=offer,  # type: ignore[arg-type]
    )


def test_a_plan_splits_only_past_the_limit_into_parts_that_taper_to_single_pages() -> None:
    assert plan(8, 8) == [] and plan(500, 0) == []
    assert plan(9, 8) == [(1, 3), (4, 5), (6, 6), (7, 7), (8, 8), (9, 9)]
    assert plan(18, 8) == [(1, 4), (5, 8), (9, 11), (12, 13), (14, 15), *singles(16, 18)]
    assert plan(10, 2) == singles(1, 10)
    for pages in (9, 17, 36, 100, 1000):  # every page once, in order, never growing
        parts = plan(pages, 8)
        sizes = [last - first + 1 for first, last in parts]
        assert [p for first, last in parts for p in range(first, last + 1)] == [
            *range(1, pages + 1)
        ]
        assert sizes == sorted(sizes, reverse=True) and max(sizes) <= 4
        assert sizes[-4:] == [1, 1, 1, 1]  # the last parts are single pages
    assert plan(36, 8)[:6] == [(n, n + 3) for n in range(1, 24, 4)]  # four pages while many
    # A page range is split, not the whole document: its pages only, cut at the last page.
    assert plan(20, 8, (3, 5)) == []
    assert plan(20, 8, (5, 50)) == [(5, 8), (9, 11), (12, 14), (15, 16), *singles(17, 20)]
    assert plan(40, 8, (11, 30)) == [(11, 14), (15, 18), (19, 21), (22, 24), (25, 26)] + (
        singles(27, 30)
    )
    assert plan(4, 2, (9, 12)) == []  # starts past the end: docling says so, unsplit


def singles(first: int, last: int) -> list[PageRange]:
    return [(n, n) for n in range(first, last + 1)]


def test_parts_are_taken_heaviest_first_where_the_pages_image_data_says_so() -> None:
    parts = plan(9, 8)  # (1, 3), (4, 5) and single pages 6-9
    dense_last = [100, 100, 100, 100, 100, 10, 10, 10, 900]
    assert by_weight(parts, dense_last) == [(9, 9), (1, 3), (4, 5), (6, 6), (7, 7), (8, 8)]
    assert by_weight(parts, [0] * 9) == parts  # no images (born-digital): page order
    assert by_weight(parts, [5] * 8) == parts  # weights that miss a page are not used
    assert by_weight(parts, []) == parts and by_weight([], []) == []


def test_a_pages_weight_is_its_stored_image_data_and_nothing_where_it_has_text(
    tmp_path: Path,
) -> None:
    import pikepdf
    import pypdfium2
    from PIL import Image

    pdf = pypdfium2.PdfDocument(corpus("pdf/multi_page.pdf"))
    dense = pdf[0].render(scale=150 / 72).to_pil().convert("RGB")
    blank = Image.new("RGB", dense.size, "white")
    scan = tmp_path / "scan.pdf"
    blank.save(scan, "PDF", resolution=150, save_all=True, append_images=[dense, blank])
    weights = ocr_weights(scan, "auto")
    assert len(weights) == 3 and weights[0] == weights[2] and weights[1] > 5 * weights[0] > 0
    assert ocr_weights(scan, "force") == weights and ocr_weights(scan, "off") == []

    # A page that names a font has a text layer: it weighs nothing, its figures aside.
    assert ocr_weights(corpus("pdf/redp5110_sampled.pdf"), "auto") == [0] * 18
    assert ocr_weights(corpus("pdf/ocr_test.pdf"), "auto")[0] > 0  # its scan is in a form
    with pikepdf.open(scan) as inherited:  # resources kept on the page tree, not the page
        inherited.Root.Pages.Resources = inherited.pages[1].obj.Resources
        for page in inherited.pages:
            del page.obj["/Resources"]
        inherited.save(tmp_path / "inherited.pdf")
    assert ocr_weights(tmp_path / "inherited.pdf", "auto") == [weights[1]] * 3

    frames = tmp_path / "scan.tif"
    gray = [image.convert("L") for image in (blank, dense, blank)]
    gray[0].save(frames, save_all=True, append_images=gray[1:], compression="tiff_lzw")
    tiff = ocr_weights(frames, "auto")
    assert len(tiff) == 3 and tiff[0] == tiff[2] and tiff[1] > 5 * tiff[0] > 0

    with pikepdf.open(scan) as locked:
        locked.save(tmp_path / "locked.pdf", encryption=pikepdf.Encryption(owner="o", user="u"))
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.7\n" + b"\xff" * 64)
    (tmp_path / "notes.txt").write_text("no pages")
    for unread in ("locked.pdf", "broken.pdf", "notes.txt", "missing.pdf"):
        assert ocr_weights(tmp_path / unread, "auto") == [], unread


def test_parts_done_by_other_workers_and_here_join_to_the_whole_outputs(
    tmp_path: Path, docling: DoclingConverter, long: bytes, whole: dict[str, bytes]
) -> None:
    offered: list[PageRange] = []
    done_elsewhere: list[bool] = []

    def offer(rel: str, job_id: str, pages: PageRange, priority: int) -> None:
        offered.append(pages)
        if len(offered) % 2:  # every other part is taken by "another worker" at once
            done_elsewhere.append(process_part(rel, job_id, pages, ctx))

    ctx = context(tmp_path, docling, offer)
    (ctx.input_dir / REL).write_bytes(long)
    status = process_file(REL, ctx)

    assert status is not None and status.state == "completed", status
    assert offered == plan(36, 8)[1:] and done_elsewhere == [True] * 6
    assert status.parts == 13 and status.pages == 36 and status.pages_done == 36
    outputs = {fmt: (ctx.ledger.output_dir / p).read_bytes() for fmt, p in status.outputs.items()}
    assert outputs == whole  # byte for byte, Markdown and DoclingDocument JSON
    assert not any((ctx.ledger.output_dir / PARTS).iterdir())  # the parts are gone


@dataclass
class FailingPart:
    """The real converter, except that one part raises the error a bad page would."""

    real: DoclingConverter
    bad: PageRange

    def convert(
        self,
        source: Path,
        on_pages: ConvProgress,
        max_pages: int = 0,
        pages: PageRange | None = None,
    ) -> Conversion:
        if pages == self.bad:
            raise JobError("corrupt", f"The PDF file could not be read at {source}.")
        return self.real.convert(source, on_pages, max_pages, pages)


@pytest.mark.parametrize("where", ["here", "elsewhere"])
def test_a_failed_part_fails_the_job_with_its_error(
    tmp_path: Path, docling: DoclingConverter, where: str
) -> None:
    def offer(rel: str, job_id: str, pages: PageRange, priority: int) -> None:
        if where == "elsewhere":
            assert process_part(rel, job_id, pages, ctx)

    ctx = context(tmp_path, FailingPart(docling, (13, 16)), offer)
    long_pdf(ctx.input_dir / REL, copies=2)
    status = process_file(REL, ctx)

    assert status is not None and status.state == "failed"
    assert status.error == {
        "type": "corrupt",
        # named after the input, not the private copy a worker converted
        "message": f"Pages 13-16: The PDF file could not be read at {REL}.",
        "retryable": False,
    }
    assert not any((ctx.ledger.output_dir / PARTS).iterdir())


def test_a_cancel_stops_the_job_and_its_parts(tmp_path: Path, docling: DoclingConverter) -> None:
    took: list[bool] = []

    def offer(rel: str, job_id: str, pages: PageRange, priority: int) -> None:
        if pages == (9, 12):
            ctx.leases.request_cancel(rel, job_id)
        took.append(process_part(rel, job_id, pages, ctx))

    ctx = context(tmp_path, docling, offer)
    long_pdf(ctx.input_dir / REL, copies=2)
    status = process_file(REL, ctx)

    assert status is not None and status.state == "cancelled"
    assert took == [True] + [False] * (len(plan(36, 8)) - 2)  # stopped at once
    assert "md" not in status.outputs
    assert not any((ctx.ledger.output_dir / PARTS).iterdir())


def test_a_part_of_a_job_that_does_not_run_is_not_converted(
    tmp_path: Path, docling: DoclingConverter
) -> None:
    calls: list[PageRange | None] = []

    @dataclass
    class Counting:
        def convert(
            self,
            source: Path,
            on_pages: ConvProgress,
            max_pages: int = 0,
            pages: PageRange | None = None,
        ) -> Conversion:
            calls.append(pages)
            return docling.convert(source, on_pages, max_pages, pages)

    ctx = context(tmp_path, Counting())
    long_pdf(ctx.input_dir / REL, copies=1)
    status = process_file(REL, ctx)  # no offer: converted whole, by this worker
    assert status is not None and status.state == "completed" and calls == [None]
    assert not process_part(REL, status.job_id, (1, 4), ctx)  # completed: nothing to do
    assert not process_part(REL, "another-job", (1, 4), ctx)
    assert calls == [None]


def test_a_stored_part_reads_back_as_it_was_converted(
    tmp_path: Path, docling: DoclingConverter
) -> None:
    source = corpus("pdf/redp5110_sampled.pdf")
    converted = [docling.convert(source, lambda d, t: None, 0, pages) for pages in plan(18, 8)]
    store = PartStore(tmp_path / "parts")
    store.open()
    for pages, conversion in zip(plan(18, 8), converted, strict=True):
        store.write(pages, conversion)
    back = [store.read(pages) for pages in plan(18, 8)]
    assert all(isinstance(part, Conversion) for part in back)
    joined, direct = join(back, False), join(converted, False)  # type: ignore[arg-type]
    assert joined.document.export_to_dict() == direct.document.export_to_dict()
    assert (joined.pages, joined.warnings) == (18, direct.warnings)
    # A part of a page without text (page 17 is blank) says so; the joined document does not.
    assert NO_TEXT in converted[plan(18, 8).index((17, 17))].warnings
    assert NO_TEXT not in joined.warnings
    store.remove()
    store.write((1, 4), converted[0])  # a late part, after its job ended: not kept
    assert not store.folder.exists()


def test_a_multi_page_tiff_is_split_by_its_frames_into_the_whole_outputs(
    tmp_path: Path, docling: DoclingConverter
) -> None:
    import pypdfium2

    pdf = pypdfium2.PdfDocument(corpus("pdf/multi_page.pdf"))
    frames = [pdf[n].render(scale=100 / 72).to_pil().convert("L") for n in range(3)]
    scan = tmp_path / "scan.tif"
    frames[0].save(scan, save_all=True, append_images=frames[1:], compression="tiff_lzw")
    (tmp_path / "bad.tif").write_bytes(b"II*\0" + b"\xff" * 64)
    assert page_count(scan) == 3 and page_count(tmp_path / "bad.tif") == 0

    weights = ocr_weights(scan, "auto")
    assert weights[1] < min(weights[0], weights[2])  # page 2 holds the least ink
    offered: list[PageRange] = []
    whole_ctx = context(tmp_path / "whole", docling)
    parts_ctx = context(
        tmp_path / "parts", docling, lambda *part: offered.append(part[2]), split_pages=2
    )
    outputs = []
    for ctx in (whole_ctx, parts_ctx):
        (ctx.input_dir / scan.name).write_bytes(scan.read_bytes())
        status = process_file(scan.name, ctx)
        assert status is not None and status.state == "completed", status
        assert status.ocr_pages == 3
        outputs.append(
            {f: (ctx.ledger.output_dir / p).read_bytes() for f, p in status.outputs.items()}
        )
        parts = status.parts
    assert parts == 3  # the last job was split: one part per frame, all done here
    assert offered == [(3, 3), (2, 2)]  # page 1 here first, the lightest page last
    assert outputs[0] == outputs[1]  # joined in page order all the same
