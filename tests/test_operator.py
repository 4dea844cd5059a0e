"""The operator's day, through the real CLI: a member of the service's group reading the
state of a daemon run with the service's umask, scripts reading through closed pipes, more
than 50 jobs, cancelling by id, by folder and all at once, and status exit codes."""

from __future__ import annotations

import io
import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import structlog

from tests.helpers import REPO, corpus, drop, hotfolder_argv, run_cli, status_json, wait_for
from watcher.logs import configure_logging
from watcher.settings import LogConfig

READER_UID, GROUP_GID = 54321, 54322  # a user in the service's group: no passwd entry needed
UMASK_0027 = ["sh", "-c", 'umask 0027 && exec "$@"', "sh"]  # the units' UMask=0027
READER = [  # Python as that user, without hotfolder_argv's root-only setpriv
    "setpriv",
    f"--reuid={READER_UID}",
    f"--regid={READER_UID}",
    f"--groups={GROUP_GID}",
    "--inh-caps=-all",
    "--",
    sys.executable,
]


@pytest.fixture
def open_root() -> Iterator[Path]:
    """A folder other users can reach (pytest's own tmp folder is root's alone), laid out
    as install.sh does: folders of the service's group, setgid, group-writable."""
    probe = subprocess.run(
        [*READER, "-c", "import watcher.cli"], capture_output=True, text=True, timeout=60, cwd="/"
    )
    if probe.returncode != 0:  # e.g. a clone inside `mktemp -d`, a folder of root's alone
        pytest.skip(f"another user cannot load hotfolder from {REPO}: {probe.stderr[-200:]}")
    root = Path(tempfile.mkdtemp(prefix="hotfolder-op-"))
    root.chmod(0o755)
    for name in ("input", "output", "state", "archive", "quarantine"):
        (root / name).mkdir()
        os.chown(root / name, 0, GROUP_GID)
        (root / name).chmod(0o2770)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def as_reader(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as an unprivileged member of the service's group."""
    argv = [*READER, "-m", "watcher.cli", "--config", str(config), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd="/")


def test_a_member_of_the_service_group_reads_status_jobs_and_show(
    make_daemon, open_root: Path
) -> None:
    daemon = make_daemon("run", root=open_root, wrap=UMASK_0027)
    drop(corpus("md/mixed.md"), daemon.input / "good.md")
    (daemon.input / "bad.xyz").write_bytes(b"\x00\x01 not a document")
    assert daemon.wait_terminal("good.md")["state"] == "completed"
    assert daemon.wait_terminal("bad.xyz")["state"] == "failed"
    index = daemon.root / "state" / "index.db"
    assert index.stat().st_mode & 0o777 == 0o640 and index.stat().st_gid == GROUP_GID
    config = daemon.config_file
    for running in (True, False):
        status = as_reader(config, "status", "--json")
        assert status.returncode == (0 if running else 3), status.stderr
        states = json.loads(status.stdout)["states"]
        assert (states["completed"], states["failed"]) == (1, 1)
        listed = as_reader(config, "jobs", "--json")
        assert listed.returncode == 0, listed.stderr
        assert sorted(row["source"] for row in json.loads(listed.stdout)) == ["bad.xyz", "good.md"]
        shown = as_reader(config, "show", "bad.xyz", "--json")
        assert json.loads(shown.stdout)["error"]["type"] == "unsupported_format", shown.stderr
        # A command that writes says what it needs, in one line.
        retry = as_reader(config, "retry", "--failed")
        assert retry.returncode == 1 and "Traceback" not in retry.stderr, retry.stderr
        assert "needs write access" in retry.stderr and "sudo -u" in retry.stderr, retry.stderr
        if running:
            assert daemon.stop() == 0


def test_reading_commands_create_nothing_on_a_fresh_config(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("")
    assert run_cli(config, "status").returncode == 3  # nothing runs
    assert json.loads(run_cli(config, "jobs", "--json").stdout) == []
    assert run_cli(config, "doctor", timeout=120).returncode == 1  # no folders, nothing runs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]
    # Ctrl-C ends the live view even when SIGINT came in ignored (a script's background job).
    watching = subprocess.Popen(
        hotfolder_argv("--config", str(config), "status", "--watch", "--interval", "0.2"),
        stdout=subprocess.DEVNULL,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    time.sleep(3)
    watching.send_signal(signal.SIGINT)
    assert watching.wait(20) == 0
    # Bad intervals and durations are usage errors (2), said in one line.
    for args in (("status", "--watch", "--interval", "0"), ("status", "--interval", "-1")):
        bad = run_cli(config, *args)
        assert bad.returncode == 2 and "0.1 s or more" in bad.stderr, bad.stderr
    bad = run_cli(config, "jobs", "--since", "3x")
    assert bad.returncode == 2 and "not a duration" in bad.stderr
    bad = run_cli(config, "jobs", "--state", "done")
    assert bad.returncode == 2 and "states are pending" in bad.stderr
    bad = run_cli(config, "cancel", "--all", "abc")
    assert bad.returncode == 2 and "one of them" in bad.stderr
    # One file, one noun.
    (tmp_path / "note.md").write_text("# A note\n")
    said = run_cli(config, "enqueue", str(tmp_path / "note.md"))
    assert said.returncode == 0 and said.stdout.strip().endswith("1 file: 1 enqueued"), said


def test_the_config_is_found_as_users_expect(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('[paths]\ninput = "in"\n')
    named = tmp_path / "named.toml"
    named.write_text('[paths]\ninput = "named-in"\n')

    def input_of(*args: str, env: dict[str, str] | None = None, cwd: Path = tmp_path) -> str:
        done = subprocess.run(
            hotfolder_argv(*args),
            capture_output=True,
            text=True,
            cwd=cwd,
            env={**os.environ, **(env or {})},
        )
        assert done.returncode in (0, 3), done.stderr
        return Path(json.loads(done.stdout)["input"]).name

    assert input_of("status", "--json") == "in"  # ./config.toml
    assert input_of("status", "--json", "--config", str(named)) == "named-in"  # after it
    assert input_of("--config", str(named), "status", "--json") == "named-in"
    assert input_of("status", "--json", env={"HOTFOLDER_CONFIG": str(named)}) == "named-in"
    missing = subprocess.run(
        hotfolder_argv("status"), capture_output=True, text=True, cwd=tmp_path / "..", env={}
    )
    assert missing.returncode == 78 and "config file not found" in missing.stderr
    version = subprocess.run(hotfolder_argv("--version"), capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("hotfolder ")


def piped(config: Path, *args: str, reader: str = "true") -> subprocess.CompletedProcess[str]:
    """`hotfolder ARGS | READER` under pipefail: `true` reads nothing and is gone before
    the CLI writes, so every write meets a closed pipe."""
    command = " ".join(map(shlex_quote, hotfolder_argv("--config", str(config), *args)))
    return subprocess.run(
        ["bash", "-c", f"set -o pipefail; {command} | {reader}"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def shlex_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def on_a_terminal(config: Path, *args: str, seconds: float | None = None) -> str:
    """What the CLI prints when stdout is a terminal (a pseudo-terminal here); after
    `seconds`, if given, a Ctrl-C (SIGINT) ends it."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: exec the CLI on the terminal
        argv = hotfolder_argv("--config", str(config), *args)
        os.execvp(argv[0], argv)
    chunks = []
    deadline = None if seconds is None else time.monotonic() + seconds
    killed_at = None
    while True:
        if deadline is not None and time.monotonic() > deadline:
            os.kill(pid, signal.SIGINT)
            deadline, killed_at = None, time.monotonic()
        if killed_at is not None and time.monotonic() - killed_at > 20:
            os.kill(pid, signal.SIGKILL)  # Ctrl-C did not end it: fail, do not hang
            raise AssertionError(f"{args} did not stop on Ctrl-C")
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    _, code = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(code) == 0, b"".join(chunks)[-500:]
    return b"".join(chunks).decode()


def test_lists_pipes_and_bulk_cancel_on_sixty_waiting_jobs(make_daemon, tmp_path: Path) -> None:
    # Only the watcher runs: every job waits, pending, in the queue.
    daemon = make_daemon("watch")
    for folder, count in (("a", 30), ("b", 28), ("", 2)):
        for n in range(count):
            target = daemon.input / folder / f"{n:02d}.md"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(f"# Note {n}\n")
    wait_for(lambda: status_json(daemon.config_file)["states"]["pending"] == 60, 60, "60 pending")
    config = daemon.config_file

    def rows(*args: str) -> list[dict]:
        done = run_cli(config, "jobs", "--json", *args)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    assert len(rows()) == 50  # the default, as --help says
    assert len(rows("--all")) == 60 and len(rows("--limit", "55")) == 55
    assert len(rows("--state", "pending,failed", "--all")) == 60
    assert "(default: 50)" in run_cli(config, "jobs", "--help").stdout
    plain = run_cli(config, "jobs").stdout
    assert "more" not in plain and len(plain.splitlines()) == 51  # a header and 50 rows
    terminal = on_a_terminal(config, "jobs")
    assert "... and 10 more (--limit N or --all to see them)" in terminal, terminal[-300:]
    # Scripts that stop reading: no traceback, the exit code as if they had read it all.
    for args in (("jobs", "--all"), ("jobs", "--json", "--all"), ("show", "a/00.md")):
        done = piped(config, *args)
        assert done.returncode == 0 and done.stderr == "", (args, done.stderr)
    assert piped(config, "status").returncode == 3  # not running: the workers are not
    watching = piped(config, "status", "--watch", "--interval", "0.1", reader="head -1")
    assert watching.returncode == 0 and watching.stderr == "", watching.stderr
    lines = piped(config, "status", "--json", "--watch", "--interval", "0.1", reader="head -2")
    frames = [json.loads(line) for line in lines.stdout.splitlines()]  # JSON lines
    assert len(frames) == 2 and all(f["states"]["pending"] == 60 and f["at"] for f in frames)
    # Times in the machine's zone, named; JSON keeps UTC.
    india = subprocess.run(
        hotfolder_argv("--config", str(config), "jobs", "--limit", "1"),
        capture_output=True,
        text=True,
        env={**os.environ, "TZ": "Asia/Kolkata"},
    ).stdout.splitlines()
    created = rows("--limit", "1")[0]["created_at"]
    assert "CREATED (IST)" in india[0] and created.endswith("Z"), india
    moment = datetime.fromisoformat(created.replace("Z", "+00:00")) + timedelta(hours=5, minutes=30)
    assert moment.strftime("%Y-%m-%d %H:%M:%S") in india[1], (india, created)
    # Cancel: two ids, then a folder, then everything.
    first, second = (row["job_id"][:10] for row in rows("--all")[:2])
    done = run_cli(config, "cancel", first, second)
    assert done.returncode == 0 and done.stdout.count("  cancelled  ") == 2, done.stdout
    done = run_cli(config, "cancel", "--pending", str(daemon.input / "a"))
    left = [row for row in rows("--all") if row["state"] == "pending"]
    assert not [row for row in left if row["source"].startswith("a/")], done.stdout
    assert len(left) in (28, 29, 30) and "cancelled" in done.stdout.splitlines()[-1]
    done = run_cli(config, "cancel", "--all")
    assert done.stdout.splitlines()[-1].startswith(f"cancelled {len(left)} job")
    assert {row["state"] for row in rows("--all")} == {"cancelled"}
    assert daemon.stop() == 0
    # The tasks were dropped: workers started now convert nothing.
    workers = make_daemon("work")
    wait_for(lambda: status_json(config)["workers"]["alive"], 30, "workers")
    wait_for(lambda: status_json(config)["queue_depth"] == 0, 60, "the queue to drain")
    assert not list(daemon.output.rglob("*.md"))
    assert {row["state"] for row in rows("--all")} == {"cancelled"}
    assert workers.stop() == 0
    said = workers.log()  # huey's chatter stays out: the cancels were said when made
    assert "was revoked" not in said and "commands are available" not in said


def test_a_second_stop_signal_puts_the_running_job_back_at_once(make_daemon) -> None:
    config = {"workers": {"count": 1, "shutdown_timeout": 90}}
    daemon = make_daemon("run", config=config, faults="slow:slow*:60")
    drop(corpus("md/mixed.md"), daemon.input / "slow.md")
    wait_for(lambda: (daemon.sidecar("slow.md") or {}).get("state") == "processing", 60, "start")
    # On a terminal, the live view: the running job with its progress bar, redrawn in place.
    live = on_a_terminal(daemon.config_file, "status", "--watch", "--interval", "0.3", seconds=3)
    assert "slow.md" in live and "━" in live and "workers: running" in live, live[-800:]
    assert "\x1b[1A" in live  # the cursor moves up: the view is redrawn, not appended
    daemon.process.send_signal(signal.SIGINT)  # the first Ctrl-C: waits for the job
    said = wait_for(lambda: daemon.events("work.stopping"), 30, "what stopping waits for")[0]
    assert said["running"] == 1 and said["sources"] == ["slow.md"], said
    assert "Ctrl-C again" in said["hint"] and "back in the queue" in said["hint"]
    assert daemon.process.poll() is None  # still waiting: the job has a minute to go
    started = time.monotonic()
    assert daemon.stop() == 0  # the second Ctrl-C
    assert time.monotonic() - started < 30  # not the job's minute, nor the 90 s timeout
    assert daemon.sidecar("slow.md")["state"] == "pending"
    assert status_json(daemon.config_file)["queue_depth"] == 1


def test_lines_carry_their_syslog_priority_when_stdout_is_the_journal(tmp_path: Path) -> None:
    """As under systemd: JOURNAL_STREAM names stdout (its device and inode), and each line
    starts with `<N>`, which journald takes as its priority; JSON follows."""
    (tmp_path / "config.toml").write_text(
        "[watch]\nsettle_seconds = 0.3\n[workers]\ncount = 1\npoll_max_delay = 0.25\n"
    )
    log = tmp_path / "journal.log"
    with log.open("wb") as stdout:
        stat = os.fstat(stdout.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"}
        run = subprocess.Popen(
            hotfolder_argv("--config", str(tmp_path / "config.toml"), "run"),
            stdout=stdout,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            (tmp_path / "input").mkdir(exist_ok=True)
            (tmp_path / "input" / "bad.xyz").write_bytes(b"\x00 not a document")
            wait_for(lambda: "job.failed" in log.read_text(), 60, "the job to fail")
        finally:
            run.send_signal(signal.SIGINT)
            assert run.wait(60) == 0
    lines = log.read_text().splitlines()
    records = [(int(line[1]), json.loads(line[3:])) for line in lines if line.startswith("<")]
    assert len(records) == len(lines), [line for line in lines if not line.startswith("<")][:3]
    level = {"error": 3, "warning": 4, "info": 6, "debug": 7}
    assert all(priority == level[record["level"]] for priority, record in records)
    failed = [priority for priority, record in records if record["event"] == "job.failed"]
    assert failed == [4], failed  # `journalctl -p warning` shows it
    assert any(record["event"] == "work.started" and p == 6 for p, record in records)
    # Anywhere else (a terminal, a file, a pipe) the lines stay as they were.
    stream = io.StringIO()
    configure_logging(LogConfig(format="json"), "watch", stream)
    structlog.get_logger("test").warning("plain")
    assert stream.getvalue().startswith("{")


def test_huey_consumer_on_the_queue_module_says_to_run_hotfolder_work(tmp_path: Path) -> None:
    consumer = Path(sys.executable).parent / "huey_consumer"
    done = subprocess.run(
        [str(consumer), "watcher.queue.hotfolder"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode != 0 and "Run `hotfolder work` instead" in done.stderr, done.stderr
