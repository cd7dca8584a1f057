"""Per-stage throughput of winnow's cores against the reference packages, in one run on the same data.

Usage: ``python benchmarks/compare_references.py --out benchmarks/sections/references.md [--code-docs 3000]``

Every row of a stage processes the same documents (the demo corpus ``build(code_docs)``) in this
process, in the same run. The stage functions are the per-method benchmarks' own
(``bench_dsir``, ``bench_zipfit``, ``bench_vendi``, ``bench_dedup``), so these numbers and the
method sections measure the same code:

- DSIR fit pass (featurize raw + target, count) and score pass (featurize + log weight):
  winnow ``fast`` and ``sha256`` hashing against ``data-selection``'s ``HashedNgramDSIR``
  (``num_proc=1``), CPU seconds (winnow best of ``--repeats``, the reference one run);
- ZIP-FIT scoring against the target: winnow ``zstd_dict`` (the default) and ``faithful`` (gzip 9)
  against ``zip-fit``'s ``rank_sequences_by_alignment`` at gzip 9, wall seconds; the package
  runs ``Pool(cpu_count())`` worker processes, winnow one process;
- Vendi score (q = 1) of the corpus's winnow embeddings and of random unit vectors: winnow's
  dual form against ``vendi-score``'s ``score_dual``, wall seconds, best of ``--repeats``;
- MinHash signatures (128 permutations, word 5-shingles): winnow ``mix64`` and ``sha1`` against
  ``datasketch.MinHash.update_batch``, CPU seconds, best of ``--repeats``.
"""

import argparse
import os
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from vendi_score import vendi as vendi_reference  # noqa: E402

from benchmarks import bench_dedup, bench_dsir, bench_vendi, bench_zipfit  # noqa: E402
from benchmarks.common import publish  # noqa: E402
from examples.make_demo_corpus import build  # noqa: E402
from winnow.transforms import zipfit as zf  # noqa: E402
from winnow.transforms.dsir import DsirConfig  # noqa: E402
from winnow.transforms.vendi import vendi_score  # noqa: E402

TABLE_HEADER = ["| stage | implementation | items | seconds | items/s | MB/s | speed vs reference |",
                "|---|---|---:|---:|---:|---:|---:|"]


def _rows(stage: str, n: int, megabytes: float | None, timings: list[tuple[str, float]]) -> list[str]:
    """One table row per implementation; the last entry of ``timings`` is the reference."""
    reference_seconds = timings[-1][1]
    rows = []
    for name, seconds in timings:
        mb_s = f"{megabytes / seconds:.2f}" if megabytes is not None else "n/a"
        rows.append(f"| {stage} | {name} | {n:,} | {seconds:.3f} | {n / seconds:,.0f} | {mb_s} | {reference_seconds / seconds:.1f}x |")
    return rows


def dsir_rows(raw: list[dict], target: list[dict], megabytes: float, repeats: int) -> list[str]:
    texts, target_texts = [r["text"] for r in raw], [r["text"] for r in target]
    bench_dsir.code_point_classes()  # built once per process (a worker builds it in setup), not timed
    winnow = {}
    for hash_ in ("fast", "sha256"):
        runs = [bench_dsir.winnow_passes(DsirConfig(hash=hash_), texts, target_texts)[2] for _ in range(repeats)]
        winnow[hash_] = {stage: min((run[stage] for run in runs), key=lambda t: t[0]) for stage in ("fit", "score")}
    with tempfile.TemporaryDirectory() as tmp:
        _, reference = bench_dsir.reference_passes(raw, target, tmp)
    rows = []
    for stage in ("fit", "score"):
        rows += _rows(f"DSIR {stage} pass (CPU s)", len(texts), megabytes, [
            ("winnow `fast`", winnow["fast"][stage][0]),
            ("winnow `sha256`", winnow["sha256"][stage][0]),
            ("`data-selection` 1.0.3 HashedNgramDSIR", reference[stage][0]),
        ])
    return rows


def zipfit_rows(raw: list[dict], target: list[dict], megabytes: float) -> list[str]:
    from zip_fit.zipfit import ZIPFIT

    texts, targets = [r["text"].encode("utf-8") for r in raw], [r["text"].encode("utf-8") for r in target]
    timings = []
    for mode in (zf.ZSTD_DICT, zf.FAITHFUL):
        level = zf.DEFAULT_LEVELS[mode]
        repeats = bench_zipfit.FAST_REPEATS if mode == zf.ZSTD_DICT else 1
        scorer = zf.AlignmentScorer(zf.fit_target_model(targets, mode, level))
        _, seconds = bench_zipfit._best_time(lambda: scorer.score(texts), repeats)
        timings.append((f"winnow `{mode}` ({'zstd' if mode == zf.ZSTD_DICT else 'gzip'} {level}, 1 process)", seconds))
    level = zf.DEFAULT_LEVELS[zf.FAITHFUL]
    src, tgt = [r["text"] for r in raw], [r["text"] for r in target]
    package = ZIPFIT("unused.jsonl", "unused.jsonl", k=len(src), compress_level=level)
    _, seconds = bench_zipfit._best_time(lambda: package.rank_sequences_by_alignment(src, tgt), 1)
    timings.append((f"`zip-fit` 1.0.9 (gzip {level}, {os.cpu_count()} processes)", seconds))
    return _rows(f"ZIP-FIT scoring vs {len(targets)} targets (wall s)", len(texts), megabytes, timings)


def vendi_rows(raw: list[dict], n_random: int, dim: int, repeats: int) -> list[str]:
    embeddings = bench_vendi.text_embeddings([r["text"] for r in raw], dim, 0).astype(np.float64)
    vectors = bench_vendi.unit_vectors(n_random, dim, 0)
    rows = []
    for stage, X in ((f"Vendi q=1, corpus embeddings, d={dim} (wall s)", embeddings),
                     (f"Vendi q=1, random unit vectors, d={dim} (wall s)", vectors)):
        best = bench_vendi.best_times({"winnow": lambda X=X: vendi_score(X, 1),
                                       "reference": lambda X=X: vendi_reference.score_dual(X, q=1)}, repeats)
        (t_ours, ours), (t_ref, ref) = best["winnow"], best["reference"]
        assert abs(ours - ref) <= 1e-6 * abs(ref), (ours, ref)
        rows += _rows(stage, X.shape[0], None, [("winnow `vendi_score` (dual)", t_ours),
                                                 ("`vendi-score` 0.0.3 `score_dual`", t_ref)])
    return rows


def minhash_rows(raw: list[dict], megabytes: float, repeats: int) -> list[str]:
    texts = [r["text"] for r in raw]
    return _rows("MinHash signatures, 128 perm (CPU s)", len(texts), megabytes, [
        ("winnow `mix64`", bench_dedup._winnow_signatures(texts, "mix64", repeats)),
        ("winnow `sha1`", bench_dedup._winnow_signatures(texts, "sha1", repeats)),
        ("`datasketch` MinHash.update_batch", bench_dedup._datasketch_signatures(texts, repeats)),
    ])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, help="write the Markdown section here")
    parser.add_argument("--code-docs", type=int, default=3000)
    parser.add_argument("--vendi-n", type=int, default=100_000, help="random unit vectors for the Vendi rows")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    started = time.perf_counter()
    raw, target = build(args.code_docs)
    megabytes = sum(len(r["text"].encode("utf-8")) for r in raw) / 1e6
    table = [*TABLE_HEADER,
             *dsir_rows(raw, target, megabytes, args.repeats),
             *zipfit_rows(raw, target, megabytes),
             *vendi_rows(raw, args.vendi_n, args.dim, args.repeats),
             *minhash_rows(raw, megabytes, args.repeats)]
    lines = [
        "## winnow's cores against the reference packages",
        "",
        f"One run, one machine, the same data for every row of a stage: the demo corpus "
        f"`build(code_docs={args.code_docs})`, {len(raw):,} raw documents ({megabytes:.2f} MB UTF-8) and "
        f"{len(target)} target documents; for Vendi also {args.vendi_n:,} random unit vectors. "
        "Items are documents (vectors for Vendi). \"speed vs reference\" = reference seconds / these "
        "seconds. CPU-second rows measure this process only; wall-second rows include the machine's "
        "other load. The zip-fit package uses every core, winnow's scorer one.",
        "",
        *table,
        "",
        f"Total benchmark time {time.perf_counter() - started:.0f} s. Stage code: `bench_dsir.winnow_passes` / "
        "`reference_passes`, `bench_zipfit._best_time` around `AlignmentScorer.score` and "
        "`ZIPFIT.rank_sequences_by_alignment`, `bench_vendi.best_times`, `bench_dedup._winnow_signatures` / "
        "`_datasketch_signatures`. The winnow and reference Vendi scores agree to 1e-6 (checked).",
    ]
    publish(lines, args.out, __file__, argv, load_before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
