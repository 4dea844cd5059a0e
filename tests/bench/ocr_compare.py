"""OCR of the corpus scans and photos: hotfolder (RapidOCR inside docling's native pipeline)
against OCRmyPDF with Tesseract writing a text layer that the same native pipeline then
reads, which is what a person would otherwise chain together.

OCRmyPDF goes into a venv of its own (from PyPI) and Tesseract and Ghostscript come from
Debian's packages; both are installed here on first use, never by `make test`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from tests.bench import ocr_pages
from tests.bench.harness import (
    SETTLE,
    TERMINAL,
    TOOLS,
    drop_all,
    floor,
    stamp,
    start,
    wait_done,
)
from tests.helpers import corpus, manifest, offline_rows
from tests.test_corpus import word_similarity
from watcher.settings import usable_cores

IMAGES = (".tif", ".tiff", ".jpg", ".jpeg", ".png", ".webp", ".bmp")


def scans() -> list[dict[str, str]]:
    digital = {row["file"] for row in offline_rows()}
    return [row for row in manifest() if row["file"] not in digital]


def pages(path: Path) -> int:
    if path.suffix.lower() == ".pdf":
        import pypdfium2

        return len(pypdfium2.PdfDocument(path))
    from PIL import Image

    with Image.open(path) as image:
        return getattr(image, "n_frames", 1)


def similarity(markdown: Path, row: dict[str, str]) -> float | None:
    if not row["groundtruth"] or not markdown.is_file():
        return None
    return word_similarity(markdown.read_text(), (corpus(row["groundtruth"])).read_text())


def needs_plain_image(path: Path) -> bool:
    from PIL import Image

    with Image.open(path) as image:
        alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
        return alpha or image.format == "WEBP"


def ocrmypdf() -> str | None:
    """The ocrmypdf command, installed if missing; None (and why, printed) if it cannot be."""
    command = TOOLS / "ocrmypdf-venv" / "bin" / "ocrmypdf"
    try:
        if not (shutil.which("tesseract") and shutil.which("gs")):
            ocr_pages.apt_install("tesseract-ocr", "tesseract-ocr-eng", "ghostscript")
        if not command.exists():
            subprocess.run(["python3", "-m", "venv", str(command.parents[1])], check=True)
            subprocess.run(
                [str(command.parent / "pip"), "install", "-q", "ocrmypdf"],
                check=True,
                capture_output=True,
            )
    except (subprocess.CalledProcessError, OSError) as exc:
        print(f"bench: OCRmyPDF could not be installed: {exc}")
        return None
    return str(command)


def with_tesseract(tmp: Path, rows: list[dict[str, str]], cores: int) -> dict:
    command = ocrmypdf()
    if command is None:
        return {"engine": "OCRmyPDF + Tesseract", "skipped": "could not be installed"}
    pdfs, notes, seconds = [], [], 0.0
    for row in rows:
        source = corpus(row["file"])
        if source.suffix.lower() in IMAGES and needs_plain_image(source):
            # OCRmyPDF takes neither WebP nor an alpha channel: an RGB PNG first, untimed.
            from PIL import Image

            converted = tmp / f"{source.stem}.png"
            Image.open(source).convert("RGB").save(converted)
            source = converted
            notes.append(f"{row['file']} given to OCRmyPDF as an RGB PNG")
        target = tmp / f"{Path(row['file']).name}.pdf"
        argv = [command, "--force-ocr", "--output-type", "pdf", "--jobs", str(cores), "-q"]
        if source.suffix.lower() in IMAGES:
            argv += ["--image-dpi", "300"]
        started = time.perf_counter()
        done = subprocess.run(
            [*argv, str(source), str(target)],
            capture_output=True,
            text=True,
            env={**os.environ, "OMP_THREAD_LIMIT": "1"},
        )
        seconds += time.perf_counter() - started
        if done.returncode:
            notes.append(f"OCRmyPDF failed on {row['file']}: {done.stderr.strip()[-200:]}")
        else:
            pdfs.append((row, target))
    read = floor([p for _, p in pdfs], cores, tmp / "read") if pdfs else {}
    seconds += read.get("warm_s", 0.0)
    texts = sorted((tmp / "read").glob("*.md")) if pdfs else []
    scores = []
    for (row, _), markdown in zip(pdfs, texts, strict=True):
        if (score := similarity(markdown, row)) is not None:
            scores.append(score)
    return {
        "engine": "OCRmyPDF + Tesseract, then docling reads the text layer",
        "seconds": seconds,
        "converted": len(pdfs),
        "similarity": sum(scores) / len(scores) if scores else 0.0,
        "notes": notes,
    }


def compare(tmp: Path, quick: bool) -> dict:
    rows = scans()
    if quick:
        rows = [row for row in rows if row["file"] == "pdf/ocr_test.pdf"]
    files = [corpus(row["file"]) for row in rows]
    total_pages = sum(pages(f) for f in files)
    cores = usable_cores()

    daemon = start(tmp / "hotfolder")
    dropped = time.time()
    names = drop_all(files, daemon.input)
    wait_done(daemon, len(files), timeout=1800)
    seconds = max(map(stamp, daemon.events(*TERMINAL))) - dropped - SETTLE
    scores = [
        s
        for name, row in zip(names, rows, strict=True)
        if (s := similarity(daemon.output / f"{name}.md", row)) is not None
    ]
    daemon.stop()
    engines = [
        {
            "engine": "hotfolder (RapidOCR in docling's native pipeline)",
            "seconds": seconds,
            "converted": len(files),
            "similarity": sum(scores) / len(scores) if scores else 0.0,
        }
    ]
    (tmp / "tesseract").mkdir()
    tesseract = with_tesseract(tmp / "tesseract", rows, cores)
    notes = tesseract.pop("notes", [])
    if "skipped" in tesseract:
        notes.append(f"OCRmyPDF skipped: {tesseract['skipped']}")
    else:
        engines.append(tesseract)
    for engine in engines:
        engine["pages_per_s"] = total_pages / engine["seconds"]
    with_truth = [row["file"] for row in rows if row["groundtruth"]]
    notes.append(
        "word similarity over the files with a groundtruth: " + json.dumps(with_truth)[1:-1]
    )
    notes.append("hotfolder's time is drop to last done, settle subtracted")
    (tmp / "pages").mkdir()
    by_page = ocr_pages.measure(tmp / "pages", 1 if quick else 3)
    return {
        "files": len(files),
        "pages": total_pages,
        "engines": engines,
        "notes": notes,
        "by_page": by_page,
    }
