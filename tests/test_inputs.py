"""Inputs over their whole life: limits, partial results, odd names, files that vanish,
and what happens to them afterwards (archive, delete, quarantine)."""

from __future__ import annotations

import json
import os
import unicodedata

from tests.helpers import corpus, drop, read_sidecar, wait_for


def test_archive_on_success_and_quarantine_on_failure(make_daemon) -> None:
    daemon = make_daemon(
        "run", config={"jobs": {"on_success": "archive", "on_failure": "quarantine"}}
    )
    drop(corpus("docx/word_sample.docx"), daemon.input / "team" / "memo.docx")
    (daemon.input / "team" / "broken.pdf").write_bytes(
        corpus("pdf/multi_page.pdf").read_bytes()[:2000]
    )
    done = daemon.wait_state("team/memo.docx", ("completed",))
    failed = daemon.wait_state("team/broken.pdf", ("failed",))
    archived = daemon.root / "archive" / "team" / "memo.docx"
    quarantined = daemon.root / "quarantine" / "team" / "broken.pdf"
    done = daemon.wait_disposition("team/memo.docx")
    failed = daemon.wait_disposition("team/broken.pdf")
    assert archived.exists() and quarantined.exists()
    assert done["disposition"] == f"archived: {archived}"
    assert failed["disposition"] == f"quarantined: {quarantined}"
    assert archived.read_bytes() == corpus("docx/word_sample.docx").read_bytes()
    reason = quarantined.with_name("broken.pdf.reason.txt").read_text()
    assert reason.startswith("corrupt: ") and "could not be read" in reason
    assert not (daemon.input / "team" / "memo.docx").exists()
    assert not (daemon.input / "team" / "broken.pdf").exists()
    assert (daemon.output / "team" / "memo.docx.md").read_text().strip()
    assert daemon.stop() == 0


def test_delete_on_success_keeps_failures_in_place(make_daemon) -> None:
    daemon = make_daemon("run", config={"jobs": {"on_success": "delete"}})
    drop(corpus("csv/csv-comma.csv"), daemon.input / "t.csv")
    (daemon.input / "junk.xyz").write_bytes(b"\x00\x01\x02")
    assert daemon.wait_terminal("t.csv")["state"] == "completed"
    assert daemon.wait_terminal("junk.xyz")["state"] == "failed"
    assert daemon.wait_disposition("t.csv")["disposition"] == "deleted"
    assert not (daemon.input / "t.csv").exists()
    assert (daemon.input / "junk.xyz").exists()  # never deleted unless configured
    assert daemon.stop() == 0


def test_limits_partial_results_and_worker_recycling(make_daemon) -> None:
    daemon = make_daemon(
        "run",
        config={
            "jobs": {"max_file_mb": 1, "max_pages": 10},
            "conversion": {"document_timeout": 0.05},
            "workers": {"count": 1, "max_tasks_per_worker": 2},
        },
    )
    drop(corpus("pdf/redp5110_sampled.pdf"), daemon.input / "big.pdf")  # 1.2 MiB
    drop(corpus("pdf/normal_4pages.pdf"), daemon.input / "slowish.pdf")
    big = daemon.wait_terminal("big.pdf")
    assert big["state"] == "failed" and big["error"]["type"] == "too_large"
    assert "jobs.max_file_mb" in big["error"]["message"] and big["attempts"] == 1
    partial = daemon.wait_terminal("slowish.pdf")
    assert partial["state"] == "completed" and partial["partial"] is True, partial
    assert any("timeout" in w for w in partial["warnings"])
    for i in range(4):
        drop(corpus("csv/csv-comma.csv"), daemon.input / f"c{i}.csv")
    for i in range(4):
        assert daemon.wait_terminal(f"c{i}.csv")["state"] == "completed"
    workers = {s["worker"] for s in (daemon.sidecar(f"c{i}.csv") for i in range(4))}
    assert len(workers) >= 2, workers  # one worker process, replaced every two jobs
    wait_for(lambda: daemon.events("worker.recycled"), 10, "the recycle to be logged")
    assert all(e["level"] == "info" for e in daemon.events("worker.recycled"))
    assert "died, restarting" not in daemon.log()  # a planned recycle is not a death
    assert all(e["reason"] == "2 tasks run" for e in daemon.events("worker.recycling"))
    assert daemon.stop() == 0


def test_a_worker_grown_past_its_memory_limit_is_replaced_between_jobs(make_daemon) -> None:
    # A worker holds more than 1 MiB from its start: it is replaced after every job, and no
    # job is cut short or failed for it (only workers.max_memory_mb kills).
    daemon = make_daemon(
        "run", config={"workers": {"count": 1, "max_tasks_per_worker": 0, "recycle_memory_mb": 1}}
    )
    for i in range(3):
        drop(corpus("csv/csv-comma.csv"), daemon.input / f"c{i}.csv")
    done = [daemon.wait_terminal(f"c{i}.csv") for i in range(3)]
    assert all(s["state"] == "completed" and s["attempts"] == 1 for s in done), done
    assert len({s["worker"] for s in done}) == 3  # a fresh process for each job
    wait_for(lambda: len(daemon.events("worker.recycling")) >= 3, 10, "three recycles")
    recycling = daemon.events("worker.recycling")
    assert all(e["reason"].startswith("resident memory ") for e in recycling), recycling
    wait_for(lambda: len(daemon.events("worker.recycled")) >= 3, 10, "the replacements")
    assert "died, restarting" not in daemon.log()
    assert daemon.stop() == 0


def test_page_limit(make_daemon) -> None:
    daemon = make_daemon("run", config={"jobs": {"max_pages": 10}})
    drop(corpus("pdf/redp5110_sampled.pdf"), daemon.input / "long.pdf")
    drop(corpus("pdf/multi_page.pdf"), daemon.input / "short.pdf")
    long = daemon.wait_terminal("long.pdf")
    assert long["state"] == "failed" and long["error"]["type"] == "too_large"
    assert "18 pages" in long["error"]["message"]
    assert daemon.wait_terminal("short.pdf")["state"] == "completed"
    assert daemon.stop() == 0


def test_odd_file_names(make_daemon) -> None:
    daemon = make_daemon("run")
    names = [
        "with spaces and (parens).docx",
        "new\nline.docx",
        unicodedata.normalize("NFD", "Übersicht-Größe.docx"),
        os.fsdecode(b"latin1-\xe4\xf6.docx"),  # not valid UTF-8
        "emoji-\U0001f4c4.docx",
    ]
    for name in names:
        drop(corpus("docx/word_sample.docx"), daemon.input / name)
    for name in names:
        status = daemon.wait_terminal(name)
        assert status["state"] == "completed", (name, status)
        assert status["source"] == name
        raw = (daemon.output / f"{name}.status.json").read_bytes()
        json.loads(raw)  # still valid JSON (undecodable bytes are escaped)
        assert (daemon.output / f"{name}.md").read_text().strip()
    assert daemon.stop() == 0


def test_input_removed_before_its_job_runs(make_daemon, tmp_path) -> None:
    watch = make_daemon("watch")
    drop(corpus("docx/word_sample.docx"), watch.input / "gone.docx")
    drop(corpus("docx/word_sample.docx"), watch.input / "moved.docx")
    watch.wait_state("gone.docx", ("pending",))
    watch.wait_state("moved.docx", ("pending",))
    (watch.input / "gone.docx").unlink()
    os.rename(watch.input / "moved.docx", watch.input / "renamed.docx")
    work = make_daemon("work", root=tmp_path)
    for name in ("gone.docx", "moved.docx"):
        status = watch.wait_terminal(name)
        assert status["state"] == "failed" and status["error"]["type"] == "source_vanished"
    assert watch.wait_terminal("renamed.docx")["state"] == "completed"
    assert work.stop() == 0 and watch.stop() == 0


def test_sidecar_is_never_half_written(make_daemon) -> None:
    """Readers polling a busy sidecar always parse it (atomic replace, no temp leftovers)."""
    daemon = make_daemon("run", config={"conversion": {"progress_interval": 0}})
    drop(corpus("pdf/redp5110_sampled.pdf"), daemon.input / "r.pdf")
    sidecar = daemon.output / "r.pdf.status.json"
    seen = set()

    def finished() -> bool:
        if sidecar.exists():
            status = read_sidecar(sidecar)
            assert status is not None, "unparseable sidecar"
            seen.add(status["state"])
            return status["state"] == "completed"
        return False

    wait_for(finished, 60, "r.pdf to complete")
    assert {"processing", "completed"} <= seen
    assert not [p for p in daemon.output.rglob(".*") if p.is_file()], "temp files left"
    assert daemon.stop() == 0


def test_a_cancel_request_only_stops_the_job_it_names(tmp_path) -> None:
    from handlers.lease import FileLeases

    leases = FileLeases(tmp_path)
    leases.request_cancel("a.pdf", "job-one")
    assert leases.cancel_requested("a.pdf", "job-one")
    assert not leases.cancel_requested("a.pdf", "job-two")  # later content, same path
    assert not leases.cancel_requested("b.pdf", "job-one")
    leases.clear_cancel("a.pdf")
    assert not leases.cancel_requested("a.pdf", "job-one")


def test_a_lease_has_one_holder_until_it_is_let_go_or_its_holder_dies(tmp_path) -> None:
    import signal
    import subprocess
    import sys

    from handlers.lease import FileLeases

    leases = FileLeases(tmp_path / "locks")
    with leases.hold("a.pdf") as first:
        assert first is not None
        with leases.hold("a.pdf") as second, leases.hold("b.pdf") as other:
            assert second is None  # the same path, another descriptor of this process
            assert other is not None  # another path: its own byte
    with leases.hold("a.pdf") as again:
        assert again is not None  # let go
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from handlers.lease import FileLeases\n"
            "with FileLeases(Path(sys.argv[1])).hold('a.pdf') as lease:\n"
            "    print(lease is not None, flush=True); time.sleep(60)",
            str(tmp_path / "locks"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "True"
        with leases.hold("a.pdf") as taken:
            assert taken is None  # held by another process
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        with leases.hold("a.pdf") as freed:
            assert freed is not None  # the kernel let go when its holder died
    finally:
        holder.kill()
        holder.wait(10)
    assert [path.name for path in (tmp_path / "locks").iterdir()] == ["leases"]
