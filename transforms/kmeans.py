"""k-means clusters of document embeddings, and the statistics of each cluster.

Clustering. Centroids ``c_1..c_k`` are fitted by scikit-learn's ``KMeans`` (Lloyd, k-means++
init, the config's seed) on a bounded sample: the ``sample_size`` embedded records with the
smallest ``seeded.sample_rank(id, seed)``, kept by a fixed-size ``Top`` combine and sorted by id
before the fit. ``k`` defaults to ``round(sqrt(n / 2))`` for n records,
capped at ``MAX_AUTO_K`` and at ``sample_size / MIN_POINTS_PER_CENTROID`` (enough sample points
per centroid). Every record is then assigned where it is scored, ``cluster = argmin_j ||x - c_j||`` (the
first index on ties, as ``KMeans.predict``), and ``cluster_distance = ||x - c_cluster||``.
Deviation: SemDeDup and DBP run spherical k-means (normalised centroids,
cosine assignment); this is plain Euclidean k-means on the unit-norm embeddings.

Cluster statistics (``ClusterStatsCombineFn``, CombinePerKey by cluster): the member count
``n_j``, the vector sum ``s_j``, and the sums of ``||x - c_j||`` and ``||x - c_j||^2``
(inertia). For unit-norm embeddings the mean cosine distance to the centroid is exact from the
sums: ``d_intra_j = 1 - (s_j / n_j) . c_j / ||c_j||``.

Complexity (Abbas et al. 2024, "Effective pruning of web-scale datasets based on complexity of
concept clusters", DBP; code github.com/amro-kamal/effective_pruning):

    d_inter_j = mean cosine distance from c_j to its l nearest other centroids (l = 20 there)
    C_j       = d_inter_j * d_intra_j

``quotas.py`` turns C into per-cluster quotas (the ``complexity`` strategy).
"""

import dataclasses
import math
from typing import NamedTuple

import apache_beam as beam
import numpy as np

from winnow.transforms import seeded, vectors
from winnow.transforms.validation import check_int

NAMESPACE = "winnow.kmeans"
MAX_AUTO_K = 500
MIN_POINTS_PER_CENTROID = 39  # faiss warns below this many training points per centroid
N_INIT = 1
MAX_ITER = 100
COMPLEXITY_NEIGHBORS = 20
SIMILARITY_BLOCK = 1 << 22  # float32 similarities held at once (16 MB)


@dataclasses.dataclass(frozen=True)
class KMeansConfig:
    """Settings of the clustering.

    Attributes:
        k: number of clusters, or None for ``auto_k`` of the record count.
        sample_size: records the centroids are fitted on.
        seed: seed of the sample choice and of k-means++; every worker uses it.
        complexity_neighbors: l, the nearest centroids d_inter averages over (>= 1).
    """

    k: int | None = None
    sample_size: int = 50_000
    seed: int = 1
    complexity_neighbors: int = COMPLEXITY_NEIGHBORS

    def __post_init__(self):
        check_int("k", self.k, 1, allow_none=True)
        check_int("sample_size", self.sample_size, 1)
        check_int("seed", self.seed, 0)
        check_int("complexity_neighbors", self.complexity_neighbors, 1)


# --- core ------------------------------------------------------------------------------------


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

    Expects validated input in a fixed row order (the fit depends on it). ``X`` is centred in place
    and then un-centred, up to rounding (scikit-learn's ``copy_x=False``: the same centroids as with
    a copy, without the copy's memory).
    """
    from sklearn.cluster import KMeans  # imported where used: scikit-learn takes a second to import

    model = KMeans(n_clusters=k, init="k-means++", n_init=N_INIT, max_iter=MAX_ITER, random_state=seed, copy_x=False)
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


def inter_cluster_distances(centroids: np.ndarray, n_neighbors: int) -> np.ndarray:
    """d_inter (k,) float64: mean cosine distance of each centroid to its l = min(n_neighbors, k - 1) nearest.

    0 for a single centroid. Rows are processed in blocks of ``SIMILARITY_BLOCK`` floats.
    """
    k = len(centroids)
    if k < 2:
        return np.zeros(k)
    unit = vectors.unit_rows(centroids)
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
    unit = vectors.unit_rows(centroids)
    d_intra = np.zeros(len(centroids))
    for cluster, part in stats.items():
        if part.count:
            # clip: round-off can push 1 - cos a hair below 0 for a single-member cluster
            d_intra[cluster] = max(0.0, 1.0 - float(np.dot(part.vector_sum / part.count, unit[cluster])))
    return inter_cluster_distances(centroids, n_neighbors) * d_intra


def kmeans_stats(centroids: np.ndarray, stats: dict[int, ClusterStats], sample_size: int, config: KMeansConfig) -> dict:
    """The JSON-serializable report dict of a clustering (cluster ids as int keys)."""
    k = len(centroids)
    complexity = cluster_complexity(centroids, stats, config.complexity_neighbors)
    members = {c: stats.get(c, EMPTY_STATS) for c in range(k)}
    return {
        "k": k,
        "sample_size": sample_size,
        "assigned": sum(part.count for part in members.values()),
        "inertia": float(sum(part.sq_distance_sum for part in members.values())),
        "cluster_sizes": {c: part.count for c, part in members.items()},
        "mean_distance": {c: part.distance_sum / part.count if part.count else 0.0 for c, part in members.items()},
        "complexity": {c: float(complexity[c]) for c in range(k)},
    }


def sample_entries(ids: list, vectors: np.ndarray, seed: int) -> list[tuple[int, str, np.ndarray]]:
    """``(rank, str(id), (d,) float32 vector)``: the entries the fit sample is the smallest of."""
    ranks = seeded.sample_rank(ids, seed).tolist()
    return [(rank, str(doc_id), vector) for rank, doc_id, vector in zip(ranks, ids, np.asarray(vectors, np.float32))]


def fit_on_sample(entries: list[tuple[int, str, np.ndarray]], n_records: int, config: KMeansConfig) -> np.ndarray:
    """Sample entries -> (k, d) float64 centroids, fitted in id order; (0, 0) for an empty sample.

    k is ``config.k`` or ``auto_k(n_records, sample_size)``, at most the sample's size.
    """
    if not entries:
        return np.zeros((0, 0))
    vectors = np.array([vector for _, _, vector in sorted(entries, key=lambda entry: entry[1])], dtype=np.float64)  # one copy
    k = min(config.k or auto_k(n_records, config.sample_size), len(vectors))
    return fit_centroids(vectors, k, config.seed)


# --- Beam wrappers ---------------------------------------------------------------------------


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
