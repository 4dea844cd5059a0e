"""Import-level contracts: docling's converter without torch, and one-way layering."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO, corpus

BLOCK_TORCH = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
"""


def run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO, timeout=120
    )


def test_converter_imports_and_converts_without_torch() -> None:
    code = (
        BLOCK_TORCH
        + """
from pathlib import Path
from handlers.converter import ConversionOptions, build_converter, convert
converter = build_converter(ConversionOptions())
result = convert(converter, Path(sys.argv[1]), lambda done, total: None)
assert len(result.document.pages) == 5
photo = convert(converter, Path(sys.argv[2]), lambda done, total: None)  # read by OCR
assert "Docling bundles PDF document" in photo.document.export_to_markdown()
assert "torch" not in sys.modules
print("ok")
"""
    )
    done = run_python(code, str(corpus("pdf/multi_page.pdf")), str(corpus("webp/webp-test.webp")))
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


def test_blocking_torch_really_blocks_it() -> None:
    done = run_python(BLOCK_TORCH + "import torch")
    assert done.returncode != 0 and "No module named 'torch'" in done.stderr


def imported(module: Path) -> set[str]:
    """Every module name `module` imports, at any depth of its code."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def modules(folder: str) -> list[Path]:
    found = sorted((REPO / folder).rglob("*.py"))
    assert found, f"no modules under {folder}"
    return found


def test_handlers_never_import_the_daemon_around_them() -> None:
    forbidden = {"watcher", "watchdog", "huey"}
    for module in modules("handlers"):
        for name in imported(module):
            assert name.split(".")[0] not in forbidden, f"{module} imports {name}"


def test_the_daemon_never_imports_the_operator_commands() -> None:
    for module in modules("watcher/daemon"):
        for name in imported(module):
            assert not name.startswith("watcher.commands"), f"{module} imports {name}"


def test_only_the_backends_know_redis_and_huey_storage() -> None:
    storage = re.compile(r"\bimport redis\b|RedisHuey|SqliteHuey")
    backends = REPO / "watcher" / "backends"
    for module in modules("watcher") + modules("handlers"):
        if module.is_relative_to(backends):
            continue
        found = storage.search(module.read_text())
        assert found is None, f"{module} mentions {found and found.group()}"
    assert storage.search((backends / "redis.py").read_text())  # the check can match


def test_no_huey_method_is_replaced_at_run_time() -> None:
    import huey.api
    import huey.consumer

    classes = (huey.consumer.Consumer, huey.consumer.Worker, huey.consumer.ProcessEnvironment)
    methods = {name for cls in (*classes, huey.api.Huey) for name in dir(cls) if name[0] != "_"}
    methods |= {"_create_worker", "_create_process", "_handle_signal"}
    assert "check_worker_health" in methods and "sleep" in methods
    for module in modules("watcher"):
        for node in ast.walk(ast.parse(module.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else []
            for target in targets:
                if isinstance(target, ast.Attribute) and target.attr in methods:
                    where = f"{module}:{node.lineno}"
                    assert isinstance(target.value, ast.Name) and target.value.id == "self", (
                        f"{where} assigns to {target.attr}"
                    )


def test_the_work_process_does_not_load_the_file_watcher() -> None:
    """Start-up time: the process that converts imports docling before its workers fork,
    and nothing it does not use (watchdog is the watch process's)."""
    done = run_python("import sys, watcher.daemon.consumer; print('watchdog' in sys.modules)")
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr[-2000:]
    done = run_python("import sys, watcher.daemon.watch; print('watchdog' in sys.modules)")
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr[-2000:]
