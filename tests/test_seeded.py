"""Tests for transforms/seeded.py: every seeded draw is a pure function of (seed, id), as its docstring's formulas."""

import hashlib
import math

import numpy as np
import pytest

from winnow.transforms import seeded
from winnow.transforms.text import splitmix64

IDS = [f"doc-{i}" for i in range(20_000)]


def _blake(text: str, person: bytes = b"") -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8, person=person).digest(), "big")


# --- hash64 --------------------------------------------------------------------------------


def test_hash64_is_the_big_endian_blake2b_64_of_seed_colon_id():
    hashes = seeded.hash64(["doc-1", "é", 7], 3)
    assert hashes.dtype == np.uint64 and hashes.shape == (3,)
    assert hashes.tolist() == [_blake("3:doc-1"), _blake("3:é"), _blake("3:7")]
    assert seeded.hash64(["doc-1"], "3/1").tolist() == [_blake("3/1:doc-1")]  # string seeds (round_seed) too


def test_hash64_person_separates_streams_and_ids_hash_by_their_str():
    assert seeded.hash64([7], 1).tolist() == seeded.hash64(["7"], 1).tolist()  # int 7 and "7" alike
    assert seeded.hash64(["a"], 1, seeded.SAMPLE_PERSON).tolist() == [_blake("1:a", b"winnow-sample")]
    assert seeded.hash64(["a"], 1, seeded.SAMPLE_PERSON)[0] != seeded.hash64(["a"], 1)[0]
    assert seeded.hash64(["a"], 1)[0] != seeded.hash64(["a"], 2)[0]


def test_hash64_of_no_ids_and_of_a_generator():
    empty = seeded.hash64([], 0)
    assert empty.dtype == np.uint64 and empty.shape == (0,)
    assert seeded.hash64((f"d{i}" for i in range(3)), 5).tolist() == seeded.hash64(["d0", "d1", "d2"], 5).tolist()


def test_hash64_accepts_a_lone_surrogate():
    # surrogatepass: the id's code units are hashed as they are, never an encoding error
    expected = int.from_bytes(hashlib.blake2b("0:\ud800".encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")
    assert seeded.hash64(["\ud800"], 0).tolist() == [expected]


# --- uniform and gumbel --------------------------------------------------------------------


def test_uniform_is_h_plus_half_over_two_to_the_64():
    u = seeded.uniform(["doc-1", "doc-2"], 9)
    assert u.tolist() == [(_blake("9:doc-1") + 0.5) / 2.0**64, (_blake("9:doc-2") + 0.5) / 2.0**64]


def test_uniform_never_reaches_zero_or_one(monkeypatch):
    extremes = np.array([0, 2**64 - 1], dtype=np.uint64)
    monkeypatch.setattr(seeded, "hash64", lambda ids, seed, person=b"": extremes)
    u = seeded.uniform(["x", "y"], 0)
    assert u[0] == 0.5 / 2.0**64 > 0.0
    assert u[1] == 1.0 - 2.0**-53 < 1.0  # (2**64 - 0.5) / 2**64 rounds to 1.0 in float64; capped
    g = seeded.gumbel(["x", "y"], 0)
    assert np.isfinite(g).all() and g[0] < -3.0 < 30.0 < g[1]


def test_uniform_is_seeded_and_evenly_spread():
    u = seeded.uniform(IDS, 3)
    assert np.array_equal(u, seeded.uniform(IDS, 3))
    assert not np.array_equal(u, seeded.uniform(IDS, 4))
    assert ((u > 0) & (u < 1)).all()
    # 10 bins of 2,000 expected: a binomial sd of 42
    assert np.abs(np.bincount((u * 10).astype(int), minlength=10) - 2000).max() < 200


def test_gumbel_is_minus_log_minus_log_uniform_with_the_gumbel_mean():
    u = seeded.uniform(IDS[:5], 11)
    np.testing.assert_array_equal(seeded.gumbel(IDS[:5], 11), -np.log(-np.log(u)))
    noise = seeded.gumbel(IDS, 0)
    # standard Gumbel: mean = Euler's gamma, sd = pi / sqrt(6), so the mean of 20,000 has sd 0.009
    assert abs(noise.mean() - np.euler_gamma) < 0.04
    assert noise.std() == pytest.approx(math.pi / math.sqrt(6), rel=0.05)


def test_gumbel_top_1_draws_in_proportion_to_the_weights():
    """argmax(log w_i + G_i) = i with probability w_i / sum(w) (Gumbel-max): over 3,000 seeds, each
    frequency is within 4.5 sd (binomial, sd <= 0.009) of w_i / 10."""
    weights = np.array([1.0, 2.0, 3.0, 4.0])
    ids = ["a", "b", "c", "d"]
    wins = np.bincount([int(np.argmax(np.log(weights) + seeded.gumbel(ids, seed))) for seed in range(3000)], minlength=4)
    np.testing.assert_allclose(wins / 3000, weights / weights.sum(), atol=0.04)


# --- sample_rank ---------------------------------------------------------------------------


def test_sample_rank_is_the_sample_stream_hash_shifted_by_minus_two_to_the_63():
    ranks = seeded.sample_rank(["a", "b", 12], 4)
    assert ranks.dtype == np.int64
    assert ranks.tolist() == [_blake(f"4:{i}", b"winnow-sample") - 2**63 for i in ("a", "b", "12")]


def test_sample_rank_keeps_the_hash_order_and_differs_from_the_selection_stream():
    ids = IDS[:2000]
    ranks = seeded.sample_rank(ids, 1)
    hashes = seeded.hash64(ids, 1, seeded.SAMPLE_PERSON)
    np.testing.assert_array_equal(np.argsort(ranks, kind="stable"), np.argsort(hashes, kind="stable"))
    assert ranks.min() < 0 < ranks.max()  # the whole signed range is used
    selection_order = np.argsort(seeded.hash64(ids, 1), kind="stable")
    assert not np.array_equal(np.argsort(ranks, kind="stable")[:100], selection_order[:100])
    assert seeded.sample_rank([], 1).dtype == np.int64


# --- round_seed ----------------------------------------------------------------------------


def test_round_seed_keeps_round_zero_and_separates_later_rounds():
    assert seeded.round_seed(7, 0) == 7
    assert seeded.round_seed(7, 2) == "7/2"
    ids = IDS[:2000]
    noise = [seeded.gumbel(ids, seeded.round_seed(7, t)) for t in range(3)]
    np.testing.assert_array_equal(noise[0], seeded.gumbel(ids, 7))
    assert abs(np.corrcoef(noise[0], noise[1])[0, 1]) < 0.1  # independent draws: |r| ~ 0.02
    assert abs(np.corrcoef(noise[1], noise[2])[0, 1]) < 0.1


def test_row_keys_are_splitmix_of_the_streams_hash_plus_the_row():
    start = seeded.hash64(["report:3"], 7, seeded.ROW_PERSON)[0]
    rows = np.arange(5000)
    keys = seeded.row_keys(7, "report:3", rows)
    assert keys.dtype == np.uint64 and keys[2] == splitmix64(np.array([start + np.uint64(2)], np.uint64))[0]
    assert np.array_equal(seeded.row_keys(7, "report:3", rows[[4, 2]]), keys[[4, 2]])  # a row's key, whatever rows are asked
    assert len(np.unique(keys)) == 5000
    assert not np.array_equal(keys, seeded.row_keys(8, "report:3", rows))
    assert not np.array_equal(keys, seeded.row_keys(7, "report:4", rows))
    assert abs((keys >> np.uint64(63)).mean() - 0.5) < 0.03  # the top bit is a fair coin
