"""Selecting exactly N records per group by highest key, without a global sort or collect.

Every method reduces to this: each eligible record carries a float ``key`` and an int ``group``
(0 when there are no groups); group ``g`` gets a quota ``q_g`` from the group sizes; the
selection is the first ``q_g`` records of each group in the order *key descending, then id
ascending*. Random selection is the same with keys drawn from a hash of ``(seed, id)``, and DSIR's
importance resampling is Gumbel top-k: ``key = log w + G`` with ``G = -log(-log u)``, which
samples without replacement with probability proportional to ``w`` (Kool et al. 2019).

The selection is a radix select over the keys' bits (64-bit order-preserving image of the
float), ``N_PASSES`` passes of ``DIGIT_BITS`` bits each:

1. count the eligible records per group; ``quota_fn(counts)`` gives the quotas;
2. each pass histograms the next digit of the records still tied with the boundary prefix and
   keeps the digit that holds the ``r``-th largest key (a fixed-size ``2**DIGIT_BITS`` histogram
   per group, combined across workers);
3. the few records whose top ``N_PASSES * DIGIT_BITS`` bits equal the boundary are gathered per
   group and ordered by (key desc, id asc): the ``r``-th is the boundary ``(bits*, id*)``;
4. a record is selected iff ``bits > bits*`` or ``bits == bits* and id <= id*``.

Step 3 is the only gather: its size is the number of keys equal to the boundary in their top 48
bits, a handful unless the keys themselves are massively tied.

``SelectInRounds`` chains such selections: round t takes its share of N, by its own key, from the
records no earlier round took (DSIR's ``separate_targets``: one round per target dataset).
"""

import dataclasses
import hashlib
import math
import struct

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from winnow.transforms import schema

NAMESPACE = "winnow.select"
KEY = "__winnow_key"
GROUP = "__winnow_group"
ROUND_KEYS = "__winnow_round_keys"  # SelectInRounds: the (T,) keys of an eligible record, one per round
DIGIT_BITS = 16
N_PASSES = 3
_SIGN = np.uint64(1 << 63)

# Boundary states per group: every record in, none in, still searching, or the exact boundary.
ALL, NONE, SEARCH, FOUND = "all", "none", "search", "found"


# --- keys --------------------------------------------------------------------------------


def uniform_from_id(doc_id: str, seed: int) -> float:
    """A float in (0, 1): ``(blake2b_64(f"{seed}:{id}") + 0.5) / 2**64``, the same on every worker."""
    digest = hashlib.blake2b(f"{seed}:{doc_id}".encode("utf-8"), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / 2.0**64


def hash_uniform(ids: list[str], seed: int) -> np.ndarray:
    """(len(ids),) float64: ``uniform_from_id`` of each id."""
    return np.fromiter((uniform_from_id(doc_id, seed) for doc_id in ids), dtype=np.float64, count=len(ids))


def round_seed(seed: int, round_index: int) -> int | str:
    """The seed of round ``t``'s random keys: ``seed`` for round 0, else ``f"{seed}/{t}"`` (independent noise)."""
    return seed if round_index == 0 else f"{seed}/{round_index}"


def gumbel_from_id(doc_id: str, seed: int) -> float:
    """Standard Gumbel noise ``-log(-log u)``, u from ``uniform_from_id``."""
    return -math.log(-math.log(uniform_from_id(doc_id, seed)))


def gumbel_noise(ids: list[str], seed: int) -> np.ndarray:
    """(len(ids),) float64: ``gumbel_from_id`` of each id."""
    return -np.log(-np.log(hash_uniform(ids, seed)))


def order_bits(keys: np.ndarray) -> np.ndarray:
    """uint64 image of float64 keys that preserves order (``a < b`` iff ``bits(a) < bits(b)``).

    Non-negative floats get the sign bit set; negative floats have all bits flipped. NaN keys
    rank lowest.
    """
    keys = np.where(np.isnan(keys), -np.inf, np.asarray(keys, dtype=np.float64))
    raw = keys.view(np.uint64)
    return np.where(raw & _SIGN, ~raw, raw | _SIGN)


def key_bits(key: float) -> int:
    """``order_bits`` of one key, in plain Python (per-record paths avoid numpy's call overhead)."""
    if key != key:  # NaN
        key = -math.inf
    raw = struct.unpack("<Q", struct.pack("<d", key))[0]
    return raw ^ 0xFFFF_FFFF_FFFF_FFFF if raw >> 63 else raw | (1 << 63)


def digits(bits: np.ndarray, pass_index: int) -> np.ndarray:
    """The ``pass_index``-th ``DIGIT_BITS``-bit digit of each value, most significant first."""
    shift = np.uint64(64 - DIGIT_BITS * (pass_index + 1))
    return ((bits >> shift) & np.uint64((1 << DIGIT_BITS) - 1)).astype(np.int64)


def prefixes(bits: np.ndarray, n_digits: int) -> np.ndarray:
    """The top ``n_digits`` digits of each value (0 when ``n_digits == 0``)."""
    if n_digits == 0:
        return np.zeros(len(bits), dtype=np.uint64)
    return bits >> np.uint64(64 - DIGIT_BITS * n_digits)


# --- quotas and boundary states ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TotalQuota:
    """Quota for a single group (group 0): exactly ``n`` records, or ``round(fraction * count)``.

    Asking for more records than the group holds selects the whole group.
    """

    n: int | None = None
    fraction: float | None = None

    def __post_init__(self):
        if (self.n is None) == (self.fraction is None):
            raise ValueError(f"give exactly one of n={self.n} and fraction={self.fraction}")
        if self.n is not None and self.n < 0:
            raise ValueError(f"n={self.n}; expected >= 0")
        if self.fraction is not None and not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"fraction={self.fraction}; expected 0 <= fraction <= 1")

    def total(self, pool: int) -> int:
        """The number of records to select from a pool of ``pool`` eligible records."""
        wanted = self.n if self.n is not None else math.floor(self.fraction * pool + 0.5)
        return min(wanted, pool)

    def __call__(self, counts: dict[int, int]) -> dict[int, int]:
        return {group: self.total(count) for group, count in counts.items()}


def split_quota(n: int, shares: list[float]) -> list[int]:
    """``n`` split by ``shares`` (summing to 1): ``floor(n * share_t)``, the remainder to the last.

    The reference DSIR's split of the selection over target datasets (``separate_targets``).
    The shares are used as given: normalising them again could move an exact ``n * share``
    just below an integer and so change the floor.
    """
    quotas = [int(n * share) for share in shares]
    quotas[-1] += n - sum(quotas)
    return quotas


@dataclasses.dataclass(frozen=True)
class RoundQuota:
    """Quota of round ``round_index`` of ``SelectInRounds`` (a single group, group 0).

    Called as ``quota_fn(counts, (pool, shares))``: ``split_quota(total.total(pool), shares)[t]``,
    ``pool`` the eligible records before the first round (None in round 0: its own count).
    Earlier rounds took only their own quotas and ``total.total(pool) <= pool``, so enough
    records always remain.
    """

    total: TotalQuota
    round_index: int

    def __call__(self, counts: dict[int, int], pool_and_shares: tuple[int | None, list[float]]) -> dict[int, int]:
        pool, shares = pool_and_shares
        if pool is None:
            pool = sum(counts.values())
        quota = split_quota(self.total.total(pool), shares)[self.round_index]
        return {group: min(quota, count) for group, count in counts.items()}


def initial_states(counts: dict[int, int], quotas: dict[int, int]) -> dict[int, tuple]:
    """Per group: ``(ALL,)``, ``(NONE,)`` or ``(SEARCH, prefix=0, rank=quota)``."""
    states = {}
    for group, count in counts.items():
        quota = quotas.get(group, 0)
        if quota >= count:
            states[group] = (ALL,)
        elif quota <= 0:
            states[group] = (NONE,)
        else:
            states[group] = (SEARCH, 0, quota)
    return states


def narrow(state: tuple, histogram: np.ndarray) -> tuple:
    """Extend a SEARCH prefix by the digit holding the ``rank``-th largest key.

    ``histogram`` (2**DIGIT_BITS,) int64 counts the next digit of the records tied with the
    prefix. The rank becomes the rank within that digit.
    """
    _, prefix, rank = state
    from_top = np.cumsum(histogram[::-1])
    index = int(np.searchsorted(from_top, rank))  # first position where the count reaches rank
    digit = len(histogram) - 1 - index
    above = int(from_top[index - 1]) if index > 0 else 0
    return (SEARCH, (prefix << DIGIT_BITS) | digit, rank - above)


def boundary_from_ties(candidates: list[tuple[int, str]], rank: int) -> tuple:
    """``(FOUND, bits*, id*)``: the ``rank``-th of the tied candidates in (bits desc, id asc) order."""
    ordered = sorted(candidates, key=lambda pair: (-pair[0], pair[1]))
    bits, doc_id = ordered[rank - 1]
    return (FOUND, bits, doc_id)


def is_selected(state: tuple, bits: int, doc_id: str) -> bool:
    """Whether a record with these key bits and id is within its group's boundary."""
    kind = state[0]
    if kind == ALL:
        return True
    if kind == NONE:
        return False
    _, boundary_bits, boundary_id = state
    return bits > boundary_bits or (bits == boundary_bits and doc_id <= boundary_id)


# --- Beam wrappers -----------------------------------------------------------------------


class _KeyBatch:
    """A batch of eligible records' (group, key bits, id), as arrays."""

    def __init__(self, triples: list[tuple[int, float, str]]):
        self.groups = np.array([t[0] for t in triples], dtype=np.int64)
        self.bits = order_bits(np.array([t[1] for t in triples], dtype=np.float64))
        self.ids = [t[2] for t in triples]

    def searching(self, states: dict, n_digits: int) -> dict[int, np.ndarray]:
        """Per group still searching, the mask of this batch's records tied with its prefix."""
        masks = {}
        record_prefixes = prefixes(self.bits, n_digits)
        for group in np.unique(self.groups).tolist():
            state = states.get(group)
            if state is not None and state[0] == SEARCH:
                masks[group] = (self.groups == group) & (record_prefixes == np.uint64(state[1]))
        return masks


class CountPerGroupCombineFn(beam.CombineFn):
    """Key batches -> ``{group: number of eligible records}`` (an empty dict for no input)."""

    def create_accumulator(self):
        return {}

    def add_input(self, counts, batch):
        groups, sizes = np.unique(batch.groups, return_counts=True)
        for group, size in zip(groups.tolist(), sizes.tolist()):
            counts[group] = counts.get(group, 0) + size
        return counts

    def merge_accumulators(self, accumulators):
        merged = {}
        for counts in accumulators:
            for group, size in counts.items():
                merged[group] = merged.get(group, 0) + size
        return merged

    def extract_output(self, counts):
        return counts


class HistogramCombineFn(beam.CombineFn):
    """Digit arrays -> (2**DIGIT_BITS,) int64 histogram; per key with ``CombinePerKey``."""

    def create_accumulator(self):
        return np.zeros(1 << DIGIT_BITS, dtype=np.int64)

    def add_input(self, histogram, digit_values):
        return histogram + np.bincount(digit_values, minlength=1 << DIGIT_BITS)

    def merge_accumulators(self, accumulators):
        return np.sum(list(accumulators), axis=0)

    def extract_output(self, histogram):
        return histogram


def _digit_values(batch: _KeyBatch, states: dict, pass_index: int):
    for group, mask in batch.searching(states, pass_index).items():
        if mask.any():
            yield group, digits(batch.bits[mask], pass_index)


def _tied_candidates(batch: _KeyBatch, states: dict):
    for group, mask in batch.searching(states, N_PASSES).items():
        for index in np.flatnonzero(mask).tolist():
            yield group, (int(batch.bits[index]), batch.ids[index])


def _narrow_all(states: dict, histograms: dict) -> dict:
    return {g: narrow(s, histograms[g]) if s[0] == SEARCH else s for g, s in states.items()}


def _resolve_all(states: dict, ties: dict) -> dict:
    return {g: boundary_from_ties(ties[g], s[2]) if s[0] == SEARCH else s for g, s in states.items()}


class _DecideFn(beam.DoFn):
    """Mark each record selected, or drop it as ``not_selected``; strip the private key fields.

    Counts ``not_selected`` only when ``final`` (no later round can still select the record).
    """

    def __init__(self, final: bool):
        self._final = final

    def setup(self):
        self._selected = Metrics.counter(NAMESPACE, "selected")
        self._not_selected = Metrics.counter(NAMESPACE, schema.NOT_SELECTED)

    def process(self, record, boundaries):
        key, group = record.get(KEY), record.get(GROUP)
        record = {name: value for name, value in record.items() if name not in (KEY, GROUP)}
        if not schema.is_eligible(record):
            yield {**record, schema.SELECTED: False}
            return
        bits = key_bits(key)
        if is_selected(boundaries[group], bits, record[schema.ID]):
            self._selected.inc()
            yield {**record, schema.SELECTED: True}
        else:
            if self._final:
                self._not_selected.inc()
            yield {**schema.drop(record, schema.NOT_SELECTED), schema.SELECTED: False}


def _key_triple(record: dict) -> tuple[int, float, str]:
    return record[GROUP], record[KEY], record[schema.ID]


class SelectTop(beam.PTransform):
    """Select the first ``quota_fn(counts)[g]`` eligible records of each group ``g`` by (key desc, id asc).

    Input records carry ``KEY`` (float) and ``GROUP`` (int) when eligible. Output: every record
    once, with ``selected`` (bool), non-selected eligible records dropped as ``not_selected``,
    and the private fields removed; plus ``stats`` ``{"pool": {g: count}, "quota": {g: quota}}``.

    Args:
        quota_fn: picklable callable ``{group: eligible count} -> {group: quota}``, e.g.
            ``TotalQuota(n=1000)``; with ``quota_input``, called as ``quota_fn(counts, value)``.
        quota_input: optional singleton PCollection whose value the quotas also depend on (e.g.
            per-cluster statistics).
        final: False for a round of ``SelectInRounds`` that a later round follows; the records
            it drops are then not counted ``not_selected`` (the later round may select them).
    """

    def __init__(self, quota_fn, quota_input: beam.PCollection | None = None, final: bool = True):
        super().__init__()
        self._quota_fn = quota_fn
        self._quota_input = quota_input
        self._final = final

    def expand(self, records):
        # (group, key, id) triples in numpy batches: every pass below is vectorized per batch.
        batches = (
            records
            | "Eligible" >> beam.Filter(schema.is_eligible)
            | "KeyTriples" >> beam.Map(_key_triple)
            | "BatchKeys" >> beam.BatchElements(min_batch_size=256, max_batch_size=8192)
            | "ToKeyBatch" >> beam.Map(_KeyBatch)
        )
        counts = batches | "CountPerGroup" >> beam.CombineGlobally(CountPerGroupCombineFn())
        extra = [] if self._quota_input is None else [beam.pvalue.AsSingleton(self._quota_input)]
        quotas = counts | "Quotas" >> beam.Map(self._quota_fn, *extra)
        states = counts | "InitialStates" >> beam.Map(initial_states, beam.pvalue.AsSingleton(quotas))
        for pass_index in range(N_PASSES):
            histograms = (
                batches
                | f"Digits{pass_index}" >> beam.FlatMap(_digit_values, beam.pvalue.AsSingleton(states), pass_index)
                | f"Histogram{pass_index}" >> beam.CombinePerKey(HistogramCombineFn())
            )
            states = states | f"Narrow{pass_index}" >> beam.Map(_narrow_all, beam.pvalue.AsDict(histograms))
        ties = (
            batches
            | "TiedCandidates" >> beam.FlatMap(_tied_candidates, beam.pvalue.AsSingleton(states))
            | "GroupTies" >> beam.GroupByKey()
            | "TiesToList" >> beam.MapTuple(lambda group, pairs: (group, list(pairs)))
        )
        boundaries = states | "Resolve" >> beam.Map(_resolve_all, beam.pvalue.AsDict(ties))
        decided = records | "Decide" >> beam.ParDo(_DecideFn(self._final), beam.pvalue.AsSingleton(boundaries))
        stats = counts | "Stats" >> beam.Map(lambda pool, quota: {"pool": pool, "quota": quota}, beam.pvalue.AsSingleton(quotas))
        return {"records": decided, "stats": stats}


def _round_keyed(record: dict, round_index: int) -> dict:
    """An eligible record ready for round ``t``: ``KEY`` = its t-th round key, group 0."""
    if not schema.is_eligible(record):
        return record
    return {**record, KEY: record[ROUND_KEYS][round_index], GROUP: 0}


def _is_reopened(record: dict, _n_partitions: int) -> int:
    """Partition after a round: 1 back into the pool (not selected in this round), 0 decided."""
    return int(record.get(schema.DROP_REASON) == schema.NOT_SELECTED)


def _reopened(record: dict) -> dict:
    return {name: value for name, value in record.items() if name not in (schema.SELECTED, schema.DROP_REASON)}


def _finished(record: dict, round_index: int, round_column: str) -> dict:
    """The record without its round keys; a record selected in this round gets ``round_column = t``."""
    out = {name: value for name, value in record.items() if name != ROUND_KEYS}
    if out[schema.SELECTED]:
        out[round_column] = round_index
    return out


def _first_round_inputs(shares: list[float]) -> tuple[None, list[float]]:
    return None, list(shares)


def _later_round_inputs(first_round_stats: dict, shares: list[float]) -> tuple[int, list[float]]:
    return sum(first_round_stats["pool"].values()), list(shares)


def _rounds_stats(first: dict, *later) -> dict:
    """``{"pool": first round's pool, "quota": summed quotas, "rounds": [each round's stats]}``."""
    rounds = [first, *later]
    quota = {}
    for stats in rounds:
        for group, size in stats["quota"].items():
            quota[group] = quota.get(group, 0) + size
    return {"pool": first["pool"], "quota": quota, "rounds": rounds}


class SelectInRounds(beam.PTransform):
    """Select ``total`` records in ``n_rounds`` rounds, round ``t`` by the t-th key, from what is left.

    Input: eligible records carry ``ROUND_KEYS``, a list of ``n_rounds`` floats. Round t selects
    ``split_quota(total.total(pool), shares)[t]`` records by (``ROUND_KEYS[t]`` desc, id asc) among
    the eligible records no earlier round selected, ``pool`` the eligible count before round 0 —
    the reference DSIR's ``resample`` with ``separate_targets``. Output as ``SelectTop``: every
    record once with ``selected``, the rest of the pool dropped ``not_selected``, private fields
    removed; a record selected in round t also gets ``round_column = t``. ``stats`` as
    ``SelectTop``'s (pool, summed quotas) plus ``rounds``, each round's own.

    Args:
        total: the overall quota, e.g. ``TotalQuota(n=1000)``.
        n_rounds: T >= 1.
        shares: singleton PCollection, T non-negative shares of the total, summing to 1.
        round_column: the output column naming the round that selected a record.
    """

    def __init__(self, total: TotalQuota, n_rounds: int, shares: beam.PCollection, round_column: str):
        super().__init__()
        if n_rounds < 1:
            raise ValueError(f"n_rounds={n_rounds}; expected >= 1")
        self._total, self._n_rounds, self._shares, self._round_column = total, n_rounds, shares, round_column

    def expand(self, records):
        quota_input = self._shares | "FirstRoundInputs" >> beam.Map(_first_round_inputs)
        decided, round_stats, remaining = [], [], records
        for t in range(self._n_rounds):
            chosen = (
                remaining
                | f"Round{t}Keys" >> beam.Map(_round_keyed, t)
                | f"Round{t}" >> SelectTop(RoundQuota(self._total, t), quota_input, final=t == self._n_rounds - 1)
            )
            round_stats.append(chosen["stats"])
            if t == 0 and self._n_rounds > 1:  # later rounds split the total of round 0's pool
                quota_input = chosen["stats"] | "LaterRoundInputs" >> beam.Map(_later_round_inputs, beam.pvalue.AsSingleton(self._shares))
            if t == self._n_rounds - 1:
                done = chosen["records"]
            else:
                done, reopened = chosen["records"] | f"Round{t}Outcome" >> beam.Partition(_is_reopened, 2)
                remaining = reopened | f"Round{t}Reopen" >> beam.Map(_reopened)
            decided.append(done | f"Round{t}Finish" >> beam.Map(_finished, t, self._round_column))
        stats = round_stats[0] | "RoundsStats" >> beam.Map(_rounds_stats, *[beam.pvalue.AsSingleton(s) for s in round_stats[1:]])
        return {"records": decided | "Decided" >> beam.Flatten(), "stats": stats}
