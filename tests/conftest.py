from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Daemon


@pytest.fixture
def make_daemon(tmp_path: Path) -> Iterator:
    """Start real hotfolder processes on `tmp_path`; every one is killed at teardown if a
    test left it running, and the test fails if processes leaked."""
    started: list[Daemon] = []

    def make(command: str = "run", root: Path | None = None, **kwargs: object) -> Daemon:
        daemon = Daemon(root=root or tmp_path, command=command, **kwargs)  # type: ignore[arg-type]
        started.append(daemon)
        return daemon.start()

    yield make
    leaked = [d for d in started if d.process and d.process.poll() is None]
    for daemon in started:
        daemon.kill()
    assert not leaked, f"test left running: {[d.command for d in leaked]}"
