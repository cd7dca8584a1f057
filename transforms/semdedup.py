"""Semantic deduplication within k-means clusters.

Semantic deduplication (Abbas et al. 2023, "SemDeDup: Data-efficient learning at web-scale
through semantic deduplication"): within a cluster, a record is a duplicate when its cosine
similarity to an earlier kept record exceeds ``1 - eps``. Records are taken in id order and
compared only with kept ones, so the smallest id of a group of near-copies is kept and every
duplicate names a kept record (``duplicate_of``, the most similar; ties to the smaller id).
Deviation: SemDeDup orders by distance to the centroid and also drops a record similar to an
already-dropped one. Memory: one group's records and (m, d) float32 embeddings, plus
``SIMILARITY_BLOCK`` floats of similarities; clusters above ``max_group_size`` records are
split into about ``size / max_group_size`` groups by ``crc32(id)``, which misses the duplicates
that fall in different groups.
"""

import dataclasses
import zlib

import apache_beam as beam
import numpy as np

from winnow.transforms.validation import check_int, check_number

NAMESPACE = "winnow.semdedup"
MAX_GROUP_SIZE = 20_000
SIMILARITY_BLOCK = 1 << 22  # float32 similarities held at once (16 MB)


@dataclasses.dataclass(frozen=True)
class SemDedupConfig:
    """SemDeDup settings.

    Attributes:
        eps: similarity margin, 0 < eps < 1: cosine > 1 - eps is a duplicate (SemDeDup uses 0.01
            to 0.1 on CLIP embeddings).
        max_group_size: clusters larger than this are split by ``crc32(id)`` into groups of
            about this size (memory bound per worker).
    """

    eps: float = 0.05
    max_group_size: int = MAX_GROUP_SIZE

    def __post_init__(self):
        check_number("eps", self.eps, 0.0, 1.0, open_low=True, open_high=True)
        check_int("max_group_size", self.max_group_size, 1)


def semantic_duplicates(X: np.ndarray, eps: float) -> np.ndarray:
    """SemDeDup within one group: (m,) int64, the kept row each duplicate row points to, -1 if kept.

    ``X`` (m, d) unit rows in id order. Row j is a duplicate when ``X_j . X_i > 1 - eps`` for
    some kept i < j; it points to the most similar such i (ties to the smaller i). Similarities
    are computed in blocks of rows (at most ``SIMILARITY_BLOCK`` values); the Python loop runs
    only over rows with a candidate.
    """
    m = len(X)
    kept = np.ones(m, dtype=bool)
    duplicate_of = np.full(m, -1, dtype=np.int64)
    block = max(1, SIMILARITY_BLOCK // max(m, 1))
    for start in range(0, m, block):
        stop = min(m, start + block)
        similarity = X[start:stop] @ X[:stop].T  # (rows, stop)
        earlier = np.arange(stop)[np.newaxis, :] < np.arange(start, stop)[:, np.newaxis]
        hits = (similarity > 1.0 - eps) & earlier
        for row in np.flatnonzero(hits.any(axis=1)):
            candidates = np.flatnonzero(hits[row] & kept[:stop])
            if candidates.size:
                duplicate_of[start + row] = candidates[np.argmax(similarity[row, candidates])]
                kept[start + row] = False
    return duplicate_of


def group_parts(cluster_size: int, max_group_size: int) -> int:
    """Groups a cluster of ``cluster_size`` records is split into: ``ceil(size / max_group_size)``, >= 1."""
    return max(1, -(-cluster_size // max_group_size))


def group_part(record_id: str, parts: int) -> int:
    """The group of a record within its cluster: ``crc32(id) mod parts``."""
    return zlib.crc32(record_id.encode("utf-8")) % parts


# --- Beam wrappers ---------------------------------------------------------------------------


class DedupStatsCombineFn(beam.CombineFn):
    """Per-group ``(records, duplicates)`` -> ``(groups, records, duplicates, largest group)``."""

    def create_accumulator(self):
        return 0, 0, 0, 0

    def add_input(self, accumulator, group):
        groups, records, duplicates, largest = accumulator
        return groups + 1, records + group[0], duplicates + group[1], max(largest, group[0])

    def merge_accumulators(self, accumulators):
        groups, records, duplicates, largest = zip(*accumulators)
        return sum(groups), sum(records), sum(duplicates), max(largest)

    def extract_output(self, accumulator):
        return accumulator
