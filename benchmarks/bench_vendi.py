"""Throughput and agreement of winnow's Vendi score against the vendi-score package, measured in one run.

Every row of a table scores the same float64 array in the same process, best of ``--repeats``
calls, the methods called round-robin (``common.interleaved``) so that load changes on the
shared machine fall on all of them alike. Both sides spend their time in BLAS (winnow in
numpy's OpenBLAS, the reference partly in scipy's). The main tables limit both libraries to one
BLAS thread (``threadpoolctl``), so both sides use one core and the ratios are of CPU seconds:
with the default two threads per library, the threads of one library still spinning after a
call slow the next call into the other library, which interleaving turns into a bias. One
extra table gives the default threads, wall seconds, at the largest n. winnow runs its core
functions only (``winnow.transforms.vendi``; no Beam):

1. ``--n`` x ``--dim`` random unit vectors (Gaussian rows, normalized, seed ``--seed``): the dual
   form in memory (``vendi_score``), the streaming form a worker runs (``batch_gram`` over
   1024-row blocks, two partial sums merged with ``merge_grams``, then ``vendi_from_gram``), and
   the reference ``score_dual``.
2. ``--small-n`` x ``--dim`` random unit vectors: the n x n paths too (winnow
   ``vendi_score_from_kernel`` and the reference ``score_X`` / ``score_K``).
3. Real text: the demo corpus (``examples.make_demo_corpus.build``) embedded by winnow's
   ``transforms/embed.py`` core (hashed tf-idf + SVD to ``--dim`` dims, seed ``--seed``), all
   records and per source.

Usage: ``python benchmarks/bench_vendi.py --out benchmarks/sections/vendi.md [--repeats 5]``
"""

import argparse
import os
import pathlib
import platform
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import scipy  # noqa: E402
from threadpoolctl import threadpool_info, threadpool_limits  # noqa: E402
from vendi_score import vendi as reference  # noqa: E402

from benchmarks.common import interleaved, write_section  # noqa: E402
from examples.make_demo_corpus import build  # noqa: E402
from winnow.transforms import embed  # noqa: E402
from winnow.transforms.vendi import (  # noqa: E402
    BATCH_SIZE,
    batch_gram,
    merge_grams,
    vendi_from_gram,
    vendi_profile_from_gram,
    vendi_score,
    vendi_score_from_kernel,
)

HEADER = [
    "| method | n | CPU s | wall s | vectors/s (CPU) | speed vs reference (CPU) | VS_1 | rel. diff vs reference |",
    "|---|---:|---:|---:|---:|---:|---:|---:|",
]
WALL_HEADER = [
    "| method | n | wall s | CPU s | vectors/s (wall) | speed vs reference (wall) | VS_1 |",
    "|---|---:|---:|---:|---:|---:|---:|",
]


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    """(n, dim) float64 Gaussian rows scaled to unit norm."""
    X = np.random.default_rng(seed).standard_normal((n, dim))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def streaming_score(X: np.ndarray) -> float:
    """VS_1 the way a worker accumulates it: ``batch_gram`` per BATCH_SIZE-row block, two partial
    sums merged with ``merge_grams``, then ``vendi_from_gram``."""
    half = (X.shape[0] // 2 // BATCH_SIZE) * BATCH_SIZE
    parts = []
    for lo, hi in ((0, half), (half, X.shape[0])):
        blocks = ((X[start : min(start + BATCH_SIZE, hi)], min(BATCH_SIZE, hi - start)) for start in range(lo, hi, BATCH_SIZE))
        parts.append(merge_grams((batch_gram(block, True), rows) for block, rows in blocks))
    return vendi_from_gram(*merge_grams(parts))


def text_embeddings(texts: list[str], dim: int, seed: int) -> np.ndarray:
    """(len(texts), dim) float32 unit rows from winnow's ``transforms/embed.py`` (defaults, fit on all texts)."""
    config = embed.EmbedConfig(dim=dim, seed=seed)
    vectorizer = embed.make_vectorizer(config)
    vectors, _ = embed.embed_texts(texts, vectorizer, embed.fit_projection(texts, vectorizer, config))
    return vectors


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def rows(n: int, timed: dict, names: dict, reference_key: str, values_against: dict | None = None) -> list[str]:
    """Table rows; ``values_against[key]`` names the reference value a row's score is compared with."""
    ref = timed[reference_key]
    out = []
    for key, label in names.items():
        t = timed[key]
        against = timed[(values_against or {}).get(key, reference_key)].result
        out.append(
            f"| {label} | {n:,} | {t.cpu:.3f} | {t.wall:.3f} | {n / t.cpu:,.0f} | {ref.cpu / t.cpu:.2f}× | "
            f"{t.result:.6f} | {rel(t.result, against):.1e} |"
        )
    return out


def wall_rows(n: int, timed: dict, names: dict, reference_key: str) -> list[str]:
    ref = timed[reference_key]
    return [
        f"| {label} | {n:,} | {timed[key].wall:.3f} | {timed[key].cpu:.3f} | {n / timed[key].wall:,.0f} | "
        f"{ref.wall / timed[key].wall:.2f}× | {timed[key].result:.6f} |"
        for key, label in names.items()
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--small-n", type=int, default=2_000)
    parser.add_argument("--code-docs", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=5, help="best of this many calls, every method")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    lines = []

    # Everything but the last table runs with one BLAS thread per library (module docstring); the
    # embeddings and the kernel are computed inside too, so no thread is left spinning before a timed call.
    with threadpool_limits(1):
        # 1. Large n: dual forms only (the reference's n x n path would need an n x n matrix).
        X = unit_vectors(args.n, args.dim, args.seed)
        large = {
            "ref": lambda: reference.score_dual(X, q=1),
            "ours": lambda: vendi_score(X, 1),
            "stream": lambda: streaming_score(X),
        }
        timed = interleaved(large, args.repeats)
        lines += [
            f"**{args.n:,} x {args.dim} random unit vectors** (float64)",
            "",
            *HEADER,
            *rows(args.n, timed, {
                "ours": "winnow `vendi_score` (dual, in memory)",
                "stream": "winnow streaming: `batch_gram` per 1024 rows, `merge_grams`, `vendi_from_gram`",
                "ref": "reference `score_dual`",
            }, "ref"),
            "",
        ]

        # 2. Small n: the n x n paths as well.
        S = unit_vectors(args.small_n, args.dim, args.seed + 1)
        K = S @ S.T
        timed = interleaved(
            {
                "ref_dual": lambda: reference.score_dual(S, q=1),
                "ref_x": lambda: reference.score_X(S),
                "ref_k": lambda: reference.score_K(K, q=1),
                "ours": lambda: vendi_score(S, 1),
                "kernel": lambda: vendi_score_from_kernel(K, 1),
            },
            args.repeats,
        )
        lines += [
            f"**{args.small_n:,} x {args.dim} random unit vectors**: n x n paths too (the kernel is given to the "
            "`_K` / `from_kernel` rows; speed and difference of each winnow row against its reference counterpart)",
            "",
            *HEADER,
            *rows(args.small_n, timed, {"ours": "winnow `vendi_score` (dual)", "ref_dual": "reference `score_dual`"},
                  "ref_dual"),
            *rows(args.small_n, timed, {"kernel": "winnow `vendi_score_from_kernel` (n x n)",
                                        "ref_k": "reference `score_K` (n x n)"}, "ref_k"),
            *rows(args.small_n, timed, {"ref_x": "reference `score_X` (n x n; no winnow counterpart)"}, "ref_x"),
            "",
        ]

        # 3. Real text: LSA embeddings of the demo corpus.
        raw, _ = build(args.code_docs)
        start = time.perf_counter()
        E32 = text_embeddings([r["text"] for r in raw], args.dim, args.seed)
        t_embed = time.perf_counter() - start
        # float64 for every method: given float32, the reference computes in float32 (about 1e-7 off).
        E = E32.astype(np.float64)
        ref_dual32 = reference.score_dual(E32, q=1)
        timed = interleaved(
            {
                "ref_dual": lambda: reference.score_dual(E, q=1),
                "ref_x": lambda: reference.score_X(E),
                "ours": lambda: vendi_score(E, 1),
            },
            args.repeats,
        )
        lines += [
            f"**Demo corpus, {len(raw):,} records as {args.dim}-dim winnow embeddings** "
            f"(`transforms/embed.py` defaults: hashed word 1-2-gram tf-idf + SVD, float32; {t_embed:.1f} s wall, "
            "not timed below), converted to float64 for every method (the reference's `score_dual` on the "
            f"float32 array itself gives {ref_dual32:.6f}, {rel(ref_dual32, timed['ref_dual'].result):.1e} off: it "
            "computes in float32)",
            "",
            *HEADER,
            *rows(len(raw), timed, {"ours": "winnow `vendi_score` (dual)", "ref_dual": "reference `score_dual`"},
                  "ref_dual"),
            *rows(len(raw), timed, {"ref_x": "reference `score_X` (n x n)"}, "ref_x"),
            "",
            "Vendi profile of the same embeddings (winnow `vendi_profile_from_gram`, one eigendecomposition per row):",
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

    # Last, so that the threads these calls leave spinning slow no other measurement.
    default_threads = interleaved(large, args.repeats)
    del X
    lines += [
        "",
        f"**Default BLAS threads**: the {args.n:,} vectors of the first table, each library with its default "
        f"{os.cpu_count()} BLAS threads, wall seconds (measured after every other table):",
        "",
        *WALL_HEADER,
        *wall_rows(args.n, default_threads, {
            "ours": "winnow `vendi_score` (dual, in memory)",
            "stream": "winnow streaming (as above)",
            "ref": "reference `score_dual`",
        }, "ref"),
    ]

    load_after = os.getloadavg()
    blas = sorted({f"{info['internal_api']} {info['version']} ({info['num_threads']} threads by default)"
                   for info in threadpool_info() if info["user_api"] == "blas"})
    section = [
        "## Vendi score",
        "",
        f"Machine: {os.cpu_count()} cores ({platform.processor() or platform.machine()}), numpy {np.__version__}, "
        f"scipy {scipy.__version__}, BLAS: {'; '.join(blas)}; vendi-score 0.0.3. Best of {args.repeats} calls "
        "on every row, methods interleaved; every row of a table scores the same array in the same process. "
        "Unless a table says otherwise, both libraries are limited to one BLAS thread, so each side uses one "
        "core and \"speed vs reference\" is a CPU-second ratio (with two threads per library, the threads "
        "one library leaves spinning slow the next call into the other, which interleaving turns into a bias).",
        "",
        *lines,
    ]
    write_section(args.out, section, __file__, argv, load_before, load_after)
    return 0


if __name__ == "__main__":
    sys.exit(main())
