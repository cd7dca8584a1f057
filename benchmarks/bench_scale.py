"""How ``winnow select`` with deduplication scales with the corpus: wall time, docs/s and peak memory.

The corpus is ``bench_pipeline``'s (the demo corpus's real text repeated and perturbed, zstd JSON
Lines and Parquet shards), plus one more shard of planted duplicates: ``DUPLICATE_SHARE`` of the
documents are copies of other documents, alternately exact copies and near copies (one word in
``NEAR_COPY_EVERY`` replaced, word 5-shingle Jaccard about 0.9). Each configuration runs
``winnow select --method METHOD --dedup exact,minhash`` in a fresh process. Memory is measured
three ways. The largest single process is the ``ru_maxrss`` of the run's children, through
``bench_pipeline``'s wrapper. The process tree is the summed RSS of the run and all its
descendants, and the largest worker the RSS of the largest descendant of the run (the SDK
worker processes of ``multi_processing``), both sampled every ``SAMPLE_S`` seconds, so short
peaks can be missed.

Two more measurements per in-memory run. *Kernels*: the CPU seconds of reading and scoring without
Beam (``io.read_unit`` and ``score.BatchScorer`` with the run's own fitted state, one process),
over the run's first work units up to ``KERNEL_SAMPLE_BYTES`` of input and scaled to the whole
input by bytes: the run's CPU seconds over this is the framework's factor (the decide and write
passes count on the run's side). *Re-selection*: ``--features OUT/features`` with another fraction,
timed against the full run.

Usage: ``python benchmarks/bench_scale.py --docs 100000 300000 --out benchmarks/sections/scale.md``
"""

import argparse
import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple

import psutil
import zstandard

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from benchmarks.bench_pipeline import N_SHARDS, perturbed, write_corpus  # noqa: E402
from benchmarks.common import write_section  # noqa: E402
from examples import make_demo_corpus  # noqa: E402
from winnow.pipelines import features, jobs, score  # noqa: E402
from winnow.transforms import io  # noqa: E402
from winnow.transforms.minhash import MinHashConfig  # noqa: E402

KERNEL_SAMPLE_BYTES = 200 * 2**20
# Runs its arguments as a command and prints the children's peak RSS (KB) and CPU seconds.
_MEASURED = (
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
    "usage = resource.getrusage(resource.RUSAGE_CHILDREN); print(usage.ru_maxrss, usage.ru_utime + usage.ru_stime)"
)

DUPLICATE_SHARE = 0.05
NEAR_COPY_EVERY = 100
SAMPLE_S = 0.5
# runner mode -> (Beam flags, environment variables)
CONFIGS = {
    "in_memory": ([], {}),
    "multi_processing": (["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"], {}),
    # glibc returns blocks over 128 KB to the OS when freed; pyarrow allocates with malloc, not mimalloc
    "in_memory_lean_malloc": ([], {"MALLOC_MMAP_THRESHOLD_": "131072", "ARROW_DEFAULT_MEMORY_POOL": "system"}),
}


def near_copy(text: str, tag: str) -> str:
    """``text`` with every ``NEAR_COPY_EVERY``-th word (from the 10th) replaced by ``tag``."""
    words = text.split(" ")
    for i in range(10, len(words), NEAR_COPY_EVERY):
        words[i] = tag
    return " ".join(words)


def write_scale_corpus(directory: pathlib.Path, n_docs: int) -> tuple[int, int, int]:
    """``bench_pipeline.write_corpus`` plus a shard of planted copies; (documents, text bytes, copies)."""
    n_copies = int(n_docs * DUPLICATE_SHARE)
    n_unique = n_docs - n_copies
    _, text_bytes = write_corpus(directory, n_unique)
    raw, target = make_demo_corpus.build(code_docs=3000)
    base = [r["text"] for r in raw] + [r["text"] for r in target]
    lines = []
    for j in range(n_copies):
        source = (j * 7919) % n_unique  # spread the copied documents over the corpus
        text = perturbed(base[source % len(base)], source // len(base))  # doc-{source}'s text, as write_corpus made it
        if j % 2:
            text = near_copy(text, f"n{j}")
        text_bytes += len(text.encode("utf-8"))
        lines.append(json.dumps({"id": f"dup-{j:08d}", "text": text, "source": "bench"}).encode("utf-8"))
    payload = b"\n".join(lines) + b"\n"
    (directory / f"shard-{N_SHARDS}.jsonl.zst").write_bytes(zstandard.ZstdCompressor(level=3).compress(payload))
    return n_docs, text_bytes, n_copies


def rss_mb(process: psutil.Process) -> tuple[float, float]:
    """(summed RSS of ``process`` and its descendants, RSS of the largest descendant of the run), MB.

    ``process`` is the measuring wrapper; its children are the run, whose descendants are the
    workers. Processes that exit meanwhile are skipped.
    """
    runs = {child.pid for child in process.children()}
    sizes = {}
    for member in [process, *process.children(recursive=True)]:
        try:
            sizes[member.pid] = member.memory_info().rss / 2**20
        except psutil.NoSuchProcess:
            continue
    workers = [size for pid, size in sizes.items() if pid != process.pid and pid not in runs]
    return sum(sizes.values()), max(workers, default=0.0)


def run_select(command: list[str], env: dict[str, str], timeout_s: float) -> tuple[float, float, int, float, float]:
    """Run ``command`` in a fresh process; (wall s, CPU s, largest process peak MB, sampled tree and largest-worker peaks MB)."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", _MEASURED, *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env={**os.environ, **env})
    watched, tree_peak, worker_peak = psutil.Process(process.pid), 0.0, 0.0
    while process.poll() is None:
        tree, worker = rss_mb(watched)
        tree_peak, worker_peak = max(tree_peak, tree), max(worker_peak, worker)
        if time.perf_counter() - started > timeout_s:
            process.kill()
            raise TimeoutError(f"{shlex.join(command)} ran over {timeout_s:.0f} s")
        time.sleep(SAMPLE_S)
    stdout, stderr = process.communicate()
    if process.returncode:
        raise RuntimeError(f"{shlex.join(command)} failed:\n{stderr[-2000:]}")
    peak_kb, cpu_s = stdout.split()
    return time.perf_counter() - started, float(cpu_s), int(peak_kb) // 1024, tree_peak, worker_peak


def kernel_cpu_seconds(table_dir: pathlib.Path) -> tuple[float, int]:
    """(CPU s of reading and scoring the first units up to KERNEL_SAMPLE_BYTES without Beam, their input bytes)."""
    table = features.FeaturesTable(str(table_dir))
    manifest = table.manifest()
    options = jobs.scoring_from_manifest(manifest["scoring"], MinHashConfig())
    ids = io.IdPolicy(**manifest["ids"])
    scorer = score.table_scorer(options, table, ids)
    covered, started = 0, time.process_time()
    for unit in (io.Unit(**u) for u in manifest["units"]):
        records = 0
        for batch in io.read_unit(unit, options.read, ids):
            scorer.score(batch, records)
            records += batch.records
        covered += unit.size
        if covered >= KERNEL_SAMPLE_BYTES:
            break
    return time.process_time() - started, covered


class Run(NamedTuple):
    """One measured run of ``winnow select``."""

    n_docs: int
    text_bytes: int
    n_copies: int
    method: str
    config: str
    wall_s: float
    cpu_s: float
    largest_mb: int
    tree_mb: float
    worker_mb: float
    dropped: dict
    timings: dict
    load: float
    kernel_s: float | None  # CPU s of reading and scoring without Beam, scaled to the whole input
    reselect_s: float | None  # wall s of the re-selection from the features table


def _optional(value: float | None, template: str) -> str:
    return "—" if value is None else template.format(value)


def section(rows: list[Run]) -> list[str]:
    """The Markdown section for the runs made so far."""
    lines = [
        "## Scale: `winnow select --dedup exact,minhash` from 100k documents up",
        "",
        f"Corpus: `bench_pipeline`'s (demo text repeated and perturbed, {N_SHARDS} shards, .jsonl.zst and "
        f".parquet) plus one .jsonl.zst shard of planted copies ({DUPLICATE_SHARE:.0%} of the documents: "
        f"half exact copies, half near copies with one word in {NEAR_COPY_EVERY} replaced). Each run is "
        f"`{shlex.join(['winnow', 'select', '--input', 'CORPUS/*', '--output', 'OUT', '--fraction', '0.1', '--method', 'METHOD', '--dedup', 'exact,minhash'])}` "
        "plus the runner flags (`--target TARGET/*` for dsir and combined), in a fresh process. "
        "MB/s = MB of text per wall second; CPU s = the run's user + system CPU seconds (all its processes); "
        "MB/s per core = MB of text per CPU second. Kernels = CPU seconds of reading and scoring without Beam "
        f"(`io.read_unit` + `score.BatchScorer`, the run's fitted state), measured on the first units up to "
        f"{KERNEL_SAMPLE_BYTES / 2**20:.0f} MiB of input files and scaled by input bytes; run CPU ÷ kernels is the "
        "factor the framework, the fit pass and the decide/write passes add. Re-selection = "
        "`--features OUT/features --fraction 0.05` (same method and dedup), wall seconds. "
        "Largest process = `ru_maxrss` of the run's children; process tree = summed RSS of the "
        "run and its descendants; largest worker = RSS of the largest SDK worker process "
        f"(multi_processing only), both sampled every {SAMPLE_S} s. `in_memory_lean_malloc` is "
        "in_memory with the environment "
        f"`{' '.join(f'{k}={v}' for k, v in CONFIGS['in_memory_lean_malloc'][1].items())}`. "
        "The duplicates dropped include the demo text's own copies, so they exceed the planted ones.",
        "",
        "| docs | text MB | method | runner mode | wall s | docs/s | MB/s | CPU s | MB/s per core | kernels CPU s | run CPU ÷ kernels "
        "| re-selection s | full ÷ re-selection | peak RSS MB, largest process | peak RSS MB, process tree | peak RSS MB, largest worker "
        "| exact / near duplicates dropped | fit / score / decide+write s | load (1 min) at start |",
        "|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    for run in rows:
        mb = run.text_bytes / 1e6
        timings = " / ".join(f"{run.timings.get(name, 0):.0f}" for name in ("fit", "score", "decide_write"))
        lines.append(
            f"| {run.n_docs:,} | {mb:.0f} | {run.method} | {run.config} | {run.wall_s:.0f} | {run.n_docs / run.wall_s:,.0f} | "
            f"{mb / run.wall_s:.2f} | {run.cpu_s:.0f} | {mb / run.cpu_s:.2f} | {_optional(run.kernel_s, '{:.0f}')} | "
            f"{_optional(None if run.kernel_s is None else run.cpu_s / run.kernel_s, '{:.2f}')} | {_optional(run.reselect_s, '{:.1f}')} | "
            f"{_optional(None if run.reselect_s is None else run.wall_s / run.reselect_s, '{:.1f}')} | {run.largest_mb:,} | "
            f"{run.tree_mb:,.0f} | {f'{run.worker_mb:,.0f}' if run.worker_mb else '—'} | "
            f"{run.dropped.get('exact_duplicate', 0):,} / {run.dropped.get('near_duplicate', 0):,} | {timings} | {run.load:.2f} |")
    return lines


def measure(corpus: pathlib.Path, target: pathlib.Path, work: pathlib.Path, method: str, config: str, timeout_s: float,
            corpus_stats: tuple[int, int, int]) -> Run:
    """One full run (and, in memory, its kernels and a re-selection) of ``method`` under ``config``."""
    output = work / "out"
    common = ["--fraction", "0.1", "--method", method, "--dedup", "exact,minhash", "--overwrite", *CONFIGS[config][0]]
    command = [sys.executable, "-m", "winnow.pipelines.cli", "select", "--input", str(corpus / "*"), "--output", str(output), *common]
    if method in ("dsir", "combined"):
        command += ["--target", str(target / "*")]
    load = os.getloadavg()[0]
    wall_s, cpu_s, largest_mb, tree_mb, worker_mb = run_select(command, CONFIGS[config][1], timeout_s)
    report = json.loads((output / "report.json").read_text())
    assert report["counts"]["input"] == corpus_stats[0], report["counts"]
    kernel_s = reselect_s = None
    if config == "in_memory":
        sampled_s, sampled_bytes = kernel_cpu_seconds(output / "features")
        kernel_s = sampled_s * sum(f.stat().st_size for f in corpus.iterdir()) / sampled_bytes
        reselect = [sys.executable, "-m", "winnow.pipelines.cli", "select", "--features", str(output / "features"),
                    "--output", str(work / "again"), *common]
        reselect[reselect.index("0.1")] = "0.05"
        started = time.perf_counter()
        subprocess.run(reselect, check=True, capture_output=True, timeout=timeout_s)
        reselect_s = time.perf_counter() - started
    return Run(*corpus_stats, method, config, wall_s, cpu_s, largest_mb, tree_mb, worker_mb, report["counts"]["dropped"],
               report["timings_s"], load, kernel_s, reselect_s)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, nargs="+", default=[100_000, 300_000])
    parser.add_argument("--methods", nargs="+", default=["random"], choices=["random", "dsir", "combined"])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--skip", nargs="*", default=[], metavar="CONFIG:DOCS",
                        help="runs not to make, e.g. in_memory:1000000")
    parser.add_argument("--timeout", type=float, default=7200, help="seconds per run")
    parser.add_argument("--workdir", type=pathlib.Path, help="where corpora and outputs go (default: a temporary directory)")
    parser.add_argument("--out", type=pathlib.Path, help="write the Markdown section here")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = pathlib.Path(tmp)
        target = work / "demo" / "target"  # the demo corpus's target set, for dsir and combined
        make_demo_corpus.write_corpus(target.parent, code_docs=10)
        for n_docs in args.docs:
            corpus = work / f"corpus-{n_docs}"
            corpus.mkdir()
            corpus_stats = write_scale_corpus(corpus, n_docs)
            for method in args.methods:
                for config in args.configs:
                    if f"{config}:{n_docs}" in args.skip:
                        continue
                    rows.append(measure(corpus, target, work, method, config, args.timeout, corpus_stats))
                    print(section(rows)[-1], flush=True)
                    if args.out:  # after every run, so a long series that is stopped keeps what it measured
                        write_section(args.out, section(rows), __file__, argv, load_before, os.getloadavg())
            shutil.rmtree(corpus)
    return 0


if __name__ == "__main__":
    sys.exit(main())
