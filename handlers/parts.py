"""A long document in parts: a PDF of more than `jobs.split_pages` pages is converted as
page ranges that any free worker (of any host) takes, then joined in page order into one
DoclingDocument, the same as the whole conversion.

The job's own worker, its coordinator, holds the job's lease throughout. It offers every
part but the first to the queue, converts the first itself, then takes any part that
nobody is converting (its lease free, its result missing): a part whose worker died is
done again, and no part waits for a free worker. The results are kept under
`output/.hotfolder/parts/<job>-<settings>/` (shared storage, seen by every host) until
the job ends, so a coordinator killed mid-job is followed by one that redoes only the
parts not yet done.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from handlers.atomic import write_atomic
from handlers.converter import NO_TEXT, PARTIAL, Conversion, PageRange, Progress, check_has_text
from handlers.errors import JobError
from handlers.lease import Leases
from handlers.sidecar import JobStatus

log = structlog.get_logger("hotfolder.job")
PARTS = Path(".hotfolder") / "parts"
WAIT = 0.2  # seconds between looks at the parts other workers are converting
TAPER = 4  # a part is at most this fraction (1/4) of the pages still to plan
STALE_AFTER = 86400.0  # a parts folder untouched this long belongs to no running job

Offer = Callable[[str, str, PageRange, int], None]  # (source, job id, pages, priority)


def plan(pages: int, split_pages: int, within: PageRange | None = None) -> list[PageRange]:
    """The parts of a document of `pages` pages (only those of `within`, the configured
    page range, if given): none (it is converted whole) unless there are more than
    `split_pages`; then parts of at most half that many pages, each a quarter of the pages
    still to plan, down to single pages at the end (24 pages: 4,4,4,3,3,2,1,1,1,1), so that
    the workers finish together rather than one waiting on a last long part."""
    first, last = within or (1, pages)
    last = min(last, pages)
    if not split_pages or last - first + 1 <= split_pages:
        return []
    parts = []
    while first <= last:
        size = min(max(split_pages // 2, 1), math.ceil((last - first + 1) / TAPER))
        parts.append((first, first + size - 1))
        first += size
    return parts


def by_weight(parts: list[PageRange], weights: list[int]) -> list[PageRange]:
    """`parts` in the order they are offered and taken: the most image data first (a
    scanned page's OCR time goes with it: a correlation of 0.76 over the 24 pages of the
    bench's scan, whose pages took 0.4-2.5 s), so that the single pages left at the end
    are the light ones, not a dense page that keeps one worker busy while the others idle.
    In page order where the weights are unknown (`weights` does not cover the pages) or
    equal, as on a document with no images."""
    if not parts or len(weights) < max(last for _, last in parts):
        return parts
    return sorted(parts, key=lambda pages: -sum(weights[pages[0] - 1 : pages[1]]))


def lease_key(rel: str, job_id: str, pages: PageRange) -> str:
    return f"{rel}\0part:{job_id}:{pages[0]}-{pages[1]}"


@dataclass(frozen=True)
class PartStore:
    """The finished parts of one job's run, one JSON file per part."""

    folder: Path

    @classmethod
    def of(cls, output_dir: Path, status: JobStatus) -> PartStore:
        return cls(output_dir / PARTS / f"{status.job_id}-{status.settings or 'default'}")

    def path(self, pages: PageRange) -> Path:
        return self.folder / f"{pages[0]:06d}-{pages[1]:06d}.json"

    def open(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)

    def is_open(self) -> bool:
        return self.folder.is_dir()

    def write(self, pages: PageRange, outcome: Conversion | JobError) -> None:
        """Keep a part's outcome, unless its job has ended meanwhile (its folder is gone)."""
        if not self.is_open():
            return
        if isinstance(outcome, JobError):
            record: dict[str, object] = {"error": outcome.as_dict()}
        else:
            record = {
                "document": outcome.document.export_to_dict(),
                "input_format": outcome.input_format,
                "pages": outcome.pages,
                "warnings": own_notes(outcome),
                "partial": outcome.partial,
                "turns": {str(page): turns for page, turns in outcome.turns.items()},
                "decrypted": outcome.decrypted,
                "ocr_pages": outcome.ocr_pages,
            }
        write_atomic(self.path(pages), json.dumps(record, ensure_ascii=False).encode())

    def read(self, pages: PageRange) -> Conversion | JobError | None:
        try:
            record = json.loads(self.path(pages).read_bytes())
        except FileNotFoundError:
            return None
        if "error" in record:
            error = record["error"]
            return JobError(error["type"], error["message"], bool(error["retryable"]))
        from docling_core.types.doc.document import DoclingDocument

        return Conversion(
            document=DoclingDocument.model_validate(record["document"]),
            input_format=record["input_format"],
            pages=record["pages"],
            warnings=record["warnings"],
            partial=record["partial"],
            turns={int(page): turns for page, turns in record["turns"].items()},
            decrypted=record["decrypted"],
            ocr_pages=record["ocr_pages"],
        )

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def own_notes(part: Conversion) -> list[str]:
    """A part's notes but those said of the joined document as a whole: a blank page's part
    has no text, and the document may still have some."""
    return [note for note in part.warnings if note not in (NO_TEXT, PARTIAL)]


def join(parts: list[Conversion], require_text: bool) -> Conversion:
    """One conversion from its parts, in page order: the document docling's whole
    conversion gives (its items renumbered, its origin kept), and the parts' notes."""
    from docling_core.types.doc.document import DoclingDocument

    document = DoclingDocument.concatenate([part.document for part in parts])
    document.origin = parts[0].document.origin
    input_format = parts[0].input_format
    if require_text:
        check_has_text(document, input_format)
    partial = any(part.partial for part in parts)
    warnings = [PARTIAL] if partial else []
    for part in parts:
        warnings += [note for note in own_notes(part) if note not in warnings]
    if not document.texts:
        warnings.append(NO_TEXT)
    return Conversion(
        document=document,
        input_format=input_format,
        pages=sum(part.pages for part in parts),
        warnings=warnings,
        partial=partial,
        turns={page: turns for part in parts for page, turns in part.turns.items()},
        decrypted=any(part.decrypted for part in parts),
        ocr_pages=sum(part.ocr_pages for part in parts),
    )


@dataclass
class Coordinator:
    """Sees a split job through: offers its parts, converts what nobody else does, and
    joins them. `convert` converts one part here. `on_pages` gets the pages done across
    all parts, at every page converted here and at every look at the others; it raises
    when the job must stop (a cancel, a lost lease), as in a whole conversion."""

    status: JobStatus
    store: PartStore
    leases: Leases
    convert: Callable[[PageRange, Progress], Conversion]
    on_pages: Progress
    done: dict[PageRange, Conversion] = field(default_factory=dict)

    def run(self, parts: list[PageRange], offer: Offer, require_text: bool) -> Conversion:
        """Offer, convert and join `parts`, taken in the order given (`by_weight`) and
        joined in page order."""
        self.store.open()
        for pages in parts[1:]:
            offer(self.status.source, self.status.job_id, pages, self.status.priority)
        total = sum(last - first + 1 for first, last in parts)
        while len(self.done) < len(parts):
            progressed = False
            for pages in parts:
                if pages not in self.done and self.settle(pages, total):
                    progressed = True
            self.on_pages(self.pages_done(), total)
            if not progressed:
                time.sleep(WAIT)
        return join([self.done[pages] for pages in sorted(parts)], require_text)

    def settle(self, pages: PageRange, total: int) -> bool:
        """Whether part `pages` is done now: found finished, or converted here because
        nobody else was converting it. A part that failed fails the job."""
        outcome = self.store.read(pages)
        if outcome is None:
            key = lease_key(self.status.source, self.status.job_id, pages)
            with self.leases.hold(key) as lease:
                if lease is None:
                    return False  # another worker converts it
                outcome = self.store.read(pages) or self.convert_here(pages, total)
        if isinstance(outcome, JobError):
            message = f"Pages {pages[0]}-{pages[1]}: {outcome.message}"
            raise JobError(outcome.type, message, outcome.retryable)
        self.done[pages] = outcome
        return True

    def convert_here(self, pages: PageRange, total: int) -> Conversion | JobError:
        before = self.pages_done()

        def on_pages(done: int, _: int) -> None:
            self.on_pages(before + done, total)

        try:
            outcome: Conversion | JobError = self.convert(pages, on_pages)
        except JobError as exc:
            outcome = exc
        self.store.write(pages, outcome)
        status = self.status
        log.info(
            "job.part_done",
            source=status.source,
            job_id=status.job_id,
            pages=list(pages),
            worker=status.worker,
            coordinator=True,
        )
        return outcome

    def pages_done(self) -> int:
        return sum(last - first + 1 for first, last in self.done)


def sweep(output_dir: Path, now: float | None = None) -> int:
    """Remove parts folders left by jobs that ended without their coordinator (it was
    killed, and the job then ended elsewhere); returns how many."""
    now = time.time() if now is None else now
    removed = 0
    try:
        folders = list((output_dir / PARTS).iterdir())
    except FileNotFoundError:
        return 0
    for folder in folders:
        try:
            newest = max([folder.stat().st_mtime, *(p.stat().st_mtime for p in folder.iterdir())])
        except OSError:
            continue
        if now - newest > STALE_AFTER:
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed
