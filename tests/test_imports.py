"""Import-level contracts: docling's converter without torch, and one-way layering."""

from __future__ import annotations

import ast
import subprocess
import sys

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


def test_handlers_never_import_the_daemon_around_them() -> None:
    forbidden = {"watcher", "watchdog", "huey"}
    for module in (REPO / "handlers").glob("*.py"):
        tree = ast.parse(module.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{module.name} imports {name}"
