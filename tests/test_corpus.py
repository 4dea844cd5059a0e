"""Every offline-convertible corpus document, dropped into a running `hotfolder run`."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter

from tests.helpers import CORPUS, corpus, offline_rows

# Images and scans: read by OCR. Word similarity (word multisets, order aside) to the
# corpus groundtruth where it exists, else a phrase the page holds.
SCANS = {
    "pdf/ocr_test.pdf": ("ocr_test.rapidocr.full_page.md", 0.9),
    "webp/webp-test.webp": ("webp-test.rapidocr.full_page.md", 0.9),
    "pdf/nemotron_multipage.pdf": ("nemotron_multipage.nemotron_ocr.full_page.md", 0.7),
    "tif/2206.01062.tif": "DocLayNet",
    "jpg/qr_bill_example.jpg": "Rorschach",
    "png/example_image_01.png": "Docling",
}


def test_every_offline_format_converts(make_daemon, tmp_path) -> None:
    rows = offline_rows()
    families = {row["ext"] for row in rows}
    assert {"pdf", "docx", "pptx", "xlsx", "html", "md", "csv", "odt", "eml", "epub"} <= families
    # Files present before start must be converted too: put half there first.
    (tmp_path / "input").mkdir()
    early, late = rows[::2], rows[1::2]
    for row in early:
        target = tmp_path / "input" / row["file"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(corpus(row["file"]), target)
    daemon = make_daemon("run")
    for row in late:
        target = daemon.input / row["file"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(corpus(row["file"]), target)

    finals = {row["file"]: daemon.wait_terminal(row["file"], timeout=180) for row in rows}
    failed = {rel: s["error"] for rel, s in finals.items() if s["state"] != "completed"}
    assert not failed, failed
    for row in rows:
        check_completed(daemon, row, finals[row["file"]])
    assert daemon.stop() == 0


def check_completed(daemon, row: dict[str, str], status: dict) -> None:
    rel = row["file"]
    assert status["sha256"] and status["size_bytes"] == int(row["bytes"])
    assert status["progress"] == 100 and status["attempts"] == 1
    assert status["outputs"] == {"md": f"{rel}.md", "json": f"{rel}.json"}
    markdown = (daemon.output / f"{rel}.md").read_text()
    document = json.loads((daemon.output / f"{rel}.json").read_text())
    assert document["schema_name"] == "DoclingDocument"
    expected = int(row["md_chars"]) if row["md_chars"] else None
    if expected is not None:
        # Same docling, same options as the reference run that wrote the manifest.
        assert abs(len(markdown) - expected) <= max(2, expected // 50), (rel, len(markdown))
    assert markdown.strip(), rel


def test_scans_and_photos_are_read_by_ocr(make_daemon) -> None:
    daemon = make_daemon("run")
    for rel in SCANS:
        target = daemon.input / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(corpus(rel), target)
    for rel, expected in SCANS.items():
        status = daemon.wait_terminal(rel, timeout=240)
        assert status["state"] == "completed", (rel, status)
        markdown = (daemon.output / f"{rel}.md").read_text()
        if isinstance(expected, str):
            assert expected in markdown, (rel, markdown[:500])
        else:
            truth, least = expected
            score = word_similarity(markdown, (CORPUS / "groundtruth" / truth).read_text())
            assert score >= least, (rel, score, markdown[:500])
        assert status["pages"] >= 1 and status["pages_done"] == status["pages"], status
        document = json.loads((daemon.output / f"{rel}.json").read_text())
        provenance = [text["prov"][0] for text in document["texts"]]
        assert provenance and all(
            p["page_no"] >= 1 and p["bbox"]["r"] > p["bbox"]["l"] for p in provenance
        )
    assert daemon.stop() == 0


def test_with_ocr_off_scans_fail_clearly_and_the_daemon_keeps_going(make_daemon) -> None:
    daemon = make_daemon("run", config={"conversion": {"ocr": "off"}})
    for rel in ("png/example_image_01.png", "pdf/ocr_test.pdf"):
        target = daemon.input / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(corpus(rel), target)
    for rel in ("png/example_image_01.png", "pdf/ocr_test.pdf"):
        status = daemon.wait_terminal(rel, timeout=120)
        assert status["state"] == "failed" and status["error"]["type"] == "ocr_required", status
        assert 'conversion.ocr = "off"' in status["error"]["message"]
        assert status["error"]["retryable"] is False and status["outputs"] == {}
    shutil.copyfile(corpus("csv/csv-comma.csv"), daemon.input / "after.csv")
    assert daemon.wait_terminal("after.csv")["state"] == "completed"
    assert daemon.stop() == 0


def word_similarity(text: str, truth: str) -> float:
    """2 x shared words / all words, over word multisets (so reading order aside)."""
    ours, theirs = (Counter(re.findall(r"\w+", t.lower())) for t in (text, truth))
    total = sum(ours.values()) + sum(theirs.values())
    return 2 * sum((ours & theirs).values()) / total if total else 1.0
