"""Build winnow's demo corpus from real text that ships with the Python interpreter.

Deterministic and offline: the same interpreter version gives byte-identical shards.

- ``reference_manual`` documents: the Python reference manual prose in ``pydoc_data/topics.py``,
  cut into ~1.5 KB chunks on paragraph boundaries. A quarter of them (chosen by hash) is the
  *target* sample; the rest are mixed into the raw pool.
- ``stdlib_code`` documents: the standard library's own source, cut into ~1.5 KB chunks on line
  boundaries.
- Duplicates with known answers: ``exact_copy`` (whitespace and case changed only) and
  ``near_copy`` (one word in 100 replaced: word 5-gram Jaccard about (1 - 5/100) / (1 + 5/100)
  = 0.9) records, each with ``copy_of`` naming the original's id.
- A handful of bad records (invalid JSON, missing or non-string or empty text, invalid UTF-8)
  in the first shard, which winnow must send to ``errors/``.

The raw pool is written as four shards, one per input format: ``.jsonl``, ``.jsonl.gz``,
``.jsonl.zst`` and ``.parquet``.

Usage: ``python examples/make_demo_corpus.py OUT_DIR [--code-docs N]``
"""

import argparse
import gzip
import hashlib
import json
import pathlib
import sys
import sysconfig

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

CHUNK_CHARS = 1500
TARGET_SHARE = 4  # one prose chunk in TARGET_SHARE goes to the target sample
N_EXACT_COPIES = 60
N_NEAR_COPIES = 60
BAD_LINES = [
    b'{"id": "bad-json", "text": "unterminated',
    b'{"id": "bad-missing", "title": "no text field"}',
    b'{"id": "bad-type", "text": 12345}',
    b'{"id": "bad-empty", "text": "   "}',
    b'{"id": "bad-utf8", "text": "caf\xe9 au lait"}',
    b'["not", "an", "object"]',
]


def _stable_order(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def _chunks(pieces: list[str], joiner: str) -> list[str]:
    """Greedily join consecutive pieces into chunks of about CHUNK_CHARS characters."""
    chunks, current = [], []
    for piece in pieces:
        current.append(piece)
        if sum(len(p) for p in current) >= CHUNK_CHARS:
            chunks.append(joiner.join(current).strip())
            current = []
    if current:
        chunks.append(joiner.join(current).strip())
    return [c for c in chunks if len(c) >= 200]


def manual_chunks() -> list[str]:
    from pydoc_data.topics import topics

    chunks = []
    for name in sorted(topics):
        chunks += _chunks(topics[name].split("\n\n"), "\n\n")
    return chunks


def code_chunks(limit: int) -> list[str]:
    """Up to ``limit`` chunks of stdlib source, at most 6 from each module, modules in path order."""
    lib = pathlib.Path(sysconfig.get_paths()["stdlib"])
    files = sorted(
        p for p in lib.rglob("*.py")
        if "site-packages" not in p.parts and "test" not in p.parts and "tests" not in p.parts
        and "idlelib" not in p.parts
    )
    chunks = []
    for path in files:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
        chunks += _chunks(lines, "")[:6]
        if len(chunks) >= limit:
            break
    return chunks[:limit]


def near_copy(text: str, seed: str) -> str:
    """Replace one word in every 100 with a marker word: word 5-gram Jaccard about 0.9."""
    words = text.split()
    step = 100
    offset = int(_stable_order(seed), 16) % step
    for i in range(offset, len(words), step):
        words[i] = "edited"
    return " ".join(words)


def build(code_docs: int) -> tuple[list[dict], list[dict]]:
    """(raw records, target records), each a dict with id, text, source, variant, copy_of."""
    manual = sorted(manual_chunks(), key=_stable_order)
    target_texts = manual[::TARGET_SHARE]
    raw_manual = [t for i, t in enumerate(manual) if i % TARGET_SHARE]
    raw = [
        {"id": f"doc-{i:05d}", "text": t, "source": src, "variant": "original", "copy_of": None}
        for i, (t, src) in enumerate(
            sorted(
                [(t, "reference_manual") for t in raw_manual]
                + [(t, "stdlib_code") for t in code_chunks(code_docs)],
                key=lambda pair: _stable_order(pair[0]),
            )
        )
    ]
    originals = raw[: N_EXACT_COPIES + N_NEAR_COPIES]
    for j, rec in enumerate(originals[:N_EXACT_COPIES]):
        raw.append({**rec, "id": f"copy-{j:04d}", "variant": "exact_copy", "copy_of": rec["id"],
                    "text": "  " + rec["text"].upper().replace(" ", "   ") + "\n"})
    for j, rec in enumerate(originals[N_EXACT_COPIES:]):
        raw.append({**rec, "id": f"near-{j:04d}", "variant": "near_copy", "copy_of": rec["id"],
                    "text": near_copy(rec["text"], rec["id"])})
    raw.sort(key=lambda r: _stable_order(r["id"]))
    target = [{"id": f"target-{i:04d}", "text": t, "source": "reference_manual"}
              for i, t in enumerate(target_texts)]
    return raw, target


def _jsonl_bytes(records: list[dict]) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode("utf-8") + b"\n" for r in records)


def write_corpus(out_dir: pathlib.Path, code_docs: int) -> dict:
    """Write raw/shard-0..3 and target/target.jsonl under ``out_dir``; return counts."""
    raw, target = build(code_docs)
    (out_dir / "raw").mkdir(parents=True, exist_ok=True)
    (out_dir / "target").mkdir(parents=True, exist_ok=True)
    shards = [raw[i::4] for i in range(4)]
    (out_dir / "raw" / "shard-0.jsonl").write_bytes(
        _jsonl_bytes(shards[0][:10]) + b"\n".join(BAD_LINES) + b"\n" + _jsonl_bytes(shards[0][10:]))
    (out_dir / "raw" / "shard-1.jsonl.gz").write_bytes(gzip.compress(_jsonl_bytes(shards[1]), mtime=0))
    (out_dir / "raw" / "shard-2.jsonl.zst").write_bytes(
        zstandard.ZstdCompressor(level=10).compress(_jsonl_bytes(shards[2])))
    pq.write_table(pa.Table.from_pylist(shards[3]), out_dir / "raw" / "shard-3.parquet", row_group_size=500)
    (out_dir / "target" / "target.jsonl").write_bytes(_jsonl_bytes(target))
    return {"raw_valid": len(raw), "raw_bad": len(BAD_LINES), "target": len(target)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=pathlib.Path)
    parser.add_argument("--code-docs", type=int, default=3000, help="stdlib code chunks in the raw pool")
    args = parser.parse_args(argv)
    counts = write_corpus(args.out_dir, args.code_docs)
    print(json.dumps(counts), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
