"""OCR for scans and photos, against a real daemon and real pages: page order in hybrid
PDFs, born-digital pages untouched, pages scanned sideways or upside down, cancel and
limits, and a language whose model is not installed."""

from __future__ import annotations

import difflib
import json
import os
import re
import subprocess
from pathlib import Path

import pikepdf
import pypdfium2
from PIL import Image, ImageSequence

from handlers.ocr.engine import DETECTION, ORIENTATION, OcrEngine, OcrOptions
from tests.helpers import corpus, drop, hotfolder_argv, ocr_text, run_cli, wait_for

FIRST_WORDS = "the evolution of the word processor"  # multi_page.pdf, page 1


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def scan_of_text_page(target: Path, angle: int = 0) -> Path:
    """A born-digital page rendered to a PNG (a scan of it), turned by `angle` degrees."""
    page = pypdfium2.PdfDocument(corpus("pdf/multi_page.pdf"))[0]
    page.render(scale=2).to_pil().convert("RGB").rotate(angle, expand=True).save(target)
    return target


def pdf_of(target: Path, parts: list[tuple[str, int]]) -> Path:
    """A PDF made of pages of corpus PDFs, in order: (corpus file, page index)."""
    out = pypdfium2.PdfDocument.new()
    for rel, index in parts:
        out.import_pages(pypdfium2.PdfDocument(corpus(rel)), [index])
    out.save(target)
    return target


def convert_cli(config: Path, source: Path, out: Path, ocr: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        hotfolder_argv("--config", str(config), "convert", str(source), "-o", str(out)),
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HOTFOLDER_CONVERSION__OCR": ocr},
    )


def test_pages_scanned_sideways_or_upside_down_read_in_order(make_daemon, tmp_path) -> None:
    daemon = make_daemon("run")
    for angle in (0, 90, 180):
        scan_of_text_page(tmp_path / f"turned{angle}.png", angle)
        drop(tmp_path / f"turned{angle}.png", daemon.input / f"turned{angle}.png")
    upright = None
    for angle in (0, 90, 180):
        status = daemon.wait_terminal(f"turned{angle}.png", timeout=180)
        assert status["state"] == "completed", status
        read = words((daemon.output / f"turned{angle}.png.md").read_text())
        assert " ".join(read).startswith(FIRST_WORDS), (angle, read[:12])
        upright = upright or read
        same = difflib.SequenceMatcher(None, upright, read, autojunk=False).ratio()
        assert same >= 0.95, (angle, same)
    assert len(upright) > 300  # the whole page was read, in paragraphs
    assert (daemon.output / "turned0.png.md").read_text().count("\n\n") >= 8
    assert daemon.stop() == 0


def test_on_an_upright_page_no_wide_line_is_read_upside_down() -> None:
    """The orientation classifier, asked line by line, calls some wide lines of the upright
    two-column TIF upside down; turned over, they read as nonsense ("puowx", "Ápenba").
    The page's lines agree that it lies upright, and each wide line is read as it lies."""
    engine = OcrEngine(OcrOptions())
    with Image.open(corpus("tif/2206.01062.tif")) as tif:
        read = [
            " ".join(words(ocr_text(engine, f.convert("RGB")))) for f in ImageSequence.Iterator(tif)
        ]
    assert "discovery and data mining" in read[0]
    assert "but equally acceptable layout" in read[1]


def test_every_network_runs_with_subnormal_floats_taken_as_zero() -> None:
    """The bundled detector holds subnormal weights, which some CPUs compute with many times
    slower; the detector, the orientation classifier and the recogniser each run with them
    taken as zero, on the worker's OCR threads."""
    reader = OcrEngine(OcrOptions(threads=2)).reader()
    networks = [reader._load_det_model(), reader._load_cls_model(), reader._load_rec_model()]
    paths = [network.session.session._model_path for network in networks]
    assert [Path(path).name for path in paths[:2]] == [DETECTION, ORIENTATION]
    for network in networks:
        options = network.session.session.get_session_options()
        assert options.get_session_config_entry("session.set_denormal_as_zero") == "1"
        assert options.intra_op_num_threads == 2


def test_a_hybrid_pdf_keeps_its_text_layer_and_reads_its_scanned_page(
    make_daemon, tmp_path
) -> None:
    daemon = make_daemon("run")
    hybrid = pdf_of(tmp_path / "hybrid.pdf", [("pdf/multi_page.pdf", 0), ("pdf/ocr_test.pdf", 0)])
    drop(hybrid, daemon.input / "hybrid.pdf")
    status = daemon.wait_terminal("hybrid.pdf", timeout=120)
    assert status["state"] == "completed" and status["pages"] == 2, status
    markdown = (daemon.output / "hybrid.pdf.md").read_text()
    alone = pdf_of(tmp_path / "text-page.pdf", [("pdf/multi_page.pdf", 0)])
    done = convert_cli(daemon.config_file, alone, tmp_path / "alone", "off")
    assert done.returncode == 0, done.stderr
    text_page = (tmp_path / "alone" / "text-page.pdf.md").read_text().rstrip()
    assert markdown.startswith(text_page + "\n\n"), markdown[len(text_page) - 80 :][:200]
    scanned = markdown[len(text_page) :]
    assert "Docling bundles PDF document conversion" in scanned  # page 2, after page 1
    assert daemon.stop() == 0


def test_born_digital_outputs_are_the_same_with_ocr_auto_and_off(make_daemon, tmp_path) -> None:
    """And OCR reads none of their pages: redp5110_sampled.pdf has a blank page (page 14,
    nothing drawn on it), which is not sent to OCR; a page with no text but vector paths
    drawn on it is (they may be text turned to outlines)."""
    daemon = make_daemon("run")
    for rel in ("pdf/redp5110_sampled.pdf", "pdf/picture_classification.pdf"):
        outputs = {}
        for ocr in ("auto", "off"):
            done = convert_cli(daemon.config_file, corpus(rel), tmp_path / ocr, ocr)
            assert done.returncode == 0, done.stderr
            assert "by OCR" not in done.stdout, done.stdout
            name = Path(rel).name
            outputs[ocr] = [
                (tmp_path / ocr / f"{name}.{ext}").read_bytes() for ext in ("md", "json")
            ]
            status = json.loads((tmp_path / ocr / f"{name}.status.json").read_text())
            assert status["ocr_pages"] == 0, (ocr, status)
        assert outputs["auto"] == outputs["off"], rel
    drawn = pdf_of(tmp_path / "drawn.pdf", [("pdf/multi_page.pdf", 0)] * 3)
    with pikepdf.open(drawn, allow_overwriting_input=True) as pdf:
        pdf.pages[1].Contents = pdf.make_stream(b"")  # blank
        pdf.pages[2].Contents = pdf.make_stream(b"4 w 100 100 m 400 500 l S")  # a path
        pdf.save(drawn)
    done = convert_cli(daemon.config_file, drawn, tmp_path / "drawn", "auto")
    assert done.returncode == 0, done.stderr
    status = json.loads((tmp_path / "drawn" / "drawn.pdf.status.json").read_text())
    assert status["pages"] == 3 and status["ocr_pages"] == 1, status
    assert "(3 pages, 1 by OCR," in done.stdout, done.stdout
    assert daemon.stop() == 0


def test_cancel_a_scan_between_pages_and_the_page_limit(make_daemon, tmp_path) -> None:
    long_scan = pdf_of(tmp_path / "long.pdf", [("pdf/ocr_test.pdf", 0)] * 12)
    daemon = make_daemon("run", config={"workers": {"count": 1}})
    drop(long_scan, daemon.input / "long.pdf")
    wait_for(
        lambda: ((daemon.sidecar("long.pdf") or {}).get("pages_done") or 0) >= 1, 120, "a page"
    )
    assert run_cli(daemon.config_file, "cancel", "long.pdf").returncode == 0
    cancelled = daemon.wait_state("long.pdf", ("cancelled",), timeout=60)
    assert cancelled["pages_done"] < 12 and cancelled["outputs"] == {}, cancelled
    assert daemon.stop() == 0
    limited = make_daemon("run", root=tmp_path, config={"jobs": {"max_pages": 5}})
    drop(long_scan, limited.input / "limited.pdf")
    status = limited.wait_terminal("limited.pdf", timeout=60)
    assert status["state"] == "failed" and status["error"]["type"] == "too_large", status
    assert limited.stop() == 0


def test_a_language_without_an_installed_model_fails_clearly(make_daemon) -> None:
    daemon = make_daemon("run", config={"conversion": {"ocr_language": "korean"}})
    drop(corpus("pdf/ocr_test.pdf"), daemon.input / "scan.pdf")
    drop(corpus("pdf/multi_page.pdf"), daemon.input / "text.pdf")
    scan = daemon.wait_terminal("scan.pdf", timeout=60)
    assert scan["state"] == "failed" and scan["error"]["type"] == "models_missing", scan
    message = scan["error"]["message"]
    assert "korean_PP-OCRv5_rec_mobile.onnx" in message and "conversion.ocr_models" in message
    assert scan["error"]["retryable"] is False
    assert daemon.wait_terminal("text.pdf")["state"] == "completed"  # no OCR needed
    doctor = run_cli(daemon.config_file, "doctor", timeout=120)
    assert "FAIL  OCR" in doctor.stdout and "korean" in doctor.stdout, doctor.stdout
    assert daemon.stop() == 0
