"""winnow's cores against the reference packages: speed per stage, and the largest differences in output.

Usage: ``python benchmarks/compare_references.py --out benchmarks/sections/references.md [--code-docs 3000]
[--repeats 3]``

Every row of a stage processes the same documents (the demo corpus ``build(code_docs)``) in this
process, in the same run, best of ``--repeats`` calls on every row. The stage functions are the
per-method benchmarks' own (``bench_dsir``, ``bench_zipfit``, ``bench_vendi``, ``bench_dedup``),
so these numbers and the method sections measure the same code. winnow runs its core functions
only (no Beam); each reference runs its fastest documented API:

- DSIR fit pass and score pass: winnow ``fast`` and ``sha256`` hashing against ``data-selection``'s
  ``HashedNgramDSIR`` (``num_proc=1``), CPU seconds;
- ZIP-FIT scoring: winnow ``faithful`` (gzip 9, the like-for-like row) and ``zstd_dict`` (an
  approximation; its Spearman agreement with ``faithful`` is given) against ``zip-fit``'s
  ``rank_sequences_by_alignment`` at gzip 9, CPU seconds including the package's worker processes;
- Vendi score (q = 1) of the corpus's winnow embeddings and of random unit vectors: winnow's
  dual form against ``vendi-score``'s ``score_dual``, CPU seconds with one BLAS thread per library
  (as in ``bench_vendi``);
- MinHash signatures (128 permutations, word 5-shingles): winnow ``mix64`` and ``sha1`` against
  ``datasketch.MinHash.bulk``, CPU seconds.

Then the largest differences between winnow's outputs and the references', beside what the
reference-equality tests assert, on the demo corpus and on the tests' own inputs.
"""

import argparse
import os
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402
from vendi_score import vendi as vendi_reference  # noqa: E402

from benchmarks import bench_dedup, bench_dsir, bench_vendi, bench_zipfit  # noqa: E402
from benchmarks.common import best_of, interleaved, publish  # noqa: E402
from examples.make_demo_corpus import build  # noqa: E402
from winnow.transforms import zipfit as zf  # noqa: E402
from winnow.transforms.dsir import DsirConfig  # noqa: E402
from winnow.transforms.minhash import MinHashConfig, minhash_signatures, permutation_params  # noqa: E402
from winnow.transforms.text import char_shingles, code_point_classes, word_shingles  # noqa: E402
from winnow.transforms.vendi import vendi_score  # noqa: E402

TABLE_HEADER = ["| stage | implementation | items | seconds | items/s | MB/s | speed vs reference |",
                "|---|---|---:|---:|---:|---:|---:|"]
VENDI_ORDERS = (0.0, 0.5, 1.0, 2.0, float("inf"))
VENDI_TEST_SHAPES = ((20, 64), (64, 64), (300, 16), (1000, 32))  # tests/test_vendi.py::test_matches_reference_on_embeddings


def _rows(stage: str, n: int, megabytes: float | None, timings: list[tuple[str, float]]) -> list[str]:
    """One table row per implementation; the last entry of ``timings`` is the reference."""
    reference_seconds = timings[-1][1]
    rows = []
    for name, seconds in timings:
        mb_s = f"{megabytes / seconds:.2f}" if megabytes is not None else "n/a"
        rows.append(f"| {stage} | {name} | {n:,} | {seconds:.3f} | {n / seconds:,.0f} | {mb_s} | {reference_seconds / seconds:.1f}× |")
    return rows


def _megabytes(texts) -> float:
    return sum(len(t.encode("utf-8")) for t in texts) / 1e6


def dsir_rows(raw: list[dict], target: list[dict], repeats: int) -> tuple[list[str], dict]:
    texts, target_texts = [r["text"] for r in raw], [r["text"] for r in target]
    code_point_classes()  # built once per process (a worker builds it in setup), not timed
    winnow = {h: bench_dsir.winnow_passes(DsirConfig(hash=h), texts, target_texts, repeats) for h in ("fast", "sha256")}
    with tempfile.TemporaryDirectory() as tmp:
        ref_weights, _, ref_fit, ref_score = bench_dsir.reference_passes(raw, target, tmp, repeats)
    name = "`data-selection` 1.0.3 `HashedNgramDSIR` (`num_proc=1`)"
    rows = _rows("DSIR fit: featurize raw + target, count (CPU s)", len(texts) + len(target_texts),
                 _megabytes(texts + target_texts), [
                     ("winnow `fast`", winnow["fast"][2].cpu),
                     ("winnow `sha256` (the reference's buckets)", winnow["sha256"][2].cpu),
                     (name, ref_fit.cpu)])
    rows += _rows("DSIR score: featurize raw, log weight (CPU s)", len(texts), _megabytes(texts), [
        ("winnow `fast`", winnow["fast"][3].cpu),
        ("winnow `sha256` (the reference's buckets)", winnow["sha256"][3].cpu),
        (name, ref_score.cpu)])
    return rows, {"demo": bench_dsir.deviation(winnow["sha256"][0], ref_weights)}


def dsir_test_deviation(code_docs: int) -> tuple[float, float]:
    """(max abs, max rel) of sha256 weights vs the reference on ``build(code_docs)``: one run each, untimed."""
    raw, target = build(code_docs)
    texts, target_texts = [r["text"] for r in raw], [r["text"] for r in target]
    ours = bench_dsir.winnow_passes(DsirConfig(hash="sha256"), texts, target_texts, 1)[0]
    with tempfile.TemporaryDirectory() as tmp:
        reference = bench_dsir.reference_passes(raw, target, tmp, 1)[0]
    return bench_dsir.deviation(ours, reference)


def zipfit_rows(raw: list[dict], target: list[dict], repeats: int) -> tuple[list[str], dict]:
    texts, targets = [r["text"].encode("utf-8") for r in raw], [r["text"].encode("utf-8") for r in target]
    src, tgt = [r["text"] for r in raw], [r["text"] for r in target]
    level = zf.DEFAULT_LEVELS[zf.FAITHFUL]
    faithful, _, faithful_t = bench_zipfit.winnow_scores(texts, targets, zf.FAITHFUL, level, repeats)
    fast, _, fast_t = bench_zipfit.winnow_scores(texts, targets, zf.ZSTD_DICT, zf.DEFAULT_LEVELS[zf.ZSTD_DICT], repeats)
    package, package_t = bench_zipfit.package_scores(src, tgt, level, repeats)
    rho = spearmanr(faithful, fast).statistic
    rows = _rows(f"ZIP-FIT scoring vs {len(targets)} targets (CPU s, package workers included)", len(texts),
                 _megabytes(src), [
                     (f"winnow `faithful` (gzip {level}; exact)", faithful_t.cpu),
                     (f"winnow `zstd_dict` (zstd 3; approximation, Spearman {rho:.3f} vs `faithful`)", fast_t.cpu),
                     (f"`zip-fit` 1.0.9 `rank_sequences_by_alignment` (gzip {level}, {os.cpu_count()} processes)",
                      package_t.cpu)])
    # Level 0, the package's default: one untimed run each, for the deviation only.
    package0, _ = bench_zipfit.package_scores(src, tgt, 0, 1)
    faithful0 = bench_zipfit.winnow_scores(texts, targets, zf.FAITHFUL, 0, 1)[0]
    return rows, {9: float(np.abs(package - faithful).max()), 0: float(np.abs(package0 - faithful0).max())}


def zipfit_test_deviation() -> dict:
    """Max |winnow faithful - package| on tests/test_zipfit.py's own input (build(300): 12 manual + 12 code
    documents against 6 targets), at gzip 9 and 0."""
    raw, target = build(300)
    manual = [r["text"] for r in raw if r["source"] == "reference_manual"][:12]
    code = [r["text"] for r in raw if r["source"] == "stdlib_code"][:12]
    source, targets = manual + code, [r["text"] for r in target[:6]]
    out = {}
    for level in (9, 0):
        package, _ = bench_zipfit.package_scores(source, targets, level, 1)
        ours = bench_zipfit.winnow_scores([t.encode("utf-8") for t in source], [t.encode("utf-8") for t in targets],
                                          zf.FAITHFUL, level, 1)[0]
        out[level] = float(np.abs(package - ours).max())
    return out


def vendi_rows(raw: list[dict], n_random: int, dim: int, repeats: int) -> tuple[list[str], dict]:
    # One BLAS thread per library for everything here, inputs included (see bench_vendi's docstring).
    with threadpool_limits(1):
        embeddings = bench_vendi.text_embeddings([r["text"] for r in raw], dim, 0).astype(np.float64)
        vectors = bench_vendi.unit_vectors(n_random, dim, 0)
        rows = []
        for stage, X in ((f"Vendi q=1, corpus embeddings, d={dim} (CPU s, 1 BLAS thread)", embeddings),
                         (f"Vendi q=1, random unit vectors, d={dim} (CPU s, 1 BLAS thread)", vectors)):
            best = interleaved({"winnow": lambda X=X: vendi_score(X, 1),
                                "reference": lambda X=X: vendi_reference.score_dual(X, q=1)}, repeats)
            rows += _rows(stage, X.shape[0], None, [("winnow `vendi_score` (dual)", best["winnow"].cpu),
                                                     ("`vendi-score` 0.0.3 `score_dual`", best["reference"].cpu)])
    demo = {q: _rel(vendi_score(embeddings, q), vendi_reference.score_dual(embeddings, q=_ref_q(q))) for q in VENDI_ORDERS}
    return rows, demo


def _ref_q(q):
    return "inf" if np.isinf(q) else q


def _rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def vendi_test_deviation() -> dict:
    """Max relative difference per order on tests/test_vendi.py's inputs and comparison (score_K for
    n <= d, score_dual for n >= d)."""
    worst = dict.fromkeys(VENDI_ORDERS, 0.0)
    for n, d in VENDI_TEST_SHAPES:
        rng = np.random.default_rng(n * 1000 + d)
        X = rng.standard_normal((n, d)) * rng.uniform(0.5, 2.0, size=(n, 1))
        for q in VENDI_ORDERS:
            if n <= d:
                Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
                expected = vendi_reference.score_K(Xn @ Xn.T, q=_ref_q(q))
            else:
                expected = vendi_reference.score_dual(X, q=_ref_q(q))
            worst[q] = max(worst[q], _rel(vendi_score(X, q), expected))
    return worst


def minhash_rows(raw: list[dict], repeats: int) -> list[str]:
    texts = [r["text"] for r in raw]
    timings = [(name, best_of(lambda sign=bench_dedup._signer(key): sign(texts), repeats).cpu) for name, key in (
        ("winnow `mix64`", "mix64"), ("winnow `sha1` (= datasketch's values)", "sha1"),
        ("`datasketch` 2.0.0 `MinHash.bulk`", "bulk"))]
    return _rows("MinHash signatures, 128 perm (CPU s)", len(texts), _megabytes(texts), timings)


def minhash_mismatches(texts: list[str]) -> dict:
    """{(shingle kind, scheme): (differing signature entries, all entries)}: winnow sha1 vs datasketch."""
    from datasketch import MinHash

    out = {}
    for kind, shingles in (("word", word_shingles), ("char", char_shingles)):
        encoded = [[s.encode("utf-8") for s in shingles(t, 5)] for t in texts]
        for scheme in ("affine32", "legacy"):
            config = MinHashConfig(shingle_kind=kind, shingle_hash="sha1", permutation=scheme)
            ours = minhash_signatures(texts, config, permutation_params(config.num_perm, config.seed, scheme))
            theirs = np.array([m.hashvalues for m in MinHash.bulk(encoded, num_perm=config.num_perm,
                                                                  seed=config.seed, scheme=scheme)], np.uint64)
            out[(kind, scheme)] = (int(np.sum(ours.astype(np.uint64) != theirs)), ours.size)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, help="write the Markdown section here")
    parser.add_argument("--code-docs", type=int, default=3000)
    parser.add_argument("--vendi-n", type=int, default=100_000, help="random unit vectors for the Vendi rows")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many calls on every row")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    started = time.perf_counter()
    raw, target = build(args.code_docs)
    megabytes = _megabytes([r["text"] for r in raw])
    dsir, dsir_dev = dsir_rows(raw, target, args.repeats)
    zipfit, zipfit_dev = zipfit_rows(raw, target, args.repeats)
    vendi, vendi_dev = vendi_rows(raw, args.vendi_n, args.dim, args.repeats)
    minhash = minhash_rows(raw, args.repeats)
    speed_seconds = time.perf_counter() - started
    dsir_test = dsir_test_deviation(100)
    zipfit_test = zipfit_test_deviation()
    vendi_test = vendi_test_deviation()
    mismatches = minhash_mismatches([r["text"] for r in raw])

    lines = [
        "## winnow's cores against the reference packages",
        "",
        f"One run, one machine, the same data for every row of a stage: the demo corpus "
        f"`build(code_docs={args.code_docs})`, {len(raw):,} raw documents ({megabytes:.2f} MB UTF-8) and "
        f"{len(target)} target documents; for Vendi also {args.vendi_n:,} random unit vectors. Every row is the "
        f"best of {args.repeats} calls. winnow runs its core functions (no Beam); each reference its fastest "
        "documented API. Items are documents (vectors for Vendi; the DSIR fit counts raw + target documents). "
        "\"speed vs reference\" = reference seconds / these seconds. CPU-second rows count this process, and for "
        "zip-fit also its worker processes (a per-core comparison); the Vendi rows limit numpy's and scipy's "
        "BLAS to one thread each (the Vendi section says why).",
        "",
        *TABLE_HEADER, *dsir, *zipfit, *vendi, *minhash,
        "",
        f"Speed rows took {speed_seconds:.0f} s of wall time. Stage code: `bench_dsir.winnow_passes` / "
        "`reference_passes`, `bench_zipfit.winnow_scores` / `package_scores`, `common.interleaved` around "
        "`vendi_score` / `score_dual`, `bench_dedup._signer` (every signer in this process, unlike the dedup "
        "section's fresh process per signer).",
        "",
        "### Largest differences from the references",
        "",
        "The measured largest differences, beside what the reference-equality tests assert (a claim of "
        "agreement elsewhere in this file is the test's tolerance, not the measured value). \"Demo corpus\" = the "
        "documents above; \"test input\" = the test's own data, recomputed here with the core functions.",
        "",
        "| comparison | input | largest difference (measured) | what the test asserts |",
        "|---|---|---|---|",
        f"| DSIR `sha256` log weights vs `data-selection` | demo corpus ({len(raw):,} documents) | "
        f"{dsir_dev['demo'][0]:.1e} absolute, {dsir_dev['demo'][1]:.1e} relative to max(|log w|, 1) | not tested at "
        "this size |",
        f"| DSIR `sha256` log weights vs `data-selection` | test input (`build(100)`, "
        "tests/test_dsir.py) | "
        f"{dsir_test[0]:.1e} absolute, {dsir_test[1]:.1e} relative to max(|log w|, 1) | < 1e-11 absolute, the same "
        "too-short decisions and the same top-k set (`test_sha256_mode_reproduces_the_reference_weights_and_top_k`) |",
        f"| ZIP-FIT `faithful` vs `zip-fit`, gzip 9 | demo corpus | {zipfit_dev[9]:.1e} absolute | not tested at "
        "this size |",
        f"| ZIP-FIT `faithful` vs `zip-fit`, gzip 0 | demo corpus | {zipfit_dev[0]:.1e} absolute | not tested at "
        "this size |",
        f"| ZIP-FIT `faithful` vs `zip-fit`, gzip 9 | test input (24 documents x 6 targets, tests/test_zipfit.py) | "
        f"{zipfit_test[9]:.1e} absolute | < 1e-15 absolute (`test_faithful_equals_zip_fit_package`) |",
        f"| ZIP-FIT `faithful` vs `zip-fit`, gzip 0 | test input | {zipfit_test[0]:.1e} absolute | < 1e-15 absolute |",
        *[f"| Vendi `vendi_score` vs `score_dual`, q = {q:g} | demo corpus embeddings (float64) | "
          f"{vendi_dev[q]:.1e} relative | not tested on these embeddings |" for q in VENDI_ORDERS],
        *[f"| Vendi `vendi_score` vs `score_K` (n <= d) / `score_dual` (n >= d), q = {q:g} | test input "
          f"(shapes {', '.join(f'{n}x{d}' for n, d in VENDI_TEST_SHAPES)}, tests/test_vendi.py) | "
          f"{vendi_test[q]:.1e} relative | within 1e-14 relative (`test_matches_reference_on_embeddings`) |"
          for q in VENDI_ORDERS],
        *[f"| MinHash `sha1` signatures vs `datasketch.MinHash.bulk`, {kind} 5-shingles, `{scheme}` | demo corpus | "
          f"{bad:,} of {total:,} entries differ | bit-identical on 40 demo documents + edge cases, 64 permutations "
          "(`test_sha1_signatures_equal_datasketch`, against `MinHash.update_batch`) |"
          for (kind, scheme), (bad, total) in mismatches.items()],
    ]
    publish(lines, args.out, __file__, argv, load_before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
