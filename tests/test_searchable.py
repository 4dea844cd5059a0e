"""The searchable `pdf` output through the daemon, on the corpus scans and photos: valid
PDFs with the input's pages and images untouched, whose text is the Markdown's text, each
word of it lying on that word in the picture, on pages upright, sideways or upside down."""

from __future__ import annotations

import difflib
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pikepdf
import pypdfium2
import pytest
from PIL import Image, ImageSequence

from handlers.ocr.engine import OcrEngine, OcrOptions
from handlers.searchable import Line, add_text_layer
from tests.helpers import corpus
from tests.test_ocr import pdf_of, scan_of_text_page

SCANS = [
    "pdf/ocr_test.pdf",
    "pdf/nemotron_multipage.pdf",  # pages turned by /Rotate 90, 180 and 270
    "tif/2206.01062.tif",  # two frames
    "jpg/qr_bill_example.jpg",
    "png/example_image_01.png",
    "webp/webp-test.webp",
]


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "qpdf", "poppler-utils"], capture_output=True
        )
        found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed and could not be (Debian's qpdf, poppler-utils)")
    return found


def similarity(text: str, truth: str) -> float:
    """2 x shared words / all words, over word multisets (reading order aside)."""
    ours, theirs = (Counter(re.findall(r"\w+", t.lower())) for t in (text, truth))
    total = sum(ours.values()) + sum(theirs.values())
    return 2 * sum((ours & theirs).values()) / total if total else 1.0


def images(path: Path) -> list[bytes]:
    """The raw (still encoded) bytes of every image on every page, in order."""
    with pikepdf.open(path) as pdf:
        return [
            image.read_raw_bytes()
            for page in pdf.pages
            for _, image in sorted(page.get_images().items())
        ]


def words_in_place(path: Path, sample: int) -> tuple[int, list[tuple[str, str]]]:
    """Of up to `sample` words of the text layer (5 letters or more, spread over the
    document), how many read as themselves where the layer puts them: the page is drawn
    in its own space (pdfium's text boxes are there) and each word's box, cut out, is read
    by OCR's recogniser alone, turned the two ways its shape allows. The words that did not
    read as themselves come back with what was read."""
    reader = OcrEngine(OcrOptions()).reader()
    pdf = pypdfium2.PdfDocument(path)
    pages, found = [], []
    for index in range(len(pdf)):
        page = pdf[index]
        page.set_rotation(0)  # pdfium's text and its boxes, in the page's own space
        textpage = page.get_textpage()
        pages.append((page, textpage))
        found += [(index, m) for m in re.finditer(r"[^\W\d_]{5,}", textpage.get_text_range())]
    step = max(1, len(found) // sample)
    drawn: dict[int, Image.Image] = {}
    wrong: list[tuple[str, str]] = []
    for index, match in found[::step][:sample]:
        page, textpage = pages[index]
        if index not in drawn:
            drawn[index] = page.render(scale=SCALE).to_pil()
        image = drawn[index]
        boxes = [textpage.get_charbox(i) for i in range(match.start(), match.end())]
        left, bottom = min(b[0] for b in boxes), min(b[1] for b in boxes)
        right, top = max(b[2] for b in boxes), max(b[3] for b in boxes)
        pad, height = 0.4 * min(right - left, top - bottom), image.height / SCALE
        picture = image.crop(
            tuple(
                SCALE * v
                for v in (left - pad, height - top - pad, right + pad, height - bottom + pad)
            )
        )
        pixels = np.asarray(picture.convert("RGB"))
        turns = (1, 3) if picture.height > 1.5 * picture.width else (0, 2)
        reads = [
            reader(np.ascontiguousarray(np.rot90(pixels, k=k)), use_det=False, use_cls=False)
            for k in turns
        ]
        read = max(reads, key=lambda out: out.scores[0] if out.txts else 0)
        said = read.txts[0] if read.txts else ""
        same = difflib.SequenceMatcher(None, squash(said), squash(match.group())).ratio()
        if same < 0.75:
            wrong.append((match.group(), said))
    return min(sample, len(found[::step])), wrong


SCALE = 2  # pixels per point the pages are drawn at for words_in_place


def squash(text: str) -> str:
    return re.sub(r"\W+", "", text.lower())


def test_scans_become_searchable_pdfs_and_text_pdfs_stay_as_they_are(
    make_daemon, tmp_path: Path
) -> None:
    qpdf, pdftotext = tool("qpdf"), tool("pdftotext")
    daemon = make_daemon("run", config={"conversion": {"to": ["md", "pdf"]}})
    hybrid = pdf_of(tmp_path / "hybrid.pdf", [("pdf/multi_page.pdf", 0), ("pdf/ocr_test.pdf", 0)])
    for rel in [*SCANS, "pdf/multi_page.pdf"]:
        target = daemon.input / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(corpus(rel), target)
    shutil.copyfile(hybrid, daemon.input / "hybrid.pdf")
    shutil.copyfile(corpus("docx/word_sample.docx"), daemon.input / "w.docx")
    scan_of_text_page(tmp_path / "sideways.png", 90)  # reads from bottom to top
    shutil.copyfile(tmp_path / "sideways.png", daemon.input / "sideways.png")
    for rel in [*SCANS, "pdf/multi_page.pdf", "hybrid.pdf", "sideways.png"]:
        status = daemon.wait_terminal(rel, timeout=180)
        assert status["state"] == "completed", (rel, status["error"])
        made = daemon.output / f"{rel}.pdf"
        assert status["outputs"]["pdf"] == f"{rel}.pdf"
        checked = subprocess.run([qpdf, "--check", str(made)], capture_output=True, text=True)
        assert checked.returncode in (0, 3), (rel, checked.stdout[-500:])  # 3: warnings only
        with pikepdf.open(made) as pdf:
            assert len(pdf.pages) == status["pages"], rel
        text = subprocess.run([pdftotext, str(made), "-"], capture_output=True, text=True).stdout
        markdown = (daemon.output / f"{rel}.md").read_text()
        assert similarity(text, markdown) >= 0.9, (rel, round(similarity(text, markdown), 3))
    # A document without pages of its own (a DOCX) gets no PDF, and converts as ever.
    word = daemon.wait_terminal("w.docx")
    assert word["state"] == "completed" and set(word["outputs"]) == {"md"}, word
    assert not (daemon.output / "w.docx.pdf").exists()
    # A born-digital PDF is written unchanged.
    original = corpus("pdf/multi_page.pdf").read_bytes()
    assert (daemon.output / "pdf/multi_page.pdf.pdf").read_bytes() == original
    # PDF inputs: every page image byte for byte; the text page of the hybrid untouched.
    for rel in ("pdf/ocr_test.pdf", "pdf/nemotron_multipage.pdf"):
        assert images(daemon.output / f"{rel}.pdf") == images(corpus(rel)), rel
    with pikepdf.open(hybrid) as before, pikepdf.open(daemon.output / "hybrid.pdf.pdf") as after:
        assert after.pages[0].obj.Contents.read_bytes() == before.pages[0].obj.Contents.read_bytes()
        assert len(after.pages[1].obj.Contents) == 3  # q, the scan's own stream, Q + layer
    # Image inputs: a JPEG embedded as it came, other images with the same pixels.
    jpeg = images(daemon.output / "jpg/qr_bill_example.jpg.pdf")
    assert jpeg == [corpus("jpg/qr_bill_example.jpg").read_bytes()]
    for rel in ("png/example_image_01.png", "tif/2206.01062.tif"):
        with pikepdf.open(daemon.output / f"{rel}.pdf") as pdf:
            embedded = [
                pikepdf.PdfImage(image).as_pil_image()
                for page in pdf.pages
                for _, image in sorted(page.get_images().items())
            ]
        with Image.open(corpus(rel)) as source:
            frames = [
                frame.convert(shown.mode)
                for frame, shown in zip(ImageSequence.Iterator(source), embedded, strict=True)
            ]
            assert [f.tobytes() for f in frames] == [e.tobytes() for e in embedded], rel
    # Search and selection find each word where it is printed: in the page's own space
    # (the /Rotate pages of nemotron), on a photo turned sideways, on a two-frame TIFF.
    for rel in ("pdf/nemotron_multipage.pdf", "sideways.png", "tif/2206.01062.tif"):
        checked, wrong = words_in_place(daemon.output / f"{rel}.pdf", sample=40)
        assert checked >= 20 and len(wrong) <= 0.1 * checked, (rel, checked, wrong)
    assert daemon.stop() == 0


def test_a_line_of_the_layer_is_spread_as_a_proportional_font_prints_it(tmp_path: Path) -> None:
    """Each line is stretched to its box in Helvetica's widths, not in glyphs all alike:
    after narrow letters, a wide word starts where print would put it (in even glyphs it
    would start 8/11 of the way along), and the line ends at its box's end."""
    pdf = pikepdf.new()
    pdf.add_blank_page(page_size=(400, 100))
    add_text_layer(pdf, pdf.pages[0], iter([Line("illicit WWW", (50, 40, 350, 60))]))
    pdf.save(tmp_path / "layer.pdf")
    textpage = pypdfium2.PdfDocument(tmp_path / "layer.pdf")[0].get_textpage()
    text = textpage.get_text_range()
    assert text == "illicit WWW"
    illicit, space, www = 4 * 222 + 222 + 500 + 278, 278, 3 * 944  # Helvetica's AFM widths
    starts = 50 + 300 * (illicit + space) / (illicit + space + www)  # 180
    assert abs(textpage.get_charbox(text.index("W"))[0] - starts) < 3
    assert abs(textpage.get_charbox(len(text) - 1)[2] - 350) < 3
