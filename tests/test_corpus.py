"""Every offline-convertible corpus document, dropped into a running `hotfolder run`."""

from __future__ import annotations

import json
import shutil

from tests.helpers import corpus, offline_rows

MODEL_ONLY = (
    "png/example_image_01.png",
    "jpg/qr_bill_example.jpg",
    "tif/2206.01062.tif",
    "webp/webp-test.webp",
    "pdf/ocr_test.pdf",
    "pdf/nemotron_multipage.pdf",
)


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


def test_model_only_inputs_fail_clearly_and_the_daemon_keeps_going(make_daemon) -> None:
    daemon = make_daemon("run")
    for rel in MODEL_ONLY:
        target = daemon.input / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(corpus(rel), target)
    for rel in MODEL_ONLY:
        status = daemon.wait_terminal(rel, timeout=120)
        assert status["state"] == "failed", (rel, status)
        assert status["error"]["type"] in ("models_missing", "ocr_required")
        assert "OCR" in status["error"]["message"] and "README" in status["error"]["message"]
        assert status["error"]["retryable"] is False
        assert status["outputs"] == {}
    # The daemon is still converting afterwards.
    shutil.copyfile(corpus("csv/csv-comma.csv"), daemon.input / "after.csv")
    assert daemon.wait_terminal("after.csv")["state"] == "completed"
    assert daemon.stop() == 0
