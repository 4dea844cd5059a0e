"""Checks before any thread starts: the folders exist (or are made), are writable, and are apart."""

from __future__ import annotations

import os
from pathlib import Path

from watcher.settings import ConfigError, Settings


def prepare_dirs(settings: Settings) -> None:
    """Create the input, output and state dirs; raise ConfigError naming the key at fault."""
    dirs = {
        "paths.input": settings.input_dir,
        "paths.output": settings.output_dir,
        "paths.state": settings.state_dir,
    }
    if settings.jobs.on_success == "archive":
        dirs["paths.archive"] = settings.paths.archive
    if settings.jobs.on_failure == "quarantine":
        dirs["paths.quarantine"] = settings.paths.quarantine
    check_apart(dirs)
    for key, path in dirs.items():
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"{key}: cannot create {path}: {exc.strerror}") from None
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"{key}: {path} is not writable by this user")


def check_apart(dirs: dict[str, Path]) -> None:
    """The same folder for two roles, or input inside output/state, would feed outputs back in."""
    items = list(dirs.items())
    for i, (key, path) in enumerate(items):
        for other_key, other in items[i + 1 :]:
            if path == other:
                raise ConfigError(f"{key} and {other_key} are the same folder: {path}")
    input_dir = dirs["paths.input"]
    for key in sorted(dirs.keys() - {"paths.input"}):
        if input_dir.is_relative_to(dirs[key]):
            raise ConfigError(f"paths.input ({input_dir}) must not lie inside {key}")
