#!/usr/bin/env python3
"""index-chunks: a completion hook that keeps a search index of every document's chunks.

As a hook (`[[hooks.command]]`, `on = ["completed"]`), it reads the job's `.chunks.jsonl`
beside its status file and replaces that document's chunks in an SQLite database, in one
transaction: a repeated delivery, or a newer conversion of the same file, leaves exactly the
chunks on disk, never duplicates or stale ones. A document whose chunks file is gone is
removed from the index.

    index_chunks.py --db chunks.sqlite                  # as a hook: reads $HOTFOLDER_SIDECAR
    index_chunks.py --db chunks.sqlite --search "tax invoice"

The index is SQLite's FTS5 (full-text, BM25 ranking), standard library only. To feed a vector
store instead, replace `store()`: embed each chunk's `contextualized` text and upsert it
under its `chunk_id`, after deleting the document's earlier chunks by `source`.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (
    chunk_id TEXT PRIMARY KEY, source TEXT NOT NULL, job_id TEXT NOT NULL,
    headings TEXT NOT NULL, pages TEXT NOT NULL, contextualized TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_source ON chunks (source);
CREATE VIRTUAL TABLE IF NOT EXISTS chunk_text USING fts5 (chunk_id UNINDEXED, contextualized);
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", required=True, type=Path, help="the SQLite index file")
    parser.add_argument("--search", help="print the chunks that best match these words")
    parser.add_argument("--limit", type=int, default=5)
    args = parser.parse_args()
    db = sqlite3.connect(args.db, timeout=30)
    db.executescript(SCHEMA)
    if args.search is not None:
        for hit in search(db, args.search, args.limit):
            print(json.dumps(hit, ensure_ascii=False))
        return 0
    sidecar = os.environ.get("HOTFOLDER_SIDECAR")
    if not sidecar:
        parser.error("run as a hotfolder hook (HOTFOLDER_SIDECAR is not set), or give --search")
    status = json.loads(sys.stdin.read() or Path(sidecar).read_text())
    chunks = Path(sidecar.removesuffix(".status.json") + ".chunks.jsonl")
    lines = read_chunks(chunks)
    store(db, status["source"], lines)
    print(f"indexed {len(lines)} chunks of {status['source']}")
    return 0


def read_chunks(path: Path) -> list[dict]:
    """The chunks on disk now, or none if the file is gone (the document was removed)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def store(db: sqlite3.Connection, source: str, chunks: list[dict]) -> None:
    """Replace the chunks of `source` with `chunks`, at once."""
    with db:
        old = [
            row[0] for row in db.execute("SELECT chunk_id FROM chunks WHERE source = ?", (source,))
        ]
        db.executemany("DELETE FROM chunk_text WHERE chunk_id = ?", [(c,) for c in old])
        db.execute("DELETE FROM chunks WHERE source = ?", (source,))
        for chunk in chunks:
            db.execute(
                "INSERT OR REPLACE INTO chunks VALUES (?, ?, ?, ?, ?, ?)",
                (
                    chunk["chunk_id"],
                    source,
                    chunk["job_id"],
                    json.dumps(chunk["headings"]),
                    json.dumps(chunk["pages"]),
                    chunk["contextualized"],
                ),
            )
            db.execute(
                "INSERT INTO chunk_text VALUES (?, ?)", (chunk["chunk_id"], chunk["contextualized"])
            )


def search(db: sqlite3.Connection, words: str, limit: int) -> list[dict]:
    """The best `limit` chunks for `words` (each word must occur), best first."""
    query = " ".join('"' + word.replace('"', '""') + '"' for word in words.split())
    rows = db.execute(
        "SELECT c.chunk_id, c.source, c.headings, c.pages, c.contextualized"
        " FROM chunk_text JOIN chunks c USING (chunk_id)"
        " WHERE chunk_text MATCH ? ORDER BY bm25(chunk_text) LIMIT ?",
        (query, limit),
    )
    return [
        {"chunk_id": c, "source": s, "headings": json.loads(h), "pages": json.loads(p), "text": t}
        for c, s, h, p, t in rows
    ]


if __name__ == "__main__":
    sys.exit(main())
