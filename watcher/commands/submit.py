"""Files and folders an operator names for `enqueue`: taken as they are when they lie in
the input dir (never through a link), copied into it when they lie elsewhere."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from handlers.source import open_regular
from watcher.daemon.ignore import IgnoreRules
from watcher.daemon.skips import kind_of
from watcher.settings import Settings


class Refused(Exception):
    """A path `enqueue` will not take; the message says why, on one line."""


def bring_in(settings: Settings, path: Path) -> list[Path]:
    """The eligible files under `path`, as paths inside the input dir. A path named inside
    the input dir is taken as it is, never through a link; one from elsewhere is copied in."""
    input_dir = settings.input_dir
    named = Path(os.path.abspath(path))
    if not named.is_relative_to(input_dir):
        real = real_path(named)
        named = real if real.is_relative_to(input_dir) else copy_in(settings, real)
    return files_under(settings, named)


def real_path(path: Path) -> Path:
    try:
        return path.resolve(strict=True)
    except FileNotFoundError:
        raise Refused("no such file or folder") from None
    except RuntimeError:  # Python 3.11 reports a symlink loop this way
        raise Refused("a symbolic link loop") from None


def files_under(settings: Settings, path: Path) -> list[Path]:
    """`path` if it is a file, or the files of a folder; refused if it, or a folder on the
    way to it inside the input dir, is a link, or if it is neither file nor folder."""
    kind, current = "folder", settings.input_dir
    for part in path.relative_to(settings.input_dir).parts:
        current = current / part
        try:
            kind = kind_of(os.lstat(current).st_mode)
        except FileNotFoundError:
            raise Refused("no such file or folder") from None
        if kind == "symlink":
            raise Refused(
                f"unsafe_path: {current} is a symbolic link, and hotfolder never follows "
                "links in the input folder"
            )
    rules = IgnoreRules.of(settings)
    if kind == "file":
        return [] if rules.ignored(path) else [path]
    if kind == "folder":
        return rules.walk(path)
    raise Refused(f"not a regular file or folder (a {kind.replace('_', ' ')})")


def copy_in(settings: Settings, source: Path) -> Path:
    """Copy `source` (a resolved path) into the input dir under a hidden name, renamed when
    complete, so the watcher never sees a partial copy; nothing is left on failure."""
    check_apart(settings, source)
    kind = kind_of(os.stat(source).st_mode)
    if kind not in ("file", "folder"):
        raise Refused(f"not a regular file or folder (a {kind.replace('_', ' ')})")
    target = settings.input_dir / source.name
    if os.path.lexists(target):
        raise Refused(f"{target} already exists; move or rename one of them")
    temp = target.with_name(f".{target.name}.copying")
    limit = int(settings.jobs.max_file_mb * 2**20)
    try:
        if kind == "folder":
            skipped = copy_tree(source, temp, limit)
        else:
            skipped = copy_file(source, temp, limit)
        os.replace(temp, target)
    except BaseException:
        if temp.is_dir() and not temp.is_symlink():
            shutil.rmtree(temp, ignore_errors=True)
        else:
            temp.unlink(missing_ok=True)
        raise
    if skipped:
        print(f"hotfolder: {source}: {skipped} links or special files not copied", file=sys.stderr)
    return target


def check_apart(settings: Settings, source: Path) -> None:
    """Copying a folder that holds one of hotfolder's own would copy it into itself."""
    paths = settings.paths
    for name, folder in (
        ("input", paths.input),
        ("output", paths.output),
        ("state", paths.state),
        ("archive", paths.archive),
        ("quarantine", paths.quarantine),
    ):
        if folder.is_relative_to(source):
            raise Refused(
                f"it holds hotfolder's {name} folder ({folder}), which copying it into the "
                "input folder would copy too"
            )
        if source.is_relative_to(folder):
            raise Refused(f"it lies in hotfolder's {name} folder ({folder})")


def copy_tree(source: Path, target: Path, limit: int) -> int:
    """Copy the folders and regular files under `source`; links (to files or folders) and
    special files are skipped. Returns how many were skipped."""
    skipped = 0
    target.mkdir()
    for folder, dirs, names in os.walk(source):  # links to folders are never entered
        base = Path(folder)
        copy = target / base.relative_to(source)
        for name in [*dirs, *names]:
            kind = kind_of(os.lstat(base / name).st_mode)
            if kind == "folder":
                (copy / name).mkdir()
            elif kind == "file":
                copy_file(base / name, copy / name, limit)
            else:
                skipped += 1
    return skipped


def copy_file(source: Path, target: Path, limit: int) -> int:
    """Copy one regular file (opened without following a link or blocking on a FIFO), unless
    it is over `limit` bytes (jobs.max_file_mb; 0: no limit): judged before a byte is read."""
    with open_regular(source) as (handle, info):
        if limit and info.st_size > limit:
            raise Refused(
                f"too_large: {source} is {info.st_size / 2**20:.1f} MiB, over the limit of "
                f"{limit / 2**20:.1f} MiB (jobs.max_file_mb)"
            )
        with target.open("xb") as out:
            shutil.copyfileobj(handle, out)
    os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))
    return 0
