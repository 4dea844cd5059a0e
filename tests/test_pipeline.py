"""One file's journey in this process: real docling on corpus documents, real sidecars,
index and leases; fakes only where a fault is the point."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from handlers import atomic
from handlers.atomic import PathEscapes, safe_join
from handlers.converter import ConversionOptions, DoclingConverter
from handlers.errors import JobError
from handlers.index import JobIndex
from handlers.lease import FileLeases
from handlers.ledger import GROUP_ROWS, Ledger
from handlers.lifecycle import JobPolicy
from handlers.outputs import FORMATS, Rendition, output_format
from handlers.pipeline import JobContext, process_file
from handlers.sidecar import JobStatus, encode, new_status
from handlers.source import copy_owners, discard_copies
from tests.fakes import FailingConverter, SteppingConverter
from tests.helpers import corpus


@pytest.fixture(scope="module")
def docling() -> DoclingConverter:
    """One warm converter for the module, as a worker process keeps one."""
    return DoclingConverter(ConversionOptions(progress_interval=0))


@pytest.fixture
def context(tmp_path: Path, docling: DoclingConverter) -> JobContext:
    (tmp_path / "input").mkdir()
    return JobContext(
        input_dir=tmp_path / "input",
        ledger=Ledger(tmp_path / "output"),
        leases=FileLeases(tmp_path / "locks"),
        scratch_dir=tmp_path / "scratch",
        options=docling.options,
        converter=docling,
        policy=JobPolicy(max_attempts=2, retry_backoff=0),
    )


def drop(context: JobContext, rel: str, source: Path) -> Path:
    target = context.input_dir / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(source.read_bytes())
    return target


def heard(context: JobContext) -> list[JobStatus]:
    """Every record the ledger saves from now on, as its listeners see them."""
    saved: list[JobStatus] = []
    context.ledger.listen(lambda status: saved.append(status.model_copy()))
    return saved


def test_a_document_is_converted_and_every_change_reaches_the_listeners(
    context: JobContext,
) -> None:
    drop(context, "docs/word_sample.docx", corpus("docx/word_sample.docx"))
    saved = heard(context)
    status = process_file("docs/word_sample.docx", context)
    assert status is not None and status.state == "completed", status
    assert status.input_format == "docx" and status.attempts == 1
    markdown = context.ledger.output_dir / "docs/word_sample.docx.md"
    assert status.outputs == {
        "md": "docs/word_sample.docx.md",
        "json": "docs/word_sample.docx.json",
    }
    assert "Swimming in the lake" in markdown.read_text()
    json.loads((context.ledger.output_dir / status.outputs["json"]).read_text())
    assert [s.state for s in saved] == ["processing", "completed"]
    on_disk = json.loads(context.ledger.path("docs/word_sample.docx").read_text())
    assert on_disk["state"] == "completed" and on_disk["job_id"] == status.job_id


def test_the_same_content_again_is_skipped(context: JobContext) -> None:
    drop(context, "a.md", corpus("md/mixed.md"))
    first = process_file("a.md", context)
    saved = heard(context)
    again = process_file("a.md", context)
    assert first is not None and again is not None
    assert again.job_id == first.job_id and again.state == "completed"
    assert saved == []  # nothing was written


def test_a_permanent_error_fails_at_once_and_a_failing_listener_changes_nothing(
    context: JobContext,
) -> None:
    drop(context, "broken.pdf", corpus("pdf/multi_page.pdf"))
    fake = FailingConverter(JobError("corrupt", "The PDF file could not be read."))
    context.converter = fake

    def broken_listener(status: JobStatus) -> None:
        raise RuntimeError("a hook that fails")

    context.ledger.listen(broken_listener)
    status = process_file("broken.pdf", context)
    assert status is not None and status.state == "failed"
    assert status.error == {
        "type": "corrupt",
        "message": "The PDF file could not be read.",
        "retryable": False,
    }
    assert len(fake.calls) == 1 and fake.calls[0].name == "broken.pdf"
    assert fake.calls[0].parent != context.input_dir  # a private copy was converted


def test_a_transient_error_is_retried_until_attempts_run_out(context: JobContext) -> None:
    drop(context, "flaky.docx", corpus("docx/word_sample.docx"))
    context.converter = FailingConverter(OSError(5, "Input/output error"))
    first = process_file("flaky.docx", context)
    assert first is not None and first.state == "pending" and first.retry_at
    assert first.error is not None and first.error["type"] == "io_error"
    second = process_file("flaky.docx", context)
    assert second is not None and second.state == "failed" and second.attempts == 2
    assert "Gave up after 2 attempts" in str(second.error)


def test_a_cancel_request_ends_the_job_cancelled(
    context: JobContext, docling: DoclingConverter
) -> None:
    drop(context, "long.pdf", corpus("pdf/multi_page.pdf"))

    def ask() -> None:
        status = context.ledger.read("long.pdf")
        assert status is not None and status.state == "processing"
        context.leases.request_cancel("long.pdf", status.job_id)

    context.converter = SteppingConverter(docling, ask)
    status = process_file("long.pdf", context)
    assert status is not None and status.state == "cancelled" and status.outputs == {}
    assert not (context.ledger.output_dir / "long.pdf.md").exists()
    assert not context.leases.cancel_requested("long.pdf", status.job_id)  # cleared


def test_a_file_whose_lease_another_holds_is_left_alone(context: JobContext) -> None:
    drop(context, "busy.md", corpus("md/mixed.md"))
    with context.leases.hold("busy.md") as lease:
        assert lease is not None
        assert process_file("busy.md", context) is None
    assert context.ledger.read("busy.md") is None


def test_a_registered_output_format_gets_the_private_copy(context: JobContext) -> None:
    @output_format("size", "size.txt")
    def size(rendition: Rendition) -> bytes:
        return f"{rendition.source.stat().st_size}\n".encode()

    try:
        drop(context, "csv/table.csv", corpus("csv/csv-comma.csv"))
        context.options = replace(context.options, to=("md", "size"))
        status = process_file("csv/table.csv", context)
    finally:
        del FORMATS["size"]
    assert status is not None and status.state == "completed", status
    assert status.outputs["size"] == "csv/table.csv.size.txt"
    written = (context.ledger.output_dir / "csv/table.csv.size.txt").read_text()
    assert written == f"{corpus('csv/csv-comma.csv').stat().st_size}\n"


def test_a_workers_private_copies_are_gone_after_each_job_and_an_earlier_pids_at_its_first(
    context: JobContext,
) -> None:
    own = context.scratch_dir / f"{os.getpid()}-own0"
    own.mkdir(parents=True)
    (own / "table.csv").write_bytes(b"left by a killed process that had this pid\n")
    for n in range(2):
        source = drop(context, "csv/table.csv", corpus("csv/csv-comma.csv"))
        source.write_bytes(source.read_bytes() + b"\n" * n)  # new content: a new job
        status = process_file("csv/table.csv", context)
        assert status is not None and status.state == "completed", status
        assert own.is_dir() and not list(own.iterdir())
    assert copy_owners(context.scratch_dir) == {os.getpid()}
    discard_copies(context.scratch_dir, os.getpid())
    assert not list(context.scratch_dir.iterdir())


def test_records_saved_in_a_group_reach_the_index_together_and_their_sidecars_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = JobIndex(tmp_path / "index.db")
    ledger = Ledger(tmp_path / "output", index)
    written: list[int] = []  # rows per index transaction
    upsert_rows = index.upsert_rows
    monkeypatch.setattr(
        index, "upsert_rows", lambda rows: (written.append(len(rows)), upsert_rows(rows))
    )

    def save(rel: str) -> None:
        ledger.save(new_status(rel, rel, "0" * 64, 1, 0))
        assert ledger.read(rel) is not None  # the sidecar is in place at once

    with ledger.grouped():
        for n in range(GROUP_ROWS + 5):
            save(f"f{n}.md")
        with ledger.grouped():  # inside a group: held by the outer one
            save("inner.md")
        assert written == [GROUP_ROWS] and index.counts() == {"pending": GROUP_ROWS}
    assert written == [GROUP_ROWS, 6] and index.counts() == {"pending": GROUP_ROWS + 6}
    save("alone.md")
    assert written[-1] == 1 and index.counts() == {"pending": GROUP_ROWS + 7}


def test_a_sidecar_has_the_bytes_json_would_write_and_any_name_can_be_written() -> None:
    status = new_status('team/Über "q" 1.md', "a" * 16, "0" * 64, 12, 3)
    status.state, status.duration_s, status.pages = "failed", 1.234, 7
    status.outputs = {"md": 'team/Über "q" 1.md.md', "json": "x.json"}
    status.error = {"type": "corrupt", "message": "line 1\nline 2 — “quoted”", "retryable": False}
    status.warnings, status.hooks = ["ä", "tab\there"], {"web": {"state": "pending", "tries": 0}}
    assert (
        encode(status)
        == (json.dumps(status.model_dump(), ensure_ascii=True, indent=2) + "\n").encode()
    )
    odd = status.model_copy(update={"source": "bad\udcffname.md"})  # undecodable bytes
    assert json.loads(encode(odd))["source"] == "bad\udcffname.md"


def test_a_symlink_out_of_the_input_folder_is_refused(context: JobContext, tmp_path: Path) -> None:
    secret = tmp_path / "secret.md"
    secret.write_text("# not yours\n")
    (context.input_dir / "link.md").symlink_to(secret)
    status = process_file("link.md", context)
    assert status is not None and status.state == "failed"
    assert status.error is not None and status.error["type"] == "unsafe_path"
    assert not (context.ledger.output_dir / "link.md.md").exists()


@pytest.fixture(autouse=True)
def no_leftover_formats() -> Iterator[None]:
    before = set(FORMATS)
    yield
    assert set(FORMATS) == before


class FillingLedger(Ledger):
    """A ledger whose disk is full but for a job's start: the end of an attempt cannot be
    recorded until `full` is cleared (the sidecar of a running job is already there)."""

    full = True

    def save(self, status: JobStatus) -> JobStatus:
        if self.full and status.state != "processing":
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().save(status)


def test_attempts_never_pass_the_maximum_when_their_ends_cannot_be_recorded(
    context: JobContext,
) -> None:
    drop(context, "full.docx", corpus("docx/word_sample.docx"))
    ledger = context.ledger = FillingLedger(context.ledger.output_dir)
    fake = context.converter = FailingConverter(OSError(5, "Input/output error"))
    for _ in range(4):  # the worker retries each time the record could not be written
        with pytest.raises(OSError):
            process_file("full.docx", context)
    ledger.full = False
    final = process_file("full.docx", context)
    assert final is not None and final.state == "failed" and final.attempts == 2, final
    assert len(fake.calls) == 2  # no conversion past the maximum
    assert final.error is not None
    assert str(final.error["message"]).count("Gave up after 2 attempts") == 1


def test_only_outputs_and_the_outcome_are_fsynced_before_their_rename(
    context: JobContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The order the guarantee rests on: every output on disk before the outcome record,
    and nothing else of the job synced (its input file is its record until then)."""
    drop(context, "notes.md", corpus("md/wiki.md"))
    synced: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    staged: dict[int, str] = {}

    def fsync(fd: int) -> None:
        synced.append(staged.get(fd, "?"))
        real_fsync(fd)

    def create_temp(path: Path) -> tuple[int, str]:
        fd, temp = real_create_temp(path)
        staged[fd] = temp
        return fd, temp

    def replace(source: str, target: Path) -> None:
        renamed[source] = Path(target).name
        real_replace(source, target)

    renamed: dict[str, str] = {}
    real_create_temp = atomic.create_temp
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(atomic, "create_temp", create_temp)
    status = process_file("notes.md", context)
    assert status is not None and status.state == "completed", status
    names = [renamed[temp] for temp in synced]
    assert names == ["notes.md.md", "notes.md.json", "notes.md.status.json"], names
    record = json.loads(context.ledger.path("notes.md").read_text())
    assert record["state"] == "completed"


def test_a_path_below_a_folder_may_pass_links_only_to_places_inside_it(tmp_path: Path) -> None:
    base, outside = tmp_path / "output", tmp_path / "elsewhere"
    (base / "real" / "deep").mkdir(parents=True)
    outside.mkdir()
    (base / "inward").symlink_to(base / "real")
    (base / "outward").symlink_to(outside)
    (base / "real" / "file.json").symlink_to(outside / "file.json")
    assert safe_join(base, "a/b/c.json") == base / "a/b/c.json"  # not there yet
    assert safe_join(base, "inward/deep/x.json") == base / "inward/deep/x.json"
    for rel in ("outward/x.json", "real/file.json", "inward/file.json"):
        with pytest.raises(PathEscapes):
            safe_join(base, rel)
    for rel in ("", "/etc/passwd", "a/../../x"):
        with pytest.raises(ValueError):
            safe_join(base, rel)


def test_an_atomic_write_passes_over_a_temp_name_taken_by_a_planted_link(tmp_path: Path) -> None:
    """A temp name is opened exclusively: a link planted under the next name (anyone who
    can write to the output folder can guess it) is neither followed nor replaced."""
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    target = tmp_path / "out" / "deep" / "a.json"  # its folders are made on the way
    atomic.write_atomic(target, b"first", durable=False)
    taken = next(atomic.names) + 1  # the name the next write would take
    planted = target.with_name(f".a.json.{os.getpid()}.{taken}.tmp")
    planted.symlink_to(outside)
    atomic.write_atomic(target, b"second")
    assert target.read_bytes() == b"second" and outside.read_text() == "keep"
    assert planted.is_symlink()
    assert sorted(p.name for p in target.parent.iterdir()) == [planted.name, "a.json"]
