"""Tests for transforms/kmeans.py: assignment vs scikit-learn, quotas, complexity, SemDeDup, the PTransforms."""

import itertools
import json
import math

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize
from sklearn.cluster import KMeans

from examples.make_demo_corpus import build
from tests.helpers import local_pipeline
from winnow.transforms import kmeans, schema
from winnow.transforms.embed import Embed, EmbedConfig, embed_texts, fit_projection, make_vectorizer
from winnow.transforms.kmeans import (
    EMPTY_STATS,
    STRATEGIES,
    ClusterKMeans,
    ClusterStats,
    ClusterStatsCombineFn,
    DedupStatsCombineFn,
    KMeansConfig,
    SemanticDedup,
    assign_clusters,
    auto_k,
    cluster_complexity,
    cluster_partials,
    cluster_quotas,
    fit_centroids,
    group_part,
    group_parts,
    inter_cluster_distances,
    lloyd_update,
    merge_stats,
    semantic_duplicates,
    water_fill,
    within_cluster_key,
)


def _blobs(n_per: int, centers: np.ndarray, scale: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = np.vstack([c + scale * rng.standard_normal((n_per, centers.shape[1])) for c in centers])
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


def _records(X: np.ndarray, prefix: str = "r") -> list[dict]:
    return [{"id": f"{prefix}{i:04d}", "text": "t", schema.EMBEDDING: x} for i, x in enumerate(X)]


def _counters(result, step_prefix: str) -> dict[str, int]:
    """Committed ``winnow.kmeans`` counters of the steps under ``step_prefix``, summed by name."""
    totals: dict[str, int] = {}
    for counter in result.metrics().query(MetricsFilter().with_namespace(kmeans.NAMESPACE))["counters"]:
        if counter.key.step.startswith(step_prefix):
            totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + counter.committed
    return totals


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
        ({"sample_size": 0}, "sample_size=0"),
        ({"seed": -2}, "seed=-2"),
        ({"refine_passes": -1}, "refine_passes=-1"),
        ({"strategy": "greedy"}, "strategy='greedy'"),
        ({"semdedup_eps": 0.0}, "eps=0.0"),
        ({"semdedup_eps": 1.5}, "eps=1.5"),
        ({"complexity_temperature": 0}, "complexity_temperature=0"),
        ({"complexity_neighbors": 0}, "complexity_neighbors=0"),
    ],
)
def test_config_rejects_bad_values_quoting_them(kwargs, quoted):
    with pytest.raises(ValueError, match=quoted):
        KMeansConfig(**kwargs)


def test_transforms_validate_their_arguments():
    with pytest.raises(TypeError, match="KMeansConfig"):
        ClusterKMeans({"k": 3})
    with pytest.raises(ValueError, match="eps=0"):
        SemanticDedup(0)
    with pytest.raises(ValueError, match="max_group_size=0"):
        SemanticDedup(0.1, max_group_size=0)


# --- clustering core -------------------------------------------------------------------------


def test_auto_k_scales_with_sqrt_half_n_and_is_capped():
    assert auto_k(2 * 40**2, 50_000) == 40
    assert auto_k(0, 50_000) == 1
    assert auto_k(10**9, 50_000) == kmeans.MAX_AUTO_K
    assert auto_k(2 * 40**2, 390) == 10  # 390 // 39 sample points per centroid


def test_assignment_equals_scikit_learn_predict_on_the_same_centroids():
    rng = np.random.default_rng(0)
    X = _blobs(200, rng.standard_normal((6, 16)), 0.6, seed=1)
    model = KMeans(n_clusters=6, n_init=1, random_state=0).fit(X)
    labels, distances = assign_clusters(X, model.cluster_centers_.astype(np.float64))
    np.testing.assert_array_equal(labels, model.predict(X))
    np.testing.assert_allclose(distances, model.transform(X).min(axis=1), rtol=1e-5)


def test_fit_centroids_is_seeded_scikit_learn_kmeans():
    X = _blobs(50, np.eye(4) * 3, 0.3, seed=2).astype(np.float64)
    centroids = fit_centroids(X, 4, seed=7)
    reference = KMeans(n_clusters=4, n_init=kmeans.N_INIT, max_iter=kmeans.MAX_ITER, random_state=7).fit(X)
    np.testing.assert_array_equal(centroids, reference.cluster_centers_)


def test_cluster_partials_and_merge_by_hand():
    X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    parts = dict(cluster_partials(X, np.array([2, 0, 2]), np.array([0.5, 1.0, 2.0])))
    assert sorted(parts) == [0, 2]
    _assert_stats_equal(parts[2], ClusterStats(2, np.array([2.0, 1.0]), 2.5, 0.25 + 4.0))
    _assert_stats_equal(parts[0], ClusterStats(1, np.array([0.0, 1.0]), 1.0, 1.0))
    _assert_stats_equal(merge_stats([parts[2], parts[0]]), ClusterStats(3, np.array([2.0, 2.0]), 3.5, 5.25))
    assert merge_stats([]) == EMPTY_STATS


def test_cluster_stats_combine_fn_four_methods_any_merge_order():
    fn = ClusterStatsCombineFn()
    a = ClusterStats(1, np.array([1.0, 0.0]), 0.5, 0.25)
    b = ClusterStats(2, np.array([0.0, 2.0]), 1.0, 0.5)
    c = ClusterStats(3, np.array([3.0, 3.0]), 3.0, 3.0)
    assert fn.extract_output(fn.create_accumulator()) == EMPTY_STATS
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


# --- quotas ----------------------------------------------------------------------------------


def test_quotas_by_hand_for_every_strategy():
    sizes = {0: 2, 1: 10, 2: 10, 3: 0}
    assert cluster_quotas("balanced", sizes, 12) == {0: 2, 1: 5, 2: 5, 3: 0}
    # 3 each; cluster 0 holds 2, so 3.5 for the others; the one leftover unit goes to the lower id
    assert cluster_quotas("balanced", sizes, 9) == {0: 2, 1: 4, 2: 3, 3: 0}
    assert cluster_quotas("balanced", {c: 100 for c in range(4)}, 40) == {c: 10 for c in range(4)}
    assert cluster_quotas("proportional", {0: 1, 1: 3}, 2) == {0: 1, 1: 1}  # shares 0.5 / 1.5, tie -> lower id
    assert cluster_quotas("prototypes", {0: 10, 1: 30}, 8) == {0: 2, 1: 6}
    assert cluster_quotas("balanced", sizes, 100) == {0: 2, 1: 10, 2: 10, 3: 0}
    assert cluster_quotas("complexity", {0: 50, 1: 50}, 30, {0: 0.0, 1: 0.5 * math.log(2)}) == {0: 10, 1: 20}
    assert cluster_quotas("balanced", {}, 5) == {}


def test_quota_errors():
    with pytest.raises(ValueError, match="strategy='best'"):
        cluster_quotas("best", {0: 1}, 1)
    with pytest.raises(ValueError, match="n=-1"):
        cluster_quotas("balanced", {0: 1}, -1)
    with pytest.raises(ValueError, match=r"cluster_sizes\[0\]=-3"):
        cluster_quotas("balanced", {0: -3}, 1)
    with pytest.raises(ValueError, match="complexity"):
        cluster_quotas("complexity", {0: 1, 1: 2}, 1, {0: 0.1})
    with pytest.raises(ValueError, match="finite"):
        cluster_quotas("complexity", {0: 1}, 1, {0: float("nan")})
    with pytest.raises(ValueError, match="temperature=0"):
        cluster_quotas("complexity", {0: 1}, 1, {0: 0.1}, temperature=0)


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(st.integers(0, 40), st.integers(0, 60), max_size=12),
    st.integers(0, 400),
    st.sampled_from(STRATEGIES),
    st.floats(0.05, 5.0),
    st.integers(0, 2**16),
)
def test_quotas_sum_exactly_and_never_exceed_sizes(sizes, n, strategy, temperature, seed):
    complexity = {c: float(v) for c, v in zip(sizes, np.random.default_rng(seed).random(len(sizes)))}
    quotas = cluster_quotas(strategy, sizes, n, complexity, temperature)
    assert sorted(quotas) == sorted(sizes)
    assert sum(quotas.values()) == min(n, sum(sizes.values()))
    assert all(0 <= quotas[c] <= sizes[c] for c in sizes)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 30), min_size=1, max_size=8), st.integers(0, 120))
def test_balanced_is_equal_up_to_one_where_sizes_allow(sizes, n):
    quotas = cluster_quotas("balanced", dict(enumerate(sizes)), n)
    open_quotas = [quotas[c] for c, size in enumerate(sizes) if quotas[c] < size]
    if open_quotas:  # clusters below their size share the rest equally; a full one is no bigger
        assert max(open_quotas) - min(open_quotas) <= 1
        assert all(size <= min(open_quotas) + 1 for c, size in enumerate(sizes) if quotas[c] == size)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=8), st.integers(0, 100))
def test_proportional_is_within_one_of_the_exact_share(sizes, n):
    quotas = cluster_quotas("proportional", dict(enumerate(sizes)), n)
    total = min(n, sum(sizes))
    assert all(abs(quotas[c] - total * s / sum(sizes)) < 1 for c, s in enumerate(sizes))


def test_more_complex_clusters_get_larger_quotas():
    sizes = {c: 1000 for c in range(6)}
    complexity = {c: 0.05 * c for c in range(6)}
    quotas = cluster_quotas("complexity", sizes, 600, complexity, temperature=0.1)
    values = [quotas[c] for c in range(6)]
    assert values == sorted(values) and values[0] < values[-1]
    assert quotas[5] / quotas[0] == pytest.approx(math.exp(0.25 / 0.1), rel=0.05)


@pytest.mark.parametrize("seed", range(5))
def test_water_fill_matches_the_dbp_quadratic_program(seed):
    rng = np.random.default_rng(seed)
    capacities = rng.integers(0, 40, 7)
    total = int(rng.integers(0, capacities.sum() + 1))
    targets = total * rng.dirichlet(np.ones(7))
    solution = minimize(
        lambda x: 0.5 * np.sum((x - targets) ** 2),
        np.minimum(targets, capacities),
        jac=lambda x: x - targets,
        bounds=[(0, c) for c in capacities],
        constraints=[{"type": "eq", "fun": lambda x: x.sum() - total}],
        method="SLSQP",
        options={"ftol": 1e-12, "maxiter": 500},
    )
    quotas = water_fill(targets, capacities, total)
    assert quotas.sum() == total and np.all(quotas <= capacities)
    assert np.all(np.abs(quotas - solution.x) < 1 + 1e-5)


def test_prototypes_keep_the_points_farthest_from_their_centroid():
    rng = np.random.default_rng(3)
    X = _blobs(40, rng.standard_normal((3, 8)) * 2, 0.5, seed=4)
    centroids = fit_centroids(X.astype(np.float64), 3, seed=0)
    labels, distances = assign_clusters(X, centroids)
    sizes = {c: int((labels == c).sum()) for c in range(3)}
    quotas = cluster_quotas("prototypes", sizes, 30)
    keys = within_cluster_key("prototypes", distances, rng.random(len(X)))
    for c in range(3):
        members = np.flatnonzero(labels == c)
        chosen = members[np.argsort(-keys[members])[: quotas[c]]]
        dropped = np.setdiff1d(members, chosen)
        assert distances[chosen].min() >= distances[dropped].max()
    assert within_cluster_key("balanced", 0.3, 0.9) == 0.9
    with pytest.raises(ValueError, match="strategy"):
        within_cluster_key("nearest", 0.3, 0.9)


# --- semantic deduplication core ---------------------------------------------------------------


def test_semantic_duplicates_keep_the_first_and_point_to_a_kept_record():
    a = np.array([1.0, 0.0, 0.0])
    a_close = np.array([0.999, 0.0447, 0.0])  # cos(a, a_close) ~ 0.999
    b = np.array([0.0, 1.0, 0.0])
    X = np.vstack([a, b, a_close, a]) / np.linalg.norm(np.vstack([a, b, a_close, a]), axis=1, keepdims=True)
    assert semantic_duplicates(X, 0.01).tolist() == [-1, -1, 0, 0]
    assert semantic_duplicates(X, 1e-6).tolist() == [-1, -1, -1, 0]  # only the identical one


def test_semantic_duplicates_compare_with_kept_records_only():
    angles = np.radians([0.0, 20.0, 40.0])  # neighbours 20 deg apart, the ends 40 deg apart
    X = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    eps = 1 - math.cos(math.radians(30))  # duplicates below 30 degrees
    assert semantic_duplicates(X, eps).tolist() == [-1, 0, -1]  # 40 deg from the kept one: kept


def test_semantic_duplicates_are_the_same_in_small_blocks(monkeypatch):
    rng = np.random.default_rng(5)
    base = rng.standard_normal((60, 16))
    X = np.vstack([base, base[:25] + 0.01 * rng.standard_normal((25, 16))])[rng.permutation(85)]
    X = X / np.linalg.norm(X, axis=1, keepdims=True)
    whole = semantic_duplicates(X, 0.01)
    assert (whole >= 0).sum() == 25
    monkeypatch.setattr(kmeans, "SIMILARITY_BLOCK", 85 * 7)  # blocks of 7 rows
    assert semantic_duplicates(X, 0.01).tolist() == whole.tolist()


def test_group_parts_and_crc32_part():
    assert [group_parts(s, 10) for s in (0, 1, 10, 11, 25)] == [1, 1, 1, 2, 3]
    assert group_part("doc-1", 1) == 0
    assert group_part("doc-1", 7) == group_part("doc-1", 7) < 7


def test_dedup_stats_combine_fn_four_methods():
    fn = DedupStatsCombineFn()
    assert fn.extract_output(fn.create_accumulator()) == (0, 0, 0, 0)
    left = fn.add_input(fn.add_input(fn.create_accumulator(), (5, 1)), (9, 0))
    right = fn.add_input(fn.create_accumulator(), (3, 2))
    for order in ([left, right], [right, fn.create_accumulator(), left]):
        assert fn.extract_output(fn.merge_accumulators(order)) == (3, 17, 3, 9)


# --- PTransforms -----------------------------------------------------------------------------


def test_cluster_kmeans_pipeline_assigns_like_the_core_and_routes_errors():
    rng = np.random.default_rng(6)
    X = _blobs(30, rng.standard_normal((4, 8)) * 3, 0.3, seed=7)
    records = _records(X)
    records += [
        {"id": "x-no-vector", "text": "t"},
        {"id": "x-short", "text": "t", schema.EMBEDDING: np.ones(3, dtype=np.float32)},
        schema.drop({"id": "x-dropped", "text": "t"}, schema.NEAR_DUPLICATE),
    ]
    config = KMeansConfig(k=4, seed=1)
    order = sorted(range(len(X)), key=lambda i: records[i]["id"])
    centroids = fit_centroids(X[order].astype(np.float64), 4, seed=1)
    labels, distances = assign_clusters(X, centroids)
    expected = [(r["id"], int(c), float(np.float32(d))) for r, c, d in zip(records, labels, distances)]
    pipeline = local_pipeline()
    out = pipeline | beam.Create(records) | "Cluster" >> ClusterKMeans(config)
    got = out["records"] | beam.Map(lambda r: (r["id"], r.get(schema.CLUSTER), r.get(schema.CLUSTER_DISTANCE)))
    assert_that(got, equal_to(expected + [("x-dropped", None, None)]), label="records")
    reasons = out["errors"] | beam.Map(lambda e: e["reason"])
    assert_that(reasons, equal_to(["kmeans_failed: no_embedding", "kmeans_failed: dim_mismatch"]), label="errors")
    sizes = {c: int((labels == c).sum()) for c in range(4)}
    summary = out["stats"] | beam.Map(lambda s: (s["k"], s["sample_size"], s["assigned"], s["cluster_sizes"]))
    assert_that(summary, equal_to([(4, 120, 120, sizes)]), label="stats")
    same = out["centroids"] | beam.Map(lambda c: bool(np.array_equal(c, centroids)))
    assert_that(same, equal_to([True]), label="centroids")
    serializable = out["stats"] | beam.Map(lambda s: bool(json.dumps(s)))
    assert_that(serializable, equal_to([True]), label="json")
    result = pipeline.run()
    result.wait_until_finish()
    exits = {"assigned": 120, "passed_through": 1, "invalid_no_embedding": 1, "invalid_dim_mismatch": 1}
    assert _counters(result, "Cluster") == exits  # one counted exit per input record


def test_refinement_pass_is_a_lloyd_step_over_all_records():
    rng = np.random.default_rng(8)
    X = _blobs(40, rng.standard_normal((3, 6)) * 2, 0.8, seed=9)
    records = _records(X)
    config = KMeansConfig(k=3, sample_size=30, seed=2, refine_passes=1)
    ranked = sorted(records, key=lambda r: kmeans.embed.sample_rank(2, r["id"]))[:30]
    sample = np.stack([r[schema.EMBEDDING] for r in sorted(ranked, key=lambda r: r["id"])]).astype(np.float64)
    initial = fit_centroids(sample, 3, seed=2)
    labels, distances = assign_clusters(X, initial)
    refined = lloyd_update(initial, dict(cluster_partials(X, labels, distances)))
    with local_pipeline() as pipeline:
        out = pipeline | beam.Create(records) | ClusterKMeans(config)
        close = out["centroids"] | beam.Map(lambda c: bool(np.allclose(c, refined, atol=1e-12)))
        assert_that(close, equal_to([True]), label="centroids")


def test_semantic_dedup_pipeline_drops_near_copies_per_cluster_and_splits_big_clusters():
    rng = np.random.default_rng(10)
    base = rng.standard_normal((20, 8))
    noisy = base[:6] + 1e-3 * rng.standard_normal((6, 8))
    X = np.vstack([base, noisy])
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    records = [
        {"id": f"d{i:02d}", "text": "t", schema.EMBEDDING: x, schema.CLUSTER: 0, schema.CLUSTER_DISTANCE: 0.0}
        for i, x in enumerate(X)
    ]
    records += [
        {"id": "free", "text": "t", schema.EMBEDDING: X[0]},  # no cluster: passes through
        schema.drop({"id": "gone", "text": "t", schema.CLUSTER: 0}, schema.TOO_SHORT),
        {"id": "d99", "text": "t", schema.CLUSTER: 0},  # clustered, no embedding
    ]
    expected = [(f"d{i:02d}", None, None) for i in range(20)]
    expected += [(f"d{20 + j:02d}", schema.SEMANTIC_DUPLICATE, f"d{j:02d}") for j in range(6)]
    expected += [("free", None, None), ("gone", schema.TOO_SHORT, None)]
    pipeline = local_pipeline()
    created = pipeline | beam.Create(records)
    out = created | "Whole" >> SemanticDedup(0.01)
    got = out["records"] | beam.Map(lambda r: (r["id"], r.get(schema.DROP_REASON), r.get(schema.DUPLICATE_OF)))
    assert_that(got, equal_to(expected), label="records")
    reasons = out["errors"] | beam.Map(lambda e: e["reason"])
    assert_that(reasons, equal_to(["semdedup_failed: no_embedding"]), label="errors")
    assert_that(
        out["stats"],
        equal_to([{"eps": 0.01, "max_group_size": 20000, "groups": 1, "records": 26, "semantic_duplicates": 6,
                   "largest_group": 26, "split_clusters": 0}]),
        label="stats",
    )
    split = created | "Split" >> SemanticDedup(0.01, max_group_size=10)
    n_groups = split["stats"] | beam.Map(lambda s: (s["groups"], s["split_clusters"], s["records"]))
    assert_that(n_groups, equal_to([(3, 1, 26)]), label="split")
    result = pipeline.run()
    result.wait_until_finish()
    exits = {"semantic_duplicate": 6, "semdedup_kept": 20, "semdedup_passed_through": 2, "invalid_no_embedding": 1}
    assert _counters(result, "Whole") == exits  # one counted exit per input record


def _core_oracle(records: list[dict], embed_config: EmbedConfig, config: KMeansConfig, eps: float) -> list[tuple]:
    """The whole Embed -> ClusterKMeans -> SemanticDedup chain in plain numpy (samples hold every record)."""
    by_id = sorted(records, key=lambda r: r["id"])
    vectorizer = make_vectorizer(embed_config)
    projection = fit_projection([r["text"] for r in by_id], vectorizer, embed_config)
    X, _ = embed_texts([r["text"] for r in by_id], vectorizer, projection)
    centroids = fit_centroids(X.astype(np.float64), auto_k(len(X), config.sample_size), config.seed)
    for _ in range(config.refine_passes):
        labels, distances = assign_clusters(X, centroids)
        centroids = lloyd_update(centroids, dict(cluster_partials(X, labels, distances)))
    labels, distances = assign_clusters(X, centroids)
    rows = {}
    for cluster in np.unique(labels):
        members = np.flatnonzero(labels == cluster)  # already in id order
        for member, kept in zip(members, semantic_duplicates(X[members], eps)):
            duplicate_of = None if kept < 0 else by_id[members[kept]]["id"]
            reason = None if kept < 0 else schema.SEMANTIC_DUPLICATE
            distance = round(float(np.float32(distances[member])), 4)
            rows[member] = (by_id[member]["id"], int(labels[member]), distance, reason, duplicate_of)
    return [rows[i] for i in range(len(by_id))]


def _run_chain(records, embed_config, config, eps, expected, **flags):
    with local_pipeline(**flags) as pipeline:
        embedded = pipeline | beam.Create(records) | Embed(embed_config)
        clustered = embedded["records"] | ClusterKMeans(config)
        deduped = clustered["records"] | SemanticDedup(eps)
        got = deduped["records"] | beam.Map(
            lambda r: (r["id"], r[schema.CLUSTER], round(r[schema.CLUSTER_DISTANCE], 4), r.get(schema.DROP_REASON),
                       r.get(schema.DUPLICATE_OF))
        )
        assert_that(got, equal_to(expected))


def test_chain_is_deterministic_in_memory_and_on_two_worker_processes():
    raw, _ = build(60)
    embed_config = EmbedConfig(dim=48)
    config = KMeansConfig(seed=3, refine_passes=1)
    expected = _core_oracle(raw, embed_config, config, eps=0.02)
    assert sum(1 for row in expected if row[3]) >= 100  # the corpus's 120 planted copies are mostly caught
    _run_chain(raw, embed_config, config, 0.02, expected)
    _run_chain(raw, embed_config, config, 0.02, expected, direct_running_mode="multi_processing", direct_num_workers=2)
