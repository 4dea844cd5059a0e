"""Stand-ins for docling where a test injects a fault: a converter that fails, raises or
asks for a cancel on purpose. Everything else in the in-process tests is real."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from handlers.converter import Conversion, PageRange, Progress


@dataclass
class FailingConverter:
    """Raises `error` for every file, counting the calls."""

    error: BaseException
    calls: list[Path] = field(default_factory=list)

    def convert(
        self, source: Path, on_pages: Progress, max_pages: int = 0, pages: PageRange | None = None
    ) -> Conversion:
        self.calls.append(source)
        raise self.error


@dataclass
class SteppingConverter:
    """Reports one page done, runs `between` (a test's fault: a cancel request, a lease
    taken away), then converts with the real converter."""

    real: object
    between: Callable[[], None]

    def convert(
        self, source: Path, on_pages: Progress, max_pages: int = 0, pages: PageRange | None = None
    ) -> Conversion:
        self.between()
        on_pages(1, 2)
        return self.real.convert(source, on_pages, max_pages, pages)  # type: ignore[attr-defined,no-any-return]
