"""Tests for transforms/kmeans.py: auto k, the fit on a seeded sample, assignment vs scikit-learn, cluster
statistics and their CombineFn, DBP complexity, the report's stats."""

import itertools
import json
import math
import random

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that
from sklearn.cluster import KMeans

from tests.helpers import local_pipeline
from winnow.transforms import kmeans, seeded
from winnow.transforms.kmeans import (
    EMPTY_STATS,
    ClusterStats,
    ClusterStatsCombineFn,
    KMeansConfig,
    assign_clusters,
    auto_k,
    cluster_complexity,
    cluster_partials,
    fit_centroids,
    fit_on_sample,
    inter_cluster_distances,
    kmeans_stats,
    lloyd_update,
    merge_stats,
    sample_entries,
)


def _blobs(n_per: int, centers: np.ndarray, scale: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = np.vstack([c + scale * rng.standard_normal((n_per, centers.shape[1])) for c in centers])
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


def _assert_stats_equal(a: ClusterStats, b: ClusterStats):
    assert a.count == b.count
    np.testing.assert_allclose(a.vector_sum, b.vector_sum)
    assert a.distance_sum == pytest.approx(b.distance_sum)
    assert a.sq_distance_sum == pytest.approx(b.sq_distance_sum)


# --- config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, quoted",
    [
        ({"k": 0}, "k=0"),
        ({"k": 2.0}, "k=2.0"),
        ({"sample_size": 0}, "sample_size=0"),
        ({"seed": -2}, "seed=-2"),
        ({"complexity_neighbors": 0}, "complexity_neighbors=0"),
    ],
)
def test_config_rejects_bad_values_quoting_them(kwargs, quoted):
    with pytest.raises(ValueError, match=quoted):
        KMeansConfig(**kwargs)


def test_config_defaults():
    config = KMeansConfig()
    assert (config.k, config.sample_size, config.seed, config.complexity_neighbors) == (None, 50_000, 1, 20)


# --- clustering core -------------------------------------------------------------------------


def test_auto_k_scales_with_sqrt_half_n_and_is_capped():
    assert auto_k(2 * 40**2, 50_000) == 40
    assert auto_k(0, 50_000) == 1
    assert auto_k(10**9, 50_000) == kmeans.MAX_AUTO_K
    assert auto_k(2 * 40**2, 390) == 10  # 390 // 39 sample points per centroid
    assert auto_k(2 * 40**2, 10) == 1  # fewer than 39 sample points: one centroid


def test_assignment_equals_scikit_learn_predict_on_the_same_centroids():
    rng = np.random.default_rng(0)
    X = _blobs(200, rng.standard_normal((6, 16)), 0.6, seed=1)
    model = KMeans(n_clusters=6, n_init=1, random_state=0).fit(X)
    labels, distances = assign_clusters(X, model.cluster_centers_.astype(np.float64))
    assert labels.dtype == np.int64 and distances.dtype == np.float64
    np.testing.assert_array_equal(labels, model.predict(X))
    np.testing.assert_allclose(distances, model.transform(X).min(axis=1), rtol=1e-5)


def test_assignment_hand_worked_ties_to_the_first_centroid_and_is_batch_independent():
    centroids = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 3.0]])
    X = np.array([[1.0, 0.0], [1.9, 0.1], [0.0, 2.0], [-1.0, -1.0]])  # (1, 0) is equidistant from 0 and 1
    labels, distances = assign_clusters(X, centroids)
    assert labels.tolist() == [0, 1, 2, 0]
    np.testing.assert_allclose(distances, [1.0, math.hypot(0.1, 0.1), 1.0, math.sqrt(2)], rtol=1e-12)
    one_by_one = [assign_clusters(X[i : i + 1], centroids)[1][0] for i in range(4)]
    assert distances.tolist() == one_by_one


def test_fit_centroids_is_seeded_scikit_learn_kmeans():
    X = _blobs(50, np.eye(4) * 3, 0.3, seed=2).astype(np.float64)
    centroids = fit_centroids(X.copy(), 4, seed=7)  # centres its input in place; the reference copies (scikit-learn's default)
    reference = KMeans(n_clusters=4, n_init=kmeans.N_INIT, max_iter=kmeans.MAX_ITER, random_state=7).fit(X)
    np.testing.assert_array_equal(centroids, reference.cluster_centers_)
    assert centroids.dtype == np.float64 and centroids.shape == (4, 4)


def test_cluster_partials_and_merge_by_hand():
    X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    partials = cluster_partials(X, np.array([2, 0, 2]), np.array([0.5, 1.0, 2.0]))
    assert [c for c, _ in partials] == [0, 2]  # clusters ascending
    parts = dict(partials)
    _assert_stats_equal(parts[2], ClusterStats(2, np.array([2.0, 1.0]), 2.5, 0.25 + 4.0))
    _assert_stats_equal(parts[0], ClusterStats(1, np.array([0.0, 1.0]), 1.0, 1.0))
    _assert_stats_equal(merge_stats([parts[2], parts[0]]), ClusterStats(3, np.array([2.0, 2.0]), 3.5, 5.25))
    assert merge_stats([]) == EMPTY_STATS
    assert cluster_partials(np.zeros((0, 2)), np.zeros(0, np.int64), np.zeros(0)) == []


def test_cluster_stats_combine_fn_four_methods_any_merge_order():
    fn = ClusterStatsCombineFn()
    a = ClusterStats(1, np.array([1.0, 0.0]), 0.5, 0.25)
    b = ClusterStats(2, np.array([0.0, 2.0]), 1.0, 0.5)
    c = ClusterStats(3, np.array([3.0, 3.0]), 3.0, 3.0)
    assert fn.extract_output(fn.create_accumulator()) == EMPTY_STATS
    assert fn.extract_output(fn.merge_accumulators([fn.create_accumulator()])) == EMPTY_STATS
    whole = fn.add_input(fn.add_input(fn.add_input(fn.create_accumulator(), a), b), c)
    for order in itertools.permutations([fn.add_input(fn.create_accumulator(), a), b, c, fn.create_accumulator()]):
        _assert_stats_equal(fn.extract_output(fn.merge_accumulators(list(order))), whole)
    _assert_stats_equal(whole, ClusterStats(6, np.array([4.0, 5.0]), 4.5, 3.75))
    assert a.vector_sum.tolist() == [1.0, 0.0]  # inputs are not modified


def test_lloyd_update_moves_to_member_means_and_keeps_empty_clusters():
    centroids = np.array([[0.0, 0.0], [5.0, 5.0], [9.0, 9.0]])
    stats = {0: ClusterStats(2, np.array([2.0, 4.0]), 0.0, 0.0), 2: ClusterStats(0, 0.0, 0.0, 0.0)}
    np.testing.assert_allclose(lloyd_update(centroids, stats), [[1.0, 2.0], [5.0, 5.0], [9.0, 9.0]])
    assert centroids[0].tolist() == [0.0, 0.0]


def test_lloyd_update_over_partials_is_a_scikit_learn_lloyd_step():
    X = _blobs(40, np.eye(3) * 2, 0.8, seed=9).astype(np.float64)
    initial = X[[0, 40, 80]]
    labels, distances = assign_clusters(X, initial)
    stats = {c: merge_stats([s]) for c, s in cluster_partials(X, labels, distances)}
    reference = KMeans(n_clusters=3, init=initial, n_init=1, max_iter=1, algorithm="lloyd").fit(X)
    np.testing.assert_allclose(lloyd_update(initial, stats), reference.cluster_centers_, rtol=1e-10)


# --- complexity and stats --------------------------------------------------------------------


def test_complexity_by_hand():
    # Centroids at 0, 90 and 180 degrees; cosine distances 1 (90 deg) and 2 (180 deg).
    centroids = np.array([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0]])
    np.testing.assert_allclose(inter_cluster_distances(centroids, 1), [1.0, 1.0, 1.0])
    np.testing.assert_allclose(inter_cluster_distances(centroids, 5), [1.5, 1.0, 1.5])
    sixty = np.array([math.cos(math.pi / 3), math.sin(math.pi / 3)])
    stats = {
        0: ClusterStats(2, np.array([1.0, 0.0]) + sixty, 0.0, 0.0),  # members at 0 and 60 degrees
        1: ClusterStats(1, np.array([0.0, 1.0]), 0.0, 0.0),  # member on the centroid
    }
    d_intra = np.array([1 - (1 + 0.5) / 2, 0.0, 0.0])
    np.testing.assert_allclose(cluster_complexity(centroids, stats, 5), d_intra * [1.5, 1.0, 1.5], atol=1e-12)
    assert inter_cluster_distances(centroids[:1], 20).tolist() == [0.0]


def test_inter_cluster_distances_are_the_same_in_small_blocks(monkeypatch):
    centroids = np.random.default_rng(3).standard_normal((30, 5))
    whole = inter_cluster_distances(centroids, 4)
    distance = 1 - (centroids / np.linalg.norm(centroids, axis=1, keepdims=True)) @ (
        centroids / np.linalg.norm(centroids, axis=1, keepdims=True)).T
    np.fill_diagonal(distance, np.inf)
    np.testing.assert_allclose(whole, np.sort(distance, axis=1)[:, :4].mean(axis=1), rtol=1e-12)
    monkeypatch.setattr(kmeans, "SIMILARITY_BLOCK", 30 * 7)  # blocks of 7 rows
    np.testing.assert_allclose(inter_cluster_distances(centroids, 4), whole, rtol=1e-14)  # BLAS rounds per block


def test_kmeans_stats_report_every_cluster():
    centroids = np.array([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0]])
    stats = {0: ClusterStats(2, np.array([1.5, math.sqrt(3) / 2]), 1.0, 0.6), 2: ClusterStats(1, np.array([-1.0, 0.0]), 0.0, 0.0)}
    report = kmeans_stats(centroids, stats, 10, KMeansConfig(complexity_neighbors=1))
    assert report == {
        "k": 3, "sample_size": 10, "assigned": 3, "inertia": 0.6,
        "cluster_sizes": {0: 2, 1: 0, 2: 1},
        "mean_distance": {0: 0.5, 1: 0.0, 2: 0.0},
        # cluster 0: d_inter = 1 (nearest other centroid at 90 deg), d_intra = 1 - cos 30 deg ... = 0.25
        "complexity": {0: pytest.approx(0.25, abs=1e-12), 1: 0.0, 2: 0.0},
    }
    json.dumps(report)


# --- the fit sample --------------------------------------------------------------------------


def test_sample_entries_are_seeded_ranks_ids_and_float32_vectors():
    entries = sample_entries(["a", 7], np.array([[1.0, 0.0], [0.0, 1.0]]), seed=2)
    ranks = seeded.sample_rank(["a", 7], 2).tolist()
    assert [(r, i) for r, i, _ in entries] == [(ranks[0], "a"), (ranks[1], "7")]
    assert entries[1][2].dtype == np.float32 and entries[1][2].tolist() == [0.0, 1.0]
    assert sample_entries([], np.zeros((0, 2)), seed=2) == []


def test_fit_on_sample_fits_in_id_order_with_auto_or_capped_k():
    rng = np.random.default_rng(6)
    X = _blobs(30, rng.standard_normal((4, 8)) * 3, 0.3, seed=7)
    ids = [f"r{i:03d}" for i in range(len(X))]
    entries = sample_entries(ids, X, seed=1)
    random.Random(0).shuffle(entries)
    config = KMeansConfig(k=4, seed=1)
    expected = fit_centroids(X.astype(np.float64), 4, seed=1)  # ids r000.. are already in order
    np.testing.assert_array_equal(fit_on_sample(entries, 10_000, config), expected)
    # auto k: round(sqrt(800 / 2)) = 20, capped by sample_size // 39 = 3
    auto = fit_on_sample(entries, 800, KMeansConfig(sample_size=120, seed=1))
    np.testing.assert_array_equal(auto, fit_centroids(X.astype(np.float64), 3, seed=1))
    assert fit_on_sample(entries[:2], 100, KMeansConfig(k=5)).shape == (2, 8)  # k at most the sample's size
    assert fit_on_sample([], 100, config).shape == (0, 0)


# --- Beam ------------------------------------------------------------------------------------


def test_cluster_stats_combine_per_key_in_a_pipeline():
    """Batches' ``cluster_partials`` summed per cluster by ``CombinePerKey(ClusterStatsCombineFn())``."""
    X = _blobs(20, np.eye(3) * 2, 0.5, seed=11).astype(np.float64)
    centroids = X[[0, 20, 40]]
    labels, distances = assign_clusters(X, centroids)
    expected = dict(cluster_partials(X, labels, distances))
    batches = [(X[i : i + 7], labels[i : i + 7], distances[i : i + 7]) for i in range(0, 60, 7)]

    def check(pairs):
        got = dict(pairs)
        assert sorted(got) == sorted(expected)
        for cluster, stats in got.items():
            _assert_stats_equal(stats, expected[cluster])

    with local_pipeline() as p:
        sums = (
            p
            | beam.Create(batches)
            | beam.FlatMap(lambda batch: cluster_partials(*batch))
            | beam.CombinePerKey(ClusterStatsCombineFn())
        )
        assert_that(sums, check)
