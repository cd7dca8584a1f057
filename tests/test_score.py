"""Tests for pipelines/score.py's pure helpers."""

import numpy as np

from winnow.pipelines import score
from winnow.transforms import seeded


def test_the_k_means_sample_is_the_smallest_ranks_when_they_are_all_negative():
    # ranks are signed: a sample of 10 among 10,000 records has only negative ranks
    ids = [f"doc{i}" for i in range(10_000)]
    ranks = seeded.sample_rank(ids, 5)
    largest = int(np.sort(ranks)[9])
    assert largest < 0
    assert score.within_sample(ranks, largest).tolist() == sorted(np.argsort(ranks)[:10].tolist())
    assert len(score.within_sample(ranks, int(ranks.max()))) == len(ids)
