"""Tests for transforms/combined.py: the config, mergeable moments (Chan's update), the quality score and key,
and the moments CombineFn."""

import itertools
import math

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import local_pipeline
from winnow.transforms import combined
from winnow.transforms.combined import (
    EMPTY_MOMENTS,
    CombinedConfig,
    Moments,
    MomentsCombineFn,
    merge_moments,
    moments_of,
    quality_keys,
    quality_score,
)

DSIR, ZIPFIT = "winnow_dsir_log_weight", "winnow_zipfit_alignment"


def _assert_moments_close(got: Moments, values):
    values = np.asarray(values, dtype=np.float64)
    assert got.n == len(values)
    assert got.mean == pytest.approx(values.mean(), rel=1e-12, abs=1e-12)
    assert got.m2 == pytest.approx(((values - values.mean()) ** 2).sum(), rel=1e-10, abs=1e-9)


# --- config ------------------------------------------------------------------------------


def test_config_defaults_and_validation():
    config = CombinedConfig()
    assert (config.dsir_weight, config.zipfit_weight) == (1.0, 0.0)
    CombinedConfig(dsir_weight=-1.0, zipfit_weight=2.0)  # negative weights are allowed
    for kwargs, quoted in [({"dsir_weight": "1"}, "dsir_weight='1'"), ({"zipfit_weight": float("nan")}, "zipfit_weight=nan")]:
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


def test_quality_key_with_dsir_alone_is_dsirs_key_up_to_a_constant():
    """With weights (1, 0), ``std · z(log w) + g = log w - mean + g``: the same order as DSIR's ``log w + g``."""
    log_w = np.array([-30.0, 5.0, 12.0, -2.0])
    gumbel = np.array([0.3, -1.2, 0.0, 2.5])
    moments = {DSIR: moments_of(log_w), ZIPFIT: moments_of(np.array([0.1, 0.2]))}
    keys = quality_keys({DSIR: log_w}, moments, {DSIR: 1.0, ZIPFIT: 0.0}, gumbel, DSIR)
    np.testing.assert_allclose(keys, log_w - log_w.mean() + gumbel, rtol=1e-12, atol=1e-12)
    mixed = quality_keys({DSIR: log_w, ZIPFIT: np.array([0.3, 0.1, 0.1, 0.1])}, moments, {DSIR: 1.0, ZIPFIT: 1.0}, gumbel, DSIR)
    assert mixed[0] > keys[0]  # a high alignment lifts the first document, in units of the DSIR spread


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


def test_moments_in_a_pipeline():
    rng = np.random.default_rng(2)
    batches = [rng.normal(5, 2, 20) for _ in range(4)]

    def check(outputs):
        (got,) = outputs
        _assert_moments_close(got[DSIR], np.concatenate(batches))

    with local_pipeline() as p:
        moments = p | beam.Create(batches) | beam.Map(lambda values: {DSIR: values}) | beam.CombineGlobally(MomentsCombineFn())
        assert_that(moments, check)
    assert combined.NAMESPACE == "winnow.combined"
