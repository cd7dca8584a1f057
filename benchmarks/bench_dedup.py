"""Benchmark near-duplicate removal: quality against exact Jaccard, speed against datasketch.

Usage: ``python benchmarks/bench_dedup.py --out benchmarks/sections/dedup.md [--code-docs 3000]``

Data: the originals of the demo corpus (``make_demo_corpus.build``: Python reference-manual
prose and stdlib source; its own copies are left out) plus labelled copies of originals with at
least 100 words, ``--copies`` per level: a whitespace/case copy (normalized text identical), and
word edits aiming at word 5-gram Jaccard 0.95, 0.9, 0.85 (should be removed at threshold 0.8)
and 0.75, 0.7, 0.6 (should be kept). A copy's id sorts after every original's.

Ground truth: the exact Jaccard of the word 5-gram sets (``text.word_shingles``) of *every*
pair of documents (sparse intersection counts), so natural near-duplicates among the
originals count too. Documents linked by J >= 0.8 form clusters; the truth drops every member
but the smallest id. Precision and recall are over dropped documents.

Methods, all at threshold 0.8, num_perm 128, seed 1, bands x rows = datasketch's optimum
unless stated:

- winnow ``DedupNearMinHash`` (mix64 hashing, connected components; defaults, verification off,
  ``false_negative_weight`` 0.8, a 16 x 8 banding override), run as a Beam pipeline on the
  in-memory FnApiRunner;
- datasketch ``MinHashLSH``, the usual greedy loop: in id order, a document whose query returns
  a candidate is dropped, else inserted; also with the candidate's estimated Jaccard checked.

Signature throughput: texts -> (n, 128) signatures in one process, best of ``--repeats`` runs,
winnow ``mix64`` and ``sha1`` (bit-identical to datasketch) vs ``datasketch.MinHash`` fed by
``text.word_shingles`` (datasketch has no shingler). Each measurement runs in a fresh
subprocess; peak RSS is that process's high-water mark (imports included, baseline listed).
"""

import argparse
import json
import multiprocessing
import os
import pathlib
import resource
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks.common import write_section  # noqa: E402
from examples.make_demo_corpus import build  # noqa: E402
from winnow.transforms.minhash import MinHashConfig  # noqa: E402
from winnow.transforms.text import word_shingles  # noqa: E402

THRESHOLD, NUM_PERM, SEED, SHINGLE = 0.8, 128, 1, 5
LEVELS = ("case+space", 0.95, 0.9, 0.85, 0.75, 0.7, 0.6)
MIN_WORDS = 100
# Recall-leaning banding (P(candidate) at J = 0.85: 0.93 for weight 0.8 = 12 x 10 bands, 0.99
# for 16 x 8, instead of 0.69), leaving the false positives it lets through to verification.
RECALL_WEIGHT = 0.8
RECALL_BANDS, RECALL_ROWS = 16, 8
J_BINS = (0.0, 0.7, 0.75, 0.8, 0.85, 0.9, 1.01)
BATCH = 256


def edit_words(text: str, target: float, tag: str) -> str:
    """Replace evenly spaced words so that word 5-gram Jaccard is about ``target``.

    e edits at least 5 words apart remove 5e of N shingles and add 5e: J = (N - 5e) / (N + 5e).
    """
    words = text.split()
    shingles = max(len(words) - SHINGLE + 1, 1)
    edits = max(1, round(shingles * (1 - target) / (SHINGLE * (1 + target))))
    step = len(words) / edits
    for k in range(edits):
        words[int(k * step + step / 2)] = f"zq{tag}e{k}"
    return " ".join(words)


def labelled_corpus(code_docs: int, copies: int) -> tuple[list[dict], dict]:
    """(documents with id/text, {copy id: level}); copies of long originals, levels cycled."""
    raw, _ = build(code_docs)
    originals = sorted((r for r in raw if r["variant"] == "original"), key=lambda r: r["id"])
    docs = [{"id": r["id"], "text": r["text"]} for r in originals]
    long_ones = [r for r in originals if len(r["text"].split()) >= MIN_WORDS]
    level_of = {}
    for j, source in enumerate(long_ones[: copies * len(LEVELS)]):
        level = LEVELS[j % len(LEVELS)]
        copy_id = f"zcopy-{j:05d}"
        if level == "case+space":
            text = "  " + source["text"].upper().replace(" ", "   ") + "\n"
        else:
            text = edit_words(source["text"], level, str(j))
        docs.append({"id": copy_id, "text": text})
        level_of[copy_id] = level
    return docs, level_of


def true_drops(docs: list[dict]) -> tuple[set, dict]:
    """(ids the exact-Jaccard clusters drop, {id: largest J to any other document})."""
    from scipy import sparse
    from scipy.sparse.csgraph import connected_components

    vocabulary, rows, cols = {}, [], []
    for i, doc in enumerate(docs):
        for s in word_shingles(doc["text"], SHINGLE):
            rows.append(i)
            cols.append(vocabulary.setdefault(s, len(vocabulary)))
    x = sparse.csr_matrix((np.ones(len(rows), np.int32), (rows, cols)), shape=(len(docs), len(vocabulary)))
    sizes = np.asarray(x.sum(axis=1)).ravel()
    inter = (x @ x.T).tocoo()
    off = inter.row != inter.col
    a, b, common = inter.row[off], inter.col[off], inter.data[off]
    jaccard = common / (sizes[a] + sizes[b] - common)
    best = np.zeros(len(docs))
    np.maximum.at(best, a, jaccard)
    near = jaccard >= THRESHOLD
    graph = sparse.coo_matrix((np.ones(near.sum()), (a[near], b[near])), shape=(len(docs), len(docs)))
    _, label = connected_components(graph, directed=False)
    ids = np.array([d["id"] for d in docs])
    drops = set()
    for component in np.unique(label):
        members = sorted(ids[label == component])
        drops.update(members[1:])
    return drops, {d["id"]: float(best[i]) for i, d in enumerate(docs)}


def _peak_rss_mb() -> float:
    """This process's peak resident set: VmHWM where /proc has it (``ru_maxrss`` survives exec,
    so in a spawned child it would still hold the parent's size at fork time)."""
    status = pathlib.Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measured(task, *args):
    """Run ``task(*args)`` in this (fresh) process: (result, wall s, cpu s, baseline MB, peak MB)."""
    import psutil

    baseline = psutil.Process().memory_info().rss / 2**20
    wall, cpu = time.perf_counter(), time.process_time()
    result = task(*args)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return result, wall, cpu, baseline, _peak_rss_mb()


def _winnow_signatures(texts, shingle_hash, repeats):
    from winnow.transforms.minhash import minhash_signatures, permutation_params

    config = MinHashConfig(shingle_hash=shingle_hash)
    params = permutation_params(NUM_PERM, SEED, config.permutation)
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for i in range(0, len(texts), BATCH):
            minhash_signatures(texts[i : i + BATCH], config, params)
        best = min(best, time.process_time() - start)
    return best


def _datasketch_signatures(texts, repeats):
    from datasketch import MinHash

    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for text in texts:
            MinHash(num_perm=NUM_PERM, seed=SEED).update_batch([s.encode("utf-8") for s in word_shingles(text, SHINGLE)])
        best = min(best, time.process_time() - start)
    return best


def _winnow_pipeline(docs, overrides):
    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    from winnow.transforms.dedup import DedupNearMinHash

    with tempfile.TemporaryDirectory() as tmp:
        with beam.Pipeline(runner=FnApiRunner()) as p:
            out = p | beam.Create(docs) | DedupNearMinHash(MinHashConfig(**overrides))
            (
                out["records"]
                | "Dropped" >> beam.Filter(lambda r: r.get("drop_reason") is not None)
                | "Ids" >> beam.Map(lambda r: r["id"])
                | "WriteIds" >> beam.io.WriteToText(f"{tmp}/dropped")
            )
            out["stats"] | "Json" >> beam.Map(json.dumps) | "WriteStats" >> beam.io.WriteToText(f"{tmp}/stats")
        tmp_path = pathlib.Path(tmp)
        dropped = {line for f in tmp_path.glob("dropped*") for line in f.read_text().splitlines()}
        (stats,) = [json.loads(line) for f in tmp_path.glob("stats*") for line in f.read_text().splitlines()]
    return dropped, stats


def _datasketch_lsh(docs, check_jaccard):
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM)
    kept, dropped = {}, set()
    for doc in sorted(docs, key=lambda d: d["id"]):
        sketch = MinHash(num_perm=NUM_PERM, seed=SEED)
        sketch.update_batch([s.encode("utf-8") for s in word_shingles(doc["text"], SHINGLE)])
        candidates = lsh.query(sketch)
        if check_jaccard:
            candidates = [c for c in candidates if kept[c].jaccard(sketch) >= THRESHOLD]
        if candidates:
            dropped.add(doc["id"])
        else:
            lsh.insert(doc["id"], sketch)
            kept[doc["id"]] = sketch
    return dropped, (lsh.b, lsh.r)


def _in_subprocess(task, *args):
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_measured, (task, *args))


def _scores(predicted: set, truth: set) -> tuple[float, float, float]:
    hits = len(predicted & truth)
    precision = hits / len(predicted) if predicted else 1.0
    recall = hits / len(truth) if truth else 1.0
    return precision, recall, 2 * precision * recall / (precision + recall) if hits else 0.0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--code-docs", type=int, default=3000)
    parser.add_argument("--copies", type=int, default=100, help="copies per level")
    parser.add_argument("--repeats", type=int, default=3, help="signature timing repeats (best kept)")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()

    docs, level_of = labelled_corpus(args.code_docs, args.copies)
    texts = [d["text"] for d in docs]
    megabytes = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    truth, best_jaccard = true_drops(docs)

    speed = {
        "winnow mix64": _in_subprocess(_winnow_signatures, texts, "mix64", args.repeats),
        "winnow sha1 (= datasketch values)": _in_subprocess(_winnow_signatures, texts, "sha1", args.repeats),
        "datasketch 2.0.0 MinHash + word_shingles": _in_subprocess(_datasketch_signatures, texts, args.repeats),
    }
    reference_cpu = speed["datasketch 2.0.0 MinHash + word_shingles"][0]
    methods = {
        "winnow DedupNearMinHash, verify": _in_subprocess(_winnow_pipeline, docs, {}),
        "winnow DedupNearMinHash, no verify": _in_subprocess(_winnow_pipeline, docs, {"verify": False}),
        "winnow DedupNearMinHash, verify, false_negative_weight {} ({} x {} bands)".format(
            RECALL_WEIGHT, *MinHashConfig(false_negative_weight=RECALL_WEIGHT).band_rows
        ): _in_subprocess(_winnow_pipeline, docs, {"false_negative_weight": RECALL_WEIGHT}),
        f"winnow DedupNearMinHash, verify, {RECALL_BANDS} x {RECALL_ROWS} bands": _in_subprocess(
            _winnow_pipeline, docs, {"bands": RECALL_BANDS, "rows": RECALL_ROWS}
        ),
        "datasketch MinHashLSH greedy": _in_subprocess(_datasketch_lsh, docs, False),
        "datasketch MinHashLSH greedy + Jaccard check": _in_subprocess(_datasketch_lsh, docs, True),
    }
    load_after = os.getloadavg()
    winnow_stats = methods["winnow DedupNearMinHash, verify"][0][1]
    bands, rows = methods["datasketch MinHashLSH greedy"][0][1]

    lines = [
        "## Near-duplicate removal (MinHash LSH)",
        "",
        f"Data: {len(docs) - len(level_of):,} demo-corpus originals (`build(code_docs={args.code_docs})`, its own "
        f"copies left out) + {len(level_of):,} labelled copies of originals with >= {MIN_WORDS} words "
        f"({args.copies} per level); {len(docs):,} documents, {megabytes:.2f} MB, "
        f"{np.mean([len(t) for t in texts]):.0f} characters on average. Truth: exact word 5-gram Jaccard of every "
        f"pair, clusters of J >= {THRESHOLD}, all but the smallest id dropped: {len(truth):,} documents. "
        f"Threshold {THRESHOLD}, num_perm {NUM_PERM}, seed {SEED}; bands x rows = {winnow_stats['config']['bands']} x "
        f"{winnow_stats['config']['rows']} (winnow) and {bands} x {rows} (datasketch).",
        "",
        "| method | dropped | precision | recall | F1 | wall s | peak RSS MB (baseline) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, ((dropped, _), wall, _, baseline, peak) in methods.items():
        precision, recall, f1 = _scores(dropped, truth)
        lines.append(
            f"| {name} | {len(dropped):,} | {precision:.3f} | {recall:.3f} | {f1:.3f} | {wall:.1f} | "
            f"{peak:.0f} ({baseline:.0f}) |"
        )
    lines += [
        "",
        "Share of the copies dropped, by level (mean exact J of the copy to its nearest document):",
        "",
        "| level | mean J | should be | " + " | ".join(methods) + " |",
        "|---|---:|---|" + "---:|" * len(methods),
    ]
    for level in LEVELS:
        ids = [i for i, lv in level_of.items() if lv == level]
        shares = [sum(i in result[0][0] for i in ids) / len(ids) for result in methods.values()]
        should = "dropped" if level == "case+space" or level >= THRESHOLD else "kept"
        lines.append(
            f"| {level} | {np.mean([best_jaccard[i] for i in ids]):.3f} | {should} | "
            + " | ".join(f"{s:.2f}" for s in shares) + " |"
        )
    cc = winnow_stats["connected_components"]
    lines += [
        "",
        f"winnow (verify) stats: {winnow_stats['clusters']} clusters, size histogram "
        f"{winnow_stats['cluster_size_histogram']}; {winnow_stats['candidate_links']} distinct candidate links, "
        f"{winnow_stats['verified_links']} verified; connected components: unstable nodes per round "
        f"{cc['unstable_nodes_per_round'][:4]}..., converged {cc['converged']} ({cc['rounds']} rounds unrolled). "
        "The winnow wall times are whole Beam pipelines on FnApiRunner (start-up, unrolled rounds, joins), "
        "not signature speed.",
        "",
        "Errors by the document's largest exact J to any other document (false positives: dropped "
        "though the truth keeps them; false negatives: kept though the truth drops them):",
        "",
        "| method | errors | " + " | ".join(f"J in [{lo}, {hi})" for lo, hi in zip(J_BINS, J_BINS[1:])) + " |",
        "|---|---|" + "---:|" * (len(J_BINS) - 1),
    ]
    for name, ((dropped, _), *_rest) in methods.items():
        for kind, wrong in (("false pos.", dropped - truth), ("false neg.", truth - dropped)):
            counts, _ = np.histogram([best_jaccard[i] for i in wrong], bins=J_BINS)
            lines.append(f"| {name} | {kind} {len(wrong)} | " + " | ".join(map(str, counts)) + " |")
    lines += [
        "",
        f"Signatures only, one process, {len(docs):,} documents, best of {args.repeats} (CPU seconds):",
        "",
        "| signer | docs/s | MB/s | speed-up vs datasketch | peak RSS MB (baseline) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, (cpu, _, _, baseline, peak) in speed.items():
        lines.append(
            f"| {name} | {len(docs) / cpu:,.0f} | {megabytes / cpu:.2f} | {reference_cpu / cpu:.1f}× | "
            f"{peak:.0f} ({baseline:.0f}) |"
        )
    write_section(args.out, lines, __file__, argv, load_before, load_after)
    return 0


if __name__ == "__main__":
    sys.exit(main())
