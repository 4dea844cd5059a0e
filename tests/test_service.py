"""The systemd service: the installer into a staging root, the installed units checked by
systemd's own tools, and the notify protocol spoken to a real datagram socket."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, corpus, drop, wait_for

UNIT_DIR = Path("etc/systemd/system")
SERVICES = ("hotfolder-watch.service", "hotfolder-work.service")
MAX_EXPOSURE = 2.0


def install(stage: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(REPO / "deploy" / "install.sh"), *args],
        stdin=subprocess.DEVNULL,  # no terminal: nothing can be asked
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "DESTDIR": str(stage), **env},
    )


def tree(root: Path) -> dict[str, tuple[int, str]]:
    """Every entry below `root`: its mode, and its content's hash or link target."""
    found = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        if path.is_symlink():
            what = "-> " + os.readlink(path)
        elif path.is_file():
            what = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            what = "dir"
        found[path.relative_to(root).as_posix()] = (info.st_mode, what)
    return found


def add_systemd_units(stage: Path) -> Path:
    """The staging root, with systemd's own units copied in, for `verify --root` (which
    resolves the units' dependencies and the ExecStart= binary inside that root)."""
    shutil.copytree("/usr/lib/systemd/system", stage / "usr/lib/systemd/system", symlinks=True)
    return stage


@pytest.mark.slow
def test_installer_stages_the_same_tree_twice_with_units_systemd_accepts(tmp_path) -> None:
    # A Python too old fails before anything is created.
    old_python = tmp_path / "python3.10"
    old_python.write_text('#!/bin/sh\n[ "$1" = --version ] && echo "Python 3.10.12"\nexit 1\n')
    old_python.chmod(0o755)
    refused = install(tmp_path / "old", PYTHON=str(old_python))
    assert refused.returncode == 1 and "Python 3.11 or newer" in refused.stderr, refused.stderr
    assert "3.10.12" in refused.stderr and not (tmp_path / "old").exists()

    stage = tmp_path / "stage"
    first = install(stage)
    assert first.returncode == 0, first.stderr
    before = tree(stage)
    second = install(stage)
    assert second.returncode == 0, second.stderr
    assert tree(stage) == before  # idempotent: nothing changed, nothing added
    config = (stage / "etc/hotfolder/config.toml").read_text()
    assert 'input = "/var/lib/hotfolder/input"' in config
    work = (stage / UNIT_DIR / "hotfolder-work.service").read_text()
    folders = " ".join(
        f"/var/lib/hotfolder/{f}" for f in ("input", "output", "state", "archive", "quarantine")
    )
    assert f"ReadWritePaths={folders}\n" in work and not re.search(r"@[A-Z_]+@", work)
    assert (
        "ExecStart=/opt/hotfolder/venv/bin/hotfolder --config /etc/hotfolder/config.toml work"
        in work
    )
    assert (stage / "opt/hotfolder/venv/bin/hotfolder").is_file()
    script = stage / "opt/hotfolder/venv/bin/hotfolder"  # as it will lie once unpacked
    assert script.read_text().splitlines()[0] == "#!/opt/hotfolder/venv/bin/python"
    completion = stage / "usr/share/bash-completion/completions/hotfolder"
    assert "--pending" in completion.read_text()  # generated from the CLI's parser
    assert (stage / "usr/local/share/zsh/site-functions/_hotfolder").is_file()
    command = (stage / "usr/local/bin/hotfolder").read_text()  # on PATH, on this config
    assert 'HOTFOLDER_CONFIG="${HOTFOLDER_CONFIG:-/etc/hotfolder/config.toml}"' in command
    assert "exec /opt/hotfolder/venv/bin/hotfolder" in command
    assert not list((stage / UNIT_DIR).glob("*.d"))  # the SQLite queue needs no network

    # With the Redis queue, a drop-in gives both units the network; they stay hardened.
    config_file = stage / "etc/hotfolder/config.toml"
    config_file.write_text(config.replace('backend = "sqlite"', 'backend = "redis"'))
    assert install(stage).returncode == 0
    for unit in SERVICES:
        drop_in = (stage / UNIT_DIR / f"{unit}.d" / "redis.conf").read_text()
        assert "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6" in drop_in

    # A webhook: the watcher alone gets the network, through its own drop-in.
    webhook = 'webhook = [{ url = "http://127.0.0.1:8080/hotfolder" }]'
    assert "\nwebhook = []\n" in config
    config_file.write_text(config.replace("\nwebhook = []\n", f"\n{webhook}\n"))
    assert install(stage).returncode == 0
    assert sorted(p.name for p in (stage / UNIT_DIR).glob("*.d/*.conf")) == ["hooks.conf"]
    assert (stage / UNIT_DIR / "hotfolder-watch.service.d" / "hooks.conf").is_file()

    root = add_systemd_units(stage)  # after the comparison: it changes the tree
    for unit in (*SERVICES, "hotfolder.target"):
        checked = subprocess.run(
            ["systemd-analyze", "verify", f"--root={root}", str(root / UNIT_DIR / unit)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        # verify exits 0 on unknown keys and bad values; its warnings are the findings.
        assert checked.returncode == 0 and not checked.stderr.strip(), (unit, checked.stderr)
    for unit in SERVICES:
        rated = subprocess.run(
            [
                "systemd-analyze",
                "security",
                "--offline=yes",
                f"--root={root}",
                str(root / UNIT_DIR / unit),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        score = re.search(r"Overall exposure level for \S+: ([\d.]+)", rated.stdout)
        assert score and float(score.group(1)) <= MAX_EXPOSURE, (unit, rated.stdout[-500:])

    kept = install(stage, "uninstall")
    assert kept.returncode == 0, kept.stderr
    assert not (stage / "opt/hotfolder").exists() and not (stage / UNIT_DIR / SERVICES[0]).exists()
    assert not (stage / "usr/local/bin/hotfolder").exists() and not completion.exists()
    assert (stage / "etc/hotfolder/config.toml").exists() and (
        stage / "var/lib/hotfolder/input"
    ).is_dir()
    # Purging deletes every document: not without a yes (here no terminal can give one).
    refused = install(stage, "uninstall", "--purge")
    assert refused.returncode == 2 and "--yes" in refused.stderr, refused.stderr
    assert (stage / "var/lib/hotfolder/input").is_dir()
    purged = install(stage, "uninstall", "--purge", "--yes")
    assert purged.returncode == 0 and not (stage / "var/lib/hotfolder").exists()
    assert not (stage / "etc/hotfolder").exists()


class NotifySocket:
    """systemd's side of the protocol: a datagram socket that records every message."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(str(path))
        self.socket.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self.listen, daemon=True)
        self.thread.start()

    def listen(self) -> None:
        while not self.closed.is_set():
            try:
                data = self.socket.recv(4096)
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data.decode()))

    def fields(self, name: str) -> list[tuple[float, str]]:
        return [
            (at, line.split("=", 1)[1])
            for at, message in self.messages
            for line in message.splitlines()
            if line.startswith(f"{name}=")
        ]

    def close(self) -> None:
        self.closed.set()
        self.thread.join(5)
        self.socket.close()


def test_the_notify_protocol_against_a_real_socket(make_daemon, tmp_path) -> None:
    first = make_daemon("run")
    drop(corpus("csv/csv-comma.csv"), first.input / "done.csv")
    assert first.wait_terminal("done.csv")["state"] == "completed"
    assert first.stop() == 0

    sockets = {}
    for command in ("watch", "work"):
        sockets[command] = NotifySocket(tmp_path / f"{command}.sock")
        env = {"NOTIFY_SOCKET": str(sockets[command].path), "WATCHDOG_USEC": "1000000"}
        daemon = make_daemon(command, root=tmp_path, env=env)
        listening = sockets[command]
        ready = wait_for(lambda s=listening: s.fields("READY"), 60, f"{command} READY")
        assert ready[0][1] == "1"
        statuses = [text for _, text in listening.fields("STATUS")]
        assert "completed" in statuses[0], statuses  # sent with READY: the jobs by state
        if command == "watch":
            assert statuses[0] == "1 completed", statuses  # as found by the start-up scan
            assert daemon.events("watch.started")
            watch = daemon
            # Kept current: a new file shows up as pending (no workers are running yet).
            drop(corpus("csv/csv-tab.csv"), watch.input / "new.csv")
            wait_for(
                lambda s=listening: any("1 pending" in t for _, t in s.fields("STATUS")),
                30,
                "STATUS",
            )
        else:
            work = daemon
            assert watch.wait_terminal("new.csv")["state"] == "completed"
            wait_for(
                lambda s=listening: any(t.startswith("2 completed") for _, t in s.fields("STATUS")),
                30,
                "STATUS with both jobs completed",
            )
        pings = wait_for(
            lambda s=listening: len(p := s.fields("WATCHDOG")) >= 3 and p, 15, f"{command} pings"
        )
        gaps = [later[0] - earlier[0] for earlier, later in zip(pings, pings[1:], strict=False)]
        assert all(0.4 <= gap <= 2.0 for gap in gaps), gaps  # half of WATCHDOG_USEC

    for command, daemon in (("work", work), ("watch", watch)):
        assert daemon.stop(signal.SIGTERM) == 0
        assert "1" in [v for _, v in sockets[command].fields("STOPPING")], command
        sockets[command].close()
