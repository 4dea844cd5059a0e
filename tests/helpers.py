"""Test helpers: bounded waiting, the real corpus, and the real daemon in subprocesses."""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("HOTFOLDER_CORPUS", REPO.parent / "shared" / "corpus"))
T = TypeVar("T")


def ocr_text(engine: object, image: object) -> str:
    """The paragraphs an `OcrEngine` reads on a page image, one a line."""
    found = engine.read(image)  # type: ignore[attr-defined]
    return "\n".join(paragraph.text for paragraph in found.paragraphs)


def wait_for(
    predicate: Callable[[], T], timeout: float, what: str = "condition", every: float = 0.1
) -> T:
    """Poll `predicate` every `every` seconds until it returns something truthy; fail after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def corpus(rel: str) -> Path:
    path = CORPUS / rel
    assert path.is_file(), f"corpus file missing: {path} (is ../shared/corpus beside the repo?)"
    return path


def manifest() -> list[dict[str, str]]:
    with (CORPUS / "MANIFEST.tsv").open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def offline_rows() -> list[dict[str, str]]:
    """Rows that convert offline: SUCCESS in the reference install, plus ODF and email,
    which the manifest notes convert once their extras (which we install) are added.
    Scanned PDFs are left out: without OCR they hold no text, and hotfolder fails them."""
    return [
        row
        for row in manifest()
        if (row["status"] == "SUCCESS" or extra_success(row)) and not scanned(row)
    ]


def scanned(row: dict[str, str]) -> bool:
    return row["notes"].startswith("scanned PDF")


def extra_success(row: dict[str, str]) -> bool:
    return row["status"] == "EXCEPTION" and "added: " in row["notes"] and " SUCCESS" in row["notes"]


def read_sidecar(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def descendants(pid: int) -> list[int]:
    """All live descendant pids of `pid`, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@dataclass
class Daemon:
    """A hotfolder process (`run`, `watch` or `work`) on a tmp folder with its own config."""

    root: Path
    command: str = "run"
    config: dict[str, dict[str, object]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    faults: str = ""
    wrap: list[str] = field(default_factory=list)  # argv prefix: a "host" (namespaces)
    session: bool = False  # a process group of its own, as a separate host would be
    quick: bool = True  # the tests' short settle and poll times; False: the shipped defaults
    process: subprocess.Popen[bytes] | None = None
    log_file: Path | None = None
    tree: list[int] = field(default_factory=list)

    @property
    def input(self) -> Path:
        return self.root / "input"

    @property
    def output(self) -> Path:
        return self.root / "output"

    @property
    def config_file(self) -> Path:
        return self.root / "config.toml"

    def write_config(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        base: dict[str, dict[str, object]] = {"log": {"format": "json"}}
        if self.quick:
            base |= {
                "watch": {"settle_seconds": 0.5},
                "workers": {"count": 2, "poll_max_delay": 0.25, "shutdown_timeout": 20},
                "jobs": {"retry_backoff": 0.5, "reconcile_interval": 1.0},
                "conversion": {"progress_interval": 0.2},
            }
        lines = []  # top-level keys (lists, as `profiles`) first, then the tables
        for section, values in self.config.items():
            if isinstance(values, list):
                lines.append(f"{section} = {toml_value(values)}")
            else:
                base.setdefault(section, {}).update(values)
        for section, values in base.items():
            lines.append(f"[{section}]")
            lines.extend(f"{key} = {toml_value(value)}" for key, value in values.items())
        self.config_file.write_text("\n".join(lines) + "\n")

    def start(self) -> Daemon:
        self.write_config()
        self.input.mkdir(parents=True, exist_ok=True)
        self.log_file = self.root / f"{self.command}.log"
        env = {**os.environ, **self.env}
        # This checkout's `watcher` and `handlers`, whatever the venv's editable install
        # points at (a worktree of another revision sharing the venv ran that one's code).
        paths = [str(REPO)]
        if self.faults:
            paths.insert(0, str(REPO / "tests" / "faults"))
            env["HOTFOLDER_FAULTS"] = self.faults
        env["PYTHONPATH"] = os.pathsep.join(paths)
        self.process = subprocess.Popen(
            [*self.wrap, *hotfolder_argv("--config", str(self.config_file), self.command)],
            stdout=self.log_file.open("ab"),
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.root,
            start_new_session=self.session,
        )
        return self

    def kill_group(self) -> None:
        """SIGKILL the whole process group, as a host that loses power would stop."""
        assert self.process is not None and self.session
        self.tree = descendants(self.process.pid)
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def kill9(self) -> list[int]:
        """SIGKILL the main process only, as the OOM killer or `kill -9` would; returns the
        pids of its descendants at that moment."""
        assert self.process is not None
        children = descendants(self.process.pid)
        self.process.kill()
        self.process.wait(10)
        self.tree = children
        return children

    def states(self) -> dict[str, str]:
        """source -> state of every sidecar in the output dir."""
        found = {}
        for path in self.output.rglob("*.status.json"):
            status = read_sidecar(path)
            if status:
                found[status["source"]] = status["state"]
        return found

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file else ""

    def events(self, *names: str) -> list[dict]:
        """The log records of these events, in order (lines that cannot hold one of them
        are not parsed, so this stays cheap on the long logs of a benchmark)."""
        found = []
        for line in self.log().splitlines():
            if not any(name in line for name in names):
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("event") in names:
                found.append(record)
        return found

    def sidecar(self, rel: str) -> dict | None:
        return read_sidecar(self.output / f"{rel}.status.json")

    def wait_state(self, rel: str, states: tuple[str, ...], timeout: float = 60) -> dict:
        def reached() -> dict | None:
            self.check_running()
            status = self.sidecar(rel)
            return status if status and status["state"] in states else None

        return wait_for(reached, timeout, f"{rel} to reach {states}")

    def wait_terminal(self, rel: str, timeout: float = 60) -> dict:
        return self.wait_state(rel, ("completed", "failed", "cancelled"), timeout)

    def wait_disposition(self, rel: str, timeout: float = 30) -> dict:
        """The record once it says what became of the input: the job's end is saved first,
        the input archived, deleted or quarantined next, and that saved last."""

        def settled() -> dict | None:
            self.check_running()
            status = self.sidecar(rel)
            return status if status and status.get("disposition") else None

        return wait_for(settled, timeout, f"{rel} to record its input's disposition")

    def check_running(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            code, tail = self.process.returncode, self.log()[-4000:]
            raise AssertionError(f"hotfolder {self.command} exited with {code}:\n{tail}")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60) -> int:
        """Stop gracefully; fail if it does not exit in time or leaves processes behind."""
        assert self.process is not None
        # A signal that comes before the command has set its handlers ends the interpreter
        # as a KeyboardInterrupt would (exit -2): wait until it says it started.
        started = f"{self.command}.started"
        wait_for(lambda: self.process.poll() is not None or self.events(started), 60, started)
        self.tree = descendants(self.process.pid)
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            self.kill()
            tail = self.log()[-4000:]
            raise AssertionError(f"hotfolder {self.command} did not stop:\n{tail}") from exc
        wait_for(lambda: not any(alive(pid) for pid in self.tree), 15, "child processes to exit")
        return code

    def kill(self) -> None:
        """Last-resort cleanup: SIGKILL the daemon and everything it started."""
        if self.process is None:
            return
        pids = descendants(self.process.pid) + self.tree
        for pid in [self.process.pid, *pids]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(10)


def toml_value(value: object) -> str:
    """JSON is TOML for numbers, strings, booleans and lists; tables need `=`."""
    if isinstance(value, dict):
        return (
            "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
        )
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return json.dumps(value)


def hotfolder_argv(*args: str) -> list[str]:
    return [*WITHOUT_ROOT_OVERRIDES, sys.executable, "-m", "watcher.cli", *args]


def without_root_overrides() -> list[str]:
    """Root reads and writes any file whatever its permissions; a service user does not. The
    tests run hotfolder without the two capabilities that let root do so, so permissions
    are in force (setpriv execs in place: the pid stays hotfolder's)."""
    if os.geteuid() == 0 and shutil.which("setpriv"):
        return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]
    return []


WITHOUT_ROOT_OVERRIDES = without_root_overrides()


def status_json(config_file: Path) -> dict:
    """What `hotfolder status --json` reports; its exit code says whether the watcher and
    the workers both run (0) or not (3), as `systemctl status` does."""
    done = run_cli(config_file, "status", "--json")
    assert done.returncode in (0, 3), done.stderr
    report = json.loads(done.stdout)
    running = report["watcher"]["alive"] and report["workers"]["alive"]
    assert done.returncode == (0 if running else 3), (done.returncode, report)
    return report


def long_pdf(target: Path, copies: int = 10) -> Path:
    """A real PDF of `copies` x 18 pages (the corpus's redp5110), slow enough to watch."""
    import pypdfium2

    source = pypdfium2.PdfDocument(corpus("pdf/redp5110_sampled.pdf"))
    out = pypdfium2.PdfDocument.new()
    for _ in range(copies):
        out.import_pages(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.part")
    out.save(temp)
    os.replace(temp, target)
    return target


def run_cli(config_file: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        hotfolder_argv("--config", str(config_file), *args),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@contextmanager
def small_tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted on `where` for the test (skipped where mounting is not
    allowed): a disk that fills up for real."""
    import pytest

    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(folder: Path, leave: int = 0) -> Path:
    """Write zeros into `folder/.filler` until its disk is full (or `leave` bytes remain)."""
    filler = folder / ".filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        while shutil.disk_usage(folder).free > leave:
            chunk = min(1 << 16, max(shutil.disk_usage(folder).free - leave, 1))
            try:
                os.write(fd, b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                break
    finally:
        os.close(fd)
    return filler


def drop(source: Path, target: Path) -> Path:
    """Copy a file in the way a script would: write to a hidden temp name, then rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.parent / f".{target.name}.part"
    temp.write_bytes(source.read_bytes())
    os.replace(temp, target)
    return target


class RedisServer:
    """A redis-server on a free port, with append-only persistence in its own folder."""

    def __init__(self, folder: Path, bind: str = "127.0.0.1") -> None:
        self.folder = folder
        self.bind = bind
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", *self.bind.split()),
                *("--dir", str(self.folder), "--appendonly", "yes", "--appendfsync", "always"),
                *("--save", "", "--protected-mode", "no"),
            ],
            stdout=(self.folder.parent / f"redis-{self.port}.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        wait_for(self.answers, 20, "redis-server to answer")

    def answers(self) -> bool:
        done = subprocess.run(
            ["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True
        )
        return done.stdout.strip() == "PONG"

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()  # as a crash would: what is on disk is what it had
            self.process.wait(10)

    def restart(self, keep_data: bool) -> None:
        self.stop()
        if not keep_data:
            shutil.rmtree(self.folder)
        self.start()


def as_host(name: str, *outer: str) -> list[str]:
    """argv prefix: run in a UTS namespace of its own, named `name` (each command execs
    the next, so the daemon keeps the pid the test started)."""
    return [*outer, "unshare", "--uts", "--", "sh", "-c", f'hostname {name} && exec "$@"', "sh"]


def drop_batch(input_dir: Path, count: int, docs: list[str], prefix: str = "b") -> dict[str, str]:
    """`count` files named <prefix>NN.<ext>, cycling through the corpus `docs`; returns
    name -> corpus doc."""
    batch = {}
    for i in range(count):
        doc = docs[i % len(docs)]
        name = f"{prefix}{i:02d}{Path(doc).suffix}"
        drop(corpus(doc), input_dir / name)
        batch[name] = doc
    return batch
