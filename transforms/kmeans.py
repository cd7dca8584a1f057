"""k-means clusters of document embeddings, per-cluster selection quotas, and semantic deduplication.

Clustering. Centroids ``c_1..c_k`` are fitted by scikit-learn's ``KMeans`` (Lloyd, k-means++
init, the config's seed) on a bounded sample: the ``sample_size`` eligible embedded records with
the smallest ``blake2b(seed, id)`` (``embed.sample_rank``), kept by a fixed-size ``Top`` combine
and sorted by id before the fit. ``k`` defaults to ``round(sqrt(n / 2))`` for n eligible records,
capped at ``MAX_AUTO_K`` and at ``sample_size / MIN_POINTS_PER_CENTROID`` (enough sample points
per centroid). Every record is then assigned in batches, ``cluster = argmin_j ||x - c_j||`` (the
first index on ties, as ``KMeans.predict``), and ``cluster_distance = ||x - c_cluster||``.
Optional refinement passes are Lloyd updates over the full data: per cluster, a fixed-size
``ClusterStatsCombineFn`` sums the members, and ``c_j <- mean of its members`` (empty clusters
keep their centroid). Deviation: SemDeDup and DBP run spherical k-means (normalised centroids,
cosine assignment); this is plain Euclidean k-means on the unit-norm embeddings.

Cluster statistics (``ClusterStatsCombineFn``, CombinePerKey by cluster): the member count
``n_j``, the vector sum ``s_j``, and the sums of ``||x - c_j||`` and ``||x - c_j||^2``
(inertia). For unit-norm embeddings the mean cosine distance to the centroid is exact from the
sums: ``d_intra_j = 1 - (s_j / n_j) . c_j / ||c_j||``.

Complexity (Abbas et al. 2024, "Effective pruning of web-scale datasets based on complexity of
concept clusters", DBP; code github.com/amro-kamal/effective_pruning):

    d_inter_j = mean cosine distance from c_j to its l nearest other centroids (l = 20 there)
    C_j       = d_inter_j * d_intra_j
    target_j  = N * softmax(C / tau)_j   (tau = 0.5, their ``prune.py`` default)

DBP turns the targets into integer quotas with a quadratic program, ``min ||x - target||^2``
subject to ``sum x = N`` and ``0 <= x_j <= n_j``. Its solution is ``x_j = clip(target_j + mu, 0,
n_j)`` for the ``mu`` that meets the sum: additive water-filling, which ``water_fill`` computes
exactly (bisection on mu) and then rounds by largest remainder. Deviation: DBP's optional lower
bound per cluster (``cls_bal_ratio``) is not used.

Selection strategies (``cluster_quotas``; the lead's ``select.py`` then keeps, in each cluster,
the ``quota`` records with the highest ``within_cluster_key``):
- ``balanced``: equal targets N/K over the non-empty clusters, as the kMQ sampler of "Diversify
  and Conquer" (Yu et al. 2024, github.com/for-ai/iterative-data-selection, which takes
  ``min(N / K, n_j)`` per cluster); here the leftovers of small clusters are redistributed, so
  exactly N are chosen.
- ``proportional``: targets ``N * n_j / n`` (stratified sampling), largest-remainder rounding.
- ``prototypes``: proportional quotas; within a cluster the records farthest from the centroid
  come first, i.e. the most prototypical (nearest) ones are dropped, the self-supervised
  prototype metric of Sorscher et al. 2022 ("Beyond neural scaling laws: beating power law
  scaling via data pruning"). Deviation: they prune by one global distance threshold; here the
  pruning rate is the same in every cluster.
- ``complexity``: the DBP quotas above.
Other strategies rank within a cluster by the method's score (random, DSIR or ZIP-FIT).

Semantic deduplication (Abbas et al. 2023, "SemDeDup: Data-efficient learning at web-scale
through semantic deduplication"): within a cluster, a record is a duplicate when its cosine
similarity to an earlier kept record exceeds ``1 - eps``. Records are taken in id order and
compared only with kept ones, so the smallest id of a group of near-copies is kept and every
duplicate names a kept record (``duplicate_of``, the most similar; ties to the smaller id).
Deviation: SemDeDup orders by distance to the centroid and also drops a record similar to an
already-dropped one. Memory: one group's records and (m, d) float32 embeddings, plus
``SIMILARITY_BLOCK`` floats of similarities; clusters above ``max_group_size`` records are
split into about ``size / max_group_size`` groups by ``crc32(id)``, which misses the duplicates
that fall in different groups.
"""

import dataclasses
import math
import zlib
from typing import NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from sklearn.cluster import KMeans

from winnow.transforms import embed, schema, vendi
from winnow.transforms.io import error_record
from winnow.transforms.validation import check_int, is_number

NAMESPACE = "winnow.kmeans"
STRATEGIES = ("balanced", "proportional", "prototypes", "complexity")
MAX_AUTO_K = 500
MIN_POINTS_PER_CENTROID = 39  # faiss warns below this many training points per centroid
N_INIT = 1
MAX_ITER = 100
COMPLEXITY_NEIGHBORS = 20
COMPLEXITY_TEMPERATURE = 0.5
MAX_GROUP_SIZE = 20_000
SIMILARITY_BLOCK = 1 << 22  # float32 similarities held at once (16 MB)
BATCH_SIZE = 1024
PARTIALS, GROUP_STATS = "partials", "group_stats"
_BISECTION_STEPS = 200


@dataclasses.dataclass(frozen=True)
class KMeansConfig:
    """Settings of ``ClusterKMeans`` and of the quotas the selection asks for.

    Attributes:
        k: number of clusters, or None for ``auto_k`` of the eligible record count.
        sample_size: records the centroids are fitted on.
        seed: seed of the sample choice and of k-means++; every worker uses it.
        refine_passes: Lloyd updates over the full data after the sample fit.
        strategy: one of ``STRATEGIES`` (see the module docstring).
        semdedup_eps: run ``SemanticDedup`` with this eps (0 < eps < 1), or None to skip it.
        complexity_temperature: tau of the complexity softmax (> 0).
        complexity_neighbors: l, the nearest centroids d_inter averages over (>= 1).
    """

    k: int | None = None
    sample_size: int = 50_000
    seed: int = 0
    refine_passes: int = 0
    strategy: str = "balanced"
    semdedup_eps: float | None = None
    complexity_temperature: float = COMPLEXITY_TEMPERATURE
    complexity_neighbors: int = COMPLEXITY_NEIGHBORS

    def __post_init__(self):
        check_int("k", self.k, 1, allow_none=True)
        check_int("sample_size", self.sample_size, 1)
        check_int("seed", self.seed, 0)
        check_int("refine_passes", self.refine_passes, 0)
        check_strategy(self.strategy)
        if self.semdedup_eps is not None:
            check_eps(self.semdedup_eps)
        if not is_number(self.complexity_temperature) or not self.complexity_temperature > 0:
            raise ValueError(f"complexity_temperature={self.complexity_temperature!r}; expected a number > 0")
        check_int("complexity_neighbors", self.complexity_neighbors, 1)


def check_strategy(strategy) -> str:
    """``strategy`` after checking it is one of ``STRATEGIES``; raises ValueError."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy={strategy!r}; expected one of {STRATEGIES}")
    return strategy


def check_eps(eps) -> float:
    """``eps`` as a float after checking 0 < eps < 1; raises ValueError."""
    if not is_number(eps) or not 0.0 < eps < 1.0:
        raise ValueError(f"eps={eps!r}; expected a number with 0 < eps < 1")
    return float(eps)


# --- core: clustering ------------------------------------------------------------------------


class ClusterStats(NamedTuple):
    """Sums over one cluster's members (also a partial sum over part of them).

    ``vector_sum`` is a (d,) float64 array, or the scalar 0.0 before the first member: numpy
    broadcasting adds either, so the empty value needs no d.
    """

    count: int
    vector_sum: np.ndarray | float
    distance_sum: float
    sq_distance_sum: float


EMPTY_STATS = ClusterStats(0, 0.0, 0.0, 0.0)


def auto_k(n_records: int, sample_size: int) -> int:
    """``round(sqrt(n / 2))`` clipped to [1, min(MAX_AUTO_K, sample_size // MIN_POINTS_PER_CENTROID)]."""
    cap = max(1, min(MAX_AUTO_K, sample_size // MIN_POINTS_PER_CENTROID))
    return int(min(cap, max(1, round(math.sqrt(n_records / 2)))))


def fit_centroids(X: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k-means centroids of the sample ``X`` (n, d) float64, n >= k >= 1: (k, d) float64.

    Expects validated input in a fixed row order (the fit depends on it).
    """
    model = KMeans(n_clusters=k, init="k-means++", n_init=N_INIT, max_iter=MAX_ITER, random_state=seed)
    return model.fit(X).cluster_centers_.astype(np.float64)


def assign_clusters(X: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of each row: ((b,) int64 labels, (b,) float64 Euclidean distances).

    ``X`` (b, d), ``centroids`` (k, d), k >= 1. The argmin uses ``||x||^2 - 2 x.c + ||c||^2``
    (one matrix product per batch); the reported distance is recomputed from ``x - c`` row by
    row, so it does not depend on the batch.
    """
    X = np.asarray(X, dtype=np.float64)
    squared_norms = np.einsum("ij,ij->i", centroids, centroids)
    squared = np.einsum("ij,ij->i", X, X)[:, None] - 2.0 * X @ centroids.T + squared_norms
    labels = np.argmin(squared, axis=1)
    distances = np.sqrt(np.einsum("ij,ij->i", X - centroids[labels], X - centroids[labels]))
    return labels.astype(np.int64), distances


def cluster_partials(X: np.ndarray, labels: np.ndarray, distances: np.ndarray) -> list[tuple[int, ClusterStats]]:
    """One batch's per-cluster sums: ``[(cluster, ClusterStats)]``, clusters ascending.

    ``X`` (b, d), ``labels`` (b,) int, ``distances`` (b,) float.
    """
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    clusters, starts, counts = np.unique(sorted_labels, return_index=True, return_counts=True)
    X = np.asarray(X, dtype=np.float64)[order]
    d = np.asarray(distances, dtype=np.float64)[order]
    vector_sums = np.add.reduceat(X, starts, axis=0)
    distance_sums = np.add.reduceat(d, starts)
    sq_sums = np.add.reduceat(d * d, starts)
    return [
        (int(c), ClusterStats(int(n), v, float(s), float(q)))
        for c, n, v, s, q in zip(clusters, counts, vector_sums, distance_sums, sq_sums)
    ]


def merge_stats(parts) -> ClusterStats:
    """The sum of ``ClusterStats``; ``EMPTY_STATS`` for none. Inputs are not modified."""
    count, vector_sum, distance_sum, sq_sum = 0, 0.0, 0.0, 0.0
    for part in parts:
        count += part.count
        vector_sum = vector_sum + part.vector_sum
        distance_sum += part.distance_sum
        sq_sum += part.sq_distance_sum
    return ClusterStats(count, vector_sum, distance_sum, sq_sum)


def lloyd_update(centroids: np.ndarray, stats: dict[int, ClusterStats]) -> np.ndarray:
    """One Lloyd step: each centroid (k, d) moves to its members' mean; empty clusters stay."""
    updated = np.array(centroids, dtype=np.float64)
    for cluster, part in stats.items():
        if part.count:
            updated[cluster] = part.vector_sum / part.count
    return updated


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix, dtype=np.float64), where=norms > 0)


def inter_cluster_distances(centroids: np.ndarray, n_neighbors: int) -> np.ndarray:
    """d_inter (k,) float64: mean cosine distance of each centroid to its l = min(n_neighbors, k - 1) nearest.

    0 for a single centroid. Rows are processed in blocks of ``SIMILARITY_BLOCK`` floats.
    """
    k = len(centroids)
    if k < 2:
        return np.zeros(k)
    unit = _unit_rows(centroids)
    neighbors = min(n_neighbors, k - 1)
    out = np.empty(k)
    block = max(1, SIMILARITY_BLOCK // k)
    for start in range(0, k, block):
        distance = 1.0 - unit[start : start + block] @ unit.T
        distance[np.arange(distance.shape[0]), np.arange(start, start + distance.shape[0])] = np.inf  # not itself
        out[start : start + block] = np.partition(distance, neighbors - 1, axis=1)[:, :neighbors].mean(axis=1)
    return out


def cluster_complexity(centroids: np.ndarray, stats: dict[int, ClusterStats], n_neighbors: int) -> np.ndarray:
    """DBP complexity ``C_j = d_inter_j * d_intra_j`` (k,) float64 (module docstring); 0 for empty clusters."""
    unit = _unit_rows(centroids)
    d_intra = np.zeros(len(centroids))
    for cluster, part in stats.items():
        if part.count:
            # clip: round-off can push 1 - cos a hair below 0 for a single-member cluster
            d_intra[cluster] = max(0.0, 1.0 - float(np.dot(part.vector_sum / part.count, unit[cluster])))
    return inter_cluster_distances(centroids, n_neighbors) * d_intra


def kmeans_stats(
    centroids: np.ndarray, stats: dict[int, ClusterStats], sample_size: int, config: KMeansConfig
) -> dict:
    """The JSON-serializable report dict of a clustering (cluster ids as int keys)."""
    k = len(centroids)
    complexity = cluster_complexity(centroids, stats, config.complexity_neighbors)
    members = {c: stats.get(c, EMPTY_STATS) for c in range(k)}
    return {
        "k": k,
        "sample_size": sample_size,
        "refine_passes": config.refine_passes,
        "strategy": config.strategy,
        "assigned": sum(part.count for part in members.values()),
        "inertia": float(sum(part.sq_distance_sum for part in members.values())),
        "cluster_sizes": {c: part.count for c, part in members.items()},
        "mean_distance": {c: part.distance_sum / part.count if part.count else 0.0 for c, part in members.items()},
        "complexity": {c: float(complexity[c]) for c in range(k)},
    }


# --- core: quotas ----------------------------------------------------------------------------


def water_fill(targets: np.ndarray, capacities: np.ndarray, total: int) -> np.ndarray:
    """Integer quotas (K,) int64 closest to ``targets`` with sum ``total`` and ``0 <= q_j <= capacities_j``.

    Real solution ``x_j = clip(targets_j + mu, 0, capacities_j)``, mu found by bisection (the sum
    is continuous and non-decreasing in mu); then floors plus one unit for the ``total - sum``
    largest fractional parts (ties to the lower index). Expects 0 <= total <= sum(capacities),
    targets (K,) float64, capacities (K,) int64 >= 0.
    """
    capacities = np.asarray(capacities, dtype=np.int64)
    if total == 0:
        return np.zeros(len(capacities), dtype=np.int64)
    targets = np.asarray(targets, dtype=np.float64)
    low, high = -targets.max(), float((capacities - targets).max())  # sums 0 and sum(capacities)
    for _ in range(_BISECTION_STEPS):
        middle = (low + high) / 2.0
        if np.clip(targets + middle, 0, capacities).sum() < total:
            low = middle
        else:
            high = middle
    shares = np.clip(targets + high, 0, capacities)
    quotas = np.minimum(np.floor(shares).astype(np.int64), capacities)
    # sum(shares) is total up to round-off, so fewer than K units remain and every cluster with a
    # fractional share has room for one more.
    remainder = total - int(quotas.sum())
    fractions = np.round(shares - quotas, 9)  # equal in exact arithmetic -> equal here, so ties go by index
    order = np.lexsort((np.arange(len(shares)), -fractions))
    room = order[quotas[order] < capacities[order]]
    quotas[room[:remainder]] += 1
    return quotas


def cluster_quotas(
    strategy: str,
    cluster_sizes: dict[int, int],
    n: int,
    complexity: dict[int, float] | None = None,
    temperature: float = COMPLEXITY_TEMPERATURE,
) -> dict[int, int]:
    """Records to select per cluster: sums to exactly ``min(n, sum(sizes))``, never above a size.

    Targets over the non-empty clusters (module docstring): ``balanced`` N/K each,
    ``proportional`` and ``prototypes`` ``N * n_j / n``, ``complexity`` ``N * softmax(C / tau)``;
    then ``water_fill``. Deterministic: ties go to the smaller cluster id.

    Args:
        strategy: one of ``STRATEGIES``.
        cluster_sizes: cluster id -> eligible records in it (>= 0).
        n: records to select in total (>= 0).
        complexity: cluster id -> C_j, required for ``complexity`` (e.g. ``stats["complexity"]``
            of ``ClusterKMeans``).
        temperature: tau of the complexity softmax (> 0).

    Returns:
        cluster id -> quota, for every id in ``cluster_sizes``.

    Raises:
        ValueError: an unknown strategy, a negative n or size, missing or non-finite complexities.

    Example:
        >>> cluster_quotas("balanced", {0: 2, 1: 10, 2: 10}, 12)
        {0: 2, 1: 5, 2: 5}
    """
    check_strategy(strategy)
    check_int("n", n, 0)
    for cluster, size in cluster_sizes.items():
        check_int(f"cluster_sizes[{cluster}]", size, 0)
    clusters = sorted(cluster_sizes)
    sizes = np.array([cluster_sizes[c] for c in clusters], dtype=np.int64)
    total = int(min(n, sizes.sum()))
    active = sizes > 0
    weights = np.zeros(len(clusters))
    if strategy == "balanced":
        weights[active] = 1.0
    elif strategy in ("proportional", "prototypes"):
        weights = sizes.astype(np.float64)
    else:
        if complexity is None or any(c not in complexity for c in clusters):
            raise ValueError("strategy='complexity' needs complexity[c] for every cluster c in cluster_sizes")
        if not is_number(temperature) or not temperature > 0:
            raise ValueError(f"temperature={temperature!r}; expected a number > 0")
        scores = np.array([complexity[c] for c in clusters], dtype=np.float64) / temperature
        if not np.isfinite(scores).all():
            raise ValueError(f"complexity={complexity!r}; expected finite numbers")
        if active.any():
            weights[active] = np.exp(scores[active] - scores[active].max())  # stable softmax numerator
    targets = total * weights / weights.sum() if total else np.zeros(len(clusters))
    quotas = water_fill(targets, sizes, total)
    return {c: int(q) for c, q in zip(clusters, quotas)}


def within_cluster_key(strategy: str, cluster_distance, score):
    """The key the selection ranks a cluster's records by (highest first).

    ``prototypes``: ``cluster_distance`` (keep the farthest from the centroid, Sorscher et al.
    2022); every other strategy: ``score``, the method's key (a seeded uniform hash for random
    selection, DSIR or ZIP-FIT scores when present). Works on floats or numpy arrays.
    """
    return cluster_distance if check_strategy(strategy) == "prototypes" else score


# --- core: semantic deduplication -------------------------------------------------------------


def semantic_duplicates(X: np.ndarray, eps: float) -> np.ndarray:
    """SemDeDup within one group: (m,) int64, the kept row each duplicate row points to, -1 if kept.

    ``X`` (m, d) unit rows in id order. Row j is a duplicate when ``X_j . X_i > 1 - eps`` for
    some kept i < j; it points to the most similar such i (ties to the smaller i). Similarities
    are computed in blocks of rows (at most ``SIMILARITY_BLOCK`` values); the Python loop runs
    only over rows with a candidate.
    """
    m = len(X)
    kept = np.ones(m, dtype=bool)
    duplicate_of = np.full(m, -1, dtype=np.int64)
    block = max(1, SIMILARITY_BLOCK // max(m, 1))
    for start in range(0, m, block):
        stop = min(m, start + block)
        similarity = X[start:stop] @ X[:stop].T  # (rows, stop)
        earlier = np.arange(stop)[np.newaxis, :] < np.arange(start, stop)[:, np.newaxis]
        hits = (similarity > 1.0 - eps) & earlier
        for row in np.flatnonzero(hits.any(axis=1)):
            candidates = np.flatnonzero(hits[row] & kept[:stop])
            if candidates.size:
                duplicate_of[start + row] = candidates[np.argmax(similarity[row, candidates])]
                kept[start + row] = False
    return duplicate_of


def group_parts(cluster_size: int, max_group_size: int) -> int:
    """Groups a cluster of ``cluster_size`` records is split into: ``ceil(size / max_group_size)``, >= 1."""
    return max(1, -(-cluster_size // max_group_size))


def group_part(record_id: str, parts: int) -> int:
    """The group of a record within its cluster: ``crc32(id) mod parts``."""
    return zlib.crc32(record_id.encode("utf-8")) % parts


# --- Beam wrappers: clustering ----------------------------------------------------------------


class ClusterStatsCombineFn(beam.CombineFn):
    """``ClusterStats`` partials -> their sum (``merge_stats``); fixed size, use with CombinePerKey(cluster)."""

    def create_accumulator(self):
        return EMPTY_STATS

    def add_input(self, accumulator, partial):
        return merge_stats([accumulator, partial])

    def merge_accumulators(self, accumulators):
        return merge_stats(accumulators)

    def extract_output(self, accumulator):
        return accumulator


def _failed(record: dict, method: str, why: str) -> beam.pvalue.TaggedOutput:
    return beam.pvalue.TaggedOutput(
        schema.ERRORS_TAG, error_record(NAMESPACE, None, f"{method}_failed: {why}", repr(record))
    )


def _sample_entry(record: dict, seed: int):
    """Eligible record -> (rank, id, (d,) float32 embedding); nothing without a usable embedding."""
    vector, _ = vendi.parse_embedding(record.get(schema.EMBEDDING), normalize=True)
    if vector is not None:
        yield embed.sample_rank(seed, record[schema.ID]), record[schema.ID], vector.astype(np.float32)


def _sample_order(entry: tuple) -> tuple:
    return entry[0], entry[1]


def _sample_vectors(entries: list[tuple]) -> list[np.ndarray]:
    """The sample's vectors of its most common length, in id order (the fit depends on the order)."""
    counts: dict[int, int] = {}
    for _, _, vector in entries:
        counts[len(vector)] = counts.get(len(vector), 0) + 1
    dim = vendi.mode_dim(counts)
    return [vector for _, _, vector in sorted(entries, key=lambda e: e[1]) if len(vector) == dim]


def _fit_on_sample(entries: list[tuple], n_records: int, config: KMeansConfig) -> np.ndarray:
    """Sample entries -> (k, d) centroids; (0, 0) for an empty sample."""
    vectors = _sample_vectors(entries)
    if not vectors:
        return np.zeros((0, 0))
    k = min(config.k or auto_k(n_records, config.sample_size), len(vectors))
    return fit_centroids(np.stack(vectors).astype(np.float64), k, config.seed)


class _AssignFn(beam.DoFn):
    """Batch of records -> records with ``cluster``/``cluster_distance`` + per-cluster partial sums.

    With ``emit_records=False`` (refinement passes) only the partials are emitted.
    """

    def __init__(self, emit_records: bool):
        self._emit = emit_records

    def setup(self):
        self._assigned = Metrics.counter(NAMESPACE, "assigned")
        self._passed = Metrics.counter(NAMESPACE, "passed_through")
        self._invalid = {why: Metrics.counter(NAMESPACE, f"invalid_{why}") for why in vendi.INVALID_REASONS}

    def process(self, batch, centroids: np.ndarray):
        dim = centroids.shape[1]  # 0 for an empty fit: every vector is then a dim_mismatch
        eligible, vectors = [], []
        for record in batch:
            if not schema.is_eligible(record):
                if self._emit:
                    self._passed.inc()
                    yield record
                continue
            vector, why = embed.field_vector(record.get(schema.EMBEDDING), dim, unit=False)  # as Embed wrote it
            if why is None:
                eligible.append(record)
                vectors.append(vector)
            elif self._emit:
                self._invalid[why].inc()
                yield _failed(record, "kmeans", why)
        if not eligible:
            return
        X = np.stack(vectors)
        labels, distances = assign_clusters(X, centroids)
        for cluster_and_partial in cluster_partials(X, labels, distances):
            yield beam.pvalue.TaggedOutput(PARTIALS, cluster_and_partial)
        if self._emit:
            self._assigned.inc(len(eligible))
            for record, label, distance in zip(eligible, labels, distances):
                yield {**record, schema.CLUSTER: int(label), schema.CLUSTER_DISTANCE: float(np.float32(distance))}


def _cluster_sums(partials, label: str):
    # (cluster, partial) -> (cluster, ClusterStats) -> one dict of k entries (k x d floats)
    return (
        partials
        | f"Sum{label}" >> beam.CombinePerKey(ClusterStatsCombineFn())
        | f"Collect{label}" >> beam.combiners.ToDict()
    )


class ClusterKMeans(beam.PTransform):
    """Records with ``schema.EMBEDDING`` -> records with ``cluster`` (int) and ``cluster_distance`` (float).

    ``expand`` returns a dict:
        ``"records"``: every input record that is not an error; eligible ones get
        ``cluster`` and ``cluster_distance`` (Euclidean distance to their centroid), dropped
        ones pass through unchanged;
        ``"errors"``: eligible records without a usable embedding of the centroids' dimension,
        reason ``kmeans_failed: <why>``;
        ``"stats"``: one dict (``kmeans_stats``): k, sample_size, refine_passes, strategy,
        assigned, inertia, and per cluster id: cluster_sizes, mean_distance, complexity;
        ``"centroids"``: one (k, d) float64 array.
    Counters (``winnow.kmeans``): ``assigned``, ``passed_through``, ``invalid_<why>``.

    Example: ``out = embedded | ClusterKMeans(KMeansConfig(k=50))``.
    """

    def __init__(self, config: KMeansConfig = KMeansConfig()):
        super().__init__()
        if not isinstance(config, KMeansConfig):
            raise TypeError(f"config={config!r}; expected a KMeansConfig")
        self._config = config

    def expand(self, records):
        config = self._config
        # eligible record -> (rank, id, vector): the sample_size smallest ranks, and their count
        entries = (
            records
            | "Eligible" >> beam.Filter(schema.is_eligible)
            | "SampleEntries" >> beam.FlatMap(_sample_entry, config.seed)
        )
        n_records = entries | "CountEmbedded" >> beam.combiners.Count.Globally()
        sample = entries | "SampleVectors" >> beam.combiners.Top.Of(
            config.sample_size, key=_sample_order, reverse=True
        )
        centroids = sample | "FitCentroids" >> beam.Map(_fit_on_sample, beam.pvalue.AsSingleton(n_records), config)
        batches = records | "Batch" >> beam.BatchElements(max_batch_size=BATCH_SIZE)
        for i in range(config.refine_passes):
            partials = batches | f"RefineAssign{i}" >> beam.ParDo(
                _AssignFn(emit_records=False), beam.pvalue.AsSingleton(centroids)
            ).with_outputs(PARTIALS, main="records")
            sums = _cluster_sums(partials[PARTIALS], f"Refine{i}")
            centroids = centroids | f"LloydUpdate{i}" >> beam.Map(lloyd_update, beam.pvalue.AsSingleton(sums))
        assigned = batches | "Assign" >> beam.ParDo(
            _AssignFn(emit_records=True), beam.pvalue.AsSingleton(centroids)
        ).with_outputs(PARTIALS, schema.ERRORS_TAG, main="records")
        sums = _cluster_sums(assigned[PARTIALS], "Final")
        sample_size = sample | "SampleSize" >> beam.Map(lambda entries: len(_sample_vectors(entries)))
        stats = centroids | "Stats" >> beam.Map(
            kmeans_stats, beam.pvalue.AsSingleton(sums), beam.pvalue.AsSingleton(sample_size), config
        )
        return {
            "records": assigned.records,
            "errors": assigned[schema.ERRORS_TAG],
            "stats": stats,
            "centroids": centroids,
        }


# --- Beam wrappers: semantic deduplication ------------------------------------------------------


class DedupStatsCombineFn(beam.CombineFn):
    """Per-group ``(records, duplicates)`` -> ``(groups, records, duplicates, largest group)``."""

    def create_accumulator(self):
        return 0, 0, 0, 0

    def add_input(self, accumulator, group):
        groups, records, duplicates, largest = accumulator
        return groups + 1, records + group[0], duplicates + group[1], max(largest, group[0])

    def merge_accumulators(self, accumulators):
        groups, records, duplicates, largest = zip(*accumulators)
        return sum(groups), sum(records), sum(duplicates), max(largest)

    def extract_output(self, accumulator):
        return accumulator


def _in_cluster(record: dict) -> bool:
    return schema.is_eligible(record) and record.get(schema.CLUSTER) is not None


class _PassThroughFn(beam.DoFn):
    """Records SemDeDup does not compare (dropped, or without a cluster): unchanged, counted."""

    def setup(self):
        self._passed = Metrics.counter(NAMESPACE, "semdedup_passed_through")

    def process(self, record):
        self._passed.inc()
        yield record


def _group_key(record: dict, sizes: dict[int, int], max_group_size: int):
    cluster = record[schema.CLUSTER]
    return (cluster, group_part(record[schema.ID], group_parts(sizes[cluster], max_group_size))), record


class _SemanticDedupFn(beam.DoFn):
    """One group of a cluster -> its records, near-copies dropped as ``semantic_duplicate``."""

    def __init__(self, eps: float):
        self._eps = eps

    def setup(self):
        self._duplicates = Metrics.counter(NAMESPACE, schema.SEMANTIC_DUPLICATE)
        self._kept = Metrics.counter(NAMESPACE, "semdedup_kept")
        self._invalid = {why: Metrics.counter(NAMESPACE, f"invalid_{why}") for why in vendi.INVALID_REASONS}

    def process(self, keyed_group):
        _, group = keyed_group
        valid, vectors, dim = [], [], None
        for record in sorted(group, key=lambda r: r[schema.ID]):
            vector, why = embed.field_vector(record.get(schema.EMBEDDING), dim)  # the first fixes dim
            if why is None:
                dim = len(vector)
                valid.append(record)
                vectors.append(vector)
            else:
                self._invalid[why].inc()
                yield _failed(record, "semdedup", why)
        if not valid:
            return
        duplicate_of = semantic_duplicates(np.stack(vectors), self._eps)
        n_duplicates = int((duplicate_of >= 0).sum())
        self._duplicates.inc(n_duplicates)
        self._kept.inc(len(valid) - n_duplicates)
        yield beam.pvalue.TaggedOutput(GROUP_STATS, (len(valid), n_duplicates))
        for record, kept_index in zip(valid, duplicate_of):
            if kept_index < 0:
                yield record
            else:
                yield schema.drop(
                    record, schema.SEMANTIC_DUPLICATE, **{schema.DUPLICATE_OF: valid[kept_index][schema.ID]}
                )


def _dedup_stats(totals: tuple, sizes: dict[int, int], eps: float, max_group_size: int) -> dict:
    groups, records, duplicates, largest = totals
    return {
        "eps": eps,
        "max_group_size": max_group_size,
        "groups": groups,
        "records": records,
        "semantic_duplicates": duplicates,
        "largest_group": largest,
        "split_clusters": sum(1 for size in sizes.values() if size > max_group_size),
    }


class SemanticDedup(beam.PTransform):
    """SemDeDup within k-means clusters: records with ``cluster`` -> near-copies dropped.

    ``expand`` returns a dict:
        ``"records"``: every input record that is not an error; an eligible record whose
        embedding has cosine similarity > 1 - eps to a kept record with a smaller id in its
        cluster (group) gets ``drop_reason = semantic_duplicate`` and ``duplicate_of`` = that id;
        records without a cluster or already dropped pass through unchanged;
        ``"errors"``: clustered records without a usable embedding, reason ``semdedup_failed: <why>``;
        ``"stats"``: one dict: eps, max_group_size, groups, records (compared), semantic_duplicates,
        largest_group, split_clusters.
    Counters (``winnow.kmeans``): ``semantic_duplicate``, ``semdedup_kept``, ``semdedup_passed_through``,
    ``invalid_<why>``.

    Args:
        eps: similarity margin, 0 < eps < 1 (SemDeDup uses 0.01 to 0.1 on CLIP embeddings).
        max_group_size: clusters larger than this are split by ``crc32(id)`` into groups of
            about this size (memory bound per worker; see the module docstring).
    """

    def __init__(self, eps: float, max_group_size: int = MAX_GROUP_SIZE):
        super().__init__()
        self._eps = check_eps(eps)
        check_int("max_group_size", max_group_size, 1)
        self._max_group_size = max_group_size

    def expand(self, records):
        clustered, other = records | "SplitClustered" >> beam.Partition(lambda r, _: 0 if _in_cluster(r) else 1, 2)
        # record -> (cluster, 1) -> {cluster: size}, k entries
        sizes = (
            clustered
            | "ClusterOnes" >> beam.Map(lambda r: (r[schema.CLUSTER], 1))
            | "ClusterSizes" >> beam.CombinePerKey(sum)
            | "SizesDict" >> beam.combiners.ToDict()
        )
        # record -> ((cluster, part), record) -> ((cluster, part), [records])
        groups = (
            clustered
            | "KeyByGroup" >> beam.Map(_group_key, beam.pvalue.AsSingleton(sizes), self._max_group_size)
            | "GroupByCluster" >> beam.GroupByKey()
        )
        deduped = groups | "Dedup" >> beam.ParDo(_SemanticDedupFn(self._eps)).with_outputs(
            GROUP_STATS, schema.ERRORS_TAG, main="records"
        )
        stats = (
            deduped[GROUP_STATS]
            | "SumGroups" >> beam.CombineGlobally(DedupStatsCombineFn())
            | "Stats" >> beam.Map(_dedup_stats, beam.pvalue.AsSingleton(sizes), self._eps, self._max_group_size)
        )
        passed = other | "PassThrough" >> beam.ParDo(_PassThroughFn())
        merged = (passed, deduped.records) | "MergeRecords" >> beam.Flatten()
        return {"records": merged, "errors": deduped[schema.ERRORS_TAG], "stats": stats}
