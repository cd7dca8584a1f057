"""End-to-end throughput of ``winnow select``: read -> select -> write, docs/s, MB/s and peak RSS.

The corpus is the demo corpus's real text, repeated and perturbed (a few words of each copy
replaced, deterministically) to the requested size, written as zstd JSON Lines and Parquet
shards. Each configuration runs ``winnow select`` in a subprocess; peak RSS is the largest
resident set of that process and its children (``RUSAGE_CHILDREN``).

Usage: ``python benchmarks/bench_pipeline.py --docs 200000 --out benchmarks/sections/pipeline.md``
"""

import argparse
import json
import os
import pathlib
import shlex
import subprocess
import sys
import tempfile
import time

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from benchmarks.common import publish  # noqa: E402
from examples import make_demo_corpus  # noqa: E402

N_SHARDS = 8


def perturbed(text: str, copy: int) -> str:
    """``text`` with every 25th word (from an offset set by ``copy``) replaced by ``w<copy>``."""
    words = text.split(" ")
    for i in range(copy % 25, len(words), 25):
        words[i] = f"w{copy}"
    return " ".join(words)


def write_corpus(directory: pathlib.Path, n_docs: int) -> tuple[int, int]:
    """Write ``N_SHARDS`` shards (half .jsonl.zst, half .parquet); return (documents, text bytes)."""
    raw, target = make_demo_corpus.build(code_docs=3000)
    base = [r["text"] for r in raw] + [r["text"] for r in target]
    text_bytes = 0
    for shard in range(N_SHARDS):
        records = []
        for i in range(shard, n_docs, N_SHARDS):
            text = perturbed(base[i % len(base)], i // len(base))
            text_bytes += len(text.encode("utf-8"))
            records.append({"id": f"doc-{i:08d}", "text": text, "source": "bench"})
        if shard % 2:
            pq.write_table(pa.Table.from_pylist(records), directory / f"shard-{shard}.parquet", row_group_size=10_000)
        else:
            payload = b"".join(json.dumps(r).encode("utf-8") + b"\n" for r in records)
            (directory / f"shard-{shard}.jsonl.zst").write_bytes(zstandard.ZstdCompressor(level=3).compress(payload))
    return n_docs, text_bytes


# Runs a command and prints the peak RSS (KB) of it and its descendants: a fresh process per
# measurement, because RUSAGE_CHILDREN keeps the maximum over every child ever waited for.
_PEAK_RSS = (
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def run_select(corpus: pathlib.Path, output: pathlib.Path, extra: list[str]) -> tuple[float, int]:
    """Run winnow select; return (seconds, peak RSS in MB of its largest process)."""
    command = [sys.executable, "-m", "winnow.pipelines.cli", "select", "--input", str(corpus / "*"), "--output", str(output),
               "--fraction", "0.1", "--method", "random", "--write-scores", "--overwrite", *extra]
    started = time.perf_counter()
    measured = subprocess.run([sys.executable, "-c", _PEAK_RSS, *command], check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    return seconds, int(measured.stdout.strip()) // 1024


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=200_000)
    parser.add_argument("--out", type=pathlib.Path, help="write the Markdown section here")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    configs = [("in_memory (1 process)", []),
               ("multi_processing, 2 workers", ["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"])]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        corpus = pathlib.Path(tmp) / "corpus"
        corpus.mkdir()
        n_docs, text_bytes = write_corpus(corpus, args.docs)
        for name, extra in configs:
            seconds, peak_mb = run_select(corpus, pathlib.Path(tmp) / "out", extra)
            report = json.loads((pathlib.Path(tmp) / "out" / "report.json").read_text())
            assert report["counts"]["input"] == n_docs, report["counts"]
            rows.append((name, seconds, n_docs / seconds, text_bytes / 1e6 / seconds, peak_mb, report["timings_s"]))
    lines = [
        "## End to end: `winnow select --method random` (read -> select -> write)",
        "",
        f"{n_docs:,} documents, {text_bytes / 1e6:.0f} MB of text (demo text repeated and perturbed), "
        f"{N_SHARDS} shards (.jsonl.zst and .parquet), `--fraction 0.1 --write-scores`; each run is "
        f"`{shlex.join(['winnow', 'select', '--input', 'CORPUS/*', '--output', 'OUT', '--fraction', '0.1', '--method', 'random', '--write-scores'])}` "
        "plus the runner flags.",
        "",
        "| runner mode | wall s | docs/s | MB/s | peak RSS MB (largest process) | score / decide+write pass s |",
        "|---|---|---|---|---|---|",
    ]
    for name, seconds, docs_s, mb_s, peak, timings in rows:
        lines.append(f"| {name} | {seconds:.1f} | {docs_s:,.0f} | {mb_s:.2f} | {peak} | "
                     f"{timings['score']:.1f} / {timings['decide_write']:.1f} |")
    publish(lines, args.out, __file__, argv, load_before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
