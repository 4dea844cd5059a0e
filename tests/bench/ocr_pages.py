"""OCR engines alone, page by page, one thread each: hotfolder's OCR engine (in this process,
warm) against `tesseract` run directly on the same page images (OMP_THREAD_LIMIT=1), with
the word similarity of each to the page's known text, by page type.

The pages: the corpus scans whose text is known, and scans made here from born-digital
corpus pages (their text layer is the groundtruth), rendered at 150-300 dpi, some JPEG-
compressed, some turned a few degrees, one made to look photographed (turned, blurred,
unevenly lit, JPEG).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import corpus
from tests.test_corpus import word_similarity


@dataclass(frozen=True)
class Page:
    name: str
    kind: str  # sparse, dense, photo
    image: Path
    truth: str


def rendered(rel: str, index: int, dpi: int) -> object:
    import pypdfium2

    page = pypdfium2.PdfDocument(corpus(rel))[index]
    return page.render(scale=dpi / 72).to_pil().convert("RGB")


def text_layer(rel: str, index: int) -> str:
    import pypdfium2

    return pypdfium2.PdfDocument(corpus(rel))[index].get_textpage().get_text_range()


def jpeg(image: object, quality: int) -> object:
    from PIL import Image

    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)  # type: ignore[attr-defined]
    return Image.open(buffer).convert("RGB")


def photographed(image: object) -> object:
    """Turned 3 degrees, slightly blurred, lit from one side, JPEG at 50."""
    from PIL import Image, ImageFilter

    turned = image.rotate(3, expand=True, fillcolor="white")  # type: ignore[attr-defined]
    blurred = turned.filter(ImageFilter.GaussianBlur(1.0))
    light = Image.linear_gradient("L").rotate(90).resize(blurred.size)
    dimmed = Image.composite(blurred, Image.new("RGB", blurred.size, (90, 90, 90)), light)
    return jpeg(Image.blend(blurred, dimmed, 0.35), 50)


def made_pages(folder: Path) -> Iterator[Page]:
    from PIL import Image

    def save(name: str, image: object) -> Path:
        path = folder / f"{name}.png"
        image.save(path, dpi=(150, 150))  # type: ignore[attr-defined]
        return path

    page = rendered("pdf/ocr_test.pdf", 0, 144)
    truth = corpus("groundtruth/ocr_test.rapidocr.full_page.md").read_text()
    yield Page("ocr_test.pdf p1 (144 dpi)", "sparse", save("ocr_test", page), truth)
    webp = Image.open(corpus("webp/webp-test.webp")).convert("RGB")
    truth = corpus("groundtruth/webp-test.rapidocr.full_page.md").read_text()
    yield Page("webp-test.webp", "sparse", save("webp", webp), truth)
    for rel, index, dpi, quality, angle in (
        ("pdf/multi_page.pdf", 0, 150, 0, 0.0),
        ("pdf/2305.03393v1-pg9.pdf", 0, 200, 60, 0.0),
        ("pdf/redp5110_sampled.pdf", 3, 150, 0, 1.5),
        ("pdf/code_and_formula.pdf", 0, 300, 75, 0.0),
    ):
        image = rendered(rel, index, dpi)
        if angle:
            image = image.rotate(angle, expand=True, fillcolor="white")
        if quality:
            image = jpeg(image, quality)
        label = f"{Path(rel).name} p{index + 1} ({dpi} dpi{', JPEG' if quality else ''}"
        label += f", {angle:g} deg)" if angle else ")"
        yield Page(label, "dense", save(f"{Path(rel).stem}-{index}", image), text_layer(rel, index))
    image = photographed(rendered("pdf/multi_page.pdf", 1, 150))
    truth = text_layer("pdf/multi_page.pdf", 1)
    yield Page("multi_page.pdf p2, as if photographed", "photo", save("photo", image), truth)


# Reading a page image: its text, and the seconds per stage where the engine tells them.
Read = Callable[[Path], tuple[str, dict[str, float]]]


def apt_install(*packages: str) -> None:
    """Install Debian packages (the tools compared against); raises if that fails."""
    subprocess.run(["apt-get", "install", "-y", "-q", *packages], check=True, capture_output=True)


def hotfolder_engine(models: Path) -> Read:
    """hotfolder's OCR as a worker runs it, keeping its cut recogniser in `models`."""
    from PIL import Image

    from handlers.ocr.engine import OcrEngine, OcrOptions, Stages

    engine = OcrEngine(OcrOptions(threads=1, cache_dir=str(models)))

    def read(path: Path) -> tuple[str, dict[str, float]]:
        stages = Stages()
        found = engine.read(Image.open(path), stages)
        return "\n\n".join(paragraph.text for paragraph in found.paragraphs), dict(stages)

    return read


def tesseract_engine() -> Read | None:
    if not shutil.which("tesseract"):
        try:
            apt_install("tesseract-ocr", "tesseract-ocr-eng")
        except (subprocess.CalledProcessError, OSError):
            return None

    def read(path: Path) -> tuple[str, dict[str, float]]:
        done = subprocess.run(
            ["tesseract", str(path), "stdout", "-l", "eng"],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "OMP_THREAD_LIMIT": "1"},
        )
        return done.stdout, {}

    return read


def measure(folder: Path, reps: int) -> dict:
    pages = list(made_pages(folder))
    engines = {"hotfolder": hotfolder_engine(folder / "models")}
    if (tesseract := tesseract_engine()) is not None:
        engines["tesseract"] = tesseract
    rows = []
    for page in pages:
        row: dict = {"page": page.name, "kind": page.kind}
        for name, read in engines.items():
            read(page.image)  # warm (models loaded, files cached)
            runs = []
            for _ in range(reps):
                began = time.perf_counter()
                text, stages = read(page.image)
                runs.append((time.perf_counter() - began, stages))
            seconds, stages = sorted(runs, key=lambda run: run[0])[len(runs) // 2]  # the median run
            row[name] = {
                "seconds": seconds,
                "similarity": word_similarity(text, page.truth),
                "stages": stages,
            }
        rows.append(row)
    kinds: dict[str, dict[str, dict[str, float]]] = {}
    for kind in ("sparse", "dense", "photo"):
        chosen = [row for row in rows if row["kind"] == kind]
        for name in engines:
            kinds.setdefault(kind, {})[name] = {
                "pages_per_s": len(chosen) / sum(row[name]["seconds"] for row in chosen),
                "similarity": sum(row[name]["similarity"] for row in chosen) / len(chosen),
            }
    notes = [] if "tesseract" in engines else ["tesseract could not be installed"]
    return {"engines": list(engines), "pages": rows, "by_kind": kinds, "notes": notes}
