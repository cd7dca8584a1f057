"""Throughput of winnow's Vendi score against the vendi-score package, measured in one run.

Three data sets, every method timed on the same array in the same process (best of ``--repeats``
calls, methods interleaved round-robin):

1. ``--n`` x ``--dim`` random unit vectors (Gaussian rows, normalized; block i of 10,000 rows
   drawn with seed ``--seed`` + i): the dual
   form in memory (``vendi_score``), the streaming accumulator a Beam worker runs
   (``GramCombineFn`` over 1024-row blocks + ``vendi_from_gram``), and the reference
   ``score_dual``. The whole ``VendiScore`` pipeline on FnApiRunner runs on ``--beam-n`` vectors
   generated inside the pipeline (generation included in its time).
2. ``--small-n`` x ``--dim`` random unit vectors: the n x n paths too (winnow
   ``vendi_score_from_kernel`` and the reference ``score_X`` / ``score_K``).
3. Real text: the demo corpus (``examples.make_demo_corpus.build``) embedded by winnow's
   ``transforms/embed.py`` (hashed tf-idf + SVD to ``--dim`` dims, seed ``--seed``), all records
   and per source.

Usage: ``python benchmarks/bench_vendi.py --out benchmarks/sections/vendi.md``
"""

import argparse
import math
import os
import pathlib
import platform
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import apache_beam as beam  # noqa: E402
import numpy as np  # noqa: E402
from apache_beam.runners.portability.fn_api_runner import FnApiRunner  # noqa: E402
from vendi_score import vendi as reference  # noqa: E402

from benchmarks.common import write_section  # noqa: E402
from examples.make_demo_corpus import build  # noqa: E402
from winnow.transforms import embed  # noqa: E402
from winnow.transforms.vendi import (  # noqa: E402
    BATCH_SIZE,
    GramCombineFn,
    VendiScore,
    batch_gram,
    vendi_from_gram,
    vendi_profile_from_gram,
    vendi_score,
    vendi_score_from_kernel,
)

BLOCK_ROWS = 10_000  # vectors generated per element of the Beam benchmark's source


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    """(n, dim) float64 Gaussian rows scaled to unit norm."""
    X = np.random.default_rng(seed).standard_normal((n, dim))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def best_times(fns: dict, repeats: int) -> dict:
    """``{name: (fastest wall time in seconds, result)}``, the calls interleaved round-robin.

    Interleaving spreads load changes on the shared machine over every method alike.
    """
    best = {name: (math.inf, None) for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            result = fn()
            best[name] = (min(best[name][0], time.perf_counter() - start), result)
    return best


def streaming_score(X: np.ndarray) -> float:
    """VS_1 through GramCombineFn fed BATCH_SIZE-row blocks, merged from two partial accumulators."""
    fn = GramCombineFn()
    half = (X.shape[0] // 2 // BATCH_SIZE) * BATCH_SIZE
    parts = []
    for lo, hi in ((0, half), (half, X.shape[0])):
        accumulator = fn.create_accumulator()
        for start in range(lo, hi, BATCH_SIZE):
            accumulator = fn.add_input(accumulator, X[start : min(start + BATCH_SIZE, hi)])
        parts.append(accumulator)
    return vendi_from_gram(*fn.extract_output(fn.merge_accumulators(parts)))


def _block(index: int, n: int, dim: int, seed: int):
    rows = min(BLOCK_ROWS, n - index * BLOCK_ROWS)
    yield from unit_vectors(rows, dim, seed + index)


def beam_score(n: int, dim: int, seed: int) -> float:
    """VS_1 of n generated unit vectors through the VendiScore PTransform on FnApiRunner."""
    with tempfile.TemporaryDirectory() as tmp:
        result = pathlib.Path(tmp) / "score.txt"
        with beam.Pipeline(runner=FnApiRunner()) as pipeline:
            _ = (
                pipeline
                | "Blocks" >> beam.Create(range(math.ceil(n / BLOCK_ROWS)))
                | "Generate" >> beam.FlatMap(_block, n, dim, seed)
                | VendiScore(q=1)
                | "Write" >> beam.Map(lambda score: result.write_text(repr(score)))
            )
        return float(result.read_text())


def block_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    """(n, dim) unit vectors made exactly as the Beam benchmark's source makes them."""
    return np.concatenate([np.array(list(_block(i, n, dim, seed))) for i in range(math.ceil(n / BLOCK_ROWS))])


def text_embeddings(texts: list[str], dim: int, seed: int) -> np.ndarray:
    """(len(texts), dim) float32 unit rows from winnow's ``transforms/embed.py`` (defaults, fit on all texts)."""
    config = embed.EmbedConfig(dim=dim, seed=seed)
    vectorizer = embed.make_vectorizer(config)
    vectors, _ = embed.embed_texts(texts, vectorizer, embed.fit_projection(texts, vectorizer, config))
    return vectors


def rel(a: float, b: float) -> str:
    return f"{abs(a - b) / abs(b):.1e}"


def row(name: str, n: int, seconds: float, value: float, reference_value: float) -> str:
    return f"| {name} | {n:,} | {seconds:.3f} | {n / seconds:,.0f} | {value:.6f} | {rel(value, reference_value)} |"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--small-n", type=int, default=2_000)
    parser.add_argument("--beam-n", type=int, default=100_000)
    parser.add_argument("--code-docs", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    header = "| method | n | seconds | vectors/s | VS_1 | rel. diff vs reference |\n|---|---:|---:|---:|---:|---:|"
    lines = []

    # 1. Large n: dual forms only (the reference's n x n path would need an n x n matrix).
    X = block_vectors(args.n, args.dim, args.seed)
    timed = best_times(
        {
            "ref": lambda: reference.score_dual(X, q=1),
            "ours": lambda: vendi_score(X, 1),
            "stream": lambda: streaming_score(X),
        },
        args.repeats,
    )
    (t_ref, ref_value), (t_ours, ours), (t_stream, streamed) = timed.values()
    t_beam, beamed = best_times({"beam": lambda: beam_score(args.beam_n, args.dim, args.seed)}, 1)["beam"]
    if args.beam_n == args.n:
        beam_ref = ref_value
    else:
        beam_ref = reference.score_dual(block_vectors(args.beam_n, args.dim, args.seed))
    lines += [
        f"**{args.n:,} x {args.dim} random unit vectors** (float64)",
        "",
        header,
        row("winnow `vendi_score` (dual, in memory)", args.n, t_ours, ours, ref_value),
        row("winnow `GramCombineFn` (1024-row blocks, 2 partials merged)", args.n, t_stream, streamed, ref_value),
        row("winnow `VendiScore` pipeline, FnApiRunner (generation included)", args.beam_n, t_beam, beamed, beam_ref),
        row("reference `score_dual`", args.n, t_ref, ref_value, ref_value),
        "",
        f"Dual form: winnow in memory is {t_ref / t_ours:.2f}x the reference's speed; the streaming "
        f"accumulator {t_ref / t_stream:.2f}x; the single-process Beam pipeline "
        f"{t_ref * args.beam_n / args.n / t_beam:.2f}x (vectors/s ratio).",
        "",
    ]
    del X

    # 2. Small n: the n x n paths as well.
    S = unit_vectors(args.small_n, args.dim, args.seed + 1)
    K = S @ S.T
    timed = best_times(
        {
            "ref_dual": lambda: reference.score_dual(S, q=1),
            "ref_x": lambda: reference.score_X(S),
            "ref_k": lambda: reference.score_K(K, q=1),
            "ours": lambda: vendi_score(S, 1),
            "kernel": lambda: vendi_score_from_kernel(K, 1),
        },
        args.repeats,
    )
    (t_ref_dual, ref_dual), (t_ref_x, ref_x), (t_ref_k, ref_k), (t_ours, ours), (t_kernel, kernel) = timed.values()
    lines += [
        f"**{args.small_n:,} x {args.dim} random unit vectors**: n x n paths (kernel given for the `_K` rows)",
        "",
        header,
        row("winnow `vendi_score` (dual)", args.small_n, t_ours, ours, ref_dual),
        row("winnow `vendi_score_from_kernel` (n x n)", args.small_n, t_kernel, kernel, ref_k),
        row("reference `score_dual`", args.small_n, t_ref_dual, ref_dual, ref_dual),
        row("reference `score_X` (n x n)", args.small_n, t_ref_x, ref_x, ref_x),
        row("reference `score_K` (n x n)", args.small_n, t_ref_k, ref_k, ref_k),
        "",
    ]

    # 3. Real text: LSA embeddings of the demo corpus.
    raw, _ = build(args.code_docs)
    start = time.perf_counter()
    E32 = text_embeddings([r["text"] for r in raw], args.dim, args.seed)
    t_embed = time.perf_counter() - start
    # float64 for every method: given float32, the reference computes in float32 (about 1e-6 off).
    E = E32.astype(np.float64)
    ref_dual32 = reference.score_dual(E32, q=1)
    timed = best_times(
        {
            "ref_dual": lambda: reference.score_dual(E, q=1),
            "ref_x": lambda: reference.score_X(E),
            "ours": lambda: vendi_score(E, 1),
        },
        args.repeats,
    )
    (t_ref_dual, ref_dual), (t_ref_x, ref_x), (t_ours, ours) = timed.values()
    lines += [
        f"**Demo corpus, {len(raw):,} records as {args.dim}-dim winnow embeddings** "
        f"(`transforms/embed.py` defaults: hashed word 1-2-gram tf-idf + SVD, float32; {t_embed:.1f} s, "
        "not timed below), converted to float64 for every method (the reference's `score_dual` on the "
        f"float32 array itself gives {ref_dual32:.6f}, {rel(ref_dual32, ref_dual)} off: it computes in float32)",
        "",
        header,
        row("winnow `vendi_score` (dual)", len(raw), t_ours, ours, ref_dual),
        row("reference `score_dual`", len(raw), t_ref_dual, ref_dual, ref_dual),
        row("reference `score_X` (n x n)", len(raw), t_ref_x, ref_x, ref_x),
        "",
        "Vendi profile of the same embeddings (winnow, one eigendecomposition per row):",
        "",
        "| records | n | VS_0 | VS_0.5 | VS_1 | VS_2 | VS_inf |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    groups = {"all": np.ones(len(raw), bool)}
    for source in sorted({r["source"] for r in raw}):
        groups[source] = np.array([r["source"] == source for r in raw])
    for name, mask in groups.items():
        profile = vendi_profile_from_gram(batch_gram(E[mask], normalize=True), int(mask.sum()))
        lines.append(f"| {name} | {int(mask.sum()):,} | " + " | ".join(f"{v:.2f}" for v in profile.values()) + " |")

    load_after = os.getloadavg()
    section = [
        "## Vendi score",
        "",
        f"Machine: {os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
        f"numpy {np.__version__}, apache-beam {beam.__version__}. Best of {args.repeats} runs, "
        "methods interleaved (the Beam pipeline: one run). Every row of a table scores the same array "
        "in the same process.",
        "",
        *lines,
    ]
    write_section(args.out, section, __file__, argv, load_before, load_after)
    return 0


if __name__ == "__main__":
    sys.exit(main())
