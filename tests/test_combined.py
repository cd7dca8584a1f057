"""Tests for transforms/combined.py: the config, mergeable moments (Chan's update), the quality score,
the clusters' log quality mass, the mixed quotas and the two CombineFns."""

import itertools
import math

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import local_pipeline
from winnow.transforms import combined
from winnow.transforms.combined import (
    EMPTY_MOMENTS,
    CombinedConfig,
    LogMassCombineFn,
    MixedQuota,
    Moments,
    MomentsCombineFn,
    cluster_log_mass,
    merge_moments,
    mixed_quotas,
    moments_of,
    quality_score,
)
from winnow.transforms.quotas import StrategyQuota
from winnow.transforms.select import TotalQuota

DSIR, ZIPFIT = "winnow_dsir_log_weight", "winnow_zipfit_alignment"


def _assert_moments_close(got: Moments, values):
    values = np.asarray(values, dtype=np.float64)
    assert got.n == len(values)
    assert got.mean == pytest.approx(values.mean(), rel=1e-12, abs=1e-12)
    assert got.m2 == pytest.approx(((values - values.mean()) ** 2).sum(), rel=1e-10, abs=1e-9)


# --- config ------------------------------------------------------------------------------


def test_config_defaults_and_validation():
    config = CombinedConfig()
    assert (config.dsir_weight, config.zipfit_weight, config.diversity, config.temperature) == (1.0, 1.0, 0.6, 3.0)
    CombinedConfig(dsir_weight=-1.0, diversity=0.0, temperature=1e-6)  # negative weights, no diversity are allowed
    for kwargs, quoted in [({"diversity": 1.5}, "diversity=1.5"), ({"temperature": 0.0}, "temperature=0.0"),
                           ({"dsir_weight": "1"}, "dsir_weight='1'"), ({"zipfit_weight": float("nan")}, "zipfit_weight=nan")]:
        with pytest.raises(ValueError, match=quoted):
            CombinedConfig(**kwargs)


# --- moments -----------------------------------------------------------------------------


def test_moments_hand_worked():
    m = moments_of(np.array([1.0, 2.0, 3.0, 6.0]))
    assert m == Moments(4, 3.0, 4.0 + 1.0 + 0.0 + 9.0)
    assert m.std == pytest.approx(math.sqrt(14.0 / 4))  # population sd
    assert moments_of(np.array([])) == EMPTY_MOMENTS == Moments(0, 0.0, 0.0)
    assert moments_of([5.0, 5.0]).std == 1.0  # a constant score standardizes to 0, not a division by 0
    assert EMPTY_MOMENTS.std == 1.0
    # Chan's update: {1, 2} and {3, 6}: delta = 4.5 - 1.5 = 3, M2 = 0.5 + 4.5 + 9 * 2 * 2 / 4
    merged = merge_moments(moments_of([1.0, 2.0]), moments_of([3.0, 6.0]))
    assert merged == Moments(4, 3.0, 0.5 + 4.5 + 9.0)
    assert merge_moments(EMPTY_MOMENTS, m) == m and merge_moments(m, EMPTY_MOMENTS) == m


@settings(max_examples=80, deadline=None, derandomize=True, database=None)
@given(st.lists(st.lists(st.floats(-1e6, 1e6), max_size=20), min_size=1, max_size=6))
def test_merged_moments_equal_the_moments_of_the_union_in_any_order(parts):
    values = [v for part in parts for v in part]
    pieces = [moments_of(np.array(part)) for part in parts]
    forward, backward = EMPTY_MOMENTS, EMPTY_MOMENTS
    for piece in pieces:
        forward = merge_moments(forward, piece)
    for piece in reversed(pieces):
        backward = merge_moments(piece, backward)
    for got in (forward, backward):
        if values:
            _assert_moments_close(got, values)
        else:
            assert got == EMPTY_MOMENTS


def test_moments_do_not_cancel_for_a_large_offset():
    """Σv² - n·mean² would lose every digit here (values ~1e9, spread ~1); the pairwise update keeps them."""
    rng = np.random.default_rng(0)
    values = 1e9 + rng.standard_normal(10_000)
    merged = EMPTY_MOMENTS
    for part in np.array_split(values, 37):
        merged = merge_moments(merged, moments_of(part))
    assert merged.std == pytest.approx(values.std(), rel=1e-6)


# --- quality score and log mass ----------------------------------------------------------


def test_quality_score_hand_worked():
    moments = {DSIR: Moments(4, 2.0, 16.0), ZIPFIT: Moments(4, 0.1, 0.04)}  # sds 2 and 0.1
    columns = {DSIR: np.array([2.0, 6.0]), ZIPFIT: np.array([0.3, 0.0])}
    weights = {DSIR: 1.0, ZIPFIT: 0.5}
    # z(dsir) = (0, 2), z(zipfit) = (2, -1): s = (0 + 1, 2 - 0.5)
    np.testing.assert_allclose(quality_score(columns, moments, weights), [1.0, 1.5], rtol=1e-12)
    only = quality_score({DSIR: columns[DSIR]}, moments, weights)  # the columns present only
    np.testing.assert_allclose(only, [0.0, 2.0], rtol=1e-12)


def test_cluster_log_mass_is_a_per_cluster_log_sum_exp():
    clusters = np.array([0, 1, 0, 2, 0])
    scores = np.array([0.0, 3.0, 3.0, -6.0, 6.0])
    got = cluster_log_mass(clusters, scores, temperature=3.0)
    assert sorted(got) == [0, 1, 2]
    assert got[0] == pytest.approx(math.log(math.exp(0) + math.exp(1) + math.exp(2)), rel=1e-14)
    assert got[1] == pytest.approx(1.0, rel=1e-14) and got[2] == pytest.approx(-2.0, rel=1e-14)
    huge = cluster_log_mass(np.array([0, 0]), np.array([3000.0, 3000.0]), temperature=1.0)  # exp(3000) overflows
    assert huge[0] == pytest.approx(3000.0 + math.log(2), rel=1e-14)
    assert cluster_log_mass(np.zeros(0, np.int64), np.zeros(0), 1.0) == {}


# --- mixed quotas ------------------------------------------------------------------------


def test_mixed_quotas_hand_worked():
    strategy = {0: 5, 1: 5}
    sizes = {0: 10, 1: 10}
    log_mass = {0: 0.0, 1: math.log(3)}  # masses 1 and 3: shares 1/4 and 3/4
    # D = 0: N * share = (2.5, 7.5); floors (2, 7), the equal remainders go to the lower id
    assert mixed_quotas(strategy, sizes, log_mass, 10, 0.0) == {0: 3, 1: 7}
    # D = 0.5: 0.5 * (5, 5) + 0.5 * (2.5, 7.5) = (3.75, 6.25)
    assert mixed_quotas(strategy, sizes, log_mass, 10, 0.5) == {0: 4, 1: 6}
    assert mixed_quotas(strategy, sizes, log_mass, 10, 1.0) == strategy  # D = 1: the strategy's alone
    assert mixed_quotas(strategy, sizes, {}, 10, 0.0) == strategy  # no target: no mass
    # capped by the cluster sizes, the rest water-filled to the others
    assert mixed_quotas({0: 2, 1: 8}, {0: 2, 1: 20}, {0: 5.0, 1: 0.0}, 10, 0.0) == {0: 2, 1: 8}
    # a cluster without mass (absent: -inf) keeps only its strategy part: targets 0.5 * (4, 4, 2) +
    # 0.5 * 10 * (1/2, 1/2, 0) = (4.5, 4.5, 1); the one unit left goes to the lower id
    assert mixed_quotas({0: 4, 1: 4, 2: 2}, {0: 9, 1: 9, 2: 9}, {0: 0.0, 1: 0.0}, 10, 0.5) == {0: 5, 1: 4, 2: 1}


@settings(max_examples=80, deadline=None, derandomize=True, database=None)
@given(
    st.lists(st.integers(0, 30), min_size=1, max_size=6),
    st.integers(0, 100),
    st.floats(0.0, 1.0),
    st.lists(st.floats(-50.0, 50.0), min_size=6, max_size=6),
)
def test_mixed_quotas_sum_to_the_strategy_total_within_sizes(size_list, n, diversity, logs):
    sizes = dict(enumerate(size_list))
    strategy = StrategyQuota(TotalQuota(n=n), "proportional")(sizes, {})
    log_mass = {c: logs[c] for c in sizes if sizes[c]}
    got = mixed_quotas(strategy, sizes, log_mass, sum(strategy.values()), diversity)
    assert sorted(got) == sorted(sizes)
    assert sum(got.values()) == min(n, sum(size_list))
    assert all(0 <= got[c] <= sizes[c] for c in sizes)


def test_mixed_quota_calls_the_strategy_then_mixes_in_the_mass():
    quota = MixedQuota(StrategyQuota(TotalQuota(n=10)), diversity=0.0)
    counts = {0: 10, 1: 10}
    assert quota(counts, {"log_mass": {0: 0.0, 1: math.log(4)}}) == {0: 2, 1: 8}
    assert quota(counts, {}) == {0: 5, 1: 5}  # without a target: the balanced quotas
    assert quota(counts, {"log_mass": None}) == {0: 5, 1: 5}
    assert MixedQuota(StrategyQuota(TotalQuota(n=10)), 0.5)(counts, {"log_mass": {0: 0.0, 1: math.log(4)}}) == {0: 4, 1: 6}


# --- CombineFns --------------------------------------------------------------------------


def test_moments_combine_fn_four_methods_empty_and_any_merge_order():
    fn = MomentsCombineFn()
    assert fn.extract_output(fn.create_accumulator()) == {}
    assert fn.extract_output(fn.merge_accumulators([fn.create_accumulator(), fn.create_accumulator()])) == {}
    rng = np.random.default_rng(1)
    dsir_values, zipfit_values = rng.normal(5, 2, 30), rng.normal(0, 0.1, 30)
    parts = [
        fn.add_input(fn.create_accumulator(), {DSIR: dsir_values[:10], ZIPFIT: zipfit_values[:10]}),
        fn.add_input(fn.add_input(fn.create_accumulator(), {DSIR: dsir_values[10:25]}), {DSIR: dsir_values[25:]}),
        fn.add_input(fn.create_accumulator(), {ZIPFIT: zipfit_values[10:], DSIR: np.zeros(0)}),
        fn.create_accumulator(),
    ]
    for order in itertools.permutations(parts):
        out = fn.extract_output(fn.merge_accumulators(list(order)))
        assert sorted(out) == [DSIR, ZIPFIT]
        _assert_moments_close(out[DSIR], dsir_values)
        _assert_moments_close(out[ZIPFIT], zipfit_values)


def test_log_mass_combine_fn_four_methods_empty_and_any_merge_order():
    fn = LogMassCombineFn()
    assert fn.extract_output(fn.create_accumulator()) == {}
    clusters = np.array([0, 1, 0, 1, 2, 0])
    scores = np.array([1.0, -2.0, 0.5, 4.0, 0.0, 900.0])
    expected = cluster_log_mass(clusters, scores, 1.0)
    batches = [cluster_log_mass(clusters[a:b], scores[a:b], 1.0) for a, b in ((0, 2), (2, 5), (5, 6))]
    parts = [fn.add_input(fn.create_accumulator(), batches[0]),
             fn.add_input(fn.add_input(fn.create_accumulator(), batches[1]), batches[2]),
             fn.create_accumulator()]
    for order in itertools.permutations(parts):
        out = fn.extract_output(fn.merge_accumulators(list(order)))
        assert sorted(out) == [0, 1, 2]
        for cluster, value in expected.items():
            assert out[cluster] == pytest.approx(value, rel=1e-14)


def test_quality_statistics_in_a_pipeline():
    """Moments over batches, then each batch's cluster log mass against them: the combined method's two passes."""
    rng = np.random.default_rng(2)
    batches = [(rng.integers(0, 3, 20), rng.normal(0, 1, 20), rng.normal(0.1, 0.05, 20)) for _ in range(4)]
    clusters = np.concatenate([b[0] for b in batches])
    columns = {DSIR: np.concatenate([b[1] for b in batches]), ZIPFIT: np.concatenate([b[2] for b in batches])}
    moments = {name: moments_of(values) for name, values in columns.items()}
    expected = cluster_log_mass(clusters, quality_score(columns, moments, {DSIR: 1.0, ZIPFIT: 1.0}), 3.0)

    def check(outputs):
        (got,) = outputs
        assert sorted(got) == sorted(expected)
        for cluster, value in expected.items():
            assert got[cluster] == pytest.approx(value, rel=1e-12)

    def log_mass(batch, fitted):
        score = quality_score({DSIR: batch[1], ZIPFIT: batch[2]}, fitted, {DSIR: 1.0, ZIPFIT: 1.0})
        return cluster_log_mass(batch[0], score, 3.0)

    with local_pipeline() as p:
        pool = p | beam.Create(batches)
        fitted = pool | "Columns" >> beam.Map(lambda b: {DSIR: b[1], ZIPFIT: b[2]}) | "Moments" >> beam.CombineGlobally(MomentsCombineFn())
        mass = (
            pool
            | "LogMass" >> beam.Map(log_mass, beam.pvalue.AsSingleton(fitted))
            | "SumLogMass" >> beam.CombineGlobally(LogMassCombineFn())
        )
        assert_that(mass, check)
    assert combined.NAMESPACE == "winnow.combined"
