"""hotfolder under a real systemd: a throwaway Debian root booted with systemd-nspawn,
hotfolder installed there by deploy/install.sh, and the service driven with systemctl.

Slow (a Debian root is built once, then each run copies it and installs hotfolder), so it
runs with `make test-systemd`, not with `make test`. systemd runs only inside that root:
never as PID 1 on this machine's own root, where its boot would empty the shared /tmp.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import REPO, corpus, long_pdf, wait_for

pytestmark = pytest.mark.systemd

CACHE = Path(os.environ.get("HOTFOLDER_NSPAWN_CACHE", "/var/tmp/hotfolder-nspawn"))
PACKAGES = "systemd,systemd-sysv,dbus,python3,python3-venv,ca-certificates,procps"
MIRROR = "http://deb.debian.org/debian"
DATA = Path("var/lib/hotfolder")
CLEAN_ENV = ("PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8")
CONFIG = """\
[paths]
input = "/var/lib/hotfolder/input"
output = "/var/lib/hotfolder/output"
state = "/var/lib/hotfolder/state"
archive = "/var/lib/hotfolder/archive"
quarantine = "/var/lib/hotfolder/quarantine"
[watch]
settle_seconds = 0.5
[workers]
count = 2
poll_max_delay = 0.25
shutdown_timeout = 3
[jobs]
reconcile_interval = 5
retry_backoff = 1
"""


def base_root() -> Path:
    """A minimal Debian bookworm with systemd and Python, built once and kept."""
    base = CACHE / "base"
    if (base / "usr/bin/python3").exists():
        return base
    building = CACHE / "base.building"
    shutil.rmtree(building, ignore_errors=True)
    building.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["debootstrap", "--variant=minbase", f"--include={PACKAGES}", "bookworm", building, MIRROR],
        check=True,
        capture_output=True,
        timeout=1800,
    )
    building.rename(base)
    return base


@dataclass
class Machine:
    root: Path
    leader: int  # the container's PID 1, as seen from outside

    def run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        enter = ["nsenter", "-t", str(self.leader), "-m", "-u", "-i", "-n", "-p", "-C", "--"]
        return subprocess.run(
            [*enter, "env", "-i", *CLEAN_ENV, *argv],  # nothing of this host's environment
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def show(self, unit: str, prop: str) -> str:
        return self.run("systemctl", "show", "-p", prop, "--value", unit).stdout.strip()


def source_tree(target: Path) -> Path:
    """The files git tracks in this checkout (what a user would install)."""
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, files):
        rel = os.fsdecode(name)
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target / rel)
    return target


@contextmanager
def booted(tmp_path: Path) -> Iterator[Machine]:
    root = tmp_path / "root"
    subprocess.run(["cp", "-a", str(base_root()), str(root)], check=True)
    source = source_tree(tmp_path / "src")
    pip_cache = CACHE / "pip-cache"
    pip_cache.mkdir(parents=True, exist_ok=True)
    # This host's trust store (it may reach PyPI through its own CA), for pip inside.
    certificates = "/etc/ssl/certs/ca-certificates.crt"
    name = f"hf-{uuid.uuid4().hex[:8]}"
    log = (tmp_path / "nspawn.log").open("wb")
    nspawn = subprocess.Popen(
        [
            "systemd-nspawn",
            "-D",
            str(root),
            "--boot",
            "--register=no",  # no machined on the host, and no scope unit for it
            "--keep-unit",
            "--console=pipe",
            f"--machine={name}",
            f"--bind={source}:/src",
            f"--bind={pip_cache}:/root/.cache/pip",
            f"--bind-ro={certificates}:{certificates}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    machine = None
    try:
        leader = wait_for(lambda: container_init(nspawn.pid), 60, "the container's systemd")
        machine = Machine(root, leader)
        # Its bus socket comes a moment after its PID 1: ask until it answers.
        booting = lambda: machine.run("systemctl", "is-system-running", "--wait", timeout=180)  # noqa: E731
        state = wait_for(lambda: booting().stdout.strip(), 180, "the container's systemd bus")
        assert state in ("running", "degraded"), state
        yield machine
    finally:
        if nspawn.poll() is None:
            if machine is not None:
                machine.run("systemctl", "poweroff", timeout=60)
            try:
                nspawn.wait(120)
            except subprocess.TimeoutExpired:
                nspawn.kill()
                nspawn.wait(30)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


def container_init(nspawn_pid: int) -> int | None:
    """The pid of the container's systemd: systemd-nspawn's child."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == nspawn_pid:
                return int(entry.name)
    return None


def sidecar(machine: Machine, rel: str) -> dict:
    try:
        return json.loads((machine.root / DATA / "output" / f"{rel}.status.json").read_text())
    except (OSError, ValueError):
        return {}


def wait_state(machine: Machine, rel: str, states: tuple[str, ...], timeout: float = 180) -> dict:
    return wait_for(
        lambda: (s := sidecar(machine, rel)).get("state") in states and s,
        timeout,
        f"{rel} {states}",
    )


def drop(machine: Machine, source: Path, name: str) -> None:
    inbox = machine.root / DATA / "input"
    temp = inbox / f".{name}.part"
    shutil.copyfile(source, temp)
    temp.chmod(0o644)
    os.replace(temp, inbox / name)


def test_hotfolder_under_real_systemd(tmp_path: Path) -> None:
    started = time.monotonic()
    with booted(tmp_path) as machine:
        config = machine.root / "etc/hotfolder/config.toml"
        config.parent.mkdir(parents=True)
        config.write_text(CONFIG)  # the installer keeps a config that is already there
        installed = machine.run("env", "PYTHON=python3", "/src/deploy/install.sh", timeout=1200)
        assert installed.returncode == 0, installed.stdout + installed.stderr
        for unit in ("hotfolder-watch", "hotfolder-work"):
            # Type=notify: "active" only once the service has sent READY=1.
            wait_for(lambda u=unit: machine.show(u, "ActiveState") == "active", 120, unit)
            assert machine.show(unit, "User") == "hotfolder"
            assert machine.show(unit, "ProtectSystem") == "strict"

        # The hardened workers convert a PDF, an image (by OCR) and an Office file.
        documents = {
            "report.pdf": "pdf/multi_page.pdf",
            "photo.webp": "webp/webp-test.webp",
            "memo.docx": "docx/word_sample.docx",
        }
        for name, doc in documents.items():
            drop(machine, corpus(doc), name)
        for name in documents:
            status = wait_state(machine, name, ("completed", "failed"))
            assert status["state"] == "completed", status
        photo = (machine.root / DATA / "output" / "photo.webp.md").read_text()
        assert "Docling bundles PDF document" in photo
        shown = lambda: machine.run("systemctl", "status", "--no-pager", "hotfolder-work").stdout  # noqa: E731
        wait_for(lambda: 'Status: "3 completed' in shown(), 30, "the STATUS line")

        journal = machine.run("journalctl", "-u", "hotfolder-work", "--no-pager").stdout
        assert "cpuinfo" not in journal  # onnxruntime can see the CPU's features
        # journald gets one JSON line per event.
        journal = machine.run("journalctl", "-u", "hotfolder-work", "-o", "cat", "--no-pager")
        events = [json.loads(line) for line in journal.stdout.splitlines() if line.startswith("{")]
        assert sum(e.get("event") == "job.completed" for e in events) == 3

        # systemctl stop puts a running job back (workers.shutdown_timeout = 3 s) ...
        long_pdf(tmp_path / "long.pdf", copies=10)
        drop(machine, tmp_path / "long.pdf", "long.pdf")
        wait_state(machine, "long.pdf", ("processing",))
        stopped = machine.run("systemctl", "stop", "hotfolder-work.service", timeout=120)
        assert stopped.returncode == 0, stopped.stderr
        assert sidecar(machine, "long.pdf")["state"] == "pending"
        # ... and it completes once the workers are back.
        machine.run("systemctl", "start", "hotfolder-work.service", timeout=120)
        assert wait_state(machine, "long.pdf", ("completed",), timeout=300)["attempts"] == 1

        # A SIGKILL of the workers' main process: systemd restarts it, the batch completes.
        batch = [f"b{i}.pdf" for i in range(6)]
        for name in batch:
            drop(machine, corpus("pdf/redp5110_sampled.pdf"), name)
        busy = lambda: any(sidecar(machine, n).get("state") == "processing" for n in batch)  # noqa: E731
        wait_for(busy, 120, "a job of the batch to run")
        restarts = int(machine.show("hotfolder-work", "NRestarts"))
        killed = machine.run(
            "systemctl", "kill", "--kill-whom=main", "--signal=KILL", "hotfolder-work"
        )
        assert killed.returncode == 0, killed.stderr
        for name in batch:
            assert (
                wait_state(machine, name, ("completed", "failed"), timeout=300)["state"]
                == "completed"
            )
        assert int(machine.show("hotfolder-work", "NRestarts")) == restarts + 1
        sidecars = (machine.root / DATA / "output").glob("*.status.json")
        assert all(json.loads(s.read_text())["state"] != "processing" for s in sidecars)
    print(f"\nreal-systemd test: {time.monotonic() - started:.0f} s")
