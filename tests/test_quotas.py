"""Tests for transforms/quotas.py: per-cluster quotas of every strategy, water-filling against the DBP
quadratic program, the within-cluster key and the StrategyQuota the selection calls."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from winnow.transforms import quotas
from winnow.transforms.kmeans import assign_clusters, fit_centroids
from winnow.transforms.quotas import DIVERSITY, QUOTA_STRATEGIES, STRATEGIES, StrategyQuota, check_strategy, cluster_quotas, water_fill, within_cluster_key
from winnow.transforms.select import TotalQuota


def test_strategies_and_check_strategy():
    assert QUOTA_STRATEGIES == ("balanced", "proportional", "prototypes", "complexity")
    assert STRATEGIES == (DIVERSITY, *QUOTA_STRATEGIES)
    assert check_strategy("prototypes") == "prototypes"
    for not_a_quota_rule in ("greedy", DIVERSITY):
        with pytest.raises(ValueError, match=f"strategy='{not_a_quota_rule}'"):
            check_strategy(not_a_quota_rule)


# --- cluster_quotas ----------------------------------------------------------------------


def test_quotas_by_hand_for_every_strategy():
    sizes = {0: 2, 1: 10, 2: 10, 3: 0}
    assert cluster_quotas("balanced", sizes, 12) == {0: 2, 1: 5, 2: 5, 3: 0}
    # 3 each; cluster 0 holds 2, so 3.5 for the others; the one leftover unit goes to the lower id
    assert cluster_quotas("balanced", sizes, 9) == {0: 2, 1: 4, 2: 3, 3: 0}
    assert cluster_quotas("balanced", {c: 100 for c in range(4)}, 40) == {c: 10 for c in range(4)}
    assert cluster_quotas("proportional", {0: 1, 1: 3}, 2) == {0: 1, 1: 1}  # shares 0.5 / 1.5, tie -> lower id
    assert cluster_quotas("prototypes", {0: 10, 1: 30}, 8) == {0: 2, 1: 6}
    assert cluster_quotas("balanced", sizes, 100) == {0: 2, 1: 10, 2: 10, 3: 0}
    # softmax(C / 0.5) of (0, 0.5 ln 2) is (1/3, 2/3)
    assert cluster_quotas("complexity", {0: 50, 1: 50}, 30, {0: 0.0, 1: 0.5 * math.log(2)}) == {0: 10, 1: 20}
    assert cluster_quotas("balanced", {}, 5) == {}
    assert cluster_quotas("proportional", {0: 5, 1: 5}, 0) == {0: 0, 1: 0}


def test_docstring_example():
    assert cluster_quotas("balanced", {0: 2, 1: 10, 2: 10}, 12) == {0: 2, 1: 5, 2: 5}


def test_complexity_ignores_empty_clusters_and_overflows_nowhere():
    # an empty cluster gets no share of the softmax, however complex
    assert cluster_quotas("complexity", {0: 0, 1: 10, 2: 10}, 4, {0: 99.0, 1: 0.0, 2: 0.0}) == {0: 0, 1: 2, 2: 2}
    # huge C / tau: the stable softmax puts everything on the most complex cluster, up to its size
    assert cluster_quotas("complexity", {0: 3, 1: 10}, 5, {0: 800.0, 1: 0.0}, temperature=0.5) == {0: 3, 1: 2}


def test_quota_errors():
    with pytest.raises(ValueError, match="strategy='best'"):
        cluster_quotas("best", {0: 1}, 1)
    with pytest.raises(ValueError, match="n=-1"):
        cluster_quotas("balanced", {0: 1}, -1)
    with pytest.raises(ValueError, match=r"cluster_sizes\[0\]=-3"):
        cluster_quotas("balanced", {0: -3}, 1)
    with pytest.raises(ValueError, match="complexity"):
        cluster_quotas("complexity", {0: 1, 1: 2}, 1, {0: 0.1})
    with pytest.raises(ValueError, match="complexity"):
        cluster_quotas("complexity", {0: 1}, 1)
    with pytest.raises(ValueError, match="finite"):
        cluster_quotas("complexity", {0: 1}, 1, {0: float("nan")})
    with pytest.raises(ValueError, match="temperature=0"):
        cluster_quotas("complexity", {0: 1}, 1, {0: 0.1}, temperature=0)


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(
    st.dictionaries(st.integers(0, 40), st.integers(0, 60), max_size=12),
    st.integers(0, 400),
    st.sampled_from(QUOTA_STRATEGIES),
    st.floats(0.05, 5.0),
    st.integers(0, 2**16),
)
def test_quotas_sum_exactly_and_never_exceed_sizes(sizes, n, strategy, temperature, seed):
    complexity = {c: float(v) for c, v in zip(sizes, np.random.default_rng(seed).random(len(sizes)))}
    result = cluster_quotas(strategy, sizes, n, complexity, temperature)
    assert sorted(result) == sorted(sizes)
    assert sum(result.values()) == min(n, sum(sizes.values()))
    assert all(0 <= result[c] <= sizes[c] for c in sizes)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(st.lists(st.integers(0, 30), min_size=1, max_size=8), st.integers(0, 120))
def test_balanced_is_equal_up_to_one_where_sizes_allow(sizes, n):
    result = cluster_quotas("balanced", dict(enumerate(sizes)), n)
    open_quotas = [result[c] for c, size in enumerate(sizes) if result[c] < size]
    if open_quotas:  # clusters below their size share the rest equally; a full one is no bigger
        assert max(open_quotas) - min(open_quotas) <= 1
        assert all(size <= min(open_quotas) + 1 for c, size in enumerate(sizes) if result[c] == size)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=8), st.integers(0, 100))
def test_proportional_is_within_one_of_the_exact_share(sizes, n):
    result = cluster_quotas("proportional", dict(enumerate(sizes)), n)
    total = min(n, sum(sizes))
    assert all(abs(result[c] - total * s / sum(sizes)) < 1 for c, s in enumerate(sizes))


def test_more_complex_clusters_get_larger_quotas():
    sizes = {c: 1000 for c in range(6)}
    complexity = {c: 0.05 * c for c in range(6)}
    result = cluster_quotas("complexity", sizes, 600, complexity, temperature=0.1)
    values = [result[c] for c in range(6)]
    assert values == sorted(values) and values[0] < values[-1]
    assert result[5] / result[0] == pytest.approx(math.exp(0.25 / 0.1), rel=0.05)


# --- water_fill --------------------------------------------------------------------------


def test_water_fill_by_hand():
    # targets (1.5, 1.5, 3), capacities (1, 5, 5), total 6: cluster 0 is capped at 1, then mu = 0.25 gives
    # (1, 1.75, 3.25); floors (1, 1, 3) and the one unit left to the largest fractional part, 0.75
    assert water_fill(np.array([1.5, 1.5, 3.0]), np.array([1, 5, 5]), 6).tolist() == [1, 2, 3]
    # equal fractional parts: the lower index gets the unit
    assert water_fill(np.array([0.5, 0.5]), np.array([5, 5]), 1).tolist() == [1, 0]
    assert water_fill(np.array([2.0, 2.0]), np.array([3, 3]), 0).tolist() == [0, 0]
    assert water_fill(np.array([0.0, 0.0]), np.array([2, 3]), 5).tolist() == [2, 3]  # all capacity
    assert water_fill(np.array([1.0, 1.0]), np.array([2, 2]), 2).dtype == np.int64


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
    result = water_fill(targets, capacities, total)
    assert result.sum() == total and np.all(result <= capacities)
    assert np.all(np.abs(result - solution.x) < 1 + 1e-5)


# --- within-cluster key ------------------------------------------------------------------


def _blobs(n_per: int, centers: np.ndarray, scale: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = np.vstack([c + scale * rng.standard_normal((n_per, centers.shape[1])) for c in centers])
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


def test_prototypes_keep_the_points_farthest_from_their_centroid():
    rng = np.random.default_rng(3)
    X = _blobs(40, rng.standard_normal((3, 8)) * 2, 0.5, seed=4)
    centroids = fit_centroids(X.astype(np.float64), 3, seed=0)
    labels, distances = assign_clusters(X, centroids)
    sizes = {c: int((labels == c).sum()) for c in range(3)}
    result = cluster_quotas("prototypes", sizes, 30)
    keys = within_cluster_key("prototypes", distances, rng.random(len(X)))
    for c in range(3):
        members = np.flatnonzero(labels == c)
        chosen = members[np.argsort(-keys[members])[: result[c]]]
        dropped = np.setdiff1d(members, chosen)
        assert distances[chosen].min() >= distances[dropped].max()


def test_within_cluster_key_is_the_score_for_other_strategies():
    scores, distances = np.array([0.9, 0.1]), np.array([0.2, 0.7])
    for strategy in ("balanced", "proportional", "complexity"):
        assert within_cluster_key(strategy, distances, scores) is scores
    assert within_cluster_key("prototypes", distances, scores) is distances
    assert within_cluster_key("balanced", 0.3, 0.9) == 0.9
    with pytest.raises(ValueError, match="strategy"):
        within_cluster_key("nearest", 0.3, 0.9)


# --- StrategyQuota -----------------------------------------------------------------------


def test_strategy_quota_splits_the_total_of_the_pool():
    counts = {0: 2, 1: 10, 2: 10}
    assert StrategyQuota(TotalQuota(n=12))(counts, {}) == {0: 2, 1: 5, 2: 5}  # balanced by default
    assert StrategyQuota(TotalQuota(fraction=0.5), "proportional")(counts, {}) == {0: 1, 1: 5, 2: 5}  # 11 of 22
    assert StrategyQuota(TotalQuota(n=100), "proportional")(counts, {}) == counts  # capped at the pool
    complexity = {0: 0.0, 1: 0.0, 2: 0.5 * math.log(2)}
    assert StrategyQuota(TotalQuota(n=8), "complexity")(counts, {"complexity": complexity}) == {0: 2, 1: 2, 2: 4}
    with pytest.raises(ValueError, match="complexity"):
        StrategyQuota(TotalQuota(n=8), "complexity")(counts, {})
    assert StrategyQuota(TotalQuota(n=8), "complexity", temperature=1e9)(counts, {"complexity": complexity}) == {0: 2, 1: 3, 2: 3}


def test_strategy_quota_validates_its_settings():
    with pytest.raises(ValueError, match="strategy='random'"):
        StrategyQuota(TotalQuota(n=1), "random")
    with pytest.raises(ValueError, match="temperature=0"):
        StrategyQuota(TotalQuota(n=1), "complexity", temperature=0)
    assert quotas.COMPLEXITY_TEMPERATURE == StrategyQuota(TotalQuota(n=1)).temperature == 0.5
