"""The `chunks` output: `<rel>.chunks.jsonl`, one JSON object per line from docling's own
HierarchicalChunker (offline, no tokenizer) on the document already in memory, each with
its heading path, captions, pages and boxes, ready to embed for retrieval."""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from handlers.errors import JobError

if TYPE_CHECKING:
    from docling_core.transforms.chunker.base import BaseChunker
    from docling_core.types.doc.document import DoclingDocument

    from handlers.outputs import Rendition

MISSING = (
    "The chunks output needs docling-core's chunking extra, which is not installed "
    "(pip install 'hotfolder[chunks]' in hotfolder's environment), or drop \"chunks\" from "
    "conversion.to."
)


def render_chunks(rendition: Rendition) -> bytes:
    try:
        from docling_core.transforms.chunker.doc_chunk import DocChunk
        from docling_core.transforms.chunker.hierarchical_chunker import HierarchicalChunker
    except ImportError as exc:
        raise JobError("missing_dependency", f"{MISSING} ({exc})") from exc
    job = rendition.job
    document = rendition.document
    options = rendition.options
    chunker: BaseChunker = HierarchicalChunker(serializer_provider=markdown_tables())
    if options is not None and options.chunker == "hybrid":
        chunker = hybrid(options.chunk_tokenizer, options.chunk_max_tokens)
    lines = []
    for n, base in enumerate(chunker.chunk(dl_doc=document)):
        chunk = cast(DocChunk, base)  # what HierarchicalChunker yields
        items = chunk.meta.doc_items
        provenance = [prov for item in items for prov in item.prov]
        boxes = [{"page": p.page_no, "bbox": list(p.bbox.as_tuple())} for p in provenance]
        record = {
            "chunk_id": f"{job.job_id if job else ''}:{n}",
            "text": chunk.text,
            "contextualized": chunker.contextualize(chunk),
            "headings": list(chunk.meta.headings or []),
            "captions": captions(items, document),
            "pages": sorted({prov.page_no for prov in provenance}),
            "bboxes": boxes,
            "source": job.source if job else None,
            "sha256": job.sha256 if job else None,
            "job_id": job.job_id if job else None,
        }
        lines.append(json.dumps(record, ensure_ascii=False))
    return ("\n".join(lines) + "\n" if lines else "").encode("utf-8", "surrogateescape")


def hybrid(folder: str, max_tokens: int) -> BaseChunker:
    """docling's HybridChunker: oversize chunks split and small neighbours merged, counted
    in the tokens of the tokenizer in `folder` (read from disk, never downloaded)."""
    from docling_core.transforms.chunker.hybrid_chunker import HybridChunker
    from docling_core.transforms.chunker.tokenizer.huggingface import HuggingFaceTokenizer

    return HybridChunker(
        tokenizer=HuggingFaceTokenizer(tokenizer=load_tokenizer(folder), max_tokens=max_tokens),
        serializer_provider=markdown_tables(),
    )


@cache
def load_tokenizer(folder: str) -> Any:
    """The tokenizer files in `folder` (once per worker); missing, a clear failure."""
    from transformers import AutoTokenizer

    where = folder or "(conversion.chunk_tokenizer is not set)"
    try:
        if not folder or not Path(folder).is_dir():
            raise OSError(f"no folder {where}")
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise JobError(
            "models_missing",
            f"The hybrid chunker needs a tokenizer in conversion.chunk_tokenizer ({where}): "
            "put the tokenizer files of your embedding model there (tokenizer.json and "
            f"tokenizer_config.json); nothing is downloaded. ({exc})",
        ) from None


def markdown_tables() -> Any:
    """docling's chunking serializer, with tables as Markdown (as in the `.md` output)
    instead of "row, column = value" triplets, which drop what a rich cell holds."""
    from docling_core.transforms.chunker.hierarchical_chunker import (
        ChunkingDocSerializer,
        ChunkingSerializerProvider,
    )
    from docling_core.transforms.serializer.markdown import MarkdownTableSerializer

    class MarkdownTables(ChunkingSerializerProvider):
        def get_serializer(self, doc: DoclingDocument) -> ChunkingDocSerializer:
            return ChunkingDocSerializer(doc=doc, table_serializer=MarkdownTableSerializer())

    return MarkdownTables()


def captions(items: Sequence[object], document: DoclingDocument) -> list[str]:
    """The captions of the tables and pictures in a chunk."""
    found = []
    for item in items:
        caption_text = getattr(item, "caption_text", None)
        text = caption_text(document) if callable(caption_text) else ""
        if text:
            found.append(str(text))
    return found
