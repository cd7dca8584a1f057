"""Diversity through the real CLI: ``winnow select`` on the diversity benchmark's pools (issue 21).

For each pool of ``diversity_corpora.py`` (``system``, ``docs``) the pool is written as JSONL
(``id``, ``text``), and each target of ``bench_diversity.TARGETS`` as JSONL of its held-out
sample; then ``winnow select --fraction 0.1 --seed S --write-scores`` runs:

- without a target: ``--method random``, ``--method kmeans`` (default strategy), ``--method combined``;
- per target: ``--method dsir --target T``, ``--method combined --target T`` (default D), then the
  other D of ``D_VALUES`` re-selected from that run's features table (``--features OUT/features
  --combined-diversity D``; DSIR + embeddings + clusters, scored once); for the targets of
  ``SEED_CHECK``, ``--method dsir`` and the default D re-selected at the ``EXTRA_SEEDS`` too.

Each run's selection is ``OUT/selected/*.parquet``'s ids; its pool is the records
``OUT/scores`` does not drop as ``too_short`` (the runs that use DSIR scores drop documents of
fewer than 100 DSIR tokens before selecting; the others select from every document). Measures
are ``bench_diversity``'s: target precision (share of the selection from the target's domain) and
Vendi (q = 1) under the independent embedding (scikit-learn TF-IDF -> SVD 128, fitted on the whole
pool), "x random" against the mean of 10 seeded random subsets of the same size from the same
pool, "x DSIR" against the ``--method dsir`` run on the same pool.

Usage (10-20 minutes per pool on the shared machine): ``python benchmarks/bench_diversity_pipeline.py --out
benchmarks/sections/diversity_pipeline.md`` (``--corpus system`` for one pool; ``--work DIR``
keeps the runs' outputs, default a temporary folder).
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow.parquet as pq

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks import bench_diversity as bench  # noqa: E402
from benchmarks.common import publish  # noqa: E402
from winnow.transforms import vendi  # noqa: E402
from winnow.transforms.diversity import DEFAULT_DIVERSITY  # noqa: E402

D_VALUES = (0.0, 0.1, 0.3, 0.5, 0.7, 1.0)
# the target with the smallest margins at the default D in the diversity section: re-selected at more seeds
SEED_CHECK = {("docs", "python_prose")}
EXTRA_SEEDS = (1, 2, 3, 4)
WINNOW = pathlib.Path(sys.executable).with_name("winnow")


class Run:
    """One ``winnow select`` run: its label, output folder, selected positions and pool positions (in the pool)."""

    def __init__(self, label: str, out: pathlib.Path, index: dict[str, int]):
        self.label, self.out = label, out
        scores = pq.read_table(out / "scores", columns=["id", "winnow_drop_reason"]).to_pydict()
        self.pool = np.sort([index[i] for i, why in zip(scores["id"], scores["winnow_drop_reason"]) if why != "too_short"])
        self.selected = np.sort([index[i] for i in pq.read_table(out / "selected", columns=["id"]).column("id").to_pylist()])


def write_jsonl(path: pathlib.Path, docs) -> None:
    with path.open("w", encoding="utf-8") as f:
        for doc in docs:
            f.write(json.dumps({"id": doc.id, "text": doc.text}) + "\n")


def winnow_select(args: list[str], log: pathlib.Path) -> float:
    """Run ``winnow select ARGS --overwrite --write-scores --fraction 0.1``; wall seconds."""
    start = time.perf_counter()
    with log.open("a") as f:
        f.write("$ winnow select " + " ".join(args) + "\n")
        f.flush()
        subprocess.run([str(WINNOW), "select", *args, "--fraction", str(bench.FRACTION), "--overwrite", "--write-scores"],
                       stdout=f, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - start


def run_pool(name: str, work: pathlib.Path, seed: int) -> tuple[dict, dict[str, dict], dict[str, dict], float]:
    """Every run on one pool: ({label: Run} without a target, {target: {D or "dsir": Run}},
    {target: {seed: (dsir Run, default-D Run)}} for ``SEED_CHECK``, wall seconds)."""
    pool = bench.load_pool(name)
    index = {doc_id: i for i, doc_id in enumerate(pool.ids)}
    work.mkdir(parents=True, exist_ok=True)
    log = work / "winnow.log"
    docs = [bench.diversity_corpora.Doc(i, d, t) for i, d, t in zip(pool.ids, pool.domains, pool.texts)]
    write_jsonl(work / "pool.jsonl", docs)
    common = ["--input", str(work / "pool.jsonl"), "--seed", str(seed)]
    seconds = 0.0
    plain = {}
    for label, method in (("random", "random"), ("kmeans", "kmeans"), ("combined, no target", "combined")):
        out = work / method
        seconds += winnow_select([*common, "--output", str(out), "--method", method], log)
        plain[label] = Run(label, out, index)
    targeted, reseeded = {}, {}
    for target in bench.TARGETS[name]:
        write_jsonl(work / f"target-{target}.jsonl", pool.heldout[target])
        with_target = [*common, "--target", str(work / f"target-{target}.jsonl")]
        runs = {}
        out = work / f"{target}-dsir"
        seconds += winnow_select([*with_target, "--output", str(out), "--method", "dsir"], log)
        runs["dsir"] = Run("dsir", out, index)
        base = work / f"{target}-combined"
        seconds += winnow_select([*with_target, "--output", str(base), "--method", "combined"], log)
        for d in D_VALUES:
            if d == DEFAULT_DIVERSITY:
                runs[d] = Run(f"combined, D = {d}", base, index)
                continue
            out = work / f"{target}-combined-D{d}"
            seconds += winnow_select(["--features", str(base / "features"), "--output", str(out), "--seed", str(seed),
                                      "--method", "combined", "--combined-diversity", str(d)], log)
            runs[d] = Run(f"combined, D = {d}", out, index)
        targeted[target] = runs
        if (name, target) in SEED_CHECK:  # the selection seed only: the k-means fit (--fit-seed) is the table's
            reseeded[target] = {}
            for other in EXTRA_SEEDS:
                pair = []
                for method in ("dsir", "combined"):
                    out = work / f"{target}-{method}-seed{other}"
                    seconds += winnow_select(["--features", str(base / "features"), "--output", str(out), "--seed", str(other),
                                              "--method", method], log)
                    pair.append(Run(f"{method}, seed {other}", out, index))
                reseeded[target][other] = tuple(pair)
    return plain, targeted, reseeded, seconds


def random_point(pool: bench.Pool, positions: np.ndarray, size: int, target: str | None) -> tuple[float, float]:
    """Mean (precision, Vendi) of ``bench.random_subsets`` of ``size`` drawn from ``positions``."""
    subsets = [positions[s] for s in bench.random_subsets(len(positions), size)]
    precision = float(np.mean([(pool.domains[s] == target).mean() for s in subsets])) if target else float("nan")
    return precision, float(np.mean([bench.vendi_of(pool, s) for s in subsets]))


def junk_cells(pool: bench.Pool, selected: np.ndarray) -> str:
    short = (pool.lengths[selected] < bench.SHORT_CHARS).mean()
    certs = (pool.domains[selected] == "certs").mean()
    return f"{short:.3f} | {certs:.3f} | {int(np.median(pool.lengths[selected]))}"


def section_pool(name: str, plain: dict, targeted: dict, reseeded: dict, seed: int) -> tuple[list[str], list[str]]:
    """The pool's tables, and its summary rows (issue 21's numbers)."""
    pool = bench.load_pool(name)
    lines = [f"### {name}: {len(pool.ids)} documents (digest {bench.DIGESTS[name]})", ""]
    summary = []
    everything = np.arange(len(pool.ids))
    lines += ["Without a target (pool: every document):", "",
              "| run | pool | N | Vendi | x random | < 300 chars | certificates | median chars |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    _, random_vendi = random_point(pool, everything, len(plain["random"].selected), None)
    for label, run in plain.items():
        assert np.array_equal(run.pool, everything), f"{label}: dropped documents without DSIR scores"
        score = bench.vendi_of(pool, run.selected)
        lines.append(f"| `--method {label.split(',')[0]}`{' (no `--target`)' if ',' in label else ''} | {len(run.pool)} | "
                     f"{len(run.selected)} | {score:.2f} | {score / random_vendi:.3f} | {junk_cells(pool, run.selected)} |")
        if label != "random":
            summary.append(f"| {name} | `--method {label.split(',')[0]}`, no target | Vendi {score / random_vendi:.3f} x random "
                           f"(>= 1.2) | {'met' if score / random_vendi >= 1.2 else 'NOT met'} |")
    lines += ["", f"random = 10 random subsets of N of the pool: Vendi {random_vendi:.2f}.", ""]
    for target, runs in targeted.items():
        dsir_run = runs["dsir"]
        on_target = pool.domains == target
        n = len(dsir_run.selected)
        rand = random_point(pool, dsir_run.pool, n, target)
        dsir_point = (float(on_target[dsir_run.selected].mean()), bench.vendi_of(pool, dsir_run.selected))
        lines += [f"**Target {target}** (held-out {len(pool.heldout[target])} documents). Pool: the {len(dsir_run.pool)} "
                  f"documents not `too_short` ({len(pool.ids) - len(dsir_run.pool)} dropped), "
                  f"{on_target[dsir_run.pool].mean():.3f} of them on target; N = {n}.", "",
                  "| run | precision | x DSIR | Vendi | x DSIR | x random | < 300 chars | certificates | median chars | dominated |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
                  f"| random (mean of 10 subsets) | {rand[0]:.3f} | {rand[0] / dsir_point[0]:.2f} | {rand[1]:.2f} | "
                  f"{rand[1] / dsir_point[1]:.2f} | 1.00 | | | | |"]
        flags = {}
        for key, run in runs.items():
            assert np.array_equal(run.pool, dsir_run.pool), f"{run.label}: pool differs from dsir's"
            assert len(run.selected) == n, f"{run.label}: {len(run.selected)} selected, dsir {n}"
            point = (float(on_target[run.selected].mean()), bench.vendi_of(pool, run.selected))
            if key != "dsir":
                flags[key] = bench._dominated(point, [dsir_point, rand])
            dominated = "" if key == "dsir" else ("yes" if flags[key] else "no")
            label = "`--method dsir`" if key == "dsir" else f"`--method combined`, D = {key}" + (
                " (default)" if key == DEFAULT_DIVERSITY else "")
            lines.append(f"| {label} | {point[0]:.3f} | {point[0] / dsir_point[0]:.2f} | {point[1]:.2f} | "
                         f"{point[1] / dsir_point[1]:.2f} | {point[1] / rand[1]:.2f} | {junk_cells(pool, run.selected)} | {dominated} |")
            if key == DEFAULT_DIVERSITY:
                p_ratio, v_ratio = point[0] / dsir_point[0], point[1] / dsir_point[1]
                summary.append(f"| {name} | `--method combined --target` ({target}), D = {key} | precision {p_ratio:.3f} x DSIR "
                               f"(>= 0.9), Vendi {v_ratio:.3f} x DSIR (>= 1.25) | "
                               f"{'met' if p_ratio >= 0.9 and v_ratio >= 1.25 else 'NOT met'} |")
        dominated_at = [str(key) for key, flag in flags.items() if flag]
        summary.append(f"| {name} | `--method combined --target` ({target}), every D | dominated at "
                       f"{', '.join(dominated_at) or 'no D'} | {'NOT met' if dominated_at else 'met'} |")
        same = np.array_equal(runs[0.0].selected, dsir_run.selected)
        lines += ["", f"D = 0 selects exactly `--method dsir`'s documents: {'yes' if same else 'NO'}.", ""]
        if target in reseeded:
            lines += [f"Other selection seeds (`--features` of the D = {DEFAULT_DIVERSITY} run, `--seed S`; the k-means "
                      "fit is the table's):", "",
                      "| seed | DSIR precision | DSIR Vendi | combined precision | x DSIR | combined Vendi | x DSIR | both met |",
                      "|---:|---:|---:|---:|---:|---:|---:|---|"]
            met = 0
            for other, (dsir_s, combined_s) in {seed: (dsir_run, runs[DEFAULT_DIVERSITY]), **reseeded[target]}.items():
                dp, dv = float(on_target[dsir_s.selected].mean()), bench.vendi_of(pool, dsir_s.selected)
                cp, cv = float(on_target[combined_s.selected].mean()), bench.vendi_of(pool, combined_s.selected)
                both = cp / dp >= 0.9 and cv / dv >= 1.25
                met += both
                lines.append(f"| {other} | {dp:.3f} | {dv:.2f} | {cp:.3f} | {cp / dp:.3f} | {cv:.2f} | {cv / dv:.3f} | "
                             f"{'yes' if both else 'no'} |")
            total = 1 + len(reseeded[target])
            summary.append(f"| {name} | `--method combined --target` ({target}), D = {DEFAULT_DIVERSITY}, {total} selection "
                           f"seeds | both met at {met} of {total} seeds | {'met' if met == total else 'NOT met'} |")
            lines.append("")
    return lines, summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", action="append", choices=sorted(bench.TARGETS), help="repeatable; default: all")
    parser.add_argument("--seed", type=int, default=0, help="--seed of every run (default: 0)")
    parser.add_argument("--work", type=pathlib.Path, help="keep the runs' inputs and outputs here")
    parser.add_argument("--out", type=pathlib.Path)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    names = args.corpus or list(bench.TARGETS)
    lines = ["## Diversity selection through `winnow select`", "",
             f"Each run: `winnow select --input POOL.jsonl --output OUT --fraction {bench.FRACTION} --seed {args.seed} "
             "--write-scores --method M [--target T.jsonl]`; the D other than the default re-select from the default "
             "run's features (`--features OUT/features --combined-diversity D`). Pools, targets and measures as in "
             "the diversity section (`bench_diversity.py`): Vendi q = 1 under the independent TF-IDF -> SVD 128 "
             "embedding; random = 10 seeded random subsets of N from the same pool as the run. Runs with a target "
             "select from the documents DSIR does not drop as `too_short`; the others from every document. "
             "\"dominated\": another point (DSIR's or random's) has at least its precision and its Vendi. One "
             "selection seed, plus more for the target with the smallest margins (`SEED_CHECK`); the diversity "
             "section measures the seed spread of every target in memory.", ""]
    summary = []
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or pathlib.Path(scratch)
        for name in names:
            plain, targeted, reseeded, seconds = run_pool(name, work / name, args.seed)
            pool_lines, pool_summary = section_pool(name, plain, targeted, reseeded, args.seed)
            lines += pool_lines + [f"_({name}: {seconds:.0f} s wall in `winnow select`)_", ""]
            summary += pool_summary
    lines += ["### Issue 21's numbers through the CLI", "", "| pool | run | measured (needed) | |", "|---|---|---|---|",
              *summary]
    publish(lines, args.out, __file__, argv, load_before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
