"""Which job each worker process is running: `state/workers/<pid>.json`, written at job start
and marked idle at its end. A file left naming a job is the job of a worker that died, and,
when the worker guard killed it, why: whoever recovers the job (the guard or the
reconciler, whichever comes first) records the same cause.

A worker keeps its own file open and rewrites it in place, padded to one size: a new file
and a rename at every job start and an unlink at every end cost a tiny job about 0.4 ms of
its 6 where creating a file is slow (330 us a file, as here at times). A reader that meets
a write half done finds no valid record, as when the worker is idle, and looks again at its
next pass; the guard recovers a job only once its worker is dead, when nothing writes any more."""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from handlers.atomic import MODE, open_in_folder, write_atomic

SLOT = 512  # bytes a record is padded to, so a rewrite in place never changes the size


@dataclass(frozen=True)
class Running:
    pid: int
    source: str
    started: float  # time.time() of the job start
    killed: str | None = None  # why the worker guard killed the worker ("timeout", "memory")


def entry_file(workers_dir: Path, pid: int) -> Path:
    return workers_dir / f"{pid}.json"


class Slot:
    """This process's own file, open for rewriting in place (opened again after a fork,
    and if the file was removed under it)."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self.pid = self.fd = -1
        self.size = SLOT

    def write(self, workers_dir: Path, pid: int, record: dict[str, object]) -> None:
        # Not fsynced: it speaks of a live process, and no process outlives a power cut.
        data = json.dumps(record, ensure_ascii=True).encode()
        fd = self.open(entry_file(workers_dir, pid), pid)
        self.size = max(self.size, len(data))  # a longer path grows the slot for good
        os.pwrite(fd, data.ljust(self.size), 0)

    def open(self, path: Path, pid: int) -> int:
        if self.mine(path, pid) and os.fstat(self.fd).st_nlink:
            return self.fd
        if self.pid == pid:
            os.close(self.fd)  # another folder's, or removed under us
        fd = create(path)
        os.ftruncate(fd, 0)  # an earlier process's with this pid, maybe longer
        self.path, self.pid, self.fd, self.size = path, pid, fd, SLOT
        return fd

    def mine(self, path: Path, pid: int) -> bool:
        """Whether `path` is this process's open slot (`pid` is this process's)."""
        return self.pid == pid and self.path == path


def create(path: Path) -> int:
    """`path` opened for writing as a regular file of its own: a link or special file
    found in its place is removed first (the atomic rename that wrote the note before
    replaced one too), never followed."""
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
    for _ in range(2):
        try:
            fd = open_in_folder(path, flags, MODE)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
        else:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                return fd
            os.close(fd)
        path.unlink()
    raise OSError(errno.EEXIST, "the worker's note cannot be made a regular file", str(path))


slot = Slot()


def mark_running(workers_dir: Path, source: str) -> None:
    pid = os.getpid()
    slot.write(workers_dir, pid, {"pid": pid, "source": source, "started": time.time()})


def mark_killed(workers_dir: Path, entry: Running, reason: str) -> None:
    """Said before the kill, so the cause outlives the process."""
    record = {"pid": entry.pid, "source": entry.source, "started": entry.started, "killed": reason}
    write_atomic(entry_file(workers_dir, entry.pid), json.dumps(record, ensure_ascii=True).encode())


def lost_reason(workers_dir: Path, worker: str | None) -> str:
    """Why the worker `host:pid` of a job is gone: what the guard said when it killed it
    (a worker of this host), else "crashed"."""
    host, _, pid = (worker or "").rpartition(":")
    entry = read(workers_dir, int(pid)) if host == socket.gethostname() and pid.isdigit() else None
    return entry.killed if entry and entry.killed else "crashed"


def clear(workers_dir: Path, pid: int) -> None:
    """The worker `pid` runs nothing: said in place by the worker itself, and by removing
    its file when another process (the guard) clears a dead worker's."""
    if slot.mine(entry_file(workers_dir, pid), os.getpid()):
        slot.write(workers_dir, pid, {"pid": pid, "source": None})
    else:
        entry_file(workers_dir, pid).unlink(missing_ok=True)


def read(workers_dir: Path, pid: int) -> Running | None:
    """What the worker `pid` runs; None when it runs nothing (or its record is being
    rewritten at this moment)."""
    try:
        record = json.loads(entry_file(workers_dir, pid).read_bytes())
    except (FileNotFoundError, ValueError):
        return None
    if not isinstance(record, dict) or not record.get("source"):
        return None
    return Running(record["pid"], record["source"], record["started"], record.get("killed"))


def pids(workers_dir: Path) -> list[int]:
    """The workers with a file here, running or idle."""
    return [int(path.stem) for path in workers_dir.glob("*.json") if path.stem.isdigit()]


def all_running(workers_dir: Path) -> list[Running]:
    return [entry for pid in pids(workers_dir) if (entry := read(workers_dir, pid))]
