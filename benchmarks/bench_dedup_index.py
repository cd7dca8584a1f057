"""Benchmark dedup beyond one run (issue 20): an old part indexed, a new part deduplicated against it.

Usage: ``python benchmarks/bench_dedup_index.py --docs 50000 1250000 --truth-max 100000
--out benchmarks/sections/dedup_incremental.md [--workdir DIR]``

Corpus (``arrival_corpus``): the demo corpus's real text (``make_demo_corpus.build``: Python
reference-manual prose and stdlib source), repeated and perturbed as ``bench_pipeline`` does
(one word in 25 replaced; repeats of one text have word 5-gram Jaccard <= 0.67), with
``COPY_SHARE`` of the documents planted copies of a uniformly drawn *earlier* document, the
level cycling through ``LEVELS``: exact copies, case/whitespace copies, word edits aiming at
Jaccard 0.95, 0.9, 0.85 (duplicates at threshold 0.8) and 0.75, 0.7 (not). A copy can copy a
copy. Ids are in arrival order, and the split is by arrival: the first ``OLD_SHARE`` of the
documents are the old part, the rest the new part, so "keep the smallest id" (one run) and "keep
what was indexed first" (two runs) name the same record. A second split, at random (crc32 of the
id), is run at the sizes with ground truth: there a component's first record in (part, id) order
is the one the incremental runs keep, and each run is scored against its own rule.

Runs, each ``winnow dedup --dedup exact,minhash`` (threshold 0.8, num_perm 128, word 5-grams, the
defaults) in a fresh process on the in-memory FnApiRunner: the old part with ``--index IDX``, the
new part with ``--against IDX`` (the old part's files renamed away meanwhile, so the run cannot
read them), and the whole corpus in one run (the full rerun). Times are the process's wall
seconds and its CPU seconds (``RUSAGE_CHILDREN``, user + system); each run is made once per size.

Ground truth (sizes up to ``--truth-max``): the exact Jaccard of the word 5-gram sets
(``text.word_shingles``) of every pair of documents (``jaccard_pairs``: exact intersection counts,
no sampling), connected components of the pairs with J >= 0.8 (exact duplicates included: J = 1);
each component keeps its first record, every other is a removal. Precision, recall and F1 are
over removed documents (exact and near duplicates together), for the full run and for the union
of the two incremental runs. At every size, the incremental removals are also compared with the
full run's directly, and the new run's decisions with ``reference_decisions``, which applies the
rule the issue states (drop a new record that duplicates an indexed record or an earlier new
record kept; name an indexed record when one is in its group) with winnow's core functions on
the index's rows and the new records.
"""

import argparse
import dataclasses
import json
import os
import pathlib
import resource
import shlex
import shutil
import subprocess
import sys
import time
import zlib
from fractions import Fraction

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks.bench_dedup import edit_words  # noqa: E402
from benchmarks.bench_pipeline import _PEAK_RSS, perturbed  # noqa: E402
from benchmarks.common import write_section  # noqa: E402
from examples.make_demo_corpus import build  # noqa: E402
from winnow.transforms.text import word_shingles  # noqa: E402

THRESHOLD, SHINGLE = 0.8, 5
COPY_SHARE = 0.05
OLD_SHARE = 0.8
LEVELS = ("exact", "case+space", 0.95, 0.9, 0.85, 0.75, 0.7)
SHARDS_OLD, SHARDS_NEW = 8, 2
ROW_GROUP = 10_000
SEED = 20


# --- corpus -----------------------------------------------------------------------------------


def copy_text(text: str, level, tag: str) -> str:
    """A planted copy of ``text`` at ``level`` (``LEVELS``)."""
    if level == "exact":
        return text
    if level == "case+space":
        return "  " + text.upper().replace(" ", "   ") + "\n"
    return edit_words(text, level, tag)


def arrival_corpus(n_docs: int, seed: int = SEED) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """(ids, texts, (n,) int64 copied position or -1, (n,) int64 level index or -1), in arrival order.

    Position p is a planted copy with probability ``COPY_SHARE`` (of a uniformly drawn position
    q < p, level cycling through ``LEVELS``), else the next text of ``bench_pipeline``'s repeated,
    perturbed demo text.
    """
    raw, target = build(code_docs=3000)
    base = [r["text"] for r in raw] + [r["text"] for r in target]
    rng = np.random.default_rng(seed)
    is_copy = rng.random(n_docs) < COPY_SHARE
    is_copy[:100] = False
    source = np.where(is_copy, (rng.random(n_docs) * np.arange(n_docs)).astype(np.int64), -1)
    level = np.full(n_docs, -1, np.int64)
    level[is_copy] = np.arange(int(is_copy.sum())) % len(LEVELS)
    texts, k = [], 0
    for p in range(n_docs):
        if is_copy[p]:
            texts.append(copy_text(texts[source[p]], LEVELS[level[p]], f"c{p}"))
        else:
            texts.append(perturbed(base[k % len(base)], k // len(base)))
            k += 1
    return [f"d{p:09d}" for p in range(n_docs)], texts, source, level


def write_parquet_shards(directory: pathlib.Path, ids: list[str], texts: list[str], shards: int) -> int:
    """``shards`` Parquet files of (id, text), contiguous slices; returns the text bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, len(ids), shards + 1).astype(int)
    for s in range(shards):
        table = pa.table({"id": ids[bounds[s]:bounds[s + 1]], "text": texts[bounds[s]:bounds[s + 1]]})
        pq.write_table(table, directory / f"part-{s:03d}.parquet", row_group_size=ROW_GROUP)
    return sum(len(t.encode("utf-8")) for t in texts)


# --- exact ground truth -----------------------------------------------------------------------


def shingle_sets(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """CSR (indptr (n + 1,), tokens (nnz,) int64) of each text's word 5-gram set, tokens numbered
    by first appearance (a dictionary: no hash collisions)."""
    vocabulary: dict[str, int] = {}
    tokens, indptr = [], [0]
    for text in texts:
        ids = sorted({vocabulary.setdefault(s, len(vocabulary)) for s in word_shingles(text, SHINGLE)})
        tokens.extend(ids)
        indptr.append(len(tokens))
    return np.array(indptr, np.int64), np.array(tokens, np.int64)


def jaccard_pairs(indptr: np.ndarray, tokens: np.ndarray, threshold: float = THRESHOLD) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair (a > b) of documents whose shingle sets have exact Jaccard >= ``threshold``.

    All-pairs similarity join with the prefix and length filters (Bayardo, Ma & Srikant 2007,
    "Scaling up all pairs similarity search"; exact, no false negatives): tokens are ranked rarest
    first; J(a, b) >= t needs |a & b| >= t * max(|a|, |b|), so with ``prefix(x)`` the first
    ``|x| - ceil(t |x|) + 1`` tokens of x in that order, such a pair shares a prefix token and
    t |a| <= |b| <= |a| / t. Each candidate pair's intersection is then counted exactly, and
    J >= t is tested in integers: q |a & b| >= p |a | b| for t = p / q.

    Args:
        indptr, tokens: CSR of the shingle sets (``shingle_sets``), each set's tokens distinct.

    Returns:
        ((m,) a, (m,) b, (m,) float64 J).
    """
    ratio = Fraction(threshold).limit_denominator(10_000)
    p, q = ratio.numerator, ratio.denominator
    n_docs = len(indptr) - 1
    sizes = np.diff(indptr)
    docs = np.repeat(np.arange(n_docs, dtype=np.int64), sizes)
    n_tokens = int(tokens.max()) + 1 if len(tokens) else 0
    df = np.bincount(tokens, minlength=n_tokens)
    rank = np.empty(n_tokens, np.int64)
    rank[np.lexsort((np.arange(n_tokens), df))] = np.arange(n_tokens)
    ranked = rank[tokens]
    order = np.lexsort((ranked, docs))  # each document's tokens, rarest first
    ranked = ranked[order]
    prefix = sizes - (p * sizes + q - 1) // q + 1  # |x| - ceil(t |x|) + 1
    position = np.arange(len(ranked)) - np.repeat(indptr[:-1], sizes)
    in_prefix = position < np.repeat(prefix, sizes)
    post_token, post_doc = ranked[in_prefix], docs[in_prefix]
    by_token = np.lexsort((post_doc, post_token))
    post_token, post_doc = post_token[by_token], post_doc[by_token]
    post_start = np.searchsorted(post_token, np.arange(n_tokens))
    post_size = np.searchsorted(post_token, np.arange(n_tokens), side="right") - post_start
    mark = np.zeros(n_tokens, bool)
    out_a, out_b, out_j = [], [], []
    for a in range(1, n_docs):
        own = ranked[indptr[a]:indptr[a + 1]]
        heads = own[:prefix[a]]
        candidates = post_doc[_ranges(post_start[heads], post_size[heads])]
        candidates = np.unique(candidates[candidates < a])
        candidates = candidates[(q * sizes[candidates] >= p * sizes[a]) & (q * sizes[a] >= p * sizes[candidates])]
        if not len(candidates):
            continue
        mark[own] = True
        lengths = sizes[candidates]
        hits = mark[ranked[_ranges(indptr[candidates], lengths)]]
        mark[own] = False
        common = np.add.reduceat(hits.astype(np.int64), np.concatenate([[0], np.cumsum(lengths)[:-1]]))
        union = sizes[a] + lengths - common
        hit = q * common >= p * union
        if hit.any():
            out_a.append(np.full(int(hit.sum()), a, np.int64))
            out_b.append(candidates[hit])
            out_j.append(common[hit] / union[hit])
    if not out_a:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return np.concatenate(out_a), np.concatenate(out_b), np.concatenate(out_j)


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The concatenated index ranges ``starts[i] .. starts[i] + lengths[i] - 1``."""
    total = int(lengths.sum())
    return np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths) + np.arange(total)


def components(n_docs: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n_docs,) int64 connected-component label of each document (scipy)."""
    from scipy import sparse
    from scipy.sparse.csgraph import connected_components

    graph = sparse.coo_matrix((np.ones(len(a)), (a, b)), shape=(n_docs, n_docs))
    return connected_components(graph, directed=False)[1].astype(np.int64)


def removals(labels: np.ndarray, order: np.ndarray) -> np.ndarray:
    """(n,) bool: documents that are not the first of their component in ``order`` (a rank per document)."""
    first = np.full(labels.max() + 1 if len(labels) else 0, np.iinfo(np.int64).max)
    np.minimum.at(first, labels, order)
    return order != first[labels]


def scores(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """(precision, recall, F1) of a boolean removal vector against the truth's."""
    hits = int((predicted & truth).sum())
    precision = hits / predicted.sum() if predicted.any() else 1.0
    recall = hits / truth.sum() if truth.any() else 1.0
    return precision, recall, (2 * precision * recall / (precision + recall) if hits else 0.0)


# --- winnow's runs ----------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    """One ``winnow dedup`` process: its wall and CPU seconds (user + system, the process and its
    children), its peak RSS, report and scores (id, drop reason, duplicate_of, duplicate source)."""

    wall: float
    cpu: float
    peak_mb: int
    report: dict
    scores: dict


def run_dedup(inputs: list[pathlib.Path], output: pathlib.Path, extra: list[str]) -> Run:
    """``winnow dedup --input DIR/*.parquet ... --output OUT --write-scores --overwrite EXTRA`` in a fresh process
    (through ``bench_pipeline``'s wrapper, which reports the peak RSS of the run's largest process)."""
    command = [sys.executable, "-m", "winnow.pipelines.cli", "dedup", "--output", str(output), "--write-scores", "--overwrite", *extra]
    for directory in inputs:
        command += ["--input", str(directory / "*.parquet")]
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _PEAK_RSS, *command], capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"{shlex.join(command)} failed:\n{done.stderr[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    table = pq.read_table(output / "scores").to_pydict()
    n = len(table["id"])
    scores = {
        "id": np.array(table["id"], dtype=object),
        "reason": np.array(table["winnow_drop_reason"], dtype=object),
        "duplicate_of": np.array(table.get("winnow_duplicate_of", [None] * n), dtype=object),
        "source": np.array(table.get("winnow_duplicate_source", [None] * n), dtype=object),
        "cluster": np.array(table.get("winnow_dedup_cluster", [None] * n), dtype=object),
    }
    report = json.loads((output / "report.json").read_text())
    return Run(wall, cpu, int(done.stdout.strip()) // 1024, report, scores)


def removed(run: Run, position: dict) -> np.ndarray:
    """(n,) bool over the corpus: the documents ``run`` dropped as exact or near duplicates."""
    out = np.zeros(len(position), bool)
    dropped = np.isin(run.scores["reason"], ["exact_duplicate", "near_duplicate"])
    out[[position[i] for i in run.scores["id"][dropped]]] = True
    return out


def index_rows(directory: pathlib.Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, (n, 2) uint64 exact hashes, (n, P) uint32 signatures) of a dedup index's listed shards, in index order."""
    from winnow.pipelines import features

    manifest = json.loads((directory / "index.json").read_text())
    tables = [pq.read_table(directory / shard["name"]) for shard in manifest["shards"]]
    table = pa.concat_tables(tables)
    return (np.array(table.column("id").to_pylist(), dtype=object), features.hashes_of(table.column("exact_hash")),
            features.signatures_of(table.column("signature")))


def reference_decisions(index: tuple, new_ids: list[str], new_texts: list[str]) -> dict:
    """The rule of issue 20 for a run ``--against`` one index, with winnow's core functions only.

    Documents in (source, id) order: the index's first, then the new ones. Exact: per normalized
    text hash the first document is kept, every new one after it dropped, naming it. Near, among
    the index's documents and the new ones exact kept: LSH buckets (``band_keys``), star links to
    each bucket's first document, a link kept if it has a new end (indexed documents are never
    linked to one another) and ``estimate_jaccard >= threshold``, connected
    components, the guard's split of a component above ``max_cluster_size``; a group's first
    document is kept, every new one after it dropped, naming it.

    Returns:
        {new id: (reason, duplicate_of)} of the new documents dropped.
    """
    from winnow.transforms import dedup
    from winnow.transforms.minhash import MinHashConfig, band_keys, estimate_jaccard, minhash_signatures, permutation_params, shingle_sets

    config = MinHashConfig()
    index_ids, index_hashes, index_signatures = index
    index_order = np.argsort(index_ids, kind="stable")
    new_order = np.argsort(np.array(new_ids, dtype=object), kind="stable")
    ids = np.concatenate([index_ids[index_order], np.array(new_ids, dtype=object)[new_order]])
    n_index = len(index_ids)
    is_new = np.arange(len(ids)) >= n_index
    new_texts = [new_texts[i] for i in new_order]
    hashes = np.concatenate([index_hashes[index_order], dedup.exact_hashes(dedup.normalized_texts(new_texts, dedup.ExactDedupConfig()))])
    decisions = {}
    # exact: documents are in (source, id) order, so a key's first row is its kept document
    _, first, group = np.unique(hashes, axis=0, return_index=True, return_inverse=True)
    kept_of = first[group.ravel()]
    exact_dropped = kept_of != np.arange(len(ids))
    for i in np.flatnonzero(exact_dropped & is_new):
        decisions[ids[i]] = ("exact_duplicate", ids[kept_of[i]])
    # near: among the rows exact kept (index rows always are)
    params = permutation_params(config.num_perm, config.seed, config.permutation)
    signatures = np.concatenate([index_signatures[index_order], minhash_signatures(new_texts, config, params)])
    rows = np.flatnonzero(~exact_dropped)
    bands, band_rows = config.band_rows
    keys = band_keys(signatures[rows], bands, band_rows).reshape(-1)
    refs = np.repeat(rows, bands)
    keys, refs = dedup.bucket_members(keys, refs)
    larger, smaller = dedup.star_links(keys, refs, refs)  # a document's rank in (source, id) order is its row
    with_new = is_new[larger] | is_new[smaller]  # indexed documents are never linked to one another
    larger, smaller = larger[with_new], smaller[with_new]
    verified = estimate_jaccard(signatures[larger], signatures[smaller]) >= config.threshold
    labels = components(len(ids), larger[verified], smaller[verified])
    first = np.full(len(ids), len(ids))
    np.minimum.at(first, labels, np.arange(len(ids)))
    representative = first[labels]
    # the guard: a component above the limit is split (dedup.split_component) on the exact Jaccard of
    # the new documents' shingle sets, the estimate where one of the two is indexed (dedup.GuardSimilarity)
    hashes_of_new, sizes_of_new = shingle_sets(new_texts, config)
    new_sets = np.split(hashes_of_new, np.cumsum(sizes_of_new)[:-1])
    order = np.argsort(labels, kind="stable")  # members of a component in (source, id) order
    starts = np.flatnonzero(np.r_[True, labels[order][1:] != labels[order][:-1]])
    for members in np.split(order, starts[1:]):
        if len(members) <= config.max_cluster_size:
            continue
        sets = [new_sets[m - n_index] if is_new[m] else None for m in members.tolist()]
        rep = dedup.split_component(dedup.GuardSimilarity.of_sets(signatures[members], sets), len(members), config.threshold)
        alone = np.bincount(rep, minlength=len(members))[rep] == 1  # a split's singletons are kept
        representative[members] = np.where(alone, members, members[rep])
    for i in np.flatnonzero((representative != np.arange(len(ids))) & is_new):
        decisions[ids[i]] = ("near_duplicate", ids[representative[i]])
    return decisions


# --- the benchmark ----------------------------------------------------------------------------


@dataclasses.dataclass
class SizeResult:
    """Everything measured at one corpus size."""

    n_docs: int
    n_old: int
    old_mb: float
    new_mb: float
    index_rows: int
    index_mb: float
    runs: dict  # name -> Run: "old", "new", "full" (+ "old_random", "new_random")
    checks: dict
    quality: list  # (split, run, removed, precision, recall, F1)
    truth: dict
    loads: tuple


def _directory_mb(directory: pathlib.Path) -> float:
    return sum(f.stat().st_size for f in directory.iterdir() if f.is_file()) / 1e6


def incremental_pair(root: pathlib.Path, old_dir: pathlib.Path, new_dir: pathlib.Path, tag: str) -> tuple[Run, Run, pathlib.Path]:
    """The old part with ``--index``, then the new part ``--against`` it with the old part's files renamed away."""
    index = root / f"index{tag}"
    shutil.rmtree(index, ignore_errors=True)
    old = run_dedup([old_dir], root / f"out_old{tag}", ["--index", str(index)])
    hidden = old_dir.with_name(old_dir.name + ".hidden")
    old_dir.rename(hidden)  # the new run cannot read the old part's text
    try:
        new = run_dedup([new_dir], root / f"out_new{tag}", ["--against", str(index)])
    finally:
        hidden.rename(old_dir)
    return old, new, index


def measure_size(n_docs: int, root: pathlib.Path, with_truth: bool) -> SizeResult:
    load_before = os.getloadavg()
    root.mkdir(parents=True, exist_ok=True)
    ids, texts, _, _ = arrival_corpus(n_docs)
    n_old = int(n_docs * OLD_SHARE)
    old_mb = write_parquet_shards(root / "old", ids[:n_old], texts[:n_old], SHARDS_OLD) / 1e6
    new_mb = write_parquet_shards(root / "new", ids[n_old:], texts[n_old:], SHARDS_NEW) / 1e6
    new_ids, new_texts = ids[n_old:], texts[n_old:]
    if with_truth:  # the same documents split at random: one in five to the new part
        to_new = np.array([zlib.crc32(i.encode()) % 5 == 0 for i in ids])
        write_parquet_shards(root / "old_random", [i for i, m in zip(ids, to_new) if not m], [t for t, m in zip(texts, to_new) if not m], SHARDS_OLD)
        write_parquet_shards(root / "new_random", [i for i, m in zip(ids, to_new) if m], [t for t, m in zip(texts, to_new) if m], SHARDS_NEW)
    else:
        del texts
    position = {doc_id: p for p, doc_id in enumerate(ids)}
    runs = {}
    runs["old"], runs["new"], index = incremental_pair(root, root / "old", root / "new", "")
    runs["full"] = run_dedup([root / "old", root / "new"], root / "out_full", [])
    index_ids, index_hashes, index_signatures = index_rows(index)
    checks = {
        "new_input": runs["new"].report["counts"]["input"],
        "new_expected": n_docs - n_old,
        "index_matches_old_kept": sorted(index_ids.tolist()) == sorted(runs["old"].scores["id"][runs["old"].scores["reason"] == None].tolist()),  # noqa: E711
    }
    incremental = removed(runs["old"], position) | removed(runs["new"], position)
    full = removed(runs["full"], position)
    checks["removed_incremental"], checks["removed_full"] = int(incremental.sum()), int(full.sum())
    checks["only_incremental"], checks["only_full"] = int((incremental & ~full).sum()), int((full & ~incremental).sum())
    checks["only_full_old"] = int((full & ~incremental)[:n_old].sum())  # old records the full run links through new ones
    new_scores = runs["new"].scores
    dropped_new = np.isin(new_scores["reason"], ["exact_duplicate", "near_duplicate"])
    names_index = dropped_new & (new_scores["source"] != None)  # noqa: E711
    checks["new_dropped"], checks["new_names_index"] = int(dropped_new.sum()), int(names_index.sum())
    checks["names_index_id"] = bool(np.isin(new_scores["duplicate_of"][names_index], index_ids).all())
    expected = reference_decisions((index_ids, index_hashes, index_signatures), new_ids, new_texts)
    actual = {i: (r, d) for i, r, d in zip(new_scores["id"][dropped_new], new_scores["reason"][dropped_new], new_scores["duplicate_of"][dropped_new])}
    checks["reference_dropped"] = len(expected)
    checks["reference_mismatches"] = sum(actual.get(i) != v for i, v in expected.items()) + len(actual.keys() - expected.keys())
    quality, truth = [], {}
    if with_truth:
        indptr, tokens = shingle_sets(texts)
        a, b, _ = jaccard_pairs(indptr, tokens)
        labels = components(n_docs, a, b)
        arrival = np.arange(n_docs)
        truth_removals = removals(labels, arrival)
        truth = {"pairs": len(a), "removals": int(truth_removals.sum()), "largest": int(np.bincount(labels).max())}
        quality.append(("—", "full rerun (one run)", int(full.sum()), *scores(full, truth_removals)))
        quality.append(("by arrival", "incremental (old ∪ new)", int(incremental.sum()), *scores(incremental, truth_removals)))
        runs["old_random"], runs["new_random"], _ = incremental_pair(root, root / "old_random", root / "new_random", "_random")
        random_incremental = removed(runs["old_random"], position) | removed(runs["new_random"], position)
        part_first = removals(labels, np.lexsort((arrival, to_new)).argsort())  # rank: the old part first, then by id
        quality.append(("at random", "incremental (old ∪ new)", int(random_incremental.sum()), *scores(random_incremental, part_first)))
    return SizeResult(n_docs, n_old, old_mb, new_mb, len(index_ids), _directory_mb(index), runs, checks, quality, truth,
                      (load_before, os.getloadavg()))


def section(results: list[SizeResult]) -> list[str]:
    levels = ", ".join(str(level) for level in LEVELS)
    lines = [
        "## Dedup beyond one run: an index of the old part, the new part deduplicated against it",
        "",
        f"Corpus (`arrival_corpus` in `bench_dedup_index.py`): `bench_pipeline`'s demo text repeated and perturbed "
        f"(one word in 25 replaced), with {COPY_SHARE:.0%} of the documents planted copies of a uniformly drawn earlier "
        f"document, levels cycling through {levels} (exact, case and whitespace, then word edits aiming at word 5-gram "
        "Jaccard 0.95 ... 0.7; a copy may copy a copy). The demo text's own copies and short texts repeat too, so "
        "there are more duplicates than planted ones. Ids follow arrival order; the old part is the first "
        f"{OLD_SHARE:.0%} of the documents ({SHARDS_OLD} Parquet files), the new part the rest ({SHARDS_NEW} files).",
        "",
        "Runs: `winnow dedup --input 'OLD/*.parquet' --output OUT --index IDX --write-scores`, then "
        "`winnow dedup --input 'NEW/*.parquet' --output OUT --against IDX --write-scores` with the old part's directory "
        "renamed away (so the run cannot read its text), then the full rerun `winnow dedup --input 'OLD/*.parquet' "
        "--input 'NEW/*.parquet' --output OUT --write-scores`; all with the defaults (`--dedup exact,minhash`, "
        "threshold 0.8, num_perm 128, word 5-grams), each once, in a fresh process on the in-memory FnApiRunner "
        "(one process). Wall and CPU seconds (user + system of the process and its children) include the ~10 s of "
        "Beam start-up of each run; peak RSS is the run's largest process.",
        "",
        "| documents (old + new) | text MB (old + new) | index rows, MB on disk | old + `--index`: wall s, CPU s | "
        "new `--against`: wall s, CPU s, peak RSS MB | full rerun: wall s, CPU s, peak RSS MB | full / new, wall | "
        "full / new, CPU | load (1 min) before, after |",
        "|---|---|---|---|---|---|---:|---:|---|",
    ]
    for r in results:
        old, new, full = r.runs["old"], r.runs["new"], r.runs["full"]
        lines.append(
            f"| {r.n_old:,} + {r.n_docs - r.n_old:,} | {r.old_mb:,.0f} + {r.new_mb:,.0f} | {r.index_rows:,}, {r.index_mb:,.0f} | "
            f"{old.wall:,.0f}, {old.cpu:,.0f} | {new.wall:,.0f}, {new.cpu:,.0f}, {new.peak_mb:,} | "
            f"{full.wall:,.0f}, {full.cpu:,.0f}, {full.peak_mb:,} | {full.wall / new.wall:.2f}x | {full.cpu / new.cpu:.2f}x | "
            f"{r.loads[0][0]:.2f}, {r.loads[1][0]:.2f} |")
    lines += [
        "",
        "Decisions (every size): the new run's input count; its removals joined with the old run's, against the "
        "full rerun's; the new run's drops that name an indexed record; and `reference_decisions`, the issue's rule "
        "(a new record is dropped when it duplicates an indexed record or an earlier new record kept, naming the "
        "indexed one when its group has one) applied with winnow's core functions to the index's rows and the new "
        "text, against the new run's drops (reason and `winnow_duplicate_of` both compared).",
        "",
        "| documents | new run read | removed: incremental / full | only incremental / only full (old records) | new run dropped "
        "(naming an indexed id) | reference rule dropped, mismatches | index = old run's kept ids |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        c = r.checks
        lines.append(
            f"| {r.n_docs:,} | {c['new_input']:,} of {c['new_expected']:,} new records | {c['removed_incremental']:,} / "
            f"{c['removed_full']:,} | {c['only_incremental']:,} / {c['only_full']:,} ({c['only_full_old']:,}) | {c['new_dropped']:,} "
            f"({c['new_names_index']:,}{', all indexed ids' if c['names_index_id'] else ', SOME NOT INDEXED'}) | "
            f"{c['reference_dropped']:,}, {c['reference_mismatches']:,} | {'yes' if c['index_matches_old_kept'] else 'NO'} |")
    lines += [
        "",
        "Where the time goes (each run's `report.json`: `timings_s` of its score pass, which reads the text and "
        "computes exact hashes and signatures, and of its decide + write pass, which runs the dedup stages and "
        "writes `selected/` and `scores/`; `stage_busy_s` of the near-duplicate stages, `DedupNear`, and of "
        "reading the index, `IndexBandRows` + `IndexExactRows`):",
        "",
        "| documents | run | score pass s | decide + write pass s | DedupNear busy s | index read busy s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        for name, label in (("new", "new `--against`"), ("full", "full rerun")):
            report = r.runs[name].report
            busy = report["stage_busy_s"]
            index_read = busy.get("IndexBandRows", 0.0) + busy.get("IndexExactRows", 0.0)
            lines.append(f"| {r.n_docs:,} | {label} | {report['timings_s']['score']:.1f} | {report['timings_s']['decide_write']:.1f} | "
                         f"{busy.get('DedupNear', 0.0):.1f} | {index_read:.1f} |")
    with_truth = [r for r in results if r.quality]
    if with_truth:
        lines += [
            "",
            "Quality against exact Jaccard (sizes with ground truth): the truth is the connected components of "
            "the pairs whose word 5-gram sets have exact Jaccard >= 0.8 (`jaccard_pairs`: every such pair, exact "
            "counts); each component keeps its first record and removes the others (exact and near duplicates "
            "together). Split by arrival, the first record is the smallest id for both. Split at random (crc32 of "
            "the id, one in five to the new part), the incremental runs keep a component's first record in (old "
            "part first, then id) order, and are scored against that rule; the full rerun against smallest id.",
            "",
            "| documents | truth: pairs, removals, largest component | split | run | removed | precision | recall | F1 |",
            "|---|---|---|---|---:|---:|---:|---:|",
        ]
        for r in with_truth:
            t = r.truth
            for split, name, count, precision, recall, f1 in r.quality:
                lines.append(f"| {r.n_docs:,} | {t['pairs']:,}, {t['removals']:,}, {t['largest']} | {split} | {name} | "
                             f"{count:,} | {precision:.4f} | {recall:.4f} | {f1:.4f} |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, nargs="+", default=[50_000, 1_250_000], help="corpus sizes (old + new)")
    parser.add_argument("--truth-max", type=int, default=100_000, help="exact-Jaccard ground truth at sizes up to this")
    parser.add_argument("--workdir", type=pathlib.Path, default=pathlib.Path("/tmp/winnow_bench_dedup_index"))
    parser.add_argument("--keep", action="store_true", help="keep each size's corpus and outputs")
    parser.add_argument("--out", type=pathlib.Path)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    results = []
    for n_docs in args.docs:
        root = args.workdir / f"n{n_docs}"
        shutil.rmtree(root, ignore_errors=True)
        results.append(measure_size(n_docs, root, n_docs <= args.truth_max))
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        lines = section(results)
        print("\n".join(lines), flush=True)
        if args.out:  # after every size, so a long series that is stopped keeps what it measured
            write_section(args.out, lines, __file__, argv, load_before, os.getloadavg())
    return 0


if __name__ == "__main__":
    sys.exit(main())
