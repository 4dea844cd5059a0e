"""Hooks and metrics against a real daemon: a real HTTP receiver on 127.0.0.1, real command
hooks, kill -9 mid-batch, and the metrics checked by promtool and against the sidecars."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.helpers import REPO, Daemon, alive, corpus, descendants, drop, wait_for

DOCS = ["md/mixed.md", "csv/csv-comma.csv", "docx/word_sample.docx", "html/example_03.html"]


class Receiver:
    """An HTTP server that records every POST, answering 503 to the first `failing`."""

    def __init__(self, failing: int = 0) -> None:
        self.failing = failing
        self.received: list[tuple[dict[str, str], bytes, int]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    code = 503 if receiver.failing > 0 else 200
                    receiver.failing -= 1
                    receiver.received.append((dict(self.headers), body, code))
                self.send_response(code)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def accepted(self) -> dict[str, dict]:
        """source -> the body of a delivery that was answered 200."""
        with self.lock:
            found = [json.loads(body) for _, body, code in self.received if code == 200]
        return {body["source"]: body for body in found}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made: list[Receiver] = []

    def make(failing: int = 0) -> Receiver:
        made.append(Receiver(failing))
        return made[-1]

    yield make  # type: ignore[misc]
    for one in made:
        one.close()


def test_webhooks_are_signed_and_retried_until_the_receiver_recovers(
    make_daemon, receiver, tmp_path: Path
) -> None:
    server = receiver(failing=3)
    secret = tmp_path / "webhook.secret"
    secret.write_text("s3cret-key\n")
    secret.chmod(0o600)
    hook = {"url": server.url, "secret_file": str(secret), "on": ["completed", "failed"]}
    daemon = make_daemon(
        "run", config={"hooks": {"webhook": [hook], "retry_backoff": 0.2, "max_attempts": 20}}
    )
    drop(corpus("md/mixed.md"), daemon.input / "a.md")
    drop(corpus("csv/csv-comma.csv"), daemon.input / "b.csv")
    (daemon.input / "broken.pdf").write_bytes(b"%PDF-1.7 this is not a PDF")
    wait_for(lambda: len(server.accepted()) == 3, 60, "three deliveries accepted")
    for headers, body, _ in server.received:
        expected = hmac.new(b"s3cret-key", body, hashlib.sha256).hexdigest()
        assert headers["X-Hotfolder-Signature"] == f"sha256={expected}"
        sent = json.loads(body)
        assert headers["X-Hotfolder-Event"] == sent["event"] == sent["state"]
        assert headers["X-Hotfolder-Delivery"] == sent["delivery"]
        assert "s3cret" not in body.decode()
    accepted = server.accepted()
    assert accepted["broken.pdf"]["event"] == "failed" and accepted["a.md"]["event"] == "completed"
    # The three refused attempts were tried again under the same delivery id.
    ids = [json.loads(body)["delivery"] for _, body, _ in server.received]
    assert len(ids) == 6 and len(set(ids)) == 3, ids
    for name in ("a.md", "b.csv", "broken.pdf"):
        entry = wait_for(
            lambda n=name: (
                (daemon.sidecar(n) or {}).get("hooks", {}).get("webhook-1", {})
                if (daemon.sidecar(n) or {}).get("hooks", {}).get("webhook-1", {}).get("state")
                == "delivered"
                else None
            ),
            20,
            f"{name}'s delivery recorded",
        )
        assert entry["delivery"] == accepted[name]["delivery"]
    assert "s3cret" not in daemon.log()
    assert daemon.stop() == 0


HOOK_SCRIPT = """
import json, os, sys
out = os.path.join(sys.argv[1], os.environ["HOTFOLDER_DELIVERY"] + ".json")
names = [k for k in os.environ if k.startswith("HOTFOLDER_")]
record = {"env": {k: os.environ[k] for k in names}, "stdin": json.loads(sys.stdin.read())}
open(out, "w").write(json.dumps(record))
print("indexed", os.environ["HOTFOLDER_SOURCE"])
"""


def test_command_hooks_see_the_documented_environment_and_a_hung_one_is_timed_out(
    make_daemon, tmp_path: Path
) -> None:
    seen = tmp_path / "seen"
    seen.mkdir()
    script = tmp_path / "hook.py"
    script.write_text(HOOK_SCRIPT)
    hooks = {
        "command": [
            {"name": "indexer", "argv": [sys.executable, str(script), str(seen)]},
            {"name": "stuck", "argv": ["sleep", "60"]},
        ],
        "timeout_seconds": 1,
        "max_attempts": 2,
        "retry_backoff": 0.2,
    }
    daemon = make_daemon("run", config={"hooks": hooks})
    drop(corpus("docx/word_sample.docx"), daemon.input / "docs" / "w.docx")
    drop(corpus("md/mixed.md"), daemon.input / "m.md")
    for name in ("docs/w.docx", "m.md"):
        assert daemon.wait_terminal(name)["state"] == "completed"
    wait_for(lambda: len(list(seen.iterdir())) == 2, 30, "the indexer to run twice")
    record = next(
        json.loads(p.read_text())
        for p in seen.iterdir()
        if json.loads(p.read_text())["env"]["HOTFOLDER_SOURCE"] == "docs/w.docx"
    )
    env = record["env"]
    sidecar = daemon.output / "docs" / "w.docx.status.json"
    assert env["HOTFOLDER_EVENT"] == env["HOTFOLDER_STATE"] == "completed"
    assert env["HOTFOLDER_SIDECAR"] == str(sidecar)
    assert env["HOTFOLDER_OUTPUT_MD"] == str(daemon.output / "docs" / "w.docx.md")
    assert env["HOTFOLDER_OUTPUT_JSON"] == str(daemon.output / "docs" / "w.docx.json")
    assert env["HOTFOLDER_ERROR_TYPE"] == ""
    assert env["HOTFOLDER_JOB_ID"] == record["stdin"]["job_id"]
    assert record["stdin"]["delivery"] == env["HOTFOLDER_DELIVERY"]
    assert any(e["output"] == "indexed m.md" for e in daemon.events("hook.output"))

    def stuck_given_up(name: str) -> dict | None:
        entry = (daemon.sidecar(name) or {}).get("hooks", {}).get("stuck", {})
        return entry if entry.get("state") == "given_up" else None

    entry = wait_for(lambda: stuck_given_up("m.md"), 30, "the hung hook to be given up")
    assert entry["attempts"] == 2 and "timed out" in entry["last_error"]
    assert daemon.events("hook.given_up")
    report = json.loads(
        subprocess.run(
            [*daemon_cli(daemon), "show", "m.md", "--json"], capture_output=True, text=True
        ).stdout
    )
    assert report["hooks"]["indexer"]["state"] == "delivered"
    assert daemon.stop() == 0


def test_the_index_chunks_recipe_keeps_exactly_the_chunks_on_disk(
    make_daemon, tmp_path: Path
) -> None:
    """deploy/hooks/index_chunks.py as the README shows it: each completed document's
    chunks are searchable; a new version of a file replaces its chunks, leaving none of the
    old ones; a repeated delivery adds nothing."""
    index = tmp_path / "chunks.sqlite"
    recipe = [sys.executable, str(REPO / "deploy/hooks/index_chunks.py"), "--db", str(index)]
    hooks = {"command": [{"name": "index-chunks", "argv": recipe}]}
    daemon = make_daemon("run", config={"conversion": {"to": ["md", "chunks"]}, "hooks": hooks})

    def indexed(name: str, job_id: str | None = None) -> dict | None:
        status = daemon.sidecar(name) or {}
        entry = status.get("hooks", {}).get("index-chunks", {})
        fresh = job_id is None or status.get("job_id") != job_id
        return status if entry.get("state") == "delivered" and fresh else None

    def search(words: str) -> list[dict]:
        found = subprocess.run([*recipe, "--search", words], capture_output=True, text=True)
        assert found.returncode == 0, found.stderr
        return [json.loads(line) for line in found.stdout.splitlines()]

    def rows(source: str) -> list[tuple[str, str]]:
        with sqlite3.connect(index) as db:
            query = "SELECT chunk_id, job_id FROM chunks WHERE source = ? ORDER BY chunk_id"
            return db.execute(query, (source,)).fetchall()

    def on_disk(name: str) -> list[tuple[str, str]]:
        lines = (daemon.output / f"{name}.chunks.jsonl").read_text().splitlines()
        return sorted((c["chunk_id"], c["job_id"]) for c in map(json.loads, lines))

    drop(corpus("docx/word_sample.docx"), daemon.input / "w.docx")
    drop(corpus("md/wiki.md"), daemon.input / "notes.md")
    first = {
        n: wait_for(lambda n=n: indexed(n), 60, f"{n} indexed") for n in ("w.docx", "notes.md")
    }
    for name in first:
        assert rows(name) == on_disk(name) and rows(name), name
    hits = search("Swimming lake")
    assert hits and hits[0]["source"] == "w.docx" and hits[0]["headings"], hits
    # A new version of notes.md: its chunks replace the old ones.
    (daemon.input / "notes.md").write_text("# Zanzibar\n\nThe spice islands of Zanzibar.\n")
    second = wait_for(lambda: indexed("notes.md", first["notes.md"]["job_id"]), 60, "re-indexed")
    assert rows("notes.md") == on_disk("notes.md")
    assert {job for _, job in rows("notes.md")} == {second["job_id"]}
    assert [hit["source"] for hit in search("spice Zanzibar")] == ["notes.md"]
    assert search("Armonk") == []  # the old version's words are gone
    # The same delivery again (a hook is delivered at least once): nothing is added.
    body = json.dumps(second)
    env = {**os.environ, "HOTFOLDER_SIDECAR": str(daemon.output / "notes.md.status.json")}
    again = subprocess.run(recipe, input=body, env=env, capture_output=True, text=True)
    assert again.returncode == 0 and rows("notes.md") == on_disk("notes.md"), again.stderr
    assert daemon.stop() == 0


def daemon_cli(daemon: Daemon) -> list[str]:
    from tests.helpers import hotfolder_argv

    return hotfolder_argv("--config", str(daemon.config_file))


def test_kill9_of_the_whole_daemon_loses_no_delivery(make_daemon, receiver, tmp_path: Path) -> None:
    server = receiver()
    config = {"hooks": {"webhook": [{"url": server.url}], "retry_backoff": 0.2}}
    first = make_daemon("run", config=config, faults="slow:f*:0.5")
    names = []
    for n in range(12):
        name = f"f{n:02d}{Path(DOCS[n % len(DOCS)]).suffix}"
        drop(corpus(DOCS[n % len(DOCS)]), first.input / name)
        names.append(name)
    wait_for(lambda: len(server.accepted()) >= 3, 60, "some deliveries before the kill")
    assert first.process is not None
    everything = [first.process.pid, *descendants(first.process.pid)]
    for pid in everything:  # kill -9 of every process at once, as a power cut would
        os.kill(pid, signal.SIGKILL)
    first.process.wait(10)
    wait_for(lambda: not any(alive(pid) for pid in everything), 15, "every process gone")
    assert len(server.accepted()) < len(names), "the kill came too late to prove anything"
    again = make_daemon("run", root=tmp_path, config=config)
    wait_for(lambda: set(server.accepted()) == set(names), 90, "every outcome delivered")
    by_source: dict[str, set[str]] = {}
    for _, body, _ in server.received:
        sent = json.loads(body)
        by_source.setdefault(sent["source"], set()).add(sent["delivery"])
    for name in names:
        final = again.wait_terminal(name)
        # Delivered at least once; a repeat carries the same id (one outcome per file here).
        assert by_source[name] == {final["hooks"]["webhook-1"]["delivery"]}, by_source[name]
    wait_for(lambda: again.events("watch.started"), 30, "the second daemon to be up")
    assert again.stop() == 0


def promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    installed = subprocess.run(
        ["apt-get", "install", "-y", "-q", "prometheus"], capture_output=True, text=True
    )
    found = shutil.which("promtool")
    if not found:
        pytest.skip(f"promtool is not installed and could not be: {installed.stderr[-300:]}")
    return found


def test_metrics_pass_promtool_and_match_the_sidecars(make_daemon, tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    textfile = tmp_path / "metrics" / "hotfolder.prom"
    metrics = {"textfile": str(textfile), "listen": f"127.0.0.1:{port}", "interval": 1}
    daemon = make_daemon("run", config={"metrics": metrics})
    drop(corpus("md/mixed.md"), daemon.input / "a.md")
    drop(corpus("pdf/multi_page.pdf"), daemon.input / "b.pdf")
    (daemon.input / "bad.pdf").write_bytes(b"%PDF-1.7 not really")
    for name in ("a.md", "b.pdf", "bad.pdf"):
        daemon.wait_terminal(name)

    def completed_in(text: str) -> bool:
        return 'hotfolder_jobs{state="completed"} 2.0' in text

    wait_for(lambda: textfile.exists() and completed_in(textfile.read_text()), 30, "the file")

    def scrape() -> bytes | None:
        """The endpoint's text once the workers' heartbeat is in (written every few s)."""
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
        return text if b"hotfolder_workers_up{" in text else None

    served = wait_for(scrape, 30, "a scrape with the workers in it")
    tool = promtool()
    for text in (textfile.read_bytes(), served):
        checked = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True)
        assert checked.returncode == 0, checked.stderr.decode() + checked.stdout.decode()
    text = served.decode()
    states = daemon.states()
    assert list(states.values()).count("completed") == 2 and completed_in(text)
    assert 'hotfolder_jobs{state="failed"} 1.0' in text
    failed = [line for line in text.splitlines() if 'error_type="corrupt"' in line]
    assert len(failed) == 1 and failed[0].startswith("hotfolder_jobs_finished_total{"), failed
    assert 'state="failed"' in failed[0] and failed[0].endswith(" 1.0"), failed
    pages = sum(s["pages"] or 0 for s in map(daemon.sidecar, ("a.md", "b.pdf")))
    assert f"hotfolder_pages_converted_total {float(pages)}" in text
    assert "hotfolder_job_duration_seconds_bucket" in text and "hotfolder_build_info{" in text
    assert "hotfolder_queue_depth 0.0" in text and "hotfolder_workers_up{" in text
    assert daemon.stop() == 0


def test_doctor_refuses_unsafe_hook_programs_and_secrets(tmp_path: Path) -> None:
    from watcher.commands.doctor import check_hooks
    from watcher.settings import load_settings

    (tmp_path / "input").mkdir()
    planted = tmp_path / "input" / "hook.sh"
    planted.write_text("#!/bin/sh\n")
    planted.chmod(0o775)
    secret = tmp_path / "webhook.secret"
    secret.write_text("key\n")
    secret.chmod(0o644)
    config = tmp_path / "config.toml"
    config.write_text(
        f'[[hooks.command]]\nargv = ["{planted}"]\n'
        f'[[hooks.webhook]]\nurl = "http://127.0.0.1:1/"\nsecret_file = "{secret}"\n'
    )
    found = check_hooks(load_settings(config))
    assert [ok for ok, _, _ in found] == [False, False], found
    safe = tmp_path / "bin" / "hook.sh"
    safe.parent.mkdir()
    planted.rename(safe)
    safe.chmod(0o755)
    secret.chmod(0o600)
    config.write_text(config.read_text().replace(str(planted), str(safe)))
    assert all(ok for ok, _, _ in check_hooks(load_settings(config)))
