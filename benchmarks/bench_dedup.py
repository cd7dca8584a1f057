"""Benchmark near-duplicate removal: quality against exact Jaccard, signature speed against datasketch.

Usage: ``python benchmarks/bench_dedup.py --out benchmarks/sections/dedup.md [--code-docs 3000] [--copies 100]
[--repeats 3]``

Data: the originals of the demo corpus (``make_demo_corpus.build``: Python reference-manual
prose and stdlib source; its own copies are left out) plus labelled copies of originals with at
least 100 words, ``--copies`` per level: a whitespace/case copy (normalized text identical), and
word edits aiming at word 5-gram Jaccard 0.95, 0.9, 0.85 (should be removed at threshold 0.8)
and 0.75, 0.7, 0.6 (should be kept). A copy's id sorts after every original's.

Truth: the exact Jaccard of the word 5-gram sets (``text.word_shingles``) of *every* pair of
documents (sparse intersection counts), so natural near-duplicates among the originals count
too. The truth is the connected components of the pairs with exact J >= 0.8; each component
keeps its smallest id and drops the rest. Precision and recall are over dropped documents.

Decisions, all at threshold 0.8, num_perm 128, seed 1, word 5-grams:

- winnow: ``near_duplicate_drops`` below, which mirrors the decision rule of the pipeline's
  near-duplicate stage with the core functions of ``winnow.transforms.minhash`` only:
  signatures, LSH band keys, star links (each member of a bucket to the bucket's smallest id,
  as the pipeline links), a link kept if ``estimate_jaccard >= threshold``, connected components
  (scipy), every member but the component's smallest id dropped. No Beam here.
- datasketch: ``MinHashLSH``, its documented loop (in id order, ``query``; a document with a
  candidate is dropped, else ``insert``-ed); with the Jaccard check, a candidate counts only if
  ``MinHash.jaccard >= threshold``, the same check winnow applies to a link.

Quality is compared at matched settings (the same LSH weights, hence the same bands x rows,
and the same Jaccard check on both sides), and each side's default is a separate, labelled row:
winnow's CLI default (``--dedup-false-negative-weight 0.8``, verified links, ``mix64``) and
datasketch's (``MinHashLSH(threshold, num_perm)``: weights (0.5, 0.5), no check).

Signature throughput: texts -> (n, 128) signatures, one process, best of ``--repeats`` calls,
CPU seconds: winnow ``minhash_signatures`` (``mix64`` and ``sha1``) against datasketch's fastest
documented API, ``MinHash.bulk`` (one permutation set, copied per document), fed by
``text.word_shingles`` (datasketch has no shingler; winnow's ``sha1`` mode shingles the same
way). ``sha1`` signatures are bit-identical to datasketch's (checked here on every document).
Each signer runs in a fresh subprocess; peak RSS is that process's high-water mark (imports
included, baseline listed).
"""

import argparse
import multiprocessing
import os
import pathlib
import resource
import sys
from collections import Counter

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks.common import best_of, write_section  # noqa: E402
from examples.make_demo_corpus import build  # noqa: E402
from winnow.transforms.minhash import (  # noqa: E402
    MinHashConfig,
    band_keys,
    estimate_jaccard,
    minhash_signatures,
    optimal_bands_rows,
    permutation_params,
)
from winnow.transforms.text import word_shingles  # noqa: E402

THRESHOLD, NUM_PERM, SEED, SHINGLE = 0.8, 128, 1, 5
LEVELS = ("case+space", 0.95, 0.9, 0.85, 0.75, 0.7, 0.6)
MIN_WORDS = 100
CLI_FALSE_NEGATIVE_WEIGHT = 0.8  # winnow's --dedup-false-negative-weight default
DATASKETCH_WEIGHTS = (0.5, 0.5)  # MinHashLSH's default (false positive, false negative) weights
J_BINS = (0.0, 0.7, 0.75, 0.8, 0.85, 0.9, 1.01)


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
    """(documents with id/text sorted by id, {copy id: level}); copies of long originals, levels cycled."""
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
    return sorted(docs, key=lambda d: d["id"]), level_of


def _components_drops(a: np.ndarray, b: np.ndarray, ids: list[str]) -> tuple[set, np.ndarray]:
    """(ids dropped, (D,) component labels) when the links (a[k], b[k]) between documents form
    connected components (scipy) and each component keeps its smallest id."""
    from scipy import sparse
    from scipy.sparse.csgraph import connected_components

    graph = sparse.coo_matrix((np.ones(len(a)), (a, b)), shape=(len(ids), len(ids)))
    _, label = connected_components(graph, directed=False)
    smallest = {}
    for i in sorted(range(len(ids)), key=ids.__getitem__):
        smallest.setdefault(label[i], i)
    return {ids[i] for i in range(len(ids)) if smallest[label[i]] != i}, label


def true_drops(docs: list[dict]) -> tuple[set, dict]:
    """(ids the exact-Jaccard components drop, {id: largest exact J to any other document})."""
    from scipy import sparse

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
    ids = [d["id"] for d in docs]
    return _components_drops(a[near], b[near], ids)[0], {i: float(best[k]) for k, i in enumerate(ids)}


def near_duplicate_drops(ids: list[str], signatures: np.ndarray, threshold: float, bands: int, rows: int):
    """winnow's near-duplicate decision rule on precomputed signatures, with the core functions only.

    Mirrors the pipeline's stages: LSH buckets (``band_keys``), star links from each bucket member
    to the bucket's smallest id, a link kept if ``estimate_jaccard >= threshold``, connected
    components, the smallest id of each component kept. (The pipeline's ``max_cluster_size``
    guard, 10,000 by default, never applies at this size.)

    Args:
        ids: D document ids.
        signatures: (D, num_perm) uint32 from ``minhash_signatures``.

    Returns:
        (set of dropped ids, {"candidate_links", "verified_links", "clusters", "sizes"}).
    """
    buckets: dict[bytes, list[int]] = {}
    for i, keys in enumerate(band_keys(signatures, bands, rows)):
        for key in keys:
            buckets.setdefault(key, []).append(i)
    links = set()
    for members in buckets.values():
        if len(members) > 1:
            smallest = min(members, key=ids.__getitem__)
            links.update((i, smallest) for i in members if i != smallest)
    verified = [(i, j) for i, j in sorted(links) if estimate_jaccard(signatures[i], signatures[j]) >= threshold]
    a = np.array([i for i, _ in verified], np.int64)
    b = np.array([j for _, j in verified], np.int64)
    dropped, label = _components_drops(a, b, ids)
    sizes = Counter(Counter(label.tolist()).values())  # {component size: how many}
    sizes.pop(1, None)
    stats = {"candidate_links": len(links), "verified_links": len(verified),
             "clusters": sum(sizes.values()), "sizes": dict(sorted(sizes.items()))}
    return dropped, stats


def datasketch_drops(ids: list[str], sketches: list, weights: tuple[float, float], check: bool):
    """(dropped ids, (bands, rows)): datasketch MinHashLSH's documented loop over documents in id order."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM, weights=weights)
    kept, dropped = {}, set()
    for doc_id, sketch in sorted(zip(ids, sketches), key=lambda pair: pair[0]):
        candidates = lsh.query(sketch)
        if check:
            candidates = [c for c in candidates if kept[c].jaccard(sketch) >= THRESHOLD]
        if candidates:
            dropped.add(doc_id)
        else:
            lsh.insert(doc_id, sketch)
            kept[doc_id] = sketch
    return dropped, (lsh.b, lsh.r)


def shingle_bytes(texts: list[str]) -> list[list[bytes]]:
    """datasketch's input: each document's word 5-gram set, UTF-8 encoded."""
    return [[s.encode("utf-8") for s in word_shingles(t, SHINGLE)] for t in texts]


# --- signature speed, each signer in a fresh process ------------------------------------------


def _peak_rss_mb() -> float:
    """This process's peak resident set: VmHWM where /proc has it (``ru_maxrss`` survives exec,
    so in a spawned child it would still hold the parent's size at fork time)."""
    status = pathlib.Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _signer(name: str):
    """The signing call of ``name``: texts -> signatures (the timed unit)."""
    if name in ("mix64", "sha1"):
        config = MinHashConfig(num_perm=NUM_PERM, seed=SEED, shingle=SHINGLE, shingle_hash=name)

        def sign(texts):
            return minhash_signatures(texts, config, permutation_params(NUM_PERM, SEED, config.permutation))

        return sign
    from datasketch import MinHash

    if name == "bulk":
        return lambda texts: MinHash.bulk(shingle_bytes(texts), num_perm=NUM_PERM, seed=SEED)

    def one_by_one(texts):  # a new MinHash (new permutations) per document: not the fastest API
        sketches = []
        for shingles in shingle_bytes(texts):
            sketch = MinHash(num_perm=NUM_PERM, seed=SEED)
            sketch.update_batch(shingles)
            sketches.append(sketch)
        return sketches

    return one_by_one


def _time_signer(name: str, texts: list[str], repeats: int):
    """In a fresh process: (best CPU s, baseline MB, peak MB) of ``repeats`` calls."""
    import psutil

    baseline = psutil.Process().memory_info().rss / 2**20
    sign = _signer(name)
    timing = best_of(lambda: sign(texts), repeats)
    return timing.cpu, baseline, _peak_rss_mb()


def _in_subprocess(task, *args):
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(task, args)


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
    parser.add_argument("--repeats", type=int, default=3, help="signature timing: best of this many calls, every signer")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()

    docs, level_of = labelled_corpus(args.code_docs, args.copies)
    ids, texts = [d["id"] for d in docs], [d["text"] for d in docs]
    megabytes = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    truth, best_jaccard = true_drops(docs)

    # Signatures for the quality rows (not timed here): winnow's two hashes, datasketch's bulk API.
    from datasketch import MinHash

    signatures = {h: _signer(h)(texts) for h in ("mix64", "sha1")}
    sketches = MinHash.bulk(shingle_bytes(texts), num_perm=NUM_PERM, seed=SEED)
    reference_values = np.array([s.hashvalues for s in sketches], np.uint64)
    sha1_mismatch_docs = int(np.any(signatures["sha1"].astype(np.uint64) != reference_values, axis=1).sum())

    matched = optimal_bands_rows(THRESHOLD, NUM_PERM, CLI_FALSE_NEGATIVE_WEIGHT)
    at_half = optimal_bands_rows(THRESHOLD, NUM_PERM, DATASKETCH_WEIGHTS[1])
    fp_fn = (round(1 - CLI_FALSE_NEGATIVE_WEIGHT, 10), CLI_FALSE_NEGATIVE_WEIGHT)
    winnow_stats = {}

    def winnow_row(hash_, bands_rows):
        dropped, stats = near_duplicate_drops(ids, signatures[hash_], THRESHOLD, *bands_rows)
        winnow_stats[(hash_, bands_rows)] = stats
        return dropped, bands_rows

    winnow_default = winnow_row("mix64", matched)
    methods = {  # row -> (table, description, (dropped ids, (bands, rows)))
        "A": ("matched", f"winnow, `sha1` signatures (= datasketch's), weights {fp_fn}, verified links",
              winnow_row("sha1", matched)),
        "B": ("matched", f"winnow, `mix64` signatures, weights {fp_fn}, verified links (winnow's default)",
              winnow_default),
        "C": ("matched", f"datasketch `MinHashLSH(weights={fp_fn})` + Jaccard check",
              datasketch_drops(ids, sketches, fp_fn, True)),
        "D": ("matched", f"winnow, `sha1` signatures, weights {DATASKETCH_WEIGHTS}, verified links",
              winnow_row("sha1", at_half)),
        "E": ("matched", f"datasketch `MinHashLSH()` (weights {DATASKETCH_WEIGHTS}) + Jaccard check",
              datasketch_drops(ids, sketches, DATASKETCH_WEIGHTS, True)),
        "F": ("default", "winnow default: CLI `--dedup minhash` (`mix64`, weights "
              f"{fp_fn}, verified links; = row B)", winnow_default),
        "G": ("default", f"datasketch default: `MinHashLSH(threshold={THRESHOLD}, num_perm={NUM_PERM})`, "
              "no Jaccard check", datasketch_drops(ids, sketches, DATASKETCH_WEIGHTS, False)),
    }

    speed = {
        "winnow `minhash_signatures`, `mix64`": _in_subprocess(_time_signer, "mix64", texts, args.repeats),
        "winnow `minhash_signatures`, `sha1` (= datasketch's values)": _in_subprocess(
            _time_signer, "sha1", texts, args.repeats),
        "datasketch 2.0.0 `MinHash.bulk` (fastest documented API)": _in_subprocess(
            _time_signer, "bulk", texts, args.repeats),
        "datasketch 2.0.0, a new `MinHash` per document (earlier benchmark; not the fastest API)": _in_subprocess(
            _time_signer, "one_by_one", texts, args.repeats),
    }
    load_after = os.getloadavg()
    reference_cpu = speed["datasketch 2.0.0 `MinHash.bulk` (fastest documented API)"][0]

    lines = [
        "## Near-duplicate removal (MinHash LSH)",
        "",
        f"Data: {len(docs) - len(level_of):,} demo-corpus originals (`build(code_docs={args.code_docs})`, its own "
        f"copies left out) + {len(level_of):,} labelled copies of originals with >= {MIN_WORDS} words "
        f"({args.copies} per level); {len(docs):,} documents, {megabytes:.2f} MB, "
        f"{np.mean([len(t) for t in texts]):.0f} characters on average. Threshold {THRESHOLD}, num_perm {NUM_PERM}, "
        f"seed {SEED}, word {SHINGLE}-grams.",
        "",
        f"Truth: the connected components of the pairs of documents whose exact word {SHINGLE}-gram Jaccard is "
        f">= {THRESHOLD} (every pair computed); each component keeps its smallest id: {len(truth):,} documents "
        "to drop. Precision and recall are over dropped documents.",
        "",
        "winnow's rows come from `near_duplicate_drops` in `bench_dedup.py`, which mirrors the pipeline's "
        "decision rule with the core functions of `winnow.transforms.minhash` (signatures, `band_keys`, star "
        "links to each bucket's smallest id, a link kept if `estimate_jaccard` >= threshold, connected components, "
        "smallest id kept); the Beam stage itself is not run. datasketch's rows run `MinHashLSH` the documented "
        "way (query, then insert if no candidate, in id order), on `MinHash.bulk` sketches; the Jaccard check "
        "keeps a candidate only if `MinHash.jaccard` >= threshold, the same check as winnow's. winnow's `sha1` "
        f"signatures equal datasketch's on {len(docs) - sha1_mismatch_docs:,} of {len(docs):,} documents.",
        "",
        "Matched settings (same LSH weights, hence the same bands x rows, and the same Jaccard check):",
        "",
        "| row | method | bands x rows | dropped | precision | recall | F1 |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]

    def quality_row(key):
        _, description, (dropped, (bands, rows)) = methods[key]
        precision, recall, f1 = _scores(dropped, truth)
        return f"| {key} | {description} | {bands} x {rows} | {len(dropped):,} | {precision:.3f} | {recall:.3f} | {f1:.3f} |"

    lines += [quality_row(k) for k, m in methods.items() if m[0] == "matched"]
    lines += [
        "",
        "Defaults (each package as it comes; not a like-for-like comparison):",
        "",
        "| row | method | bands x rows | dropped | precision | recall | F1 |",
        "|---|---|---:|---:|---:|---:|---:|",
        *[quality_row(k) for k, m in methods.items() if m[0] == "default"],
    ]
    a_drops, c_drops = methods["A"][2][0], methods["C"][2][0]
    lines += [
        "",
        f"Rows A and C use identical signatures, bands and Jaccard check; they differ only in the decision "
        f"(components against datasketch's greedy query-then-insert) and drop {len(a_drops):,} and "
        f"{len(c_drops):,} documents, {len(a_drops ^ c_drops):,} of them not in both.",
        "",
        "Share of the copies dropped, by level (mean exact J of the copy to its nearest document):",
        "",
        "| level | mean J | should be | " + " | ".join(methods) + " |",
        "|---|---:|---|" + "---:|" * len(methods),
    ]
    for level in LEVELS:
        level_ids = [i for i, lv in level_of.items() if lv == level]
        shares = [sum(i in m[2][0] for i in level_ids) / len(level_ids) for m in methods.values()]
        should = "dropped" if level == "case+space" or level >= THRESHOLD else "kept"
        lines.append(
            f"| {level} | {np.mean([best_jaccard[i] for i in level_ids]):.3f} | {should} | "
            + " | ".join(f"{s:.2f}" for s in shares) + " |"
        )
    lines += [
        "",
        "Errors by the document's largest exact J to any other document (false positives: dropped "
        "though the truth keeps them; false negatives: kept though the truth drops them):",
        "",
        "| row | errors | " + " | ".join(f"J in [{lo}, {hi})" for lo, hi in zip(J_BINS, J_BINS[1:])) + " |",
        "|---|---|" + "---:|" * (len(J_BINS) - 1),
    ]
    for key, (_, _, (dropped, _)) in methods.items():
        for kind, wrong in (("false pos.", dropped - truth), ("false neg.", truth - dropped)):
            counts, _ = np.histogram([best_jaccard[i] for i in wrong], bins=J_BINS)
            lines.append(f"| {key} | {kind} {len(wrong)} | " + " | ".join(map(str, counts)) + " |")
    default_stats = winnow_stats[("mix64", matched)]
    lines += [
        "",
        f"winnow default (row B): {default_stats['candidate_links']} distinct candidate links, "
        f"{default_stats['verified_links']} verified, {default_stats['clusters']} clusters, size histogram "
        f"{default_stats['sizes']}.",
        "",
        f"Signatures only: {len(docs):,} documents ({megabytes:.2f} MB), one process each, CPU seconds, best of "
        f"{args.repeats} calls on every row:",
        "",
        "| signer | CPU s | docs/s | MB/s | speed-up vs `MinHash.bulk` | peak RSS MB (baseline) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, (cpu, baseline, peak) in speed.items():
        ratio = "—" if "not the fastest" in name else f"{reference_cpu / cpu:.1f}×"
        lines.append(
            f"| {name} | {cpu:.3f} | {len(docs) / cpu:,.0f} | {megabytes / cpu:.2f} | {ratio} | {peak:.0f} ({baseline:.0f}) |"
        )
    write_section(args.out, lines, __file__, argv, load_before, load_after)
    return 0


if __name__ == "__main__":
    sys.exit(main())
