"""Checks before any thread starts: the folders exist (or are made) and are writable."""

from __future__ import annotations

import os

from watcher.settings import ConfigError, Settings, used_dirs


def prepare_dirs(settings: Settings) -> None:
    """Create the folders in use; raise ConfigError naming the key at fault. (Whether they
    are apart was checked when the configuration was loaded, for every command.)"""
    for key, path in used_dirs(settings).items():
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"{key}: cannot create {path}: {exc.strerror}") from None
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"{key}: {path} is not writable by this user")
