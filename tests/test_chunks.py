"""The `chunks` output on the real corpus, through the daemon: valid lines, heading paths,
pages within the document, and chunk texts that cover the Markdown's words."""

from __future__ import annotations

import html
import json
import re
import shutil
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from tests.helpers import corpus, offline_rows

KEYS = {
    "chunk_id",
    "text",
    "contextualized",
    "headings",
    "captions",
    "pages",
    "bboxes",
    "source",
    "sha256",
    "job_id",
}


def words(text: str) -> Counter[str]:
    """Words as a reader sees them: Markdown's escapes undone, image placeholders dropped."""
    plain = html.unescape(text.replace("<!-- image -->", ""))
    return Counter(re.findall(r"[^\W_]+", plain.lower()))


def test_every_document_that_completes_gets_chunks_that_cover_it(make_daemon) -> None:
    rows = [*offline_rows(), {"file": "pdf/ocr_test.pdf"}]  # and a scan, read by OCR
    daemon = make_daemon("run", config={"conversion": {"to": ["md", "chunks"]}})
    for row in rows:
        target = daemon.input / row["file"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(corpus(row["file"]), target)
    with_headings = 0
    for row in rows:
        rel = row["file"]
        status = daemon.wait_terminal(rel, timeout=180)
        assert status["state"] == "completed", (rel, status["error"])
        assert status["outputs"]["chunks"] == f"{rel}.chunks.jsonl"
        lines = (daemon.output / f"{rel}.chunks.jsonl").read_text().splitlines()
        chunks = [json.loads(line) for line in lines]
        assert chunks, rel
        for n, chunk in enumerate(chunks):
            assert set(chunk) == KEYS, (rel, set(chunk) ^ KEYS)
            assert chunk["chunk_id"] == f"{status['job_id']}:{n}"
            assert (chunk["source"], chunk["sha256"]) == (rel, status["sha256"])
            assert chunk["text"] and chunk["text"] in chunk["contextualized"]
            assert all(1 <= page <= max(status["pages"], 1) for page in chunk["pages"]), rel
        with_headings += any(chunk["headings"] for chunk in chunks)
        markdown = words((daemon.output / f"{rel}.md").read_text())
        covered = words(" ".join(chunk["contextualized"] for chunk in chunks))
        share = sum(min(n, covered[w]) for w, n in markdown.items()) / sum(markdown.values())
        assert share >= 0.95, (rel, round(share, 3), (markdown - covered).most_common(5))
    assert with_headings >= 20  # the documents that have sections carry their heading paths
    assert daemon.stop() == 0


def local_tokenizer(folder: Path, text: str) -> Path:
    """A real Hugging Face tokenizer, trained here on `text` and saved as files: what a
    user puts in conversion.chunk_tokenizer, made without a download."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator([text], trainers.WordLevelTrainer(special_tokens=["[UNK]"]))
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]").save_pretrained(folder)
    return folder


def test_the_hybrid_chunker_keeps_to_the_token_limit_of_a_local_tokenizer(
    tmp_path: Path,
) -> None:
    from handlers.chunks import load_tokenizer
    from handlers.converter import ConversionOptions, DoclingConverter
    from handlers.errors import JobError
    from handlers.outputs import FORMATS, Rendition
    from handlers.sidecar import new_status

    source = corpus("docx/word_sample.docx")
    plain = ConversionOptions()
    document = DoclingConverter(plain).convert(source, lambda done, total: None).document
    markdown = FORMATS["md"].render(Rendition(document, source))
    assert markdown is not None
    folder = local_tokenizer(tmp_path / "tokenizer", markdown.decode())
    options = replace(plain, chunker="hybrid", chunk_tokenizer=str(folder), chunk_max_tokens=40)
    job = new_status("w.docx", "0123456789abcdef", "", 0, 0)
    rendered = FORMATS["chunks"].render(Rendition(document, source, job, options))
    assert rendered is not None
    chunks = [json.loads(line) for line in rendered.decode().splitlines()]
    default = FORMATS["chunks"].render(Rendition(document, source, job, plain))
    assert default is not None and len(chunks) != len(default.splitlines())  # cut otherwise
    tokenizer = load_tokenizer(str(folder))
    sizes = [len(tokenizer.tokenize(chunk["contextualized"])) for chunk in chunks]
    assert max(sizes) <= 40 and len(chunks) > 1, sizes
    covered = words(" ".join(chunk["contextualized"] for chunk in chunks))
    expected = words(markdown.decode())
    assert sum((expected & covered).values()) >= 0.95 * sum(expected.values())
    missing = replace(options, chunk_tokenizer=str(tmp_path / "nowhere"))
    with pytest.raises(JobError) as caught:
        FORMATS["chunks"].render(Rendition(document, source, job, missing))
    assert caught.value.type == "models_missing" and "nowhere" in caught.value.message
