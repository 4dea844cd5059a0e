"""The in-process floor: plain docling (a DocumentConverter with the native PDF pipeline, no
OCR and no check for pages that need it) converting the files in `procs` processes and
writing the same outputs (Markdown and JSON), with no queue, no sidecars, no watching. What
any service around docling must at least spend; what hotfolder adds, OCR check included, is
measured against it.

    python tests/bench/floor.py --procs 2 --out DIR FILE... > result.json

Prints JSON: `warm_s` (the conversions alone, converters already built in every process),
`warm_cpu_s` (their CPU time) and `failed`. The caller times the whole command for the cold
floor (interpreter start, imports and converter build included).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from pathlib import Path

CONVERTER = None
BARRIER = None


def plain_docling() -> object:
    from docling.datamodel.base_models import InputFormat
    from docling.document_converter import DocumentConverter, PdfFormatOption
    from docling.pipeline.native_pdf_pipeline import NativePdfPipeline

    return DocumentConverter(
        format_options={InputFormat.PDF: PdfFormatOption(pipeline_cls=NativePdfPipeline)}
    )


def warm(barrier: object) -> None:
    global CONVERTER, BARRIER
    CONVERTER = plain_docling()
    BARRIER = barrier


def meet(_: int) -> None:
    """Returns once every process is here, so all of them have built their converter."""
    BARRIER.wait()  # type: ignore[attr-defined]


def convert(job: tuple[str, str]) -> tuple[float, bool]:
    """Convert one file and write its outputs; returns (CPU seconds, converted)."""
    from handlers.outputs import FORMATS, Rendition

    source, target = job
    started = time.process_time()
    result = CONVERTER.convert(source, raises_on_error=False)  # type: ignore[attr-defined]
    ok = result.status.name in ("SUCCESS", "PARTIAL_SUCCESS")
    if ok:
        for fmt in ("md", "json"):
            rendition = Rendition(result.document, Path(source))
            Path(f"{target}.{fmt}").write_bytes(FORMATS[fmt].render(rendition))
    return time.process_time() - started, ok


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [(f, str(args.out / f"{n:05d}-{Path(f).name}")) for n, f in enumerate(args.files)]
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(args.procs)
    with context.Pool(args.procs, initializer=warm, initargs=(barrier,)) as pool:
        pool.map(meet, range(args.procs), chunksize=1)
        started = time.perf_counter()
        done = pool.map(convert, jobs, chunksize=1)
        warm_s = time.perf_counter() - started
    print(
        json.dumps(
            {
                "warm_s": warm_s,
                "warm_cpu_s": sum(cpu for cpu, _ in done),
                "failed": sum(not ok for _, ok in done),
            }
        )
    )


if __name__ == "__main__":
    main()
