"""Benchmark the mega-cluster guard (``--max-cluster-size``) on documents built from shared templates.

Usage: ``python benchmarks/bench_megacluster.py --docs 20000 --content 60-150 40-100
--max-cluster-size 10 100 1000 10000 off --cost-sizes 1000 3000 10000 --repeats 1
--out benchmarks/sections/megacluster.md``

Corpus (``template_corpus``): ``--docs`` distinct documents, each one of ``len(TEMPLATES)`` templates
(uniformly drawn) around its own text: the first ``HEADER_WORDS`` words of a license text in
``/usr/share/common-licenses`` as header, the next ``FOOTER_WORDS`` as footer, and between them the
next ``c`` words (c uniform in the ``--content`` range) of a stream of man-page prose
(``/usr/share/man``, groff markup stripped). A man-page paragraph enters the stream only when it is
prose (at least 70% plain words, 95% distinct word 5-grams) and at most 10% of its 5-grams were seen
before (in the templates or in earlier paragraphs), so the documents' own texts do not repeat one
another. Plus ``EDIT_SHARE`` planted near duplicates: copies of random documents with 1 to 3 words
of the document replaced. Ids are a random permutation (``SEED``), so copies are not always last.

Two documents of one template share about 300 word 5-grams and differ in their own ``c``; their
Jaccard is about 296 / (296 + 2 c + 8): 0.70 at c = 60, 0.77 at c = 40, 0.81 at c = 30. So the
content range sets how close the templates bring distinct documents to the threshold (0.8).

Ground truth: ``bench_dedup_index.jaccard_pairs`` (exact word 5-gram Jaccard of every pair >= 0.8),
connected components, each keeping its smallest id. Runs: ``winnow dedup --dedup exact,minhash
--max-cluster-size N --write-scores`` (defaults otherwise), in a fresh process each; "off" is
N = 10**9. Removals are scored against the truth's; "named record not similar" counts the near
drops whose ``winnow_duplicate_of`` has exact Jaccard < 0.8 with them (what the guard bounds).

Guard cost: ``dedup.split_component`` (the guard's core) with ``dedup.GuardSimilarity`` timed on m
shingle sets of ``COST_SET`` random hashes, best of ``--repeats`` calls, CPU seconds: members all
distinct, members sharing a template of ``COST_TEMPLATE`` of their hashes (distinct documents of
one template: the worst case, every representative's hashes are held by every member), and all
copies of one document (one group); the first two make min(m, ``MAX_SPLIT_GROUPS``) groups.

Chains of true copies (``arrival_rows``): ``--arrival-docs`` documents of
``bench_dedup_index.arrival_corpus`` (copies of copies, so a true cluster can be a chain the guard
splits), deduplicated at each limit and scored against the same kind of truth.
"""

import argparse
import gzip
import hashlib
import os
import pathlib
import re
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks.bench_dedup_index import (  # noqa: E402
    arrival_corpus,
    components,
    jaccard_pairs,
    removals,
    removed,
    run_dedup,
    scores,
    shingle_sets,
    write_parquet_shards,
)
from benchmarks.common import best_of, write_section  # noqa: E402
from winnow.transforms.dedup import MAX_SPLIT_GROUPS, GuardSimilarity, split_component  # noqa: E402
from winnow.transforms.minhash import MinHashConfig, estimate_jaccard, minhash_signatures, permutation_params  # noqa: E402

TEMPLATES = ("GPL-3", "Apache-2.0", "Artistic", "GFDL-1.3", "MPL-2.0")
LICENSES = pathlib.Path("/usr/share/common-licenses")
MAN = pathlib.Path("/usr/share/man")
MAN_SECTIONS = ("man1", "man8", "man5", "man7", "man3")
HEADER_WORDS, FOOTER_WORDS = 150, 150
EDIT_SHARE = 0.05
THRESHOLD, SHINGLE = 0.8, 5
SEED = 7
OFF = 10**9
COST_SET, COST_TEMPLATE = 400, 300  # guard cost: hashes per set, and shared by the template case
SHARDS = 4
# groff: font, special-character, string, size and other escapes
_ESCAPES = re.compile(r"\\f(\[[^\]]*\]|\(..|.)|\\\(..|\\\*(\(..|\[[^\]]*\]|.)|\\s[-+]?\d+|\\[-&|^%e\\/,]|\\.")
_PLAIN_WORD = re.compile(r"[A-Za-z][a-z]+[.,;:]?")


def _five_grams(words: list[str]) -> list[str]:
    return [" ".join(words[i:i + SHINGLE]).lower() for i in range(len(words) - SHINGLE + 1)]


def man_prose(n_words: int, seen: set) -> list[str]:
    """The first ``n_words`` words of distinct man-page prose (module doc), pages in path order."""
    words, pages = [], set()
    for section in MAN_SECTIONS:
        for path in sorted((MAN / section).glob("*.gz")):
            try:
                page = gzip.decompress(path.read_bytes()).decode("utf-8", "replace")
            except (OSError, EOFError):
                continue
            digest = hashlib.sha1(page.encode("utf-8")).digest()
            if digest in pages:
                continue
            pages.add(digest)
            paragraph = []
            for line in page.splitlines() + ["."]:  # a request line (or the end) closes a paragraph
                if line and line[0] not in ".'":
                    paragraph += _ESCAPES.sub("", line).split()
                    continue
                if len(paragraph) >= 8:
                    grams = _five_grams(paragraph)
                    prose = sum(bool(_PLAIN_WORD.fullmatch(w)) for w in paragraph) >= 0.7 * len(paragraph)
                    if prose and len(set(grams)) >= 0.95 * len(grams) and sum(g in seen for g in grams) <= 0.1 * len(grams):
                        seen.update(grams)
                        words += paragraph
                        if len(words) >= n_words:
                            return words[:n_words]
                paragraph = []
    raise ValueError(f"only {len(words):,} words of distinct man-page prose; asked for {n_words:,}")


def template_corpus(n_docs: int, content: tuple[int, int], seed: int = SEED) -> tuple[list[str], list[str], np.ndarray]:
    """(ids, texts, (n,) template of each document) of ``n_docs`` distinct documents and their planted copies."""
    rng = np.random.default_rng(seed)
    templates = [(LICENSES / name).read_text(encoding="utf-8").split()[:HEADER_WORDS + FOOTER_WORDS] for name in TEMPLATES]
    seen = {g for words in templates for g in _five_grams(words)}
    lengths = rng.integers(content[0], content[1] + 1, n_docs)
    stream = man_prose(int(lengths.sum()), seen)
    template = rng.integers(0, len(TEMPLATES), n_docs)
    ends = np.cumsum(lengths)
    texts = [" ".join(templates[t][:HEADER_WORDS] + stream[end - c:end] + templates[t][HEADER_WORDS:])
             for t, c, end in zip(template, lengths, ends)]
    sources = rng.choice(n_docs, int(n_docs * EDIT_SHARE), replace=False)
    for k, source in enumerate(sources):
        words = texts[source].split()
        for j in rng.choice(len(words), rng.integers(1, 4), replace=False):
            words[j] = f"edit{k}x{j}"
        texts.append(" ".join(words))
    template = np.concatenate([template, template[sources]])
    ids = [f"m{i:06d}" for i in rng.permutation(len(texts))]
    return ids, texts, template


def guard_cost(sizes: list[int], repeats: int, num_perm: int = 128) -> list[tuple[int, float, float, float]]:
    """(m, CPU s with m distinct members, with m members of one template, with m equal members) of
    ``split_component`` on shingle sets (``GuardSimilarity``), best of ``repeats``."""
    rng = np.random.default_rng(0)
    rows = []
    for m in sizes:
        signatures = rng.integers(0, 2**32, (m, num_perm), dtype=np.uint64).astype(np.uint32)
        own = rng.integers(0, 2**31, (m, COST_SET), dtype=np.uint64).astype(np.uint32)
        template = (np.arange(COST_TEMPLATE) + 2**31).astype(np.uint32)  # disjoint from the own hashes
        cases = {
            "distinct": [np.unique(row) for row in own],
            "template": [np.unique(np.concatenate([template, row[: COST_SET - COST_TEMPLATE]])) for row in own],
            "equal": [np.unique(own[0])] * m,
        }
        similarities = {name: GuardSimilarity.of_sets(signatures, sets) for name, sets in cases.items()}
        rows.append((m, *(best_of(lambda: split_component(similarities[name], m, THRESHOLD), repeats).cpu for name in cases)))
    return rows


def _jaccard(indptr: np.ndarray, tokens: np.ndarray, a: int, b: int) -> float:
    x, y = tokens[indptr[a]:indptr[a + 1]], tokens[indptr[b]:indptr[b + 1]]
    common = len(np.intersect1d(x, y, assume_unique=True))
    return common / (len(x) + len(y) - common)


def measure_content(n_docs: int, content: tuple[int, int], limits: list[int], root: pathlib.Path) -> dict:
    """Truth and one ``winnow dedup`` run per ``--max-cluster-size`` for one content range."""
    load_before = os.getloadavg()
    ids, texts, template = template_corpus(n_docs, content)
    write_parquet_shards(root / "corpus", ids, texts, SHARDS)
    position = {doc_id: p for p, doc_id in enumerate(ids)}
    started = time.process_time()
    indptr, tokens = shingle_sets(texts)
    a, b, _ = jaccard_pairs(indptr, tokens, THRESHOLD)
    labels = components(len(ids), a, b)
    rank = np.argsort(np.argsort(np.array(ids)))
    truth = removals(labels, rank)
    truth_cpu = time.process_time() - started
    sizes = np.bincount(labels)
    config = MinHashConfig()  # winnow dedup's defaults: the signatures the runs compute
    signatures = minhash_signatures(texts, config, permutation_params(config.num_perm, config.seed, config.permutation))
    mates = [np.flatnonzero(template[:n_docs] == t)[:400] for t in range(len(TEMPLATES))]  # 200 pairs per template
    template_j = [_jaccard(indptr, tokens, i, j) for m in mates for i, j in zip(m[0::2], m[1::2])]
    rows = []
    for limit in limits:
        run = run_dedup([root / "corpus"], root / "out", ["--max-cluster-size", str(limit)])
        predicted = removed(run, position)
        near = run.report["metrics"]["dedup_minhash"]
        splits = near["split_components"]
        largest_component = max([s["size"] for s in splits] + [c["size"] for c in near["largest_clusters"]] + [1])
        clusters = [c for c in run.scores["cluster"] if c is not None]
        largest_group = max(np.unique(np.array(clusters, np.int64), return_counts=True)[1], default=1)
        is_near = run.scores["reason"] == "near_duplicate"
        pairs = [(position[d], position[k]) for d, k in zip(run.scores["id"][is_near], run.scores["duplicate_of"][is_near])]
        unlike = [(d, k) for d, k in pairs if _jaccard(indptr, tokens, d, k) < THRESHOLD]
        estimated_alike = sum(estimate_jaccard(signatures[d], signatures[k]) >= THRESHOLD for d, k in unlike)
        precision, recall, f1 = scores(predicted, truth)
        rows.append({"limit": limit, "removed": int(predicted.sum()), "wrong": int((predicted & ~truth).sum()),
                     "missed": int((truth & ~predicted).sum()), "precision": precision, "recall": recall, "f1": f1,
                     "largest_component": largest_component, "largest_group": int(largest_group),
                     "splits": near["split_component_count"], "unlike": len(unlike), "unlike_estimated_alike": int(estimated_alike),
                     "near": int(is_near.sum()),
                     "wall": run.wall, "cpu": run.cpu, "near_busy": run.report["stage_busy_s"].get("DedupNear", float("nan"))})
        shutil.rmtree(root / "out")
    return {"content": content, "docs": len(ids), "truth_pairs": len(a), "truth_removed": int(truth.sum()),
            "truth_largest": int(sizes.max()), "truth_components": int((sizes > 1).sum()), "truth_cpu": truth_cpu,
            "template_j": (float(np.median(template_j)), float(np.max(template_j))), "rows": rows,
            "loads": (load_before, os.getloadavg())}


def _limit_name(limit: int) -> str:
    return "off (10^9)" if limit >= OFF else f"{limit:,}"


def section(n_docs: int, results: list[dict], cost: list[tuple], repeats: int, arrival: list | None = None, arrival_docs: int = 0) -> list[str]:
    lines = [
        "## Mega-clusters: the `--max-cluster-size` guard on template documents",
        "",
        f"Corpus (`template_corpus` in `bench_megacluster.py`): {n_docs:,} distinct documents, each one of "
        f"{len(TEMPLATES)} templates (header: the first {HEADER_WORDS} words of a license in /usr/share/common-licenses "
        f"({', '.join(TEMPLATES)}), footer: the next {FOOTER_WORDS}) around its own c words of man-page prose "
        "(distinct paragraphs: at most 10% of a paragraph's word 5-grams seen before), c uniform in the content "
        f"range; plus {EDIT_SHARE:.0%} planted near duplicates (a random document with 1-3 words replaced). Two "
        "documents of one template have word 5-gram Jaccard about 296 / (296 + 2c + 8): the content range sets how "
        "close the shared template brings distinct documents to the threshold 0.8.",
        "",
        "Truth: exact Jaccard of every pair (`bench_dedup_index.jaccard_pairs`), connected components of the pairs "
        "with J >= 0.8, smallest id kept. Each row is one `winnow dedup --input 'CORPUS/*.parquet' --output OUT "
        "--write-scores --max-cluster-size N` (defaults otherwise: exact and MinHash dedup, threshold 0.8, "
        "num_perm 128, 12 bands x 10 rows, verified links), a fresh process on the in-memory FnApiRunner. "
        "Removed = exact and near duplicates, scored against the truth's removals. Largest component: the "
        "largest near-duplicate component before the guard (the report's split components and clusters); largest "
        "group: the largest `winnow_dedup_cluster` after it. Named record not similar: near drops whose "
        "`winnow_duplicate_of` has exact Jaccard < 0.8 with them, and how many of those have an estimated Jaccard "
        "(the signatures' share of equal entries, what link verification checks; the guard checks the exact Jaccard) >= 0.8 with it. Wall and CPU s are the whole run's "
        "(CPU: user + system of the process and its children); DedupNear s is the report's busy time of the "
        "near-dedup stages, the guard and its text reads included.",
    ]
    for r in results:
        lo, hi = r["content"]
        lines += [
            "",
            f"Content {lo}-{hi} words: {r['docs']:,} documents; distinct documents of one template (1,000 pairs) have median exact J "
            f"{r['template_j'][0]:.3f} (max {r['template_j'][1]:.3f}); truth: {r['truth_pairs']:,} pairs, "
            f"{r['truth_components']:,} components, largest {r['truth_largest']:,}, {r['truth_removed']:,} removals "
            f"(computed in {r['truth_cpu']:.0f} CPU s). Load (1 min) {r['loads'][0][0]:.2f} before, "
            f"{r['loads'][1][0]:.2f} after.",
            "",
            "| `--max-cluster-size` | removed | wrongly removed | missed | precision | recall | F1 | largest component "
            "| largest group | split components | named record not similar (of near drops), estimated >= 0.8 | wall s | CPU s | DedupNear s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
        ]
        for row in r["rows"]:
            lines.append(
                f"| {_limit_name(row['limit'])} | {row['removed']:,} | {row['wrong']:,} | {row['missed']:,} | "
                f"{row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} | {row['largest_component']:,} | "
                f"{row['largest_group']:,} | {row['splits']:,} | {row['unlike']:,} of {row['near']:,}, {row['unlike_estimated_alike']:,} | "
                f"{row['wall']:.0f} | "
                f"{row['cpu']:.0f} | {row['near_busy']:.1f} |")
    lines += [
        "",
        f"Guard cost: `dedup.split_component` with `GuardSimilarity` (exact Jaccard) on m shingle sets of {COST_SET} "
        f"hashes, CPU s, best of {repeats}. Each representative costs two `searchsorted` of its hashes in the sorted "
        "hashes of the component and a `bincount` of their owners: its matches are the members holding each of its hashes, "
        f"so a split into g groups costs about g x m x (shared hashes): little when the members share nothing, most when "
        f"they share a template ({COST_TEMPLATE} of the {COST_SET} hashes here); g is at most {MAX_SPLIT_GROUPS:,} "
        "(`MAX_SPLIT_GROUPS` representatives, then the members left stay alone).",
        "",
        f"| m | all distinct (min(m, {MAX_SPLIT_GROUPS:,}) groups), CPU s | one template, distinct own hashes "
        f"(min(m, {MAX_SPLIT_GROUPS:,}) groups), CPU s | all alike (1 group), CPU s |",
        "|---:|---:|---:|---:|",
        *[f"| {m:,} | {distinct:.3f} | {template:.3f} | {alike:.4f} |" for m, distinct, template, alike in cost],
    ]
    if arrival:
        lines += [
            "",
            f"Where chained links are right: `bench_dedup_index.arrival_corpus` ({arrival_docs:,} documents of repeated, "
            "perturbed demo text with planted copies of copies), one `winnow dedup --max-cluster-size N` each, "
            "against the same exact-Jaccard truth (connected components: a chain of copies is one true cluster, "
            "which the guard can split).",
            "",
            "| `--max-cluster-size` | removed | precision | recall | F1 |",
            "|---|---:|---:|---:|---:|",
            *[f"| {_limit_name(limit)} | {count:,} | {p:.4f} | {r:.4f} | {f:.4f} |" for limit, count, p, r, f in arrival],
        ]
    return lines


def arrival_rows(n_docs: int, limits: list[int], root: pathlib.Path) -> list[tuple[int, int, float, float, float]]:
    """(limit, removed, precision, recall, F1) of ``winnow dedup`` on ``bench_dedup_index.arrival_corpus``, whose
    true components are chains of copies of copies: what the guard costs where chained links are right."""
    ids, texts, _, _ = arrival_corpus(n_docs)
    write_parquet_shards(root / "corpus", ids, texts, SHARDS)
    indptr, tokens = shingle_sets(texts)
    first, second, _ = jaccard_pairs(indptr, tokens)
    truth = removals(components(len(ids), first, second), np.arange(len(ids)))
    position = {doc_id: p for p, doc_id in enumerate(ids)}
    rows = []
    for limit in limits:
        got = removed(run_dedup([root / "corpus"], root / f"out-{limit}", ["--max-cluster-size", str(limit)]), position)
        rows.append((limit, int(got.sum()), *scores(got, truth)))
    return rows


def _content_range(text: str) -> tuple[int, int]:
    low, high = text.split("-")
    return int(low), int(high)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=20_000, help="distinct documents (planted copies come on top)")
    parser.add_argument("--content", type=_content_range, nargs="+", default=[(60, 150), (40, 100), (30, 80)],
                        help="ranges of a document's own words, LOW-HIGH")
    parser.add_argument("--max-cluster-size", nargs="+", default=["1", "2", "5", "10", "100", "1000", "10000", "off"])
    parser.add_argument("--cost-sizes", type=int, nargs="+", default=[1_000, 3_000, 10_000, 20_000])
    parser.add_argument("--repeats", type=int, default=3, help="guard cost: best of this many calls")
    parser.add_argument("--arrival-docs", type=int, default=50_000, help="the arrival corpus's size (0: skip it)")
    parser.add_argument("--workdir", type=pathlib.Path, default=pathlib.Path("/tmp/winnow_bench_megacluster"))
    parser.add_argument("--out", type=pathlib.Path)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    limits = [OFF if value == "off" else int(value) for value in args.max_cluster_size]
    results = []
    for content in args.content:
        root = args.workdir / f"c{content[0]}-{content[1]}"
        shutil.rmtree(root, ignore_errors=True)
        results.append(measure_content(args.docs, content, limits, root))
        shutil.rmtree(root, ignore_errors=True)
        print("\n".join(section(args.docs, results, [], args.repeats)), flush=True)
    arrival = []
    if args.arrival_docs:
        root = args.workdir / "arrival"
        shutil.rmtree(root, ignore_errors=True)
        arrival = arrival_rows(args.arrival_docs, limits, root)
        shutil.rmtree(root, ignore_errors=True)
    lines = section(args.docs, results, guard_cost(args.cost_sizes, args.repeats), args.repeats, arrival, args.arrival_docs)
    print("\n".join(lines[-len(args.cost_sizes) - 4:]))
    if args.out:
        write_section(args.out, lines, __file__, argv, load_before, os.getloadavg())
    return 0


if __name__ == "__main__":
    sys.exit(main())
