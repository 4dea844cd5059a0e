"""How files arrive: slowly, by mv, as whole folders, twice, as junk; all through the real
observer, queue and workers of `hotfolder run`."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import time
from pathlib import Path

from tests.helpers import corpus, drop, read_sidecar, status_json, wait_for

PDF = "pdf/multi_page.pdf"
DOCX = "docx/word_sample.docx"


def test_slow_chunked_copy_converts_once_from_full_content(make_daemon) -> None:
    daemon = make_daemon("run", config={"watch": {"settle_seconds": 1.0}})
    data = corpus("pdf/redp5110_sampled.pdf").read_bytes()
    target = daemon.input / "scanner" / "slow.pdf"
    target.parent.mkdir(parents=True)
    chunks = [data[i : i + len(data) // 12 + 1] for i in range(0, len(data), len(data) // 12 + 1)]
    with target.open("wb") as handle:  # ~4 s of writing, pauses shorter than the settle time
        for chunk in chunks:
            handle.write(chunk)
            handle.flush()
            time.sleep(0.35)
    status = daemon.wait_terminal("scanner/slow.pdf", timeout=90)
    assert status["state"] == "completed", status
    assert status["sha256"] == hashlib.sha256(data).hexdigest()
    assert status["pages"] == 18 and status["attempts"] == 1
    started = [e for e in daemon.events("job.started") if e["source"] == "scanner/slow.pdf"]
    assert len(started) == 1, started
    assert daemon.stop() == 0


def test_same_content_redrop_is_skipped_and_changed_content_reconverted(make_daemon) -> None:
    daemon = make_daemon("run")
    drop(corpus(DOCX), daemon.input / "a.docx")
    first = daemon.wait_terminal("a.docx")
    assert first["state"] == "completed"
    drop(corpus(DOCX), daemon.input / "a.docx")  # same bytes again
    wait_for(lambda: daemon.events("intake.unchanged"), 30, "the re-drop to be seen")
    assert daemon.sidecar("a.docx")["finished_at"] == first["finished_at"]
    assert len(daemon.events("job.started")) == 1
    drop(corpus("docx/word_tables.docx"), daemon.input / "a.docx")  # new content, same name
    wait_for(lambda: daemon.sidecar("a.docx")["sha256"] != first["sha256"], 30, "new job")
    second = daemon.wait_terminal("a.docx")
    assert second["state"] == "completed" and second["job_id"] != first["job_id"]
    assert "| " in (daemon.output / "a.docx.md").read_text()  # word_tables has tables
    assert daemon.stop() == 0


def test_moves_folders_and_same_stem_siblings(make_daemon, tmp_path) -> None:
    daemon = make_daemon("run")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copyfile(corpus(PDF), outside / "report.pdf")
    os.rename(outside / "report.pdf", daemon.input / "report.pdf")  # mv from elsewhere
    drop(corpus(DOCX), daemon.input / "report.docx")  # same stem, other format
    batch = tmp_path / "batch"
    (batch / "deeper").mkdir(parents=True)
    shutil.copyfile(corpus("html/example_03.html"), batch / "page.html")
    shutil.copyfile(corpus("csv/csv-comma.csv"), batch / "deeper" / "table.csv")
    os.rename(batch, daemon.input / "batch")  # a whole folder moved in
    for rel in ("report.pdf", "report.docx", "batch/page.html", "batch/deeper/table.csv"):
        assert daemon.wait_terminal(rel)["state"] == "completed", rel
    pdf_md = (daemon.output / "report.pdf.md").read_text()
    docx_md = (daemon.output / "report.docx.md").read_text()
    assert pdf_md != docx_md and pdf_md.strip() and docx_md.strip()
    assert (daemon.output / "batch" / "deeper" / "table.csv.json").stat().st_size > 0
    assert daemon.stop() == 0


def test_junk_is_ignored_and_bad_files_fail_without_disturbing_others(
    make_daemon, tmp_path
) -> None:
    daemon = make_daemon("run")
    junk = [".hidden.pdf", "upload.pdf.part", "~$draft.docx", "x.crdownload", "t.tmp", "Thumbs.db"]
    for name in junk:
        shutil.copyfile(corpus(PDF), daemon.input / name)
    secret = tmp_path / "secret.pdf"
    shutil.copyfile(corpus(PDF), secret)
    (daemon.input / "link.pdf").symlink_to(secret)  # points out of the input dir
    (daemon.input / "broken.pdf").write_bytes(corpus(PDF).read_bytes()[:3000])
    (daemon.input / "notes.xyz").write_bytes(b"\x00\x01 not a document")
    drop(corpus(DOCX), daemon.input / "good.docx")

    broken = daemon.wait_terminal("broken.pdf")
    assert broken["state"] == "failed" and broken["error"]["type"] == "corrupt"
    assert "could not be read" in broken["error"]["message"]
    unknown = daemon.wait_terminal("notes.xyz")
    assert unknown["state"] == "failed" and unknown["error"]["type"] == "unsupported_format"
    assert daemon.wait_terminal("good.docx")["state"] == "completed"
    time.sleep(1.5)  # junk had three settle periods to be (wrongly) picked up
    for name in [*junk, "link.pdf"]:
        assert daemon.sidecar(name) is None, name
    assert daemon.stop() == 0


def test_files_whose_events_the_kernel_dropped_are_taken_in_at_once(make_daemon) -> None:
    """A burst that fills the kernel's inotify queue loses events: the watcher scans the
    input folder again at once, not at the next reconciler pass (an hour away here)."""
    watch = make_daemon("watch", config={"jobs": {"reconcile_interval": 3600}})
    wait_for(lambda: '"reconcile.pass"' in watch.log(), 60, "the start-up scan")
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    assert watch.process is not None
    os.kill(watch.process.pid, signal.SIGSTOP)  # events pile up in the kernel meanwhile
    try:
        flood = [watch.input / ".flood-a", watch.input / ".flood-b"]  # ignored: dotfiles
        for n in range(limit):  # an event or more each, and none merged (two names)
            flood[n % 2].write_bytes(b"x")
        late = [f"late{n}.md" for n in range(3)]
        for name in late:
            (watch.input / name).write_text(f"# {name}\n\nArrived after the overflow.\n")
    finally:
        os.kill(watch.process.pid, signal.SIGCONT)
    for name in late:
        assert watch.wait_state(name, ("pending",), timeout=30)["attempts"] == 0
    assert len(watch.events("watch.events_lost")) == 1
    assert len(watch.events("reconcile.pass")) == 1  # taken in by the rescan alone
    assert watch.stop() == 0


def test_watcher_alone_shows_pending_then_workers_complete(make_daemon, tmp_path) -> None:
    watch = make_daemon("watch")
    drop(corpus(DOCX), watch.input / "queued.docx")
    pending = watch.wait_state("queued.docx", ("pending",))
    assert pending["attempts"] == 0 and pending["progress"] == 0
    report = status_json(watch.config_file)
    assert report["queue_depth"] == 1 and report["states"]["pending"] == 1
    work = make_daemon("work", root=tmp_path)
    assert watch.wait_terminal("queued.docx")["state"] == "completed"
    assert work.stop() == 0 and watch.stop() == 0


def test_sigint_stops_everything_cleanly(make_daemon) -> None:
    daemon = make_daemon("run")
    for i in range(6):
        drop(corpus("pdf/redp5110_sampled.pdf"), daemon.input / f"r{i}.pdf")
    daemon.wait_state("r0.pdf", ("processing", "completed"))
    assert daemon.stop() == 0
    states = [daemon.sidecar(f"r{i}.pdf") for i in range(6)]
    assert all(s is None or s["state"] in ("pending", "completed") for s in states), states
    assert daemon.tree, "run had no children to stop"


def test_stop_timeout_puts_running_jobs_back_and_restart_finishes_them(
    make_daemon, tmp_path
) -> None:
    names = [f"r{i}.pdf" for i in range(8)]
    daemon = make_daemon("run", config={"workers": {"shutdown_timeout": 0.2, "count": 1}})
    for name in names:
        drop(corpus("pdf/redp5110_sampled.pdf"), daemon.input / name)
    wait_for(
        lambda: any((daemon.sidecar(n) or {}).get("state") == "processing" for n in names),
        60,
        "a job to be processing",
    )
    assert daemon.stop() == 0
    states = {n: (daemon.sidecar(n) or {}).get("state") for n in names}
    assert "processing" not in states.values(), states
    pending = [n for n, s in states.items() if s == "pending"]
    assert pending, states
    report = status_json(daemon.config_file)
    assert report["queue_depth"] == len(pending), (report, states)

    again = make_daemon("run", root=tmp_path)
    for name in names:
        assert again.wait_terminal(name, timeout=120)["state"] == "completed", name
    assert again.stop() == 0
    # Both runs log to the same file: every document completed exactly once overall.
    assert sorted(e["source"] for e in again.events("job.completed")) == sorted(names)


def test_polling_observer_with_output_nested_in_input(make_daemon, tmp_path) -> None:
    daemon = make_daemon(
        "run",
        config={
            "paths": {"output": "input/results"},
            "watch": {"observer": "polling", "polling_interval": 0.3},
        },
    )
    drop(corpus(DOCX), daemon.input / "memo.docx")
    results = daemon.input / "results"
    status = wait_for(
        lambda: (
            (s := read_sidecar(results / "memo.docx.status.json"))
            and s["state"] == "completed"
            and s
        ),
        60,
        "memo.docx to complete",
    )
    assert status["outputs"]["md"] == "memo.docx.md"
    time.sleep(1.5)  # outputs inside the watched tree must never become jobs themselves
    sidecars = sorted(p.relative_to(results).as_posix() for p in results.rglob("*.status.json"))
    assert sidecars == ["memo.docx.status.json"]
    assert "PollingObserver" in daemon.log()
    assert daemon.stop() == 0
