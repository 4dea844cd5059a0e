"""Hostile and careless input, round two, against a real daemon: content written over while
it converts, full and locked state, cancel against the hard timeout, huge and deep files,
links planted in the output folder. None of it may lose a file, stop the daemon or leave a
job without a terminal record."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import corpus, drop, fill, run_cli, small_tmpfs, wait_for


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("action", ["delete", "archive"])
def test_content_written_over_while_it_converts_is_never_disposed_of(
    make_daemon, action: str
) -> None:
    daemon = make_daemon("run", faults="slow:over*:3", config={"jobs": {"on_success": action}})
    path = daemon.input / "over.md"
    path.write_bytes(b"# Old\n\nold content\n")
    first = daemon.wait_state("over.md", ("processing",))
    inode = path.stat().st_ino
    new = b"# New\n\nnew content, written in place\n"
    with path.open("r+b") as handle:  # the same inode, as an editor saving in place would
        handle.write(new)
        handle.truncate()
    assert path.stat().st_ino == inode
    final = wait_for(
        lambda: (
            (s := daemon.sidecar("over.md"))
            and s["state"] == "completed"
            and s["sha256"] != first["sha256"]
            and s["disposition"]
            and s
        ),
        60,
        "the new content to be converted and disposed of",
    )
    assert final["sha256"] == sha256_of(new)
    assert "new content" in (daemon.output / "over.md.md").read_text()
    assert not path.exists()  # deleted or archived: after its own job
    if action == "archive":
        archived = sorted((daemon.root / "archive").rglob("*"))
        assert [p.name for p in archived] == ["over.md"], archived  # once, the new bytes
        assert archived[0].read_bytes() == new
    kept = [e for e in daemon.events("job.completed") if e["job_id"] == first["job_id"]]
    assert len(kept) == 1  # the old content completed too, and was left in place
    assert daemon.stop() == 0


def test_a_cancel_wins_over_the_hard_timeout(make_daemon) -> None:
    daemon = make_daemon(
        "run",
        faults="hang:hang*",
        config={"workers": {"count": 1}, "jobs": {"hard_timeout": 3, "max_attempts": 3}},
    )
    drop(corpus("pdf/multi_page.pdf"), daemon.input / "hang.pdf")
    daemon.wait_state("hang.pdf", ("processing",))
    asked = run_cli(daemon.config_file, "cancel", "hang.pdf")
    assert asked.returncode == 0 and "cancel requested" in asked.stdout, asked
    final = daemon.wait_terminal("hang.pdf", timeout=60)
    assert final["state"] == "cancelled" and final["attempts"] == 1, final
    assert daemon.events("job.hard_timeout")  # the worker was stuck in native code
    assert not list((daemon.root / "state" / "locks").glob("*.cancel"))
    drop(corpus("docx/word_sample.docx"), daemon.input / "next.docx")
    assert daemon.wait_terminal("next.docx")["state"] == "completed"
    assert len(daemon.events("job.started")) == 2  # hang.pdf once, next.docx once
    assert daemon.stop() == 0


def test_a_full_state_disk_stops_no_thread_and_work_resumes_when_space_returns(
    make_daemon, tmp_path: Path
) -> None:
    with small_tmpfs(tmp_path / "state", "8m") as state:
        daemon = make_daemon("run", config={"jobs": {"max_attempts": 20, "retry_backoff": 0.2}})
        drop(corpus("md/mixed.md"), daemon.input / "before.md")
        assert daemon.wait_terminal("before.md")["state"] == "completed"
        filler = fill(state)
        drop(corpus("docx/word_sample.docx"), daemon.input / "during.docx")
        drop(corpus("csv/csv-comma.csv"), daemon.input / "during.csv")
        failures = wait_for(
            lambda: daemon.events("reconcile.pass_failed"), 30, "a reconciler pass to fail"
        )
        assert "full" in failures[0]["error"]
        # Every process stays up while the disk is full, through several passes.
        wait_for(
            lambda: len(daemon.events("reconcile.pass_failed")) and daemon.sidecar("during.csv"),
            30,
            "intake while the state disk is full",
        )
        daemon.check_running()
        filler.unlink()
        for name in ("during.docx", "during.csv"):
            assert daemon.wait_terminal(name, timeout=90)["state"] == "completed"
        wait_for(lambda: daemon.events("reconcile.pass_failed.over"), 30, "a pass to succeed")
        daemon.check_running()
        assert len(daemon.events("reconcile.pass_failed")) <= 3  # said once, not every pass
        assert daemon.stop() == 0


HOLD_LOCK = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("pragma locking_mode=exclusive")
db.execute("begin exclusive")
db.execute("create table if not exists held (x)")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("commit")
"""


def test_a_queue_locked_at_start_is_waited_out_and_not_called_damaged(
    make_daemon, tmp_path: Path
) -> None:
    from watcher.backends.sqlite import SqliteBackend
    from watcher.settings import load_settings

    config = tmp_path / "config.toml"
    config.write_text("")
    SqliteBackend(load_settings(config)).huey()  # the queue of an earlier run
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path / "state" / "queue.db"), "25"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        daemon = make_daemon("run")
        drop(corpus("md/mixed.md"), daemon.input / "waits.md")
        locked = wait_for(lambda: daemon.events("queue.locked"), 30, "the lock to be noticed")
        assert "locked" in locked[0]["error"]
        report = run_cli(daemon.config_file, "status", "--json")
        assert report.returncode in (0, 3), report.stderr  # 3: the workers wait for the lock
        error = json.loads(report.stdout)["queue_error"]
        assert "locked" in error and "damaged" not in error, error
        daemon.check_running()
        holder.wait(60)
        assert daemon.wait_terminal("waits.md", timeout=90)["state"] == "completed"
        assert daemon.events("queue.locked.over")
        assert daemon.stop() == 0
    finally:
        holder.kill()
        holder.wait()


def test_a_link_planted_in_the_output_folder_still_ends_with_a_record(
    make_daemon, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    daemon = make_daemon("run")
    daemon.output.mkdir(parents=True, exist_ok=True)
    (daemon.output / "sub").symlink_to(elsewhere)
    drop(corpus("md/mixed.md"), daemon.input / "sub" / "x.md")
    drop(corpus("md/wiki.md"), daemon.input / "fine.md")
    assert daemon.wait_terminal("fine.md")["state"] == "completed"
    shown = wait_for(
        lambda: (
            (r := run_cli(daemon.config_file, "show", "sub/x.md", "--json")).returncode == 0
            and json.loads(r.stdout)["state"] in ("completed", "failed", "cancelled")
            and json.loads(r.stdout)
        ),
        60,
        "a terminal record for sub/x.md",
    )
    assert shown["state"] == "failed" and shown["error"]["type"] == "unsafe_path", shown
    assert "link" in shown["error"]["message"]
    assert list(elsewhere.iterdir()) == []  # nothing written through the link
    assert daemon.stop() == 0


def test_a_huge_file_is_refused_by_its_size_before_a_byte_is_read(
    make_daemon, tmp_path: Path
) -> None:
    daemon = make_daemon("run", config={"jobs": {"max_file_mb": 10}})
    huge = daemon.input / "huge.pdf"
    subprocess.run(["truncate", "-s", "4000M", str(huge)], check=True)  # sparse: no blocks
    drop(corpus("md/mixed.md"), daemon.input / "behind.md")
    refused = daemon.wait_terminal("huge.pdf", timeout=30)
    assert refused["state"] == "failed" and refused["error"]["type"] == "too_large", refused
    assert refused["sha256"] == "" and refused["size_bytes"] == 4000 * 2**20  # never hashed
    assert daemon.wait_terminal("behind.md", timeout=30)["state"] == "completed"
    started = [e["source"] for e in daemon.events("job.started")]
    assert started == ["behind.md"]  # no worker ever opened the huge file
    outside = tmp_path / "outside.pdf"
    subprocess.run(["truncate", "-s", "20M", str(outside)], check=True)
    enqueued = run_cli(daemon.config_file, "enqueue", str(outside))
    assert enqueued.returncode == 1 and "too_large" in enqueued.stderr, enqueued
    assert not (daemon.input / "outside.pdf").exists()  # refused before it was copied in
    assert daemon.stop() == 0


def test_deeply_nested_html_fails_in_seconds_not_at_the_hard_timeout(make_daemon) -> None:
    daemon = make_daemon("run")
    deep = "<html><body>" + "<div>" * 100_000 + "x" + "</div>" * 100_000 + "</body></html>"
    (daemon.input / "deep.html").write_text(deep)
    final = daemon.wait_terminal("deep.html", timeout=30)
    assert final["state"] == "failed" and final["error"]["type"] == "too_large", final
    assert "nests its elements" in final["error"]["message"] and final["attempts"] == 1
    assert not daemon.events("job.hard_timeout")
    assert daemon.stop() == 0


def test_small_edges_get_one_clear_line(make_daemon, tmp_path: Path) -> None:
    daemon = make_daemon("run")
    drop(corpus("md/mixed.md"), daemon.input / "a.md")
    daemon.wait_terminal("a.md")
    second = make_daemon("run")  # the same folders
    assert second.process is not None and second.process.wait(30) == 1
    refused = second.events("run.already_running")
    assert refused and refused[0]["holder"] == f"pid {daemon.process.pid}", second.log()[-2000:]
    for args in (("jobs", "--since", "99999999999999w"), ("purge", "--older-than", "1e300d")):
        done = run_cli(daemon.config_file, *args)  # a usage error: the usage, then one line
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert "duration" in done.stderr.strip().splitlines()[-1], done.stderr
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for odd in (fifo, Path("/dev/zero")):
        done = run_cli(daemon.config_file, "convert", str(odd), "-o", str(tmp_path / "out"))
        assert done.returncode == 1 and "not a regular file" in done.stderr, done.stderr
    assert daemon.stop() == 0


def test_a_stop_with_a_worker_stuck_in_native_code_takes_seconds(make_daemon, tmp_path) -> None:
    stuck = make_daemon(
        "run", faults="deaf:hang*", config={"workers": {"count": 1, "shutdown_timeout": 2}}
    )
    drop(corpus("pdf/multi_page.pdf"), stuck.input / "hang.pdf")
    stuck.wait_state("hang.pdf", ("processing",))
    began = time.monotonic()
    assert stuck.stop() == 0
    # The shutdown timeout, the 5 s grace for the stuck worker, and slack for a loaded
    # machine: seconds, not the 900 s hard timeout nor systemd's 90 s stop timeout.
    assert time.monotonic() - began < 2 + 5 + 13
    assert stuck.events("worker.killed_at_stop") and not stuck.events("run.child_killed")
    put_back = stuck.sidecar("hang.pdf")
    assert put_back["state"] == "pending" and put_back["attempts"] == 0, put_back
    again = make_daemon("run", root=tmp_path)  # without the fault: it converts
    assert again.wait_terminal("hang.pdf")["state"] == "completed"
    assert again.stop() == 0


def test_an_input_folder_replaced_or_removed_is_watched_anew(make_daemon) -> None:
    daemon = make_daemon("run", config={"jobs": {"reconcile_interval": 300}})  # no rescans
    drop(corpus("md/mixed.md"), daemon.input / "first.md")
    assert daemon.wait_terminal("first.md")["state"] == "completed"
    daemon.input.rename(daemon.root / "input.old")
    daemon.input.mkdir()
    wait_for(lambda: daemon.events("watch.input_replaced"), 10, "the new folder to be noticed")
    drop(corpus("md/wiki.md"), daemon.input / "second.md")
    assert daemon.wait_terminal("second.md", timeout=20)["state"] == "completed"
    (daemon.input / "second.md").unlink()
    daemon.input.rmdir()
    wait_for(lambda: daemon.events("watch.input_missing"), 10, "the missing folder to be noticed")
    daemon.check_running()
    daemon.input.mkdir()
    drop(corpus("csv/csv-comma.csv"), daemon.input / "third.csv")
    assert daemon.wait_terminal("third.csv", timeout=20)["state"] == "completed"
    assert daemon.stop() == 0


def test_a_full_output_disk_ends_a_job_after_its_attempts_with_one_sentence(
    make_daemon, tmp_path: Path
) -> None:
    with small_tmpfs(tmp_path / "output", "1m") as output:
        fill(output, leave=24 * 1024)  # room for sidecars, not for outputs
        daemon = make_daemon("run", config={"jobs": {"max_attempts": 2, "retry_backoff": 0.2}})
        drop(corpus("pdf/multi_page.pdf"), daemon.input / "r.pdf")
        final = daemon.wait_terminal("r.pdf", timeout=60)
        assert final["state"] == "failed" and final["attempts"] == 2, final
        message = final["error"]["message"]
        assert message.count("Gave up after 2 attempts") == 1, message
        assert "will be retried" not in message and str(output) in message, message
        assert len(daemon.events("job.started")) == 2
        assert daemon.stop() == 0
