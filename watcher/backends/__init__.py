"""Where the queue, the leases and liveness live: SQLite on one host, Redis on several.

`BACKENDS` is the one table that picks a kind from `queue.backend`; the rest of hotfolder
sees a `Backend` and never asks which one it has. A new kind is one module here and one row.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, ClassVar, Protocol

if TYPE_CHECKING:
    from huey.api import Huey

    from handlers.lease import Leases
    from watcher.settings import Settings

# queue.backend -> (module, class); imported only when chosen (redis is an optional extra).
BACKENDS = {
    "sqlite": ("watcher.backends.sqlite", "SqliteBackend"),
    "redis": ("watcher.backends.redis", "RedisBackend"),
}


class Backend(Protocol):
    # Several hosts share the output folder: each host's job index only sees its own
    # writes between syncs, so it is resynced from the sidecars when it is old.
    shared: ClassVar[bool]
    # What "the queue" is, for `status` and `doctor`: "queue database", "queue on Redis (…)".
    title: str
    # What to do when the queue does not answer.
    advice: str

    def busy(self, exc: Exception) -> bool:
        """Whether `exc` is one that a short wait may cure (another process holds a lock)."""
        ...

    def huey(self, repair: bool = True, patience: float | None = None) -> Huey:
        """huey on this storage; a damaged store is replaced first unless `repair` is off
        (read-only callers). While the store is busy it waits up to `patience` seconds
        (None: as long as it takes, for a daemon), saying so once."""
        ...

    def leases(self) -> Leases: ...

    def publish_alive(self, role: str, record: dict[str, object]) -> None:
        """This process's heartbeat, where `status` on any host can see it."""
        ...

    def alive_hosts(self) -> list[dict[str, object]]:
        """The heartbeats of every host's live processes (none with one host: its
        heartbeat files say it all)."""
        ...

    def queue_sizes(self) -> tuple[int, int]:
        """Tasks waiting and retries scheduled, read without repairing or creating anything."""
        ...

    def unreachable(self, exc: Exception) -> str:
        """Why the queue could not be read, in a sentence for `status`."""
        ...


def open_backend(settings: Settings) -> Backend:
    module, name = BACKENDS[settings.queue.backend]
    backend: Backend = getattr(importlib.import_module(module), name)(settings)
    return backend
