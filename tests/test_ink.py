"""Lines looked for only where a page has ink: the box around it, and the same text as when
the whole page is looked at; and the page scaled into the detector's input as RapidOCR
scales it."""

from __future__ import annotations

import numpy as np
from PIL import Image

import handlers.ocr.engine as engine_module
from handlers.ocr.engine import OcrEngine, OcrOptions, area
from handlers.ocr.ink import inked
from tests.helpers import ocr_text as read


def page(paper: int = 255) -> np.ndarray:
    return np.full((400, 300, 3), paper, dtype=np.uint8)


def test_the_box_holds_the_ink_on_the_grid_and_ignores_a_speck() -> None:
    pixels = page()
    pixels[100:150, 50:200] = 30  # a block of text
    pixels[10, 280] = 0  # a speck of dust
    assert inked(pixels, 0) == (100, 50, 150, 200)
    assert inked(pixels, 8, 32) == (64, 32, 160, 224)  # 8 px wider, out to multiples of 32
    assert inked(pixels, 500, 32) == (0, 0, 400, 300)  # never beyond the page
    assert inked(page(), 0) is None


def test_ink_is_what_is_darker_than_the_paper() -> None:
    grey = page(paper=200)  # a dull scan
    grey[300:320, 20:40] = 150
    grey[5:7, 5:9] = 190  # barely darker than the paper: not ink
    assert inked(grey, 0) == (300, 20, 320, 40)


def test_a_page_lit_from_one_side_has_its_ink_boxed_and_not_its_shade() -> None:
    light = np.linspace(140, 255, 300)  # the paper, darker to the left
    pixels = np.repeat(np.tile(light, (400, 1))[:, :, None], 3, axis=2).astype(np.uint8)
    pixels[100:150, 50:200] = (light[50:200] - 90)[None, :, None]  # text, as dark as it is lit
    assert inked(pixels, 0) == (100, 50, 150, 200)  # against the brightest paper: (0, 0, 400, 208)


def test_a_sparse_and_a_dense_page_read_as_when_the_whole_page_is_looked_at(monkeypatch) -> None:
    from tests.bench.ocr_pages import rendered, text_layer
    from tests.test_corpus import word_similarity

    boxes, original = [], engine_module.inked

    def spy(pixels, pad, grid=1):
        found = original(pixels, pad, grid)
        boxes.append((found, pixels.shape[:2]))
        return found

    monkeypatch.setattr(engine_module, "inked", spy)
    engine = OcrEngine(OcrOptions(threads=1))
    sparse = rendered("pdf/ocr_test.pdf", 0, 144)
    dense = rendered("pdf/2305.03393v1-pg9.pdf", 0, 200)
    cut = [read(engine, sparse), read(engine, dense)]
    shares = [area(box) / (height * width) for box, (height, width) in boxes]
    assert shares[0] < 0.25 and shares[1] < 0.7, shares  # both looked at inside their box
    monkeypatch.setattr(engine_module, "INK_WORTH", 0.0)  # every page looked at whole
    whole = [read(engine, sparse), read(engine, dense)]
    assert cut[0] == whole[0]
    assert word_similarity(cut[1], whole[1]) >= 0.995
    assert word_similarity(cut[1], text_layer("pdf/2305.03393v1-pg9.pdf", 0)) >= 0.99


def test_the_detector_input_is_rapidocrs_own_made_in_float32() -> None:
    from rapidocr.ch_ppocr_det.utils import DetPreProcess

    from tests.bench.ocr_pages import rendered

    detector = OcrEngine(OcrOptions(threads=1)).reader()._load_det_model()
    pixels = np.asarray(rendered("pdf/2305.03393v1-pg9.pdf", 0, 200))
    for side in (engine_module.DETECTION_SIDE, 640):  # the part path sets its own side
        detector.limit_side_len = side
        ours = detector.get_preprocess()
        theirs = DetPreProcess(side, detector.limit_type, detector.mean, detector.std)
        assert type(ours) is not DetPreProcess
        made, expected = ours(pixels), theirs(pixels)
        assert made.dtype == np.float32 and made.shape == expected.shape
        assert max(made.shape[2:]) == side
        np.testing.assert_allclose(made, expected, rtol=0, atol=1e-6)


def test_a_page_without_ink_reads_as_empty_and_is_not_looked_over(monkeypatch) -> None:
    engine = OcrEngine(OcrOptions(threads=1))
    detector = type(engine.reader()._load_det_model())
    looked, original = [], detector.__call__

    def counted(self, *args, **kwargs):
        looked.append(args[0].shape)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(detector, "__call__", counted)
    noise = np.random.default_rng(0).normal(0, 6, (1400, 1000, 3))
    scanned = np.clip(235 + noise, 0, 255).astype(np.uint8)  # a blank sheet through a scanner
    for blank in (page(), scanned):
        assert engine.read(Image.fromarray(blank)).paragraphs == []
    assert looked == []
    written = page()
    written[100:130, 40:260] = 0
    engine.read(Image.fromarray(written))
    assert len(looked) == 1  # where there is ink, the detector looks
