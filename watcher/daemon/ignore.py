"""Which paths in the input tree are never documents: temp, partial, system and our own files."""

from __future__ import annotations

import os
from collections.abc import Callable
from fnmatch import fnmatchcase
from pathlib import Path, PurePath

from watcher.settings import Settings

# Dotfiles also cover rsync's `.name.XXXXXX` temp files and `.DS_Store`.
DEFAULT_PATTERNS = (".*", "~$*", "*.part", "*.crdownload", "*.tmp", "Thumbs.db", "desktop.ini")


class IgnoreRules:
    """Default patterns plus the user's, matched against every path component and the whole
    relative path; the output and state dirs are ignored when they sit inside the input dir."""

    def __init__(self, input_dir: Path, patterns: list[str], excluded: list[Path]) -> None:
        self.input_dir = input_dir
        self.patterns = (*DEFAULT_PATTERNS, *patterns)
        self.excluded = [path for path in excluded if path.is_relative_to(input_dir)]

    @classmethod
    def of(cls, settings: Settings) -> IgnoreRules:
        """The rules of a configuration: its patterns, and every folder hotfolder writes."""
        paths = settings.paths
        own = [paths.output, paths.state, paths.archive, paths.quarantine]
        return cls(settings.input_dir, settings.watch.ignore, own)

    def walk(self, top: Path, onerror: Callable[[OSError], None] | None = None) -> list[Path]:
        """Every file under `top` that is not ignored, never descending into ignored dirs
        or through links; `onerror` hears of each folder that cannot be listed."""
        files: list[Path] = []
        for folder, dirs, names in os.walk(top, onerror=onerror):
            base = Path(folder)
            dirs[:] = [d for d in dirs if not self.ignored(base / d)]
            files.extend(base / n for n in sorted(names) if not self.ignored(base / n))
        return files

    def ignored(self, path: Path) -> bool:
        try:
            rel = PurePath(path).relative_to(self.input_dir)
        except ValueError:
            return True
        if any(PurePath(path).is_relative_to(excluded) for excluded in self.excluded):
            return True
        rel_text = rel.as_posix()
        for pattern in self.patterns:
            if fnmatchcase(rel_text, pattern) or any(fnmatchcase(p, pattern) for p in rel.parts):
                return True
        return False
