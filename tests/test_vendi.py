"""Tests for transforms/vendi.py: hand-worked spectra, the reference package, the Gram combiner, VendiScore."""

import json
import math

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to
from vendi_score import vendi as reference

from tests.helpers import local_pipeline
from winnow.transforms import vendi
from winnow.transforms.vendi import (
    EMPTY_SCORE,
    PROFILE_ORDERS,
    GramCombineFn,
    VendiConfig,
    VendiScore,
    merge_grams,
    order_label,
    positive_eigenvalues,
    renyi_entropy,
    scores_of_eigenvalues,
    vendi_from_gram,
    vendi_profile_from_gram,
    vendi_score,
    vendi_score_from_kernel,
    vendi_stats,
)

ORDERS = [0.0, 0.5, 1.0, 2.0, math.inf]


def _unit_rows(rng, n, d):
    X = rng.standard_normal((n, d))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def _gram(X):
    X = np.asarray(X, dtype=np.float64)
    X = X / np.linalg.norm(X, axis=1, keepdims=True)
    return X.T @ X


# --- hand-worked cases -------------------------------------------------------------------


@pytest.mark.parametrize("q", ORDERS)
def test_identical_points_score_one(q):
    X = np.tile([[3.0, -1.0, 2.0]], (7, 1))
    assert vendi_score(X, q) == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("q", ORDERS)
@pytest.mark.parametrize("n", [1, 4, 9])
def test_orthogonal_unit_vectors_score_n(n, q):
    X = np.eye(12)[:n] * 5.0  # norms differ from 1: normalize=True rescales them
    assert vendi_score(X, q) == pytest.approx(n, rel=1e-12)
    assert vendi_score_from_kernel(np.eye(n), q) == pytest.approx(n, rel=1e-12)


def test_three_copies_and_one_other_point():
    # K/n has eigenvalues (3/4, 1/4): the Rényi formulas by hand.
    X = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    expected = {
        0.0: 2.0,
        0.5: (math.sqrt(0.75) + math.sqrt(0.25)) ** 2,
        1.0: math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))),
        2.0: 1.0 / (0.75**2 + 0.25**2),
        math.inf: 4.0 / 3.0,
    }
    for q, value in expected.items():
        assert vendi_score(X, q) == pytest.approx(value, rel=1e-12), q


@pytest.mark.parametrize("s", [0.0, 0.3, 0.9])
def test_two_item_kernel(s):
    # eig(K/2) = ((1 + s)/2, (1 - s)/2), so VS_2 = 1 / Σλ² = 2 / (1 + s²) and VS_∞ = 2 / (1 + s).
    K = np.array([[1.0, s], [s, 1.0]])
    assert vendi_score_from_kernel(K, 2) == pytest.approx(2.0 / (1.0 + s * s), rel=1e-12)
    assert vendi_score_from_kernel(K, math.inf) == pytest.approx(2.0 / (1.0 + s), rel=1e-12)


def test_renyi_entropy_of_uniform_weights_is_log_k():
    p = np.full(8, 1 / 8)
    for q in [*ORDERS, 3.7]:
        assert renyi_entropy(p, q) == pytest.approx(math.log(8), rel=1e-12)


def test_scores_decrease_with_order_and_large_q_approaches_inf():
    X = _unit_rows(np.random.default_rng(3), 40, 10)
    scores = [vendi_score(X, q) for q in [0.0, 0.5, 1.0, 1.5, 2.0, 10.0, 1000.0, math.inf]]
    assert all(a >= b - 1e-12 for a, b in zip(scores, scores[1:]))
    assert scores[-2] == pytest.approx(scores[-1], rel=0.01)  # log-sum-exp keeps q = 1000 finite


def test_order_zero_counts_the_rank_not_round_off():
    # 50 points in a 5-dimensional subspace of R^32: K has rank 5; the other 27 eigenvalues of
    # Xᵀ X / n are round-off. The reference (λ > 0) would count some of them.
    rng = np.random.default_rng(4)
    X = rng.standard_normal((50, 5)) @ rng.standard_normal((5, 32))
    assert vendi_score(X, 0) == pytest.approx(5.0, rel=1e-12)
    assert vendi_from_gram(_gram(X), 50, 0) == pytest.approx(5.0, rel=1e-12)
    assert vendi_score_from_kernel(_gram(X.T), 0) == pytest.approx(5.0, rel=1e-12)  # (50, 50) kernel


def test_normalize_makes_row_scale_irrelevant_and_false_uses_rows_as_given():
    rng = np.random.default_rng(5)
    X = _unit_rows(rng, 30, 6)
    scaled = X * rng.uniform(0.1, 10.0, size=(30, 1))
    assert vendi_score(scaled) == pytest.approx(vendi_score(X), rel=1e-12)
    assert vendi_score(X, normalize=False) == pytest.approx(vendi_score(X), rel=1e-12)
    assert vendi_score(scaled, normalize=False) != pytest.approx(vendi_score(X), rel=1e-3)


@pytest.mark.parametrize("n, d", [(5, 40), (40, 5)])
def test_dual_and_primal_forms_agree(n, d):
    X = _unit_rows(np.random.default_rng(6), n, d)
    for q in ORDERS:
        expected = vendi_score_from_kernel(X @ X.T, q)
        assert vendi_score(X, q) == pytest.approx(expected, rel=1e-10)
        assert vendi_from_gram(X.T @ X, n, q) == pytest.approx(expected, rel=1e-10)


def test_profile_matches_single_orders():
    X = _unit_rows(np.random.default_rng(7), 60, 12)
    profile = vendi_profile_from_gram(X.T @ X, 60)
    assert list(profile) == list(PROFILE_ORDERS)
    for q, value in profile.items():
        assert value == vendi_from_gram(X.T @ X, 60, q)


def test_empty_input_scores_zero():
    assert vendi_score(np.zeros((0, 4))) == EMPTY_SCORE == 0.0
    assert vendi_score_from_kernel(np.zeros((0, 0)), 2) == 0.0
    assert vendi_from_gram(np.zeros((0, 0)), 0, math.inf) == 0.0
    assert vendi_profile_from_gram(np.zeros((3, 3)), 0) == dict.fromkeys(PROFILE_ORDERS, 0.0)
    assert vendi_score_from_kernel(np.zeros((3, 3))) == 0.0  # no positive eigenvalue


@pytest.mark.parametrize(
    "q, error", [(-0.5, ValueError), (float("nan"), ValueError), ("1", TypeError), (True, TypeError)]
)
def test_invalid_order_rejected(q, error):
    with pytest.raises(error, match="q="):
        vendi_score(np.eye(2), q)
    with pytest.raises(error, match="q="):
        VendiConfig(q=q)


def test_invalid_inputs_rejected():
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        vendi_score(np.ones(3))
    with pytest.raises(ValueError, match="all-zero"):
        vendi_score(np.array([[1.0, 0.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="NaN"):
        vendi_score(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="square"):
        vendi_score_from_kernel(np.ones((2, 3)))
    with pytest.raises(ValueError, match="symmetric"):
        vendi_score_from_kernel(np.array([[1.0, 0.5], [0.1, 1.0]]))
    with pytest.raises(ValueError, match="n=-1"):
        vendi_from_gram(np.eye(2), -1)
    with pytest.raises(ValueError, match="dim=0"):
        VendiConfig(dim=0)
    with pytest.raises(TypeError, match="normalize=1"):
        VendiConfig(normalize=1)
    assert vendi_score(np.array([[1.0, 0.0], [0.0, 0.0]]), normalize=False) > 0  # zero rows allowed


def test_positive_eigenvalues_drop_round_off_below_the_rank_tolerance():
    # eigenvalues 2, 1e-20 and -1e-18 (round-off); the tolerance is 3 * eps * 2
    Q = np.linalg.qr(np.random.default_rng(0).standard_normal((3, 3)))[0]
    matrix = Q @ np.diag([2.0, 1e-20, -1e-18]) @ Q.T
    np.testing.assert_allclose(positive_eigenvalues(matrix), [2.0], rtol=1e-12)
    kept = positive_eigenvalues(np.diag([1.0, 1e-10, 0.5]))
    assert kept.tolist() == [1e-10, 0.5, 1.0]  # ascending; 1e-10 is far above 3 * eps
    assert positive_eigenvalues(np.zeros((0, 0))).shape == (0,)
    assert positive_eigenvalues(np.zeros((2, 2))).shape == (0,)  # no positive eigenvalue at all


def test_scores_of_eigenvalues_and_order_labels():
    p = np.array([0.75, 0.25])
    assert scores_of_eigenvalues(p, [0.0, math.inf]) == [2.0, pytest.approx(4 / 3, rel=1e-15)]
    assert scores_of_eigenvalues(np.zeros(0), [0.0, 1.0, math.inf]) == [EMPTY_SCORE] * 3
    assert [order_label(q) for q in PROFILE_ORDERS] == ["0", "0.5", "1", "2", "inf"]
    assert vendi.check_order(2) == 2.0 and isinstance(vendi.check_order(2), float)
    assert vendi.check_order(math.inf) == math.inf


def test_vendi_stats_is_one_json_ready_summary():
    X = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])  # eigenvalues (3/4, 1/4), as above
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    stats = vendi_stats(Xn.T @ Xn, 4, q=2.0)
    assert stats["n_vectors"] == 4 and stats["dim"] == 2 and stats["q"] == "2" and stats["normalize"] is True
    assert stats["vendi_score"] == pytest.approx(1.0 / (0.75**2 + 0.25**2), rel=1e-14)
    assert list(stats["profile"]) == ["0", "0.5", "1", "2", "inf"]
    assert stats["profile"]["0"] == 2.0 and stats["profile"]["2"] == stats["vendi_score"]
    json.dumps(stats)
    odd = vendi_stats(Xn.T @ Xn, 4, q=3.0, normalize=False)  # an order outside the profile
    assert odd["q"] == "3" and odd["vendi_score"] == pytest.approx(vendi_from_gram(Xn.T @ Xn, 4, 3.0), rel=1e-14)
    assert "3" not in odd["profile"] and odd["normalize"] is False
    empty = vendi_stats(np.zeros((0, 0)), 0)
    assert empty["vendi_score"] == 0.0 and empty["dim"] == 0 and set(empty["profile"].values()) == {0.0}


def test_merge_grams_sums_and_leaves_its_parts_intact():
    a, b = (np.eye(2), 3), (np.ones((2, 2)), 2)
    total, n = merge_grams([(None, 0), a, b, (None, 0)])
    assert n == 5 and total.tolist() == [[2.0, 1.0], [1.0, 2.0]]
    assert a[0].tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert merge_grams([]) == (None, 0) and merge_grams([(None, 0)]) == (None, 0)
    with pytest.raises(ValueError, match="dimension 2 and 3"):
        merge_grams([a, (np.eye(3), 1)])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_tiny_but_nonzero_row_normalizes_like_any_other():
    X = np.array([[1e-200, 0.0], [1.0, 0.0]])  # two vectors of one direction: one distinct item
    assert vendi_score(X) == pytest.approx(1.0, rel=1e-12)


# --- agreement with the vendi-score package ----------------------------------------------


def _ref_q(q):
    return "inf" if math.isinf(q) else q


@pytest.mark.parametrize("q", ORDERS)
@pytest.mark.parametrize("n, d", [(20, 64), (64, 64), (300, 16), (1000, 32)])
def test_matches_reference_on_embeddings(n, d, q):
    # Compare with the reference on its full-rank matrix: score_K (n, n) for n <= d, score_dual
    # (d, d) for n >= d. On the rank-deficient side the reference keeps round-off eigenvalues
    # (see the module doc), which moves its q = 0 and q = 0.5 scores.
    rng = np.random.default_rng(n * 1000 + d)
    X = rng.standard_normal((n, d)) * rng.uniform(0.5, 2.0, size=(n, 1))
    if n <= d:
        Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
        expected = reference.score_K(Xn @ Xn.T, q=_ref_q(q))
    else:
        expected = reference.score_dual(X, q=_ref_q(q))
    # measured: at most 1.0e-15 relative (benchmarks/RESULTS.md, references section)
    assert vendi_score(X, q) == pytest.approx(expected, rel=1e-14)
    assert vendi_from_gram(_gram(X), n, q) == pytest.approx(expected, rel=1e-14)


def test_matches_reference_score_x_at_order_one():
    X = np.random.default_rng(84).standard_normal((20, 64))  # n <= d: a full-rank kernel
    assert vendi_score(X, 1) == pytest.approx(reference.score_X(X), rel=1e-14)  # score_X ignores q
    assert vendi_score(X, 2) != pytest.approx(reference.score_X(X, q=2), rel=1e-3)


def test_reference_score_x_counts_round_off_eigenvalues_of_a_rank_deficient_kernel():
    """n > d: the (n, n) kernel has rank d; the reference keeps its round-off eigenvalues (module docstring),
    which moves its q = 1 score by ~1e-14 relative; the full-rank dual form agrees to 1e-14."""
    X = np.random.default_rng(316).standard_normal((300, 16))
    ours = vendi_score(X, 1)
    assert ours == pytest.approx(reference.score_dual(X, q=1), rel=1e-14)
    assert ours == pytest.approx(reference.score_X(X), rel=1e-12)


@pytest.mark.parametrize("q", ORDERS)
def test_matches_reference_on_an_rbf_kernel(q):
    points = np.random.default_rng(8).standard_normal((80, 3))
    K = np.exp(-0.5 * ((points[:, None, :] - points[None, :, :]) ** 2).sum(axis=2))
    assert vendi_score_from_kernel(K, q) == pytest.approx(reference.score_K(K, q=_ref_q(q)), rel=1e-14)


# --- combiners ---------------------------------------------------------------------------


def test_gram_combine_fn_four_methods_and_merge_order():
    X = _unit_rows(np.random.default_rng(9), 25, 6) * 3.0
    fn = GramCombineFn()
    single = fn.create_accumulator()
    assert single == (None, 0)
    single = fn.add_input(single, X[0])  # one (d,) vector
    single = fn.add_input(single, X[1:10])  # a (b, d) batch
    single = fn.add_input(single, list(X[10:]))  # a list of (d,) vectors
    gram, n = fn.extract_output(single)
    assert n == 25
    np.testing.assert_allclose(gram, _gram(X), rtol=1e-12, atol=1e-14)

    parts = [fn.add_input(fn.create_accumulator(), X[i : i + 5]) for i in range(0, 25, 5)]
    first = parts[0][0].copy()
    parts.insert(2, fn.create_accumulator())  # empty partials merge as nothing
    forward = fn.extract_output(fn.merge_accumulators(parts))
    backward = fn.extract_output(fn.merge_accumulators(parts[::-1]))
    halves = [fn.merge_accumulators(parts[:3]), fn.merge_accumulators(parts[3:])]
    nested = fn.extract_output(fn.merge_accumulators(halves))
    for merged_gram, merged_n in (forward, backward, nested):
        assert merged_n == 25
        np.testing.assert_allclose(merged_gram, gram, rtol=1e-12, atol=1e-14)
    assert vendi_from_gram(*forward) == pytest.approx(vendi_score(X), rel=1e-10)
    np.testing.assert_array_equal(parts[0][0], first)  # merging left the partials intact


def test_gram_combine_fn_takes_a_large_batch_block_by_block():
    X = _unit_rows(np.random.default_rng(4), 2 * vendi.BATCH_SIZE + 7, 5).astype(np.float32) * 2.0
    fn = GramCombineFn()
    gram, n = fn.extract_output(fn.add_input(fn.create_accumulator(), X))
    assert n == len(X)  # the last, partial block included
    np.testing.assert_allclose(gram, _gram(X.astype(np.float64)), rtol=1e-12, atol=1e-12)
    X[-1] = np.nan  # a bad vector in the last block is still found
    with pytest.raises(ValueError, match="NaN"):
        fn.add_input(fn.create_accumulator(), X)


def test_gram_combine_fn_empty_and_fixed_dim():
    gram, n = GramCombineFn().extract_output(GramCombineFn().create_accumulator())
    assert gram.shape == (0, 0) and n == 0
    assert vendi_from_gram(gram, n) == 0.0
    fixed = GramCombineFn(dim=3)
    gram, n = fixed.extract_output(fixed.merge_accumulators([fixed.create_accumulator(), fixed.create_accumulator()]))
    np.testing.assert_array_equal(gram, np.zeros((3, 3)))
    assert n == 0
    with pytest.raises(ValueError, match="dimension 4; expected dim=3"):
        fixed.add_input(fixed.create_accumulator(), np.ones(4))


def test_gram_combine_fn_rejects_bad_vectors():
    fn = GramCombineFn()
    accumulator = fn.add_input(fn.create_accumulator(), np.ones(3))
    with pytest.raises(ValueError, match="dimension 2; expected dim=3"):
        fn.add_input(accumulator, np.ones(2))
    with pytest.raises(ValueError, match="all-zero"):
        fn.add_input(accumulator, np.zeros(3))
    with pytest.raises(ValueError, match="equal length"):
        fn.add_input(accumulator, [np.ones(3), np.ones(2)])
    with pytest.raises(ValueError, match=r"shape \(1, 0\)"):
        fn.add_input(fn.create_accumulator(), [])
    with pytest.raises(ValueError, match="merge Gram matrices of dimension 3 and 2"):
        fn.merge_accumulators([accumulator, fn.add_input(fn.create_accumulator(), np.ones(2))])


# --- pipelines ---------------------------------------------------------------------------


def _single_close_to(expected):
    def check(actual):
        assert len(actual) == 1, actual
        assert actual[0] == pytest.approx(expected, rel=1e-10), (actual[0], expected)

    return check


def test_vendi_score_pipeline():
    X = _unit_rows(np.random.default_rng(10), 1100, 8)  # > BATCH_SIZE: two blocks, merged
    with local_pipeline() as pipeline:
        scores = pipeline | "Vectors" >> beam.Create(list(X)) | VendiScore(q=2)
        empty = pipeline | "NoVectors" >> beam.Create([]) | "EmptyScore" >> VendiScore()
        assert_that(scores, _single_close_to(vendi_score(X, 2)), label="CheckScore")
        assert_that(empty, equal_to([0.0]), label="CheckEmpty")


def test_gram_combine_fn_multiplies_half_precision_rows_in_float32():
    X = _unit_rows(np.random.default_rng(5), 3 * vendi.BATCH_SIZE, 64).astype(np.float16)  # as stored
    fn = GramCombineFn()
    gram, n = fn.extract_output(fn.add_input(fn.create_accumulator(), X))
    exact = _gram(X)  # float64 products of the same rows
    assert n == len(X) and gram.dtype == np.float64
    assert not np.array_equal(gram, exact)  # float32 products, not float64
    np.testing.assert_allclose(gram, exact, rtol=0, atol=1e-4)  # against entries up to ~len(X) / 64
    assert vendi_from_gram(gram, n) == pytest.approx(vendi_from_gram(exact, n), rel=1e-6)
