"""The input file, read once: opened below the input folder without following any link,
checked, then hashed and copied to a private folder in the same pass, so the bytes recorded
are the bytes converted. (A path checked and then opened again is a race that anyone who
can write the input folder can win, and the daemon may be able to read more than they can.)
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from handlers.errors import FULL, JobError, disk_full

CHUNK = 1 << 20
FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO swapped in at the last moment must not block the open.
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
SCRATCH_SPARE = 2**20  # bytes left free on the state disk beside a private copy
PRIVATE_NAME_MAX = 200  # bytes; the copy's name only needs to keep the extension
_cleared: set[Path] = set()  # the private folders this process has cleared of older ones' copies
_in_use: set[Path] = set()  # the private folders of the jobs under way in this process
_choosing = threading.Lock()
Check = Callable[[os.stat_result], None]


@dataclass(frozen=True)
class Snapshot:
    """The input as it was read: a private copy, its digest, and the file it came from."""

    path: Path
    sha256: str
    size: int
    mtime_ns: int
    inode: tuple[int, int]
    ctime_ns: int  # changes with any write to the file, and cannot be set by its writer


def split(rel: str) -> list[str]:
    parts = rel.split("/")
    if not rel or any(part in ("", ".", "..") for part in parts):
        raise JobError("unsafe_path", f"Refusing to read {rel!r}: not a plain path.")
    return parts


@contextmanager
def open_parent(input_dir: Path, rel: str) -> Iterator[tuple[int, str]]:
    """A descriptor on the folder that holds `rel`, reached one folder at a time without
    following a link, and the file's name in it."""
    *folders, name = split(rel)
    fd = os.open(input_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for folder in folders:
            try:
                child = os.open(folder, FOLDER_FLAGS, dir_fd=fd)
            except NotADirectoryError:  # a link to a folder, or a folder replaced by a file
                info = os.stat(folder, dir_fd=fd, follow_symlinks=False)
                raise (unsafe_link() if stat.S_ISLNK(info.st_mode) else vanished()) from None
            os.close(fd)
            fd = child
        yield fd, name
    finally:
        os.close(fd)


@contextmanager
def open_input(input_dir: Path, rel: str) -> Iterator[tuple[int, os.stat_result]]:
    """A read descriptor on the regular file `input_dir/rel`, and its fstat."""
    try:
        with open_parent(input_dir, rel) as (folder, name):
            # Looked at first, so a device or FIFO is never opened (opening some has effects).
            check_kind(os.stat(name, dir_fd=folder, follow_symlinks=False))
            fd = os.open(name, FILE_FLAGS, dir_fd=folder)
    except OSError as exc:
        raise input_error(exc) from exc
    try:
        info = os.fstat(fd)
        check_kind(info)  # what was opened, not what was looked at a moment before
        yield fd, info
    finally:
        os.close(fd)


@contextmanager
def open_regular(path: Path) -> Iterator[tuple[BinaryIO, os.stat_result]]:
    """A regular file opened by its full path (one an operator named): the last component
    is not followed if it is a link, and a FIFO does not block the open."""
    with os.fdopen(os.open(path, FILE_FLAGS), "rb") as handle:
        info = os.fstat(handle.fileno())
        check_kind(info)
        yield handle, info


def check_kind(info: os.stat_result) -> None:
    if stat.S_ISLNK(info.st_mode):
        raise unsafe_link()
    if not stat.S_ISREG(info.st_mode):
        raise JobError("unsupported_format", "The input is not a regular file.")


def input_error(exc: OSError) -> JobError | OSError:
    if exc.errno == errno.ENOENT:
        return vanished()
    if exc.errno == errno.ELOOP:
        return unsafe_link()
    if exc.errno in (errno.EACCES, errno.EPERM):
        return JobError(
            "io_error",
            "Permission denied: hotfolder's user cannot read this file or its folder. "
            "Fix the permissions; the job is retried.",
            retryable=True,
        )
    return exc


def unsafe_link() -> JobError:
    return JobError(
        "unsafe_path",
        "The input is a symbolic link, or lies in a linked folder: hotfolder never follows "
        "links in the input folder.",
    )


def vanished() -> JobError:
    return JobError(
        "source_vanished", "The input file was deleted or renamed before it could be converted."
    )


def read_input(input_dir: Path, rel: str, folder: Path, check: Check) -> Snapshot:
    """Open `rel` once, `check` its fstat, then hash it while copying it into `folder`."""
    with open_input(input_dir, rel) as (fd, info):
        check(info)
        check_room(info, folder)
        copy = folder / private_name(rel)
        try:
            with copy.open("xb") as out:
                sha, size = consume(fd, out)
        except OSError as exc:
            copy.unlink(missing_ok=True)
            if exc.errno in FULL:  # the private copy lives in the state folder
                raise disk_full("state", folder.parent) from exc
            raise
    identity = (info.st_dev, info.st_ino)
    return Snapshot(copy, sha, size, info.st_mtime_ns, identity, info.st_ctime_ns)


def check_room(info: os.stat_result, folder: Path) -> None:
    """The private copy must fit: a sparse file of a few blocks can claim terabytes."""
    free = shutil.disk_usage(folder).free
    if info.st_size + SCRATCH_SPARE > free:
        raise JobError(
            "disk_full",
            f"The file is {info.st_size / 2**20:.1f} MiB; its private copy does not fit in the "
            f"state folder's disk ({free / 2**20:.1f} MiB free at {folder.parent}). Free some "
            "space there, or set jobs.max_file_mb to refuse files this large.",
            retryable=True,
        )


def digest_input(input_dir: Path, rel: str) -> tuple[str, int, os.stat_result]:
    """sha256, size and fstat of `rel`, opened as `read_input` opens it."""
    with open_input(input_dir, rel) as (fd, info):
        sha, size = consume(fd, None)
    return sha, size, info


def consume(fd: int, out: BinaryIO | None) -> tuple[str, int]:
    sha = hashlib.sha256()
    size = 0
    while chunk := os.read(fd, CHUNK):
        sha.update(chunk)
        size += len(chunk)
        if out is not None:
            out.write(chunk)
    return sha.hexdigest(), size


def private_name(rel: str) -> str:
    """The copy's name: the input's, with undecodable bytes replaced (docling's PDF parser
    cannot take them) and shortened if need be; the extension is kept, docling reads it."""
    name = os.fsencode(rel.rsplit("/", 1)[-1]).decode("utf-8", "replace")
    if len(name.encode()) <= PRIVATE_NAME_MAX:
        return name
    stem, dot, suffix = name.rpartition(".")
    suffix = suffix[:16] if dot else ""
    return f"{stem[:60] or name[:60]}~.{suffix}" if suffix else name[:60]


@contextmanager
def private_folder(scratch_dir: Path) -> Iterator[Path]:
    """Where a job's private copy of its input lives: a folder of its process,
    `<pid>-own<n>` (named by pid, so the copies of a worker that was killed can be found and
    removed; n > 0 only while a job runs inside another, as a part may), made once and
    emptied after every job. A folder per job (mkdtemp, then rmtree) cost 0.37-0.42 ms a
    job here, this 0.10-0.11 ms. One left by an earlier process of the same pid is cleared
    at this process's first use of it."""
    with _choosing:
        n = 0
        while (folder := scratch_dir / f"{os.getpid()}-own{n}") in _in_use:
            n += 1
        _in_use.add(folder)
        stale = folder not in _cleared
        _cleared.add(folder)
    try:
        if stale:
            shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
    finally:
        empty(folder)
        with _choosing:
            _in_use.discard(folder)


def empty(folder: Path) -> None:
    """Remove what lies in `folder`; what cannot be removed stays for `discard_copies`."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
            continue
        try:
            os.unlink(entry.path)
        except OSError:
            pass


def copy_owners(scratch_dir: Path) -> set[int]:
    """The pids whose private copies lie in `scratch_dir` (folders are `<pid>-...`)."""
    if not scratch_dir.is_dir():
        return set()
    return {
        int(p.name.split("-")[0]) for p in scratch_dir.iterdir() if p.name.split("-")[0].isdigit()
    }


def discard_copies(scratch_dir: Path, pid: int) -> None:
    """Remove the private copies of worker `pid`: it was killed before it could."""
    for folder in scratch_dir.glob(f"{pid}-*"):
        shutil.rmtree(folder, ignore_errors=True)


def job_id(rel: str, sha256: str) -> str:
    """A job is one content at one path: the same bytes dropped again are the same job."""
    key = f"{rel}\0{sha256}".encode("utf-8", "surrogateescape")
    return hashlib.sha256(key).hexdigest()[:16]
