"""The operator's CLI, driven as a person would: against a real daemon and real sidecars."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

from handlers.source import job_id
from tests.helpers import (
    corpus,
    drop,
    hotfolder_argv,
    long_pdf,
    run_cli,
    status_json,
    wait_for,
)


def test_status_jobs_and_show_against_a_running_daemon(make_daemon) -> None:
    daemon = make_daemon("run")
    drop(corpus("docx/word_sample.docx"), daemon.input / "a.docx")
    drop(corpus("csv/csv-comma.csv"), daemon.input / "sub" / "b.csv")
    (daemon.input / "bad.xyz").write_bytes(b"\x00 not a document")
    for rel in ("a.docx", "sub/b.csv", "bad.xyz"):
        daemon.wait_terminal(rel)
    report = wait_for(
        lambda: (r := status_json(daemon.config_file))["workers"]["alive"] and r, 20, "a heartbeat"
    )
    assert report["states"] == {
        "pending": 0,
        "processing": 0,
        "completed": 2,
        "failed": 1,
        "cancelled": 0,
    }
    assert report["total"] == 3 and report["queue_depth"] == 0
    assert report["watcher"]["alive"] and len(report["workers"]["workers"]) == 2
    assert report["jobs_per_minute"] == 0.4  # 2 completed within the 5-minute window
    table = run_cli(daemon.config_file, "status").stdout
    assert "watcher: running" in table and "completed          2" in table

    rows = json.loads(run_cli(daemon.config_file, "jobs", "--json").stdout)
    assert {r["source"] for r in rows} == {"a.docx", "sub/b.csv", "bad.xyz"}
    failed = json.loads(run_cli(daemon.config_file, "jobs", "--state", "failed", "--json").stdout)
    assert [(r["source"], r["error_type"]) for r in failed] == [("bad.xyz", "unsupported_format")]
    assert (
        len(json.loads(run_cli(daemon.config_file, "jobs", "--limit", "1", "--json").stdout)) == 1
    )
    assert json.loads(run_cli(daemon.config_file, "jobs", "--since", "1h", "--json").stdout)
    listing = run_cli(daemon.config_file, "jobs").stdout.splitlines()
    assert listing[0].startswith("JOB ID") and len(listing) == 4

    sidecar = daemon.sidecar("sub/b.csv")
    by_prefix = run_cli(daemon.config_file, "show", sidecar["job_id"][:6], "--json")
    assert json.loads(by_prefix.stdout) == sidecar
    by_path = run_cli(daemon.config_file, "show", str(daemon.input / "sub" / "b.csv"))
    assert f"job_id          {sidecar['job_id']}" in by_path.stdout
    assert "md    sub/b.csv.md" in by_path.stdout
    shown = run_cli(daemon.config_file, "show", "bad.xyz").stdout
    assert "error type      unsupported_format" in shown
    unknown = run_cli(daemon.config_file, "show", "ffffffffffff")
    assert unknown.returncode == 1 and "no job with id 'ffffffffffff'" in unknown.stderr
    assert daemon.stop() == 0
    stopped = status_json(daemon.config_file)
    assert not stopped["watcher"]["alive"] and not stopped["workers"]["alive"]
    assert "NOT RUNNING" in run_cli(daemon.config_file, "status").stdout


def test_ambiguous_id_prefix_is_reported(make_daemon) -> None:
    sha = hashlib.sha256(corpus("csv/csv-tab.csv").read_bytes()).hexdigest()
    names, first = [], {}
    for n in range(200):  # two file names whose job ids share their first two characters
        name = f"t{n}.csv"
        prefix = job_id(name, sha)[:2]
        if prefix in first:
            names = [first[prefix], name]
            break
        first[prefix] = name
    daemon = make_daemon("run")
    for name in names:
        drop(corpus("csv/csv-tab.csv"), daemon.input / name)
    for name in names:
        daemon.wait_terminal(name)
    prefix = job_id(names[0], sha)[:2]
    answer = run_cli(daemon.config_file, "show", prefix)
    assert answer.returncode == 1 and "ambiguous" in answer.stderr
    for name in names:
        assert job_id(name, sha) in answer.stderr
    assert daemon.stop() == 0


def test_live_status_view_shows_progress_bars(make_daemon) -> None:
    daemon = make_daemon("run", config={"workers": {"count": 1}})
    long_pdf(daemon.input / "long.pdf", copies=10)
    daemon.wait_state("long.pdf", ("processing",))
    view = subprocess.Popen(
        hotfolder_argv(
            "--config", str(daemon.config_file), "status", "--watch", "--interval", "0.3"
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(view.stdout.readline, "")))
    reader.start()

    def pages_done() -> list[int]:
        bars = [line for line in list(lines) if "long.pdf" in line and "/180 pages" in line]
        return [int(line.split("/180 pages")[0].rsplit(" ", 1)[1]) for line in bars]

    # Until the bar has moved in at least three frames (however busy the machine is).
    wait_for(lambda: len(set(pages_done())) >= 3, 60, "the progress bar to move")
    view.send_signal(signal.SIGINT)
    view.wait(timeout=10)
    reader.join(10)
    assert view.returncode == 0, view.stderr.read() if view.stderr else ""
    assert "".join(lines).count("hotfolder status") >= 3
    done = pages_done()
    assert done == sorted(done) and done[-1] > done[0], done  # the bar moved, forward only
    assert daemon.stop() == 0


def test_enqueue_priorities_and_force(make_daemon, tmp_path) -> None:
    root = tmp_path / "hf"
    config = {"queue": {"priority_rules": {"urgent/*": 7}}, "workers": {"count": 1}}
    watch = make_daemon("watch", root=root, config=config)
    outside = tmp_path / "outside"
    (outside / "batch").mkdir(parents=True)
    for name in ("a.csv", "b.csv"):
        shutil.copyfile(
            corpus(f"csv/csv-{'comma' if name == 'a.csv' else 'tab'}.csv"), outside / "batch" / name
        )
    shutil.copyfile(corpus("docx/word_sample.docx"), outside / "one.docx")
    low = run_cli(watch.config_file, "enqueue", str(outside / "batch"), "--priority", "-3")
    assert low.returncode == 0 and "2 files: 2 enqueued" in low.stdout, low
    assert (watch.input / "batch" / "a.csv").exists()  # copied in; the original stays
    assert (outside / "batch" / "a.csv").exists()
    high = run_cli(watch.config_file, "enqueue", str(outside / "one.docx"), "--priority", "9")
    assert high.returncode == 0
    drop(corpus("html/example_03.html"), watch.input / "urgent" / "page.html")
    watch.wait_state("urgent/page.html", ("pending",))
    assert watch.sidecar("urgent/page.html")["priority"] == 7
    assert watch.sidecar("batch/a.csv")["priority"] == -3
    work = make_daemon("work", root=root, config=config)
    order = []
    for rel in ("one.docx", "urgent/page.html", "batch/a.csv", "batch/b.csv"):
        order.append((watch.wait_terminal(rel)["started_at"], rel))
    assert [rel for _, rel in sorted(order)][:2] == ["one.docx", "urgent/page.html"]

    again = run_cli(watch.config_file, "enqueue", str(watch.input / "one.docx"))
    assert "1 unchanged" in again.stdout
    forced = run_cli(watch.config_file, "enqueue", str(watch.input / "one.docx"), "--force")
    assert "1 enqueued" in forced.stdout
    wait_for(
        lambda: len([e for e in work.events("job.started") if e["source"] == "one.docx"]) == 2,
        30,
        "re-conversion",
    )
    assert watch.wait_state("one.docx", ("completed",))["attempts"] == 1
    clash = run_cli(watch.config_file, "enqueue", str(outside / "one.docx"))
    assert clash.returncode == 1 and "already exists" in clash.stderr
    assert work.stop() == 0 and watch.stop() == 0


def test_cancel_pending_and_processing_then_retry(make_daemon, tmp_path) -> None:
    watch = make_daemon("watch")
    long_pdf(watch.input / "long.pdf", copies=10)
    drop(corpus("docx/word_sample.docx"), watch.input / "later.docx")
    watch.wait_state("later.docx", ("pending",))
    later = watch.sidecar("later.docx")
    answer = run_cli(watch.config_file, "cancel", later["job_id"][:8])
    assert answer.returncode == 0 and "cancelled" in answer.stdout
    assert watch.sidecar("later.docx")["state"] == "cancelled"

    work = make_daemon("work", root=tmp_path, config={"workers": {"count": 1}})
    watch.wait_state("long.pdf", ("processing",))
    wait_for(lambda: (watch.sidecar("long.pdf")["pages_done"] or 0) > 5, 30, "some pages")
    answer = run_cli(watch.config_file, "cancel", "long.pdf")
    assert "cancel requested" in answer.stdout
    cancelled = watch.wait_state("long.pdf", ("cancelled",), timeout=30)
    assert cancelled["pages_done"] < 180 and cancelled["outputs"] == {}
    assert not (watch.output / "long.pdf.md").exists()
    time.sleep(1.5)  # the cancelled pending job never runs, even though its task was queued
    assert not [e for e in work.events("job.started") if e["source"] == "later.docx"]
    assert run_cli(watch.config_file, "cancel", "long.pdf").returncode == 1  # already ended

    retried = run_cli(watch.config_file, "retry", "later.docx")
    assert retried.returncode == 0 and "retry queued" in retried.stdout
    done = watch.wait_state("later.docx", ("completed",))
    assert done["attempts"] == 1
    (watch.input / "bad.xyz").write_bytes(b"\x00")
    first = watch.wait_state("bad.xyz", ("failed",))
    assert run_cli(watch.config_file, "retry", "--failed").returncode == 0
    second = wait_for(
        lambda: (
            (s := watch.sidecar("bad.xyz"))["state"] == "failed"
            and s["finished_at"] != first["finished_at"]
            and s
        ),
        30,
        "a second try",
    )
    assert second["attempts"] == 1 and second["error"]["type"] == "unsupported_format"
    assert work.stop() == 0 and watch.stop() == 0


def test_purge_forgets_old_finished_jobs(make_daemon) -> None:
    daemon = make_daemon("run", config={"jobs": {"on_success": "archive"}})
    drop(corpus("csv/csv-comma.csv"), daemon.input / "gone.csv")
    drop(corpus("csv/csv-tab.csv"), daemon.input / "kept.csv")
    assert daemon.wait_terminal("gone.csv")["state"] == "completed"
    assert daemon.wait_terminal("kept.csv")["state"] == "completed"
    wait_for(lambda: not (daemon.input / "gone.csv").exists(), 10, "archiving")
    shutil.copyfile(corpus("csv/csv-tab.csv"), daemon.input / "kept.csv")  # back in the inbox
    time.sleep(0.5)
    dry = run_cli(daemon.config_file, "purge", "--older-than", "0s", "--outputs", "--dry-run")
    assert "would forget 1 job finished" in dry.stdout and "  gone.csv" in dry.stdout, dry.stdout
    assert daemon.sidecar("gone.csv") is not None
    real = run_cli(daemon.config_file, "purge", "--older-than", "0s", "--outputs")
    assert real.returncode == 0 and "forgot" in real.stdout
    assert daemon.sidecar("gone.csv") is None and not (daemon.output / "gone.csv.md").exists()
    assert daemon.sidecar("kept.csv") is not None  # its input is still there
    assert "kept 1" in real.stdout
    rows = json.loads(run_cli(daemon.config_file, "jobs", "--json").stdout)
    assert [r["source"] for r in rows] == ["kept.csv"]
    bad = run_cli(daemon.config_file, "purge", "--older-than", "soon")
    assert bad.returncode == 2 and "not a duration" in bad.stderr  # a usage error
    assert daemon.stop() == 0


def test_doctor_and_convert(make_daemon, tmp_path) -> None:
    daemon = make_daemon("run")
    wait_for(lambda: status_json(daemon.config_file)["workers"]["alive"], 30, "workers")
    wait_for(lambda: status_json(daemon.config_file)["watcher"]["alive"], 30, "watcher")
    healthy = run_cli(daemon.config_file, "doctor", timeout=120)
    assert healthy.returncode == 0 and "all checks passed" in healthy.stdout, healthy.stdout
    assert "ok    PDF backend imports" in healthy.stdout
    assert "inotify watches:" in healthy.stdout  # observer = "auto" on a local disk: inotify
    assert daemon.stop() == 0
    down = run_cli(daemon.config_file, "doctor", timeout=120)
    assert down.returncode == 1
    assert "FAIL  watcher running" in down.stdout and "-> start it" in down.stdout

    out = tmp_path / "tryout"

    def convert(source: Path) -> subprocess.CompletedProcess[str]:
        argv = ("convert", str(source), "-o", str(out))
        return run_cli(daemon.config_file, *argv, timeout=120)

    converted = convert(corpus("pdf/multi_page.pdf"))
    assert converted.returncode == 0, converted.stderr
    assert len((out / "multi_page.pdf.md").read_text()) == 9438
    assert json.loads((out / "multi_page.pdf.status.json").read_text())["state"] == "completed"
    photo = convert(corpus("webp/webp-test.webp"))  # read by OCR
    assert photo.returncode == 0 and "Docling bundles" in (out / "webp-test.webp.md").read_text()
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(corpus("pdf/multi_page.pdf").read_bytes()[:3000])
    failed = convert(broken)
    assert failed.returncode == 1 and "failed: corrupt" in failed.stderr, failed.stderr
    answer = next(line for line in failed.stderr.splitlines() if line.startswith("failed: "))
    assert "broken.pdf" in answer and "scratch" not in answer  # names the input, not its copy
    assert failed.stderr.strip() == answer  # said once, not three times


def test_index_is_rebuilt_from_the_sidecars(make_daemon) -> None:
    daemon = make_daemon("run")
    for i in range(3):
        drop(corpus("csv/csv-comma.csv"), daemon.input / f"c{i}.csv")
    for i in range(3):
        daemon.wait_terminal(f"c{i}.csv")
    (daemon.root / "state" / "index.db").unlink()
    for extra in ("-wal", "-shm"):
        (daemon.root / "state" / f"index.db{extra}").unlink(missing_ok=True)
    wait_for(
        lambda: status_json(daemon.config_file)["states"]["completed"] == 3,
        20,
        "the reconciler to reindex",
    )
    assert daemon.stop() == 0
