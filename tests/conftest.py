from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Daemon

# The tiers. A test's tier follows from the fixtures it uses, so a new test lands in the
# right one by itself: `make check` runs what is left when these are taken out.
TIER_OF_FIXTURE = {
    "make_daemon": "daemon",  # real hotfolder processes
    "redis_server": "redis",  # a redis-server of its own
    "partition": "redis",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture, tier in TIER_OF_FIXTURE.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(tier)
        if item.get_closest_marker("serial"):
            # One xdist worker runs these one after another (`--dist loadgroup`).
            item.add_marker(pytest.mark.xdist_group("serial"))


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
