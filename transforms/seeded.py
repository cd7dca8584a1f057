"""Seeded hashing: every random choice winnow makes, as a pure function of (seed, id).

A random choice made from a hash of the record id instead of a random generator gives the same
answer on every worker, in any input order and bundle split, and on a rerun: the determinism the
whole pipeline promises (same ``--seed``, same output on any runner and worker count).

    h(seed, id)  = blake2b-64(utf8(f"{seed}:{id}"), person)          (big-endian integer)
    uniform      = (h + 0.5) / 2**64                                  in (0, 1), never 0 or 1
    gumbel       = -log(-log(uniform))                                standard Gumbel noise
    rank         = h with person "winnow-sample", minus 2**63          int64; smallest ranks = a sample
    row key      = splitmix64(h(seed, stream) with person "winnow-rows" + i)   rows i of one stream

``person`` separates the streams: a record's selection key and its place in a fitting sample are
independent draws even under one seed. Ids are formatted with ``str``, so the integer id 7 and
the string id "7" hash alike (an input's ids all share one type).

Gumbel top-k: ``argtop_k(log w_i + G_i)`` with i.i.d. standard Gumbel ``G_i`` samples k items
without replacement with probability proportional to ``w_i`` (Kool, van Hoof & Welling 2019,
"Stochastic Beams and Where to Find Them"), which is DSIR's importance resampling.
"""

import hashlib
from collections.abc import Iterable

import numpy as np

from winnow.transforms.text import splitmix64

SELECTION_PERSON = b""
SAMPLE_PERSON = b"winnow-sample"
ROW_PERSON = b"winnow-rows"


def hash64(ids: Iterable, seed: int | str, person: bytes = SELECTION_PERSON) -> np.ndarray:
    """(n,) uint64 ``blake2b-64(f"{seed}:{id}")`` of each id, with the given personalisation.

    The state after ``f"{seed}:"`` is hashed once and copied for each id (a third less time than a
    new hasher per id; the same digests).
    """
    prefixed = hashlib.blake2b(f"{seed}:".encode("utf-8", "surrogatepass"), digest_size=8, person=person)
    digests = []
    for doc_id in ids:
        state = prefixed.copy()
        state.update(f"{doc_id}".encode("utf-8", "surrogatepass"))
        digests.append(state.digest())
    return np.frombuffer(b"".join(digests), dtype=">u8").astype(np.uint64)


def uniform(ids: Iterable, seed: int | str) -> np.ndarray:
    """(n,) float64 in (0, 1): ``(h + 0.5) / 2**64``; the key of random selection."""
    return unit_interval(hash64(ids, seed))


def unit_interval(hashes: np.ndarray) -> np.ndarray:
    """(n,) float64 in (0, 1): ``(h + 0.5) / 2**64`` of uint64 hashes."""
    # float64 rounds h to 53 bits; + 0.5 before the division keeps 0 out, the cap keeps 1 out.
    return np.minimum((np.asarray(hashes, np.uint64).astype(np.float64) + 0.5) / 2.0**64, 1.0 - 2.0**-53)


def gumbel(ids: Iterable, seed: int | str) -> np.ndarray:
    """(n,) float64 standard Gumbel noise ``-log(-log u)``, u = ``uniform(ids, seed)``."""
    return -np.log(-np.log(uniform(ids, seed)))


def sample_rank(ids: Iterable, seed: int | str) -> np.ndarray:
    """(n,) int64 rank of each id in a seeded sample: the records with the smallest ranks form it.

    The hash shifted by -2**63 (order kept), so a rank fits a signed 64-bit integer everywhere.
    """
    return (hash64(ids, seed, SAMPLE_PERSON) ^ np.uint64(1 << 63)).view(np.int64)


def row_keys(seed: int | str, stream: str, rows: np.ndarray) -> np.ndarray:
    """(n,) uint64 keys of the rows ``i`` of one stream (e.g. a unit's rows): ``splitmix64(h(seed, stream) + i)``.

    One hash per stream, then numpy: for choices among rows (the report's sample documents), not records' ids.
    """
    start = hash64([stream], seed, ROW_PERSON)[0]
    with np.errstate(over="ignore"):
        return splitmix64(start + np.asarray(rows, np.int64).astype(np.uint64))


def round_seed(seed: int, round_index: int) -> int | str:
    """The seed of round ``t`` of a selection in rounds: ``seed`` for round 0, else ``f"{seed}/{t}"``."""
    return seed if round_index == 0 else f"{seed}/{round_index}"
