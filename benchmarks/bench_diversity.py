"""Diversity selection (``transforms/diversity.py``): strategies, quotas, frontier, junk, scale, cost.

Pools: ``benchmarks/diversity_corpora.py`` (``system``: stdlib code, C headers, Debian changelogs,
licenses, man pages; ``docs``: Python docs prose, third-party code, man pages in other
languages, Debian README/NEWS, C++ headers and a small junk domain of PEM certificates), each a
few thousand ~1-2 KB documents of real text from this machine, sorted by id. 10% selections.

What selects: winnow's own embedding (``embed.py`` defaults: hashed word 1-2-gram tf-idf -> SVD
256, fitted on the pool's seeded 10k-document sample in id order, i.e. all of a small pool; float32,
where the features table stores float16), k-means (``kmeans.fit_centroids`` on the pool, seed 1,
k = ``kmeans.auto_k`` unless a row says otherwise), DSIR log weights (``dsir.py`` defaults, fitted
on the pool and a held-out sample of one domain) with the key ``log w + Gumbel(seed 0, id)``;
document lengths in characters (the features table's ``length``) for the length prior.

What measures (independent of winnow's embedding): scikit-learn ``TfidfVectorizer(sublinear_tf=
True, token_pattern=r"(?u)\\b\\w+\\b")`` -> ``TruncatedSVD(128, random_state=0)`` fitted on the
pool, plus one indicator column for the rare document with no word token (all such documents are
alike), cosine kernel, Vendi score of order 1 (``vendi.vendi_score``). "x random" divides by the
mean over 10 seeded random subsets of exactly the selection's size; target precision is the
share of the selection from the target's domain.

Sections (``--section``; several may share one run, each takes under ~5 minutes here):

- ``strategies``: the within-cluster greedy alone (every row uses the same proportional quotas):
  random, k-center / max-min, Vendi-1 greedy (exact), Vendi-2 greedy, log-determinant at three
  ridges, log-determinant conditioned on the other clusters (the chosen greedy).
- ``quotas``: how many documents per cluster, with the chosen greedy: proportional, balanced,
  sqrt(size x cluster Vendi), cluster Vendi, size x spread, and the merge by marginal gain (the
  chosen policy), at three k; plus re-implementations of the DESIGN prototype and the global
  greedy (k = 1, unbounded cost).
- ``frontier``: the ``combined`` knob D from 0 to 1 against DSIR and random, two targets per pool,
  on the documents DSIR's too-short rule keeps (as in the pipeline); D around the default over 5
  seeds; then on every document, with and without the length prior.
- ``junk``: short and certificate documents per strategy, the length prior, a pool without short
  documents, and documents each strategy picks.
- ``scale``: a ~100k-document pool from the same sources (every domain, at most 25k documents each).
- ``cost``: CPU seconds of the decide pass's diversity step (one BLAS thread) at 100k real and 1M
  (10 jittered copies of the 100k embeddings) documents.

Usage (two runs of a few minutes each here):
``python benchmarks/bench_diversity.py --section strategies --section quotas --section frontier
--section junk --out benchmarks/sections/diversity.md`` and ``python benchmarks/bench_diversity.py
--section scale --section cost --out benchmarks/sections/diversity_scale.md``.
"""

import argparse
import functools
import hashlib
import os
import pathlib
import sys
import time
from typing import NamedTuple

import numpy as np
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from threadpoolctl import threadpool_limits

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks import diversity_corpora  # noqa: E402
from benchmarks.common import publish  # noqa: E402
from winnow.transforms import diversity, dsir, embed, kmeans, quotas, seeded, vectors, vendi  # noqa: E402

SECTIONS = ("strategies", "quotas", "frontier", "junk", "scale", "cost")
FRACTION = 0.1
KMEANS_SEED = 1
SELECTION_SEED = 0
RANDOM_SUBSETS = 10
SHORT_CHARS = 300
MEASURE_DIM = 128
TARGETS = {"system": ("stdlib_code", "man_pages"), "docs": ("python_prose", "man_foreign")}
SEED_DIVERSITY = (0.25, 0.3, 0.35)  # D around the default, measured over 5 seeds
LARGE_DOMAIN_CAP = 25_000
DEFAULT = diversity.DiversityConfig()
NO_PRIOR = diversity.DiversityConfig(min_length=None)
DIGESTS: dict[str, str] = {}  # pool name -> diversity_corpora.digest of the pool loaded


class Pool(NamedTuple):
    """One pool, sorted by id, with everything the sections need."""

    name: str
    ids: list[str]
    texts: list[str]
    domains: np.ndarray
    lengths: np.ndarray
    X: np.ndarray  # (n, 256) float32 winnow embedding
    Z: np.ndarray  # (n, 129) float64 independent measure embedding
    heldout: dict


# --- preparation ---------------------------------------------------------------------------


def embed_pool(ids: list[str], texts: list[str]) -> np.ndarray:
    """winnow's default embedding of ``texts``, fitted as the pipeline does: on the ``sample_size``
    documents of smallest ``seeded.sample_rank(id)``, in id order (all of a pool below that size)."""
    config = embed.EmbedConfig()
    vectorizer = embed.make_vectorizer(config)
    sample = np.sort(np.argsort(seeded.sample_rank(ids, config.seed), kind="stable")[: config.sample_size])
    projection = embed.fit_projection([texts[i] for i in sample], vectorizer, config)
    parts = [embed.embed_texts(texts[s : s + 2000], vectorizer, projection)[0] for s in range(0, len(texts), 2000)]
    return np.vstack(parts).astype(np.float32)


def measure_embedding(texts: list[str]) -> np.ndarray:
    """The independent embedding of the module docstring: (n, MEASURE_DIM + 1) float64 unit rows."""
    tfidf = TfidfVectorizer(sublinear_tf=True, token_pattern=r"(?u)\b\w+\b", dtype=np.float32).fit_transform(texts)
    dense = TruncatedSVD(MEASURE_DIM, random_state=0).fit_transform(tfidf).astype(np.float64)
    norms = np.linalg.norm(dense, axis=1, keepdims=True)
    out = np.zeros((len(texts), MEASURE_DIM + 1))
    out[:, :MEASURE_DIM] = np.divide(dense, norms, out=np.zeros_like(dense), where=norms > 1e-9)
    out[norms[:, 0] <= 1e-9, MEASURE_DIM] = 1.0  # no word token: all alike
    return out


@functools.lru_cache(maxsize=None)
def load_pool(name: str) -> Pool:
    """``system`` or ``docs`` (``diversity_corpora``), or ``large`` (every domain, <= 25k docs each)."""
    if name == "large":
        docs, heldout = [], {}
        for specs in diversity_corpora.CORPORA.values():
            for _, builder, _ in specs:
                ranked = sorted(builder(), key=lambda d: hashlib.blake2b(d.id.encode(), digest_size=8).digest())
                docs.extend(ranked[:LARGE_DOMAIN_CAP])
        docs.sort(key=lambda d: d.id)
    else:
        corpus = diversity_corpora.build_corpus(name)
        docs, heldout = corpus.pool, corpus.heldout
    texts = [d.text for d in docs]
    ids = [d.id for d in docs]
    DIGESTS[name] = diversity_corpora.digest(ids, texts)
    return Pool(name, ids, texts, np.array([d.domain for d in docs]), np.array([len(t) for t in texts]),
                embed_pool(ids, texts), measure_embedding(texts), heldout)


def n_select(pool: Pool) -> int:
    return int(round(FRACTION * len(pool.ids)))


@functools.lru_cache(maxsize=None)
def clusters_of(name: str, k: int, seed: int = KMEANS_SEED) -> np.ndarray:
    """k-means labels (n,) int64 of a pool's winnow embeddings (fit on a 50k seeded sample if larger)."""
    pool = load_pool(name)
    X = pool.X.astype(np.float64)
    sample = np.arange(len(X))
    if len(X) > 50_000:
        sample = np.sort(np.argsort(seeded.sample_rank(pool.ids, seed))[:50_000])
    centroids = kmeans.fit_centroids(X[sample], k, seed)
    return np.concatenate([kmeans.assign_clusters(X[s : s + 10_000], centroids)[0] for s in range(0, len(X), 10_000)])


def default_k(pool: Pool) -> int:
    return kmeans.auto_k(len(pool.ids), 50_000)


@functools.lru_cache(maxsize=None)
def dsir_long_enough(name: str) -> np.ndarray:
    """(n,) bool: not ``too_short`` under DSIR's rule (``dsir.document_lengths >= min_tokens``), which
    the pipeline applies before selecting whenever the method uses DSIR scores."""
    config = dsir.DsirConfig()
    tokens = dsir.NgramHasher(config).featurize(load_pool(name).texts).n_tokens
    return dsir.document_lengths(tokens, config.ngrams) >= config.min_tokens


@functools.lru_cache(maxsize=None)
def dsir_log_weights(name: str, target: str) -> np.ndarray:
    """(n,) DSIR log weights of a pool against the held-out sample of ``target``'s domain."""
    pool = load_pool(name)
    config = dsir.DsirConfig()
    hasher = dsir.NgramHasher(config)
    features = hasher.featurize(pool.texts)
    raw = dsir.ngram_counts(features, config.buckets)
    target_counts = dsir.ngram_counts(hasher.featurize([d.text for d in pool.heldout[target]]), config.buckets)
    return dsir.log_weights(features, dsir.log_ratio(target_counts, raw))


def dsir_keys(name: str, target: str, seed: int = SELECTION_SEED) -> np.ndarray:
    """DSIR's importance-resampling key ``log w + Gumbel(seed, id)``."""
    return dsir_log_weights(name, target) + seeded.gumbel(load_pool(name).ids, seed)


def vendi_of(pool: Pool, selected: np.ndarray) -> float:
    return vendi.vendi_score(pool.Z[selected], q=1.0)


def random_subsets(n: int, size: int) -> list[np.ndarray]:
    """``RANDOM_SUBSETS`` seeded random subsets of exactly ``size`` of range(n), sorted."""
    return [np.sort(np.random.default_rng(1000 + s).permutation(n)[:size]) for s in range(RANDOM_SUBSETS)]


@functools.lru_cache(maxsize=None)
def random_vendi(name: str) -> tuple[float, float]:
    """Mean and standard deviation of the Vendi score of the random subsets of a pool."""
    pool = load_pool(name)
    scores = [vendi_of(pool, s) for s in random_subsets(len(pool.ids), n_select(pool))]
    return float(np.mean(scores)), float(np.std(scores))


def ratio(pool: Pool, selected: np.ndarray) -> float:
    return vendi_of(pool, selected) / random_vendi(pool.name)[0]


# --- alternatives to the chosen greedy (benchmark only) --------------------------------------


def greedy_kcenter(rows: np.ndarray, q: int) -> np.ndarray:
    """k-center / max-min (Gonzalez 1985): row 0 first, then the row farthest (1 - cos) from the picks."""
    rows = vectors.unit_rows(rows)
    distance = np.full(len(rows), np.inf)
    picks = []
    for step in range(q):
        score = np.round(distance, diversity.GAIN_DECIMALS)
        score[picks] = -np.inf
        j = int(np.argmax(score)) if step else 0
        picks.append(j)
        distance = np.minimum(distance, 1.0 - rows @ rows[j])
    return np.array(picks, dtype=np.int64)


def greedy_vendi2(rows: np.ndarray, q: int) -> np.ndarray:
    """Order-2 Vendi greedy: the row with the smallest sum of squared similarities to the picks."""
    rows = vectors.unit_rows(rows)
    load = np.zeros(len(rows))
    picks = []
    for _ in range(q):
        score = np.round(load, diversity.GAIN_DECIMALS)
        score[picks] = np.inf
        j = int(np.argmin(score))
        picks.append(j)
        load += (rows @ rows[j]) ** 2
    return np.array(picks, dtype=np.int64)


def greedy_vendi1(rows: np.ndarray, q: int) -> np.ndarray:
    """Order-1 Vendi greedy (Vendi-RAG's idea): the row whose addition gives the largest Vendi score,
    by one eigendecomposition of the (t+1, t+1) kernel per candidate (batched). Row 0 first."""
    rows = vectors.unit_rows(rows)
    picks = [0] if q else []
    while len(picks) < q:
        t = len(picks)
        chosen = rows[picks]
        rest = np.setdiff1d(np.arange(len(rows)), picks)
        bordered = np.empty((len(rest), t + 1, t + 1))
        bordered[:, :t, :t] = chosen @ chosen.T
        cross = rows[rest] @ chosen.T
        bordered[:, :t, t] = cross
        bordered[:, t, :t] = cross
        bordered[:, t, t] = 1.0
        eigenvalues = np.clip(np.linalg.eigvalsh(bordered / (t + 1)), 1e-15, None)
        entropy = -np.sum(eigenvalues * np.log(eigenvalues), axis=1)
        picks.append(int(rest[np.argmax(np.round(entropy, diversity.GAIN_DECIMALS))]))
    return np.array(picks, dtype=np.int64)


def cluster_statistics(rows: np.ndarray, clusters: np.ndarray, k: int):
    """Per cluster: size, Vendi score (dual form) and spread ``1 - ||mean||^2`` of the unit rows."""
    unit = vectors.unit_rows(rows)
    sizes = np.bincount(clusters, minlength=k)
    scores, spread = np.zeros(k), np.zeros(k)
    for c in np.flatnonzero(sizes):
        members = unit[clusters == c]
        scores[c] = vendi.vendi_from_gram(members.T @ members, len(members))
        mean = members.mean(axis=0)
        spread[c] = 1.0 - mean @ mean
    return sizes, scores, spread


def quota_targets(policy: str, sizes, scores, spread) -> np.ndarray:
    """Un-normalised targets per cluster of the quota policies compared."""
    if policy == "proportional":
        return sizes.astype(np.float64)
    if policy == "balanced":
        return (sizes > 0).astype(np.float64)
    if policy == "sqrt(size x Vendi)":
        return np.sqrt(sizes * scores)
    if policy == "Vendi":
        return scores
    if policy == "size x spread":
        return sizes * spread
    raise ValueError(f"policy={policy!r}")


def fixed_quotas(policy: str, rows: np.ndarray, clusters: np.ndarray, k: int, n: int) -> np.ndarray:
    sizes, scores, spread = cluster_statistics(rows, clusters, k)
    targets = quota_targets(policy, sizes, scores, spread)
    return quotas.water_fill(n * targets / targets.sum(), sizes, n)


def select_with_quotas(rows, clusters, k, n, policy, greedy, background: float = 0.0) -> np.ndarray:
    """Per cluster, ``greedy(rows_c, q_c)`` (a callable or "logdet") with quotas from ``policy``."""
    quota = fixed_quotas(policy, rows, clusters, k, n)
    gram = diversity.gram_statistic(rows)
    picked = []
    for c in np.flatnonzero(quota):
        members = np.flatnonzero(clusters == c)
        if greedy == "logdet":
            weight = background * n / len(rows) / 4.0**diversity.GRAM_BITS
            bg = weight * (gram - diversity.gram_statistic(rows[members])) if background else None
            local = diversity.greedy_logdet(rows[members], int(quota[c]), DEFAULT.ridge, bg)[0]
        else:
            local = greedy(rows[members], int(quota[c]))
        picked.extend(members[local].tolist())
    return np.sort(np.array(picked, dtype=np.int64))


def select_random_within(rows, clusters, k, n, policy, seed: int = SELECTION_SEED) -> np.ndarray:
    """Quotas from ``policy``, random documents within each cluster (today's ``--method kmeans``)."""
    quota = fixed_quotas(policy, rows, clusters, k, n)
    keys = np.random.default_rng(seed).random(len(rows))
    picked = []
    for c in np.flatnonzero(quota):
        members = np.flatnonzero(clusters == c)
        picked.extend(members[np.argsort(-keys[members], kind="stable")[: quota[c]]].tolist())
    return np.sort(np.array(picked, dtype=np.int64))


def select_logdet_ridge(rows, clusters, k, n, ridge: float) -> np.ndarray:
    quota = fixed_quotas("proportional", rows, clusters, k, n)
    picked = []
    for c in np.flatnonzero(quota):
        members = np.flatnonzero(clusters == c)
        picked.extend(members[diversity.greedy_logdet(rows[members], int(quota[c]), ridge)[0]].tolist())
    return np.sort(np.array(picked, dtype=np.int64))


def select_two_stage(rows, clusters, k, n) -> np.ndarray:
    """DESIGN prototype: in-cluster greedy to 2N with sqrt(size x Vendi) quotas, one global greedy to N."""
    first = select_with_quotas(rows, clusters, k, min(len(rows), 2 * n), "sqrt(size x Vendi)", "logdet")
    return np.sort(first[diversity.greedy_logdet(rows[first], n, DEFAULT.ridge)[0]])


# --- sections --------------------------------------------------------------------------------


def _timed(fn):
    """``(fn(), CPU seconds)`` with one BLAS thread."""
    with threadpool_limits(1):
        start = time.process_time()
        out = fn()
        return out, time.process_time() - start


def section_strategies() -> list[str]:
    lines = ["### Within-cluster greedy (same proportional quotas for every row)", ""]
    pools = [load_pool("system"), load_pool("docs")]
    rows_spec = [
        ("random within cluster", lambda p, c, k, n: select_random_within(p.X, c, k, n, "proportional")),
        ("k-center / max-min", lambda p, c, k, n: select_with_quotas(p.X, c, k, n, "proportional", greedy_kcenter)),
        ("Vendi-1 greedy (exact)", lambda p, c, k, n: select_with_quotas(p.X, c, k, n, "proportional", greedy_vendi1)),
        ("Vendi-2 greedy", lambda p, c, k, n: select_with_quotas(p.X, c, k, n, "proportional", greedy_vendi2)),
        ("log-det, ridge 0.3", lambda p, c, k, n: select_logdet_ridge(p.X, c, k, n, 0.3)),
        ("log-det, ridge 3", lambda p, c, k, n: select_logdet_ridge(p.X, c, k, n, 3.0)),
        ("log-det, ridge 30", lambda p, c, k, n: select_logdet_ridge(p.X, c, k, n, 30.0)),
        ("log-det, ridge 3, conditioned on the other clusters (chosen)",
         lambda p, c, k, n: select_with_quotas(p.X, c, k, n, "proportional", "logdet", DEFAULT.background)),
    ]
    for k_label in ("auto", 10):
        header = "| greedy (k = " + ("auto_k" if k_label == "auto" else str(k_label)) + ") |"
        header += "".join(f" {p.name} x random | {p.name} CPU s |" for p in pools)
        lines += [header, "|---|" + "---:|---:|" * len(pools)]
        for label, fn in rows_spec:
            cells = []
            for pool in pools:
                k = default_k(pool) if k_label == "auto" else k_label
                clusters = clusters_of(pool.name, k)
                selected, seconds = _timed(lambda: fn(pool, clusters, k, n_select(pool)))
                assert len(selected) == n_select(pool)
                cells.append(f" {ratio(pool, selected):.3f} | {seconds:.2f} |")
            lines.append(f"| {label} |" + "".join(cells))
        lines.append("")
    lines.append(", ".join(f"{p.name}: n = {len(p.ids)}, N = {n_select(p)}, auto_k = {default_k(p)}, random Vendi "
                           f"{random_vendi(p.name)[0]:.2f} ± {random_vendi(p.name)[1]:.2f}" for p in pools) + ".")
    return lines


def section_quotas() -> list[str]:
    pools = [load_pool("system"), load_pool("docs")]
    ks = (10, "auto", 80)
    lines = ["### Documents per cluster (greedy: log-det, ridge 3, conditioned on the other clusters)", ""]
    header = "| quotas |" + "".join(f" {p.name} k={'auto' if k == 'auto' else k} |" for p in pools for k in ks)
    lines += [header, "|---|" + "---:|" * (len(pools) * len(ks))]

    def k_of(pool, k):
        return default_k(pool) if k == "auto" else k

    rows_spec = [(policy, functools.partial(_policy_selection, policy))
                 for policy in ("proportional", "balanced", "sqrt(size x Vendi)", "Vendi", "size x spread")]
    rows_spec += [
        ("merge by marginal gain, not conditioned",
         lambda p, c, k, n: diversity.select_diverse(p.X, c, n, diversity.DiversityConfig(background=0.0, min_length=None))),
        ("merge by marginal gain (chosen)", lambda p, c, k, n: diversity.select_diverse(p.X, c, n, NO_PRIOR)),
    ]
    for label, fn in rows_spec:
        cells = [f" {ratio(p, fn(p, clusters_of(p.name, k_of(p, k)), k_of(p, k), n_select(p))):.3f} |"
                 for p in pools for k in ks]
        lines.append(f"| {label} |" + "".join(cells))
    lines += ["", "Reference points (log-det, ridge 3, no conditioning, no length prior):", "",
              "| selection | " + " | ".join(p.name + " x random" for p in pools) + " |", "|---|" + "---:|" * len(pools)]
    references = [
        ("DESIGN prototype: k = 40, proportional quotas",
         lambda p: select_with_quotas(p.X, clusters_of(p.name, 40), 40, n_select(p), "proportional", "logdet")),
        ("DESIGN prototype: k = 20, sqrt(size x Vendi) quotas",
         lambda p: select_with_quotas(p.X, clusters_of(p.name, 20), 20, n_select(p), "sqrt(size x Vendi)", "logdet")),
        ("DESIGN prototype: two stages (k = 20, 2N, then global to N)",
         lambda p: select_two_stage(p.X, clusters_of(p.name, 20), 20, n_select(p))),
        ("global greedy, one group (k = 1, cost not bounded)",
         lambda p: np.sort(diversity.greedy_logdet(p.X, n_select(p), DEFAULT.ridge)[0])),
    ]
    for label, fn in references:
        lines.append(f"| {label} | " + " | ".join(f"{ratio(p, fn(p)):.3f}" for p in pools) + " |")
    lines += ["", "Chosen method (defaults, length prior on) over k-means seeds 1-5 at auto_k: "]
    spread = []
    for p in pools:
        values = [ratio(p, diversity.select_diverse(p.X, clusters_of(p.name, default_k(p), seed), n_select(p), DEFAULT,
                                                     lengths=p.lengths)) for seed in range(1, 6)]
        spread.append(f"{p.name} {min(values):.3f}-{max(values):.3f} (mean {np.mean(values):.3f})")
    lines[-1] += "; ".join(spread) + "."
    return lines


def _policy_selection(policy, p, c, k, n):
    return select_with_quotas(p.X, c, k, n, policy, "logdet", DEFAULT.background)


def _dominated(point, others) -> bool:
    return any(o[0] >= point[0] and o[1] >= point[1] and (o[0] > point[0] or o[1] > point[1]) for o in others)


class Subpool(NamedTuple):
    """The rows of a pool a selection runs on (all, or those DSIR does not drop as too short)."""

    rows: np.ndarray
    clusters: np.ndarray
    lengths: np.ndarray
    Z: np.ndarray
    domains: np.ndarray
    index: np.ndarray  # positions in the pool


def subpool(name: str, dsir_rule: bool, seed: int = KMEANS_SEED) -> Subpool:
    pool = load_pool(name)
    index = np.flatnonzero(dsir_long_enough(name)) if dsir_rule else np.arange(len(pool.ids))
    clusters = clusters_of(name, default_k(pool), seed)[index]
    return Subpool(pool.X[index], clusters, pool.lengths[index], pool.Z[index], pool.domains[index], index)


def frontier_point(sub: Subpool, target: str, keys: np.ndarray, n: int, config) -> tuple[np.ndarray, float, float]:
    """(selection, precision, Vendi) of ``combined`` on a subpool (positions in the subpool)."""
    sel = diversity.select_diverse(sub.rows, sub.clusters, n, config, quality_keys=keys, lengths=sub.lengths)
    return sel, float((sub.domains[sel] == target).mean()), vendi.vendi_score(sub.Z[sel], q=1.0)


def section_frontier() -> list[str]:
    lines = ["### Quality-diversity frontier of `combined` (defaults but D)", "",
             f"The pool is what the pipeline selects from when the method uses DSIR scores: DSIR's too-short rule "
             f"(fewer than {dsir.DsirConfig().min_tokens} DSIR tokens) drops documents first. N = 10% of the rest; "
             "random = 10 random subsets of the rest.", ""]
    summary = []
    for name, targets in TARGETS.items():
        pool = load_pool(name)
        sub = subpool(name, dsir_rule=True)
        n = int(round(FRACTION * len(sub.index)))
        randoms = random_subsets(len(sub.index), n)
        random_vendi_mean = float(np.mean([vendi.vendi_score(sub.Z[s], q=1.0) for s in randoms]))
        short = sub.lengths < SHORT_CHARS
        for target in targets:
            on_target = sub.domains == target
            keys = dsir_keys(name, target)[sub.index]
            dsir_sel = diversity.top_indices(keys, n)
            dsir_point = (float(on_target[dsir_sel].mean()), vendi.vendi_score(sub.Z[dsir_sel], q=1.0))
            random_point = (float(np.mean([on_target[s].mean() for s in randoms])), random_vendi_mean)
            lines += [f"**{name}, target {target}** (held-out {len(pool.heldout[target])} docs; {len(sub.index)} of "
                      f"{len(pool.ids)} documents long enough, {on_target.mean():.3f} of them on target; k = "
                      f"{default_k(pool)}, N = {n})", "",
                      "| selection | M | precision | x DSIR | Vendi | x DSIR | x random | < 300 chars | dominated |",
                      "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
            lines.append(f"| DSIR (Gumbel top-k) | {n} | {dsir_point[0]:.3f} | 1.00 | {dsir_point[1]:.2f} | 1.00 | "
                         f"{dsir_point[1] / random_point[1]:.2f} | {short[dsir_sel].mean():.3f} | |")
            lines.append(f"| random (mean of 10) | {n} | {random_point[0]:.3f} | {random_point[0] / dsir_point[0]:.2f} | "
                         f"{random_point[1]:.2f} | {random_point[1] / dsir_point[1]:.2f} | 1.00 | "
                         f"{np.mean([short[s].mean() for s in randoms]):.3f} | |")
            for step in range(11):
                d = step / 10
                sel, precision, score = frontier_point(sub, target, keys, n, diversity.DiversityConfig(diversity=d))
                flag = "yes" if _dominated((precision, score), [dsir_point, random_point]) else "no"
                marker = " (default)" if d == DEFAULT.diversity else ""
                lines.append(f"| D = {d:.1f}{marker} | {diversity.candidate_count(n, len(sub.index), d)} | {precision:.3f} | "
                             f"{precision / dsir_point[0]:.2f} | {score:.2f} | {score / dsir_point[1]:.2f} | "
                             f"{score / random_point[1]:.2f} | {short[sel].mean():.3f} | {flag} |")
            lines.append("")
            for d in SEED_DIVERSITY:
                ratios = []
                for seed in range(5):
                    seeded_sub = subpool(name, dsir_rule=True, seed=seed + 1)
                    keys_s = dsir_keys(name, target, seed)[sub.index]
                    dsir_s = diversity.top_indices(keys_s, n)
                    config = diversity.DiversityConfig(diversity=d)
                    _, precision, score = frontier_point(seeded_sub, target, keys_s, n, config)
                    ratios.append((precision / on_target[dsir_s].mean(), score / vendi.vendi_score(sub.Z[dsir_s], q=1.0)))
                ratios = np.array(ratios)
                summary.append(f"| {name} | {target} | {d} | {ratios[:, 0].min():.3f}-{ratios[:, 0].max():.3f} | "
                               f"{ratios[:, 1].min():.3f}-{ratios[:, 1].max():.3f} | "
                               f"{int(np.sum((ratios[:, 0] >= 0.9) & (ratios[:, 1] >= 1.25)))} of 5 |")
    lines += [f"Around the default D = {DEFAULT.diversity}, over 5 seeds (Gumbel seed s, k-means seed s + 1, s = 0..4); "
              "issue 21 asks for precision >= 0.9 x DSIR and Vendi >= 1.25 x DSIR:", "",
              "| pool | target | D | precision x DSIR | Vendi x DSIR | seeds meeting both |", "|---|---|---:|---:|---:|---:|",
              *summary, "",
              "Without DSIR's too-short rule (every document in the pool), with and without the length prior "
              "(precision x DSIR / Vendi x DSIR / share < 300 chars):", "",
              "| pool | target | DSIR short | " + " | ".join(f"D = {d}, {label}" for d in (0.2, 0.3, 0.4, 0.5)
                                                        for label in ("no prior", "prior")) + " |",
              "|---|---|---:|" + "---|" * 8]
    for name, targets in TARGETS.items():
        sub = subpool(name, dsir_rule=False)
        n = n_select(load_pool(name))
        for target in targets:
            on_target, keys = sub.domains == target, dsir_keys(name, target)
            dsir_sel = diversity.top_indices(keys, n)
            dsir_vendi = vendi.vendi_score(sub.Z[dsir_sel], q=1.0)
            cells = []
            for d in (0.2, 0.3, 0.4, 0.5):
                for min_length in (None, DEFAULT.min_length):
                    config = diversity.DiversityConfig(diversity=d, min_length=min_length)
                    sel, precision, score = frontier_point(sub, target, keys, n, config)
                    cells.append(f"{precision / on_target[dsir_sel].mean():.2f} / {score / dsir_vendi:.2f} / "
                                 f"{(sub.lengths[sel] < SHORT_CHARS).mean():.3f}")
            lines.append(f"| {name} | {target} | {(sub.lengths[dsir_sel] < SHORT_CHARS).mean():.3f} | "
                         + " | ".join(cells) + " |")
    return lines


def _snippet(text: str, width: int = 60) -> str:
    return repr(text[:width]).replace("|", "\\|")


def section_junk() -> list[str]:
    lines = ["### Junk watch: short (< 300 chars) and certificate documents; what each strategy picks", ""]
    examples = []
    for name in ("system", "docs"):
        pool = load_pool(name)
        n, k = n_select(pool), default_k(pool)
        clusters = clusters_of(name, k)
        target = TARGETS[name][0]
        strategies = {
            "random (seed 1000)": random_subsets(len(pool.ids), n)[0],
            "today's kmeans: balanced, random within": select_random_within(pool.X, clusters, k, n, "balanced"),
            "k-center, proportional": select_with_quotas(pool.X, clusters, k, n, "proportional", greedy_kcenter),
            "log-det, proportional, not conditioned": select_logdet_ridge(pool.X, clusters, k, n, DEFAULT.ridge),
            "chosen, no length prior": diversity.select_diverse(pool.X, clusters, n, NO_PRIOR),
            "chosen (defaults)": diversity.select_diverse(pool.X, clusters, n, DEFAULT, lengths=pool.lengths),
            f"DSIR, target {target}": diversity.top_indices(dsir_keys(name, target), n),
            f"combined D = {DEFAULT.diversity}, target {target}": diversity.select_diverse(
                pool.X, clusters, n, DEFAULT, quality_keys=dsir_keys(name, target), lengths=pool.lengths),
        }
        short = pool.lengths < SHORT_CHARS
        certs = pool.domains == "certs"
        lines += [f"**{name}** (pool: {short.mean():.3f} short, {certs.mean():.3f} certificates)", "",
                  "| strategy | Vendi | x random | short | certificates | median chars | other picks | their Vendi |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for label, sel in strategies.items():
            clean = sel[~short[sel] & ~certs[sel]]
            lines.append(f"| {label} | {vendi_of(pool, sel):.2f} | {ratio(pool, sel):.3f} | {short[sel].mean():.3f} | "
                         f"{certs[sel].mean():.3f} | {int(np.median(pool.lengths[sel]))} | {len(clean)} | "
                         f"{vendi_of(pool, clean):.2f} |")
        lines.append("")
        # The same comparison on the pool without its short documents: is the gain made of them?
        keep = np.flatnonzero(~short)
        sub_rows, sub_clusters = pool.X[keep], clusters[keep]
        sub_n = int(round(FRACTION * len(keep)))
        sub_random = np.mean([vendi.vendi_score(pool.Z[keep][s], q=1.0) for s in random_subsets(len(keep), sub_n)])
        chosen = diversity.select_diverse(sub_rows, sub_clusters, sub_n, NO_PRIOR)
        lines += [f"Pool without its {short.sum()} short documents ({len(keep)} left, N = {sub_n}): chosen method "
                  f"{vendi.vendi_score(pool.Z[keep][chosen], q=1.0) / sub_random:.3f} x random.", ""]
        for label, sel in strategies.items():
            hashed = sel[np.argsort([hashlib.blake2b(pool.ids[i].encode(), digest_size=8).digest() for i in sel])[:2]]
            shortest = sel[np.argsort(pool.lengths[sel], kind="stable")[:3]]
            for i in [*shortest, *hashed]:
                examples.append(f"| {name} | {label} | `{pool.ids[i]}` | {pool.lengths[i]} | {_snippet(pool.texts[i])} |")
    lines += ["Documents picked (per strategy: its 3 shortest picks, then 2 picks chosen by a hash of the id):", "",
              "| pool | strategy | id | chars | opening |", "|---|---|---|---:|---|", *examples]
    return lines


def section_scale() -> list[str]:
    pool = load_pool("large")
    n = n_select(pool)
    mean, sd = random_vendi("large")
    counts = {d: int((pool.domains == d).sum()) for d in np.unique(pool.domains)}
    lines = ["### At scale: a pool of {:,} real documents (N = {:,})".format(len(pool.ids), n), "",
             "Domains: " + ", ".join(f"{d} {c:,}" for d, c in counts.items()) + f". Random: Vendi {mean:.2f} ± {sd:.2f}.",
             "", "| selection | k | x random | short | CPU s |", "|---|---:|---:|---:|---:|"]
    auto = default_k(pool)
    specs = [
        ("random within cluster, proportional", auto, lambda c, k: select_random_within(pool.X, c, k, n, "proportional")),
        ("log-det, proportional, not conditioned", auto, lambda c, k: select_logdet_ridge(pool.X, c, k, n, DEFAULT.ridge)),
        ("merge by gain, not conditioned", auto,
         lambda c, k: diversity.select_diverse(pool.X, c, n, diversity.DiversityConfig(background=0.0, min_length=None))),
        ("log-det conditioned, proportional quotas", auto,
         lambda c, k: select_with_quotas(pool.X, c, k, n, "proportional", "logdet", DEFAULT.background)),
        ("chosen, no length prior", auto, lambda c, k: diversity.select_diverse(pool.X, c, n, NO_PRIOR)),
        ("chosen (defaults)", auto, lambda c, k: diversity.select_diverse(pool.X, c, n, DEFAULT, lengths=pool.lengths)),
        ("chosen (defaults)", 50, lambda c, k: diversity.select_diverse(pool.X, c, n, DEFAULT, lengths=pool.lengths)),
    ]
    short = pool.lengths < SHORT_CHARS
    for label, k, fn in specs:
        clusters = clusters_of("large", k)
        sel, seconds = _timed(lambda: fn(clusters, k))
        lines.append(f"| {label} | {k} | {ratio(pool, sel):.3f} | {short[sel].mean():.3f} | {seconds:.1f} |")
    lines += ["", f"Pool share of short documents: {short.mean():.3f}. One BLAS thread."]
    return lines


def _cluster_step_seconds(rows: np.ndarray, clusters: np.ndarray, n: int, config) -> tuple[float, float, float]:
    """CPU seconds of (the pool Gram in 10k-row batches, the per-cluster keys, the largest cluster's keys)."""
    start = time.process_time()
    gram = sum(diversity.gram_statistic(rows[s : s + 10_000]) for s in range(0, len(rows), 10_000))
    gram_seconds = time.process_time() - start
    order = np.argsort(clusters, kind="stable")
    bounds = np.flatnonzero(np.diff(clusters[order])) + 1
    total, largest = 0.0, 0.0
    for members in np.split(order, bounds):
        start = time.process_time()
        keys = diversity.diversity_keys(rows[members], None, len(rows), n, gram, config)
        seconds = time.process_time() - start
        assert np.isfinite(keys).sum() >= min(len(members), 1)
        total += seconds
        largest = max(largest, seconds)
    return gram_seconds, total, largest


def section_cost() -> list[str]:
    pool = load_pool("large")
    real = pool.X
    rng = np.random.default_rng(0)
    copies = [real]
    for _ in range(9):
        jittered = real + rng.normal(0.0, 0.02, real.shape).astype(np.float32)
        copies.append((jittered / np.linalg.norm(jittered, axis=1, keepdims=True)).astype(np.float32))
    million = np.vstack(copies)
    del copies
    lines = ["### Cost of the diversity step (decide pass, per core)", "",
             "CPU seconds, one BLAS thread, N = 10% of the pool, no length prior. 1M = the 100k real embeddings "
             "and 9 copies jittered by N(0, 0.02^2) per coordinate. The Gram is the pool statistic (a combiner "
             "in the pipeline); keys = every cluster's `diversity_keys` (one worker per cluster in the pipeline).", "",
             "| pool | k | largest cluster | max group | Gram s | keys s | docs/s (keys) | largest cluster s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for label, rows in (("100k real", real), ("1M jittered", million)):
        n_rows = len(rows)
        for k in (kmeans.auto_k(n_rows, 50_000), max(10, n_rows // 5_000)):
            sample = rows[np.sort(np.random.default_rng(KMEANS_SEED).permutation(n_rows)[:50_000])].astype(np.float64)
            centroids = kmeans.fit_centroids(sample, k, KMEANS_SEED)
            clusters = np.concatenate([kmeans.assign_clusters(rows[s : s + 20_000], centroids)[0]
                                       for s in range(0, n_rows, 20_000)])
            largest_cluster = int(np.bincount(clusters).max())
            caps = [DEFAULT.max_group_size]
            if n_rows < 1_000_000 and largest_cluster > DEFAULT.max_group_size:
                caps.append(2 * DEFAULT.max_group_size)
            for cap in caps:
                config = diversity.DiversityConfig(max_group_size=cap, min_length=None)
                with threadpool_limits(1):
                    gram_s, keys_s, largest_s = _cluster_step_seconds(rows, clusters, int(FRACTION * n_rows), config)
                lines.append(f"| {label} | {k} | {largest_cluster:,} | {cap:,} | {gram_s:.1f} | {keys_s:.1f} | "
                             f"{n_rows / keys_s:,.0f} | {largest_s:.2f} |")
    # combined with a target: when M <= rho N every candidate of a group is ranked (r = m), the
    # worst case per candidate; one full group of real candidates, conditioned as in the pipeline.
    m = DEFAULT.max_group_size
    group = real[:m]
    keep_share = 1.0 - DEFAULT.diversity * (1.0 - FRACTION)  # N / M at the default D
    background = DEFAULT.background * keep_share * (diversity.gram_statistic(real) - diversity.gram_statistic(group))
    with threadpool_limits(1):
        start = time.process_time()
        diversity.greedy_logdet(group, m, DEFAULT.ridge, background / 4.0**diversity.GRAM_BITS)
        seconds = time.process_time() - start
    lines += ["", f"`combined` worst case (M <= rho N, so r = m: every candidate of a group ranked): one group of "
              f"{m:,} candidates, {m:,} picks: {seconds:.1f} CPU s, {m / seconds:,.0f} candidates/s."]
    return lines


SECTION_FUNCTIONS = {
    "strategies": section_strategies, "quotas": section_quotas, "frontier": section_frontier,
    "junk": section_junk, "scale": section_scale, "cost": section_cost,
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--section", action="append", choices=SECTIONS, help="repeatable; default: all")
    parser.add_argument("--out", type=pathlib.Path)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    sections = args.section or SECTIONS
    lines = [f"## Diversity selection: {', '.join(sections)}", ""]
    for section in sections:
        start = time.perf_counter()
        lines += SECTION_FUNCTIONS[section]()
        lines += ["", f"_({section}: {time.perf_counter() - start:.0f} s wall)_", ""]
    lines += ["Pools (`diversity_corpora.digest`): " + ", ".join(f"{name} {d}" for name, d in DIGESTS.items()) + "."]
    publish(lines, args.out, __file__, argv, load_before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
