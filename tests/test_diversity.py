"""Tests for transforms/diversity.py: the greedy against brute force, ties, exact N, determinism, the D end points."""

import itertools
import math

import numpy as np
import pytest

from winnow.transforms.vectors import unit_rows
from winnow.transforms.diversity import (
    FOLD_PICKS,
    GAIN_DECIMALS,
    GRAM_BITS,
    DiversityConfig,
    candidate_count,
    diversity_keys,
    gram_statistic,
    greedy_logdet,
    group_pick_count,
    length_prior,
    select_diverse,
    split_groups,
    top_indices,
)


def _logdet(rows: np.ndarray, ridge: float, background: np.ndarray | None = None) -> float:
    """Gain of adding all ``rows`` to the background B at once, by brute force:
    ``log det(ridge I + B + Xᵀ X) - log det(ridge I + B)`` (= ``log det(I + X Xᵀ / ridge)`` for B = 0)."""
    d = rows.shape[1]
    base = ridge * np.eye(d) + (0 if background is None else background)
    return np.linalg.slogdet(base + rows.T @ rows)[1] - np.linalg.slogdet(base)[1]


def _vendi(rows: np.ndarray) -> float:
    """Vendi score (q = 1, cosine kernel) of a few unit rows, from the n x n kernel."""
    eigenvalues = np.clip(np.linalg.eigvalsh(rows @ rows.T / len(rows)), 0, None)
    eigenvalues = eigenvalues[eigenvalues > 1e-12]
    return float(np.exp(-np.sum(eigenvalues * np.log(eigenvalues))))


def _clustered_pool(n: int, d: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d))
    clusters = rng.integers(0, k, n)
    vectors = centres[clusters] + 0.7 * rng.standard_normal((n, d))
    return unit_rows(vectors), clusters.astype(np.int64)


# --- the greedy step -------------------------------------------------------------------------


def test_greedy_worked_example():
    # Rows e1, e1, e2 with ridge 1: every first gain is log(1 + 1) (tie -> row 0); then the copy
    # of e1 gains log(1 + 1/2) and e2 still log 2, so e2 comes second and the copy last.
    picks, gains = greedy_logdet([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], 3, ridge=1.0)
    assert picks.tolist() == [0, 2, 1]
    np.testing.assert_allclose(gains, [math.log(2), math.log(2), math.log(1.5)], atol=1e-9)


def test_greedy_picks_the_largest_logdet_increase():
    rng = np.random.default_rng(3)
    rows = unit_rows(rng.standard_normal((12, 4)))
    picks, gains = greedy_logdet(rows, 8, ridge=0.5)
    chosen: list[int] = []
    for pick, gain in zip(picks, gains):
        before = _logdet(rows[chosen], 0.5)
        increases = {i: _logdet(rows[chosen + [i]], 0.5) - before for i in range(12) if i not in chosen}
        best = max(increases.values())
        assert pick == min(i for i, v in increases.items() if round(v, GAIN_DECIMALS) == round(best, GAIN_DECIMALS))
        assert gain == pytest.approx(increases[pick], abs=1e-8)
        chosen.append(int(pick))
    assert np.all(np.diff(gains) <= 1e-9)  # submodular: gains never increase


def test_greedy_past_several_folds_of_its_updates_matches_brute_force_with_a_background():
    rng = np.random.default_rng(5)
    rows = unit_rows(rng.standard_normal((3 * FOLD_PICKS, 5)))
    rows[1::9] = rows[::9][: len(rows[1::9])]  # exact copies: ties to break by index
    other = rng.standard_normal((10, 5))
    background = other.T @ other
    n_picks = 2 * FOLD_PICKS + 7  # two folds and a partial block
    picks, gains = greedy_logdet(rows, n_picks, ridge=0.7, background=background)
    chosen: list[int] = []
    for pick, gain in zip(picks, gains):
        before = _logdet(rows[chosen], 0.7, background)
        increases = {i: _logdet(rows[chosen + [i]], 0.7, background) - before for i in range(len(rows)) if i not in chosen}
        best = round(max(increases.values()), GAIN_DECIMALS)
        assert pick == min(i for i, v in increases.items() if round(v, GAIN_DECIMALS) == best)
        assert gain == pytest.approx(increases[pick], abs=1e-8)
        chosen.append(int(pick))


def test_greedy_pick_raises_vendi_most():
    # After e1, the orthogonal e3 raises the Vendi score of the picks more than the near-copy of e1.
    rows = unit_rows([[1.0, 0.0, 0.0], [0.95, 0.31, 0.0], [0.0, 0.0, 1.0], [0.7, 0.7, 0.0]])
    picks, _ = greedy_logdet(rows, 2, ridge=1.0)
    assert picks.tolist() == [0, 2]
    vendi_after = {i: _vendi(rows[[0, i]]) for i in (1, 2, 3)}
    assert max(vendi_after, key=vendi_after.get) == 2


def test_greedy_ties_go_to_the_lowest_index():
    rows = [[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]
    assert greedy_logdet(rows, 4, ridge=2.0)[0].tolist() == [0, 1, 2, 3]
    assert greedy_logdet(rows[::-1], 4, ridge=2.0)[0].tolist() == [0, 1, 2, 3]


def test_greedy_rescales_rows_and_keeps_float16_ties():
    rows = np.array([[0.6, 0.8], [3.0, 4.0], [0.0, 1.0]])
    picks, gains = greedy_logdet(rows, 1, ridge=1.0)
    assert picks.tolist() == [0] and gains[0] == round(math.log(2), GAIN_DECIMALS)
    stored = unit_rows(np.random.default_rng(0).standard_normal((5, 8))).astype(np.float16)
    assert greedy_logdet(stored, 1, ridge=1.0)[0].tolist() == [0]  # norms differ in float16, ties stay ties


def test_greedy_background_counts_as_picked_rows():
    rng = np.random.default_rng(5)
    earlier = unit_rows(rng.standard_normal((6, 5)))
    rows = unit_rows(rng.standard_normal((10, 5)))
    with_background = greedy_logdet(rows, 4, ridge=1.0, background=earlier.T @ earlier)
    chosen: list[int] = []
    for pick, gain in zip(*with_background):
        before = _logdet(np.vstack([earlier, rows[chosen]]), 1.0)
        increases = [_logdet(np.vstack([earlier, rows[chosen + [i]]]), 1.0) - before for i in range(10)]
        assert gain == pytest.approx(increases[pick], abs=1e-8)
        assert gain == pytest.approx(max(v for i, v in enumerate(increases) if i not in chosen), abs=1e-8)
        chosen.append(int(pick))


def test_greedy_background_steers_away_from_covered_directions():
    rows = [[1.0, 0.0], [0.0, 1.0]]
    assert greedy_logdet(rows, 1, ridge=1.0)[0].tolist() == [0]
    assert greedy_logdet(rows, 1, ridge=1.0, background=np.diag([5.0, 0.0]))[0].tolist() == [1]


def test_greedy_log_prior_adds_to_the_gain():
    rows = [[1.0, 0.0], [0.0, 1.0]]
    picks, gains = greedy_logdet(rows, 2, ridge=1.0, log_prior=[math.log(0.25), 0.0])
    assert picks.tolist() == [1, 0]
    np.testing.assert_allclose(gains, [math.log(2), math.log(2) + math.log(0.25)], atol=1e-9)


def test_greedy_handles_more_picks_than_dimensions_and_none():
    rows = unit_rows(np.random.default_rng(1).standard_normal((40, 3)))
    picks, gains = greedy_logdet(rows, 40, ridge=3.0)
    assert sorted(picks.tolist()) == list(range(40)) and np.isfinite(gains).all()
    picks, gains = greedy_logdet(rows, 0, ridge=3.0)
    assert picks.shape == gains.shape == (0,)


def test_length_prior():
    np.testing.assert_allclose(length_prior([50, 100, 400, 0], 100), [math.log(0.5), 0.0, 0.0, math.log(0.01)])
    assert length_prior([5, 7], None).tolist() == [0.0, 0.0]


# --- groups, keys and counts -----------------------------------------------------------------


def test_candidate_count_end_points_and_formula():
    assert candidate_count(100, 1000, 0.0) == 100
    assert candidate_count(100, 1000, 1.0) == 1000
    assert candidate_count(100, 1000, 0.5) == 182  # 1 / (0.5 / 100 + 0.5 / 1000) = 181.8
    assert candidate_count(0, 1000, 0.5) == 0
    counts = [candidate_count(300, 3000, d / 20) for d in range(21)]
    assert counts == sorted(counts)


def test_split_groups_are_stripes_within_the_cap():
    assert split_groups(7, 3).tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert split_groups(3, 3).tolist() == [0, 0, 0]
    assert split_groups(0, 3).tolist() == []


@pytest.mark.parametrize("sizes", [[5, 5, 5], [1, 10, 2, 7], [30], [3, 0, 4]])
@pytest.mark.parametrize("n_select", [0, 1, 4, 9])
def test_group_pick_counts_cover_n_within_sizes(sizes, n_select):
    total = sum(sizes)
    counts = [group_pick_count(m, total, n_select, 2.0) for m in sizes]
    assert all(0 <= r <= m for r, m in zip(counts, sizes))
    assert sum(counts) >= min(n_select, total)
    fewer = [group_pick_count(m, total, n_select, 1.0) for m in sizes]
    assert all(a <= b for a, b in zip(fewer, counts)) and sum(fewer) >= min(n_select, total)


def test_diversity_keys_follow_the_greedy_inside_each_group():
    vectors, _ = _clustered_pool(25, 6, 3, seed=2)
    config = DiversityConfig(max_group_size=10, min_length=None)
    gram = gram_statistic(vectors)
    keys = diversity_keys(vectors, None, 100, 20, gram, config)
    groups = split_groups(25, 10)
    for group in range(3):
        members = np.flatnonzero(groups == group)
        r = group_pick_count(len(members), 100, 20, config.oversample)
        assert np.isfinite(keys[members]).sum() == r
        weight = config.background * 20 / 100 / 4.0**GRAM_BITS
        background = weight * (gram - gram_statistic(vectors[members]))
        picks, gains = greedy_logdet(vectors[members], r, config.ridge, background)
        np.testing.assert_array_equal(keys[members[picks]], np.minimum.accumulate(gains))


def test_diversity_keys_select_everything_when_candidates_are_n():
    vectors, _ = _clustered_pool(6, 4, 2, seed=0)
    keys = diversity_keys(vectors, None, 10, 10, gram_statistic(vectors), DiversityConfig())
    assert keys.tolist() == [0.0] * 6


def test_top_indices_ties_to_the_lower_index():
    assert top_indices([0.5, 1.0, 0.5, -np.inf, 1.0], 3).tolist() == [0, 1, 4]
    assert top_indices([1.0, 1.0, 1.0], 0).tolist() == []


# --- whole selection -------------------------------------------------------------------------


@pytest.mark.parametrize("n_select", [0, 1, 17, 60, 119, 120])
def test_select_diverse_exact_n(n_select):
    vectors, clusters = _clustered_pool(120, 8, 5, seed=1)
    config = DiversityConfig(max_group_size=15)
    selected = select_diverse(vectors, clusters, n_select, config, lengths=np.full(120, 1000))
    assert len(selected) == n_select == len(set(selected.tolist()))
    assert selected.tolist() == sorted(selected.tolist())
    per_cluster = np.bincount(clusters[selected], minlength=5)
    assert np.all(per_cluster <= np.bincount(clusters, minlength=5))


def test_select_diverse_is_deterministic_and_needs_only_the_set():
    vectors, clusters = _clustered_pool(200, 8, 6, seed=4)
    config = DiversityConfig(max_group_size=25)
    first = select_diverse(vectors, clusters, 30, config)
    assert select_diverse(vectors.copy(), clusters.copy(), 30, config).tolist() == first.tolist()
    # relabelling the clusters changes the order clusters are visited in, not the selection
    relabelled = select_diverse(vectors, (clusters * 7 + 3) % 13, 30, config)
    assert relabelled.tolist() == first.tolist()


def test_pool_gram_is_exact_whatever_the_split():
    vectors, _ = _clustered_pool(300, 16, 4, seed=7)
    whole = gram_statistic(vectors)
    rng = np.random.default_rng(0)
    for _ in range(3):
        order = rng.permutation(300)
        parts = [gram_statistic(vectors[chunk]) for chunk in np.array_split(order, rng.integers(2, 9))]
        merged = parts[0].copy()
        for part in parts[1:]:
            merged += part
        assert np.array_equal(merged, whole)
    assert np.array_equal(whole, np.round(whole))  # integer-valued


def test_d0_is_the_quality_selection_and_d1_ignores_scores():
    vectors, clusters = _clustered_pool(150, 8, 5, seed=8)
    quality = np.random.default_rng(9).gumbel(size=150) + np.linspace(0, 3, 150)
    quality_only = top_indices(quality, 20)
    zero = select_diverse(vectors, clusters, 20, DiversityConfig(diversity=0.0), quality_keys=quality)
    assert zero.tolist() == quality_only.tolist()
    one = select_diverse(vectors, clusters, 20, DiversityConfig(diversity=1.0), quality_keys=quality)
    other = select_diverse(vectors, clusters, 20, DiversityConfig(diversity=1.0), quality_keys=-quality)
    no_keys = select_diverse(vectors, clusters, 20, DiversityConfig(diversity=1.0))
    assert one.tolist() == other.tolist() == no_keys.tolist()


def test_between_the_end_points_only_quality_candidates_are_selected():
    vectors, clusters = _clustered_pool(150, 8, 5, seed=10)
    quality = np.random.default_rng(11).standard_normal(150)
    for diversity in (0.2, 0.5, 0.8):
        config = DiversityConfig(diversity=diversity)
        candidates = set(top_indices(quality, candidate_count(20, 150, diversity)).tolist())
        selected = select_diverse(vectors, clusters, 20, config, quality_keys=quality)
        assert len(selected) == 20 and set(selected.tolist()) <= candidates


def test_diversity_beats_duplicates_and_short_documents():
    # 10 copies of each of 3 directions plus 3 lone directions: 6 picks take one of each.
    basis = np.eye(6)
    vectors = np.vstack([np.repeat(basis[:3], 10, axis=0), basis[3:]])
    clusters = np.zeros(33, dtype=np.int64)
    selected = select_diverse(vectors, clusters, 6, DiversityConfig(background=0.0))
    assert sorted(np.argmax(vectors[selected], axis=1).tolist()) == list(range(6))
    lengths = np.full(33, 1000)
    lengths[30] = 10  # a very short document in a lone direction gives way
    selected = select_diverse(vectors, clusters, 6, DiversityConfig(background=0.0), lengths=lengths)
    assert 30 not in selected.tolist()


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [("diversity", 1.5), ("diversity", -0.1), ("ridge", 0.0), ("background", -1.0), ("oversample", 0.5),
     ("max_group_size", 0), ("min_length", 0), ("diversity", float("nan")), ("ridge", True)],
)
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=f"{field}="):
        DiversityConfig(**{field: value})


def test_select_diverse_rejects_bad_input():
    vectors, clusters = _clustered_pool(10, 4, 2, seed=0)
    config = DiversityConfig()
    with pytest.raises(ValueError, match="n_select=11"):
        select_diverse(vectors, clusters, 11, config)
    with pytest.raises(ValueError, match="clusters have shape"):
        select_diverse(vectors, clusters[:9], 3, config)
    with pytest.raises(ValueError, match="quality_keys"):
        select_diverse(vectors, clusters, 3, config, quality_keys=np.full(10, np.nan))
    with pytest.raises(ValueError, match="config="):
        select_diverse(vectors, clusters, 3, {"diversity": 0.5})
    with pytest.raises(ValueError, match="vectors have shape"):
        select_diverse(vectors[:, :, None], clusters, 3, config)


def test_all_subsets_brute_force_small_pool():
    # With one group and no background the greedy's N picks reach at least (1 - 1/e) of the best
    # log-determinant of any N-subset (Nemhauser et al.); on this tiny pool check it directly.
    rows = unit_rows(np.random.default_rng(12).standard_normal((9, 3)))
    picks, _ = greedy_logdet(rows, 4, ridge=1.0)
    best = max(_logdet(rows[list(s)], 1.0) for s in itertools.combinations(range(9), 4))
    assert _logdet(rows[picks], 1.0) >= (1 - 1 / math.e) * best
