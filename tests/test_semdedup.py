"""Tests for transforms/semdedup.py: semantic duplicates within a group, the crc32 split of big clusters,
the config and DedupStatsCombineFn."""

import itertools
import math
import zlib

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to

from tests.helpers import local_pipeline
from winnow.transforms import semdedup
from winnow.transforms.semdedup import DedupStatsCombineFn, SemDedupConfig, group_part, group_parts, semantic_duplicates


def _unit(X) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def _brute_force(X: np.ndarray, eps: float) -> list[int]:
    """The docstring's rule, one row at a time: the most similar earlier kept row above 1 - eps, else -1."""
    out, kept = [], []
    for j in range(len(X)):
        similar = [(float(X[j] @ X[i]), -i) for i in kept if X[j] @ X[i] > 1 - eps]
        if similar:
            out.append(-max(similar)[1])
        else:
            out.append(-1)
            kept.append(j)
    return out


def test_config_defaults_and_validation():
    assert SemDedupConfig() == SemDedupConfig(eps=0.05, max_group_size=semdedup.MAX_GROUP_SIZE)
    for eps in (0.0, 1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="eps="):
            SemDedupConfig(eps=eps)
    with pytest.raises(ValueError, match="max_group_size=0"):
        SemDedupConfig(max_group_size=0)


def test_semantic_duplicates_keep_the_first_and_point_to_a_kept_record():
    a = np.array([1.0, 0.0, 0.0])
    a_close = np.array([0.999, 0.0447, 0.0])  # cos(a, a_close) ~ 0.999
    b = np.array([0.0, 1.0, 0.0])
    X = _unit(np.vstack([a, b, a_close, a]))
    assert semantic_duplicates(X, 0.01).tolist() == [-1, -1, 0, 0]
    assert semantic_duplicates(X, 1e-6).tolist() == [-1, -1, -1, 0]  # only the identical one
    assert semantic_duplicates(X, 0.01).dtype == np.int64


def test_semantic_duplicates_compare_with_kept_records_only():
    angles = np.radians([0.0, 20.0, 40.0])  # neighbours 20 deg apart, the ends 40 deg apart
    X = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    eps = 1 - math.cos(math.radians(30))  # duplicates below 30 degrees
    assert semantic_duplicates(X, eps).tolist() == [-1, 0, -1]  # 40 deg from the kept one: kept


def test_a_duplicate_points_to_the_most_similar_kept_record_ties_to_the_smaller():
    angles = np.radians([0.0, 50.0, 24.0, 26.0])  # rows 0 and 1 kept; 2 is nearer 0, 3 nearer 1
    X = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    eps = 1 - math.cos(math.radians(30))
    assert semantic_duplicates(X, eps).tolist() == [-1, -1, 0, 1]
    # an exact tie: (0.6, 0.6, 0.53) has cosine exactly 0.6 with both kept rows
    tie = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.6, 0.6, math.sqrt(1 - 0.72)]])
    assert semantic_duplicates(tie, 0.5).tolist() == [-1, -1, 0]


def test_semantic_duplicates_of_no_rows_and_one_row():
    assert semantic_duplicates(np.zeros((0, 3)), 0.1).tolist() == []
    assert semantic_duplicates(_unit([[1.0, 2.0]]), 0.1).tolist() == [-1]


def test_semantic_duplicates_equal_the_rule_and_are_the_same_in_small_blocks(monkeypatch):
    rng = np.random.default_rng(5)
    base = rng.standard_normal((60, 16))
    X = _unit(np.vstack([base, base[:25] + 0.01 * rng.standard_normal((25, 16))])[rng.permutation(85)])
    whole = semantic_duplicates(X, 0.01)
    assert (whole >= 0).sum() == 25
    assert whole.tolist() == _brute_force(X, 0.01)
    monkeypatch.setattr(semdedup, "SIMILARITY_BLOCK", 85 * 7)  # blocks of 7 rows
    assert semantic_duplicates(X, 0.01).tolist() == whole.tolist()


def test_group_parts_and_crc32_part():
    assert [group_parts(s, 10) for s in (0, 1, 10, 11, 25)] == [1, 1, 1, 2, 3]
    assert group_part("doc-1", 1) == 0
    assert group_part("doc-1", 7) == zlib.crc32(b"doc-1") % 7
    assert group_part("é", 5) == zlib.crc32("é".encode("utf-8")) % 5
    parts = np.bincount([group_part(f"r{i}", 4) for i in range(4000)], minlength=4)
    assert np.abs(parts - 1000).max() < 150  # an even split (binomial sd 27)


def test_dedup_stats_combine_fn_four_methods_any_merge_order():
    fn = DedupStatsCombineFn()
    assert fn.extract_output(fn.create_accumulator()) == (0, 0, 0, 0)
    assert fn.extract_output(fn.merge_accumulators([fn.create_accumulator()])) == (0, 0, 0, 0)
    left = fn.add_input(fn.add_input(fn.create_accumulator(), (5, 1)), (9, 0))
    right = fn.add_input(fn.create_accumulator(), (3, 2))
    for order in itertools.permutations([left, right, fn.create_accumulator()]):
        assert fn.extract_output(fn.merge_accumulators(list(order))) == (3, 17, 3, 9)  # groups, records, duplicates, largest


def test_dedup_stats_combine_globally_in_a_pipeline():
    groups = [(5, 1), (9, 0), (3, 2), (1, 0)]
    with local_pipeline() as p:
        stats = p | beam.Create(groups) | beam.CombineGlobally(DedupStatsCombineFn())
        none = p | "None" >> beam.Create([]) | "CombineNone" >> beam.CombineGlobally(DedupStatsCombineFn())
        assert_that(stats, equal_to([(4, 18, 3, 9)]), label="stats")
        assert_that(none, equal_to([(0, 0, 0, 0)]), label="none")
