"""Combined selection vs random on the demo corpus: target alignment and diversity.

For each configuration, runs ``winnow select --method combined`` on the full demo corpus and
``--method random`` with the same N and seed, and reports for the combined selection and for a
random one: mean ``zipfit_alignment`` (both looked up in the combined run's scores table), the
DSIR KL reduction ``KL(target‖raw) − KL(target‖S)`` and the Vendi score (order 1, cosine kernel
on winnow's embeddings) — both from the combined run's report, whose random baseline is a seeded
random subset of the same pool of the selection's size in expectation — and the share of
target-domain (``reference_manual``) documents.

Usage: ``python benchmarks/bench_combined.py --out benchmarks/sections/combined.md``
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.common import publish  # noqa: E402

N_SELECT = 300
CONFIGS = [
    ("defaults: balanced, diversity 0.6, T=3", []),
    ("balanced, diversity 0.7, T=2", ["--combined-diversity", "0.7", "--combined-temperature", "2"]),
    ("balanced, diversity 1.0 (cluster quotas only), T=1", ["--combined-diversity", "1", "--combined-temperature", "1"]),
    ("balanced, diversity 0.5, T=1", ["--combined-diversity", "0.5", "--combined-temperature", "1"]),
]


def _table(directory: pathlib.Path) -> pa.Table:
    return pa.concat_tables(pq.read_table(p) for p in sorted(directory.glob("*.parquet")))


def _winnow(*argv: str) -> None:
    subprocess.run([sys.executable, "-m", "winnow.pipelines.cli", "select", *argv], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _mean(values: list[float]) -> float:
    values = [v for v in values if v is not None]
    return sum(values) / len(values)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        subprocess.run([sys.executable, "examples/make_demo_corpus.py", str(tmp / "demo")], check=True, cwd=ROOT, stderr=subprocess.DEVNULL)
        common = ["--input", str(tmp / "demo" / "raw" / "*"), "--num-select", str(N_SELECT), "--seed", str(args.seed), "--write-scores", "--overwrite",
                  "--dedup", "exact,minhash"]
        _winnow(*common, "--output", str(tmp / "random"), "--method", "random")
        random_rows = _table(tmp / "random" / "selected").to_pylist()
        for name, extra in CONFIGS:
            out = tmp / "combined"
            _winnow(*common, "--target", str(tmp / "demo" / "target" / "*.jsonl"), "--output", str(out), "--method", "combined", *extra)
            selected = _table(out / "selected").to_pylist()
            alignment = {r["id"]: r["zipfit_alignment"] for r in _table(out / "scores").to_pylist()}
            metrics = json.loads((out / "report.json").read_text())["metrics"]
            rows.append((name, {
                "alignment": (_mean([r["zipfit_alignment"] for r in selected]), _mean([alignment[r["id"]] for r in random_rows])),
                "kl": (metrics["dsir_kl"]["kl_reduction_selected"], metrics["dsir_kl"]["kl_reduction_random"]),
                "vendi": (metrics["vendi_selected"]["vendi_score"], metrics["vendi_random"]["vendi_score"]),
                "prose": tuple(sum(r["source"] == "reference_manual" for r in rs) / len(rs) for rs in (selected, random_rows)),
            }))
    lines = [
        "## Combined selection vs random (demo corpus)",
        "",
        f"N = {N_SELECT} of the demo corpus (3,073 valid raw documents; target: 74 reference-manual documents), seed {args.seed}, "
        "both runs with `--dedup exact,minhash`, `--method combined` with its defaults unless named.",
        "",
        "| combined config | mean alignment: combined / random | DSIR KL reduction: combined / random | Vendi (q=1): combined / random (ratio) | reference_manual share: combined / random |",
        "|---|---|---|---|---|",
    ]
    for name, m in rows:
        (ca, ra), (ck, rk), (cv, rv), (cp, rp) = m["alignment"], m["kl"], m["vendi"], m["prose"]
        lines.append(f"| {name} | {ca:.4f} / {ra:.4f} | {ck:.3f} / {rk:.3f} | {cv:.1f} / {rv:.1f} ({cv / rv:.2f}) | {cp:.2f} / {rp:.2f} |")
    publish(lines, args.out, __file__, argv, load_before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
