"""Reading order of OCR'd lines, on synthetic pages whose right answer is known."""

from __future__ import annotations

import pytest

from handlers.ocr.layout import Line, paragraphs

HEIGHT = 12  # a line's height, in pixels
LEADING = 16  # from one line's top to the next one's


def column(left: float, right: float, top: float, texts: list[str]) -> list[Line]:
    return [
        Line(text, (left, top + n * LEADING, right, top + n * LEADING + HEIGHT))
        for n, text in enumerate(texts)
    ]


def test_two_columns_under_a_title_read_column_by_column() -> None:
    title = [Line("Title across both columns", (50, 10, 550, 30))]
    left = column(50, 280, 60, ["left one", "left two", "left three", "left four"])
    left += column(50, 280, 60 + 5 * LEADING + 20, ["left new paragraph", "left end"])
    right = column(320, 550, 60, ["right one", "right two", "right three", "right four"])
    footer = [Line("Footer across the page", (50, 300, 550, 312))]
    # OCR reports lines in no useful order; the result must not depend on it.
    found = paragraphs(list(reversed(title + right + footer + left)))
    assert [p.text for p in found] == [
        "Title across both columns",
        "left one left two left three left four",
        "left new paragraph left end",
        "right one right two right three right four",
        "Footer across the page",
    ]
    assert found[1].box == (50, 60, 280, 60 + 3 * LEADING + HEIGHT)


def test_pieces_of_one_line_are_joined_and_a_ragged_column_stays_one_column() -> None:
    lines = [
        Line("The first", (50, 60, 110, 72)),
        Line("line of text", (118, 60, 200, 72)),  # a wide space: OCR split the line
        Line("a short one", (50, 76, 120, 88)),
        Line("and a long line that runs to the margin", (50, 92, 400, 104)),
        Line("short", (50, 108, 90, 120)),
        Line("again a long line to the margin", (50, 124, 400, 136)),
        Line("end", (50, 140, 80, 152)),
    ]
    found = paragraphs(lines)
    assert [p.text for p in found] == [
        "The first line of text a short one and a long line that runs to the margin "
        "short again a long line to the margin end"
    ]


def test_a_different_size_or_a_wide_gap_starts_a_new_paragraph() -> None:
    heading = [Line("A Heading", (50, 20, 300, 44))]  # twice the height of body text
    body = column(50, 400, 50, ["body line one", "body line two"])
    after_gap = column(50, 400, 50 + 2 * LEADING + 30, ["next paragraph"])
    found = paragraphs(heading + body + after_gap)
    assert [p.text for p in found] == [
        "A Heading",
        "body line one body line two",
        "next paragraph",
    ]


def test_a_box_turned_with_its_page_lands_on_the_same_pixels() -> None:
    """A box marked on an image, turned with the image by numpy's rot90, covers the marked
    pixels there, corners clockwise from the top left as the detector gives them."""
    import numpy as np

    from handlers.ocr.engine import turn_quad

    height, width = 60, 100
    page = np.zeros((height, width), dtype=np.uint8)
    page[10:20, 30:80] = 1  # a line 50 px wide, 10 px high
    quad = np.array([[30, 10], [80, 10], [80, 20], [30, 20]], dtype=np.float32)
    for turns in (1, 2, 3):
        turned = np.rot90(page, k=turns)
        corners = turn_quad(quad, turns, width, height)
        ys, xs = np.nonzero(turned)
        assert corners.tolist() == [
            [xs.min(), ys.min()],
            [xs.max() + 1, ys.min()],
            [xs.max() + 1, ys.max() + 1],
            [xs.min(), ys.max() + 1],
        ], turns


def test_long_lines_are_read_squeezed_and_small_or_short_ones_as_they_are() -> None:
    import numpy as np

    from handlers.ocr.engine import NARROW_FROM, NARROWING, OcrOptions, narrowed, recogniser

    line = np.zeros((32, 400, 3), dtype=np.uint8)
    assert narrowed(line, NARROWING).shape == (32, round(400 * NARROWING), 3)
    small = np.zeros((NARROW_FROM - 1, 400, 3), dtype=np.uint8)  # small text, low resolution
    assert narrowed(small, NARROWING) is small
    word = np.zeros((40, 150, 3), dtype=np.uint8)  # a word or two: little to gain, letters lost
    assert narrowed(word, NARROWING) is word
    assert recogniser(OcrOptions(language="en", model="small")).narrowing == NARROWING
    assert recogniser(OcrOptions(language="japan")).narrowing == 1.0  # square characters
    assert recogniser(OcrOptions(language="en")).narrowing == 1.0  # the tiny one: full width


@pytest.mark.parametrize("model", ["small", "tiny"])
def test_a_dense_page_reads_as_well_squeezed_by_the_small_recogniser_as_by_the_tiny(
    monkeypatch, model
) -> None:
    """The lines of a born-digital page rendered at 150 dpi, read squeezed by the small
    recogniser and at full width by the tiny one, against its text layer (1.000 both ways
    when measured)."""
    import handlers.ocr.engine as engine_module
    from handlers.ocr.engine import OcrEngine, OcrOptions
    from tests.bench.ocr_pages import rendered, text_layer
    from tests.test_corpus import word_similarity

    squeezed, original = [], engine_module.narrowed

    def narrowed(crop, share):
        found = original(crop, share)
        squeezed.append(found is not crop)
        return found

    monkeypatch.setattr(engine_module, "narrowed", narrowed)
    page = OcrEngine(OcrOptions(threads=1, model=model)).read(
        rendered("pdf/multi_page.pdf", 0, 150)
    )
    text = "\n".join(paragraph.text for paragraph in page.paragraphs)
    assert word_similarity(text, text_layer("pdf/multi_page.pdf", 0)) >= 0.99
    if model == "small":
        assert sum(squeezed) > 20, squeezed  # most of its lines were read squeezed
    else:
        assert squeezed == []
