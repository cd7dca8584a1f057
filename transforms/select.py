"""Selecting exactly N records per group by highest key, without a global sort or collect.

Every method reduces to this: each eligible record carries a float ``key`` and an int ``group``
(0 when there are no groups); group ``g`` gets a quota ``q_g`` from the group sizes; the
selection is the first ``q_g`` records of each group in the order *key descending, then id
ascending*. Random selection is the same with keys drawn from a hash of ``(seed, id)``
(``seeded.uniform``), and DSIR's importance resampling is Gumbel top-k: ``key = log w + G``
(``seeded.gumbel``), which samples without replacement with probability proportional to ``w``.

Elements are ``KeyBatch`` es: one unit's eligible records as arrays (ordinals, groups, keys, and
ids or a lookup of them), so every pass below costs one numpy call per batch, not one Python call
per record. Ids only break exact ties (steps 3 and 4), so they are read for tied records only.

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
import math
from typing import NamedTuple

import apache_beam as beam
import numpy as np

from winnow.transforms import tally
from winnow.transforms.validation import check_int

DIGIT_BITS = 16
N_PASSES = 3
_SIGN = np.uint64(1 << 63)

# Boundary states per group: every record in, none in, still searching, or the exact boundary.
ALL, NONE, SEARCH, FOUND = "all", "none", "search", "found"


# --- keys --------------------------------------------------------------------------------


def order_bits(keys: np.ndarray) -> np.ndarray:
    """uint64 image of float64 keys that preserves order (``a < b`` iff ``bits(a) < bits(b)``).

    Non-negative floats get the sign bit set; negative floats have all bits flipped. NaN keys
    rank lowest.
    """
    keys = np.where(np.isnan(keys), -np.inf, np.asarray(keys, dtype=np.float64))
    raw = keys.view(np.uint64)
    return np.where(raw & _SIGN, ~raw, raw | _SIGN)


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
        check_int("n", self.n, 0, allow_none=True)
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


def within(state: tuple, bits: np.ndarray, ids_at) -> np.ndarray:
    """(n,) bool: which records (key bits, ids) of one group lie within its boundary ``state``.

    ``ids_at(positions)`` gives the ids of the records at ``positions``; it is called only for the
    records whose bits equal the boundary's, so ids are read only where they decide.
    """
    kind = state[0]
    if kind in (ALL, NONE):
        return np.full(len(bits), kind == ALL)
    _, boundary_bits, boundary_id = state
    above = bits > np.uint64(boundary_bits)
    tied = np.flatnonzero(bits == np.uint64(boundary_bits))
    above[tied] = [doc_id <= boundary_id for doc_id in ids_at(tied)]
    return above


# --- Beam wrappers -----------------------------------------------------------------------


class KeyBatch(NamedTuple):
    """One unit's eligible records as the selection sees them.

    Attributes:
        unit: the work unit.
        ordinals: (n,) int64 the records' ordinals in the unit.
        ids: the records' ids (one type: str or int): an (n,) array, or a picklable callable
            ``(unit, ordinals) -> list of ids`` that looks them up. The selection reads only the ids
            of records whose top ``N_PASSES * DIGIT_BITS`` key bits equal a boundary's, so a lookup
            keeps the ids out of the elements every pass decodes.
        groups: (n,) int64 group of each record (0 without groups).
        keys: (n,) float64 key of each record.
        round_keys: (n, T) float64 keys of each round of ``SelectInRounds``, or None.
    """

    unit: int
    ordinals: np.ndarray
    ids: object
    groups: np.ndarray
    keys: np.ndarray
    round_keys: np.ndarray | None = None

    def ids_at(self, positions: np.ndarray) -> list:
        """The ids of the records at ``positions`` (indexes into this batch); no lookup for no positions."""
        if not len(positions):
            return []
        if isinstance(self.ids, np.ndarray):
            return self.ids[positions].tolist()
        return list(self.ids(self.unit, self.ordinals[positions]))

    def round(self, round_index: int) -> "KeyBatch":
        """The batch keyed by its ``round_index``-th round keys, group 0."""
        return self._replace(keys=self.round_keys[:, round_index], groups=np.zeros(len(self.ordinals), np.int64))

    def take(self, mask: np.ndarray) -> "KeyBatch":
        """The records of ``mask`` only."""
        rounds = None if self.round_keys is None else self.round_keys[mask]
        ids = self.ids[mask] if isinstance(self.ids, np.ndarray) else self.ids
        return KeyBatch(self.unit, self.ordinals[mask], ids, self.groups[mask], self.keys[mask], rounds)


def _searching(batch: KeyBatch, bits: np.ndarray, states: dict, n_digits: int) -> dict[int, np.ndarray]:
    """Per group still searching, the mask of this batch's records tied with its prefix."""
    masks = {}
    record_prefixes = prefixes(bits, n_digits)
    for group in np.unique(batch.groups).tolist():
        state = states.get(group)
        if state is not None and state[0] == SEARCH:
            masks[group] = (batch.groups == group) & (record_prefixes == np.uint64(state[1]))
    return masks


def group_counts(batch: KeyBatch) -> dict[int, int]:
    """``{group: records}`` of one batch."""
    groups, sizes = np.unique(batch.groups, return_counts=True)
    return dict(zip(groups.tolist(), sizes.tolist()))


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


def _digit_values(batch: KeyBatch, states: dict, pass_index: int):
    bits = order_bits(batch.keys)
    for group, mask in _searching(batch, bits, states, pass_index).items():
        if mask.any():
            yield group, digits(bits[mask], pass_index)


def _tied_candidates(batch: KeyBatch, states: dict):
    bits = order_bits(batch.keys)
    for group, mask in _searching(batch, bits, states, N_PASSES).items():
        tied = np.flatnonzero(mask)
        for index, doc_id in zip(tied.tolist(), batch.ids_at(tied)):
            yield group, (int(bits[index]), doc_id)


def _narrow_all(states: dict, histograms: dict) -> dict:
    return {g: narrow(s, histograms[g]) if s[0] == SEARCH else s for g, s in states.items()}


def _resolve_all(states: dict, ties: dict) -> dict:
    return {g: boundary_from_ties(ties[g], s[2]) if s[0] == SEARCH else s for g, s in states.items()}


def selected_mask(batch: KeyBatch, boundaries: dict) -> np.ndarray:
    """(n,) bool: the records of ``batch`` within their group's boundary."""
    bits = order_bits(batch.keys)
    selected = np.zeros(len(batch.ordinals), dtype=bool)
    for group in np.unique(batch.groups).tolist():
        in_group = np.flatnonzero(batch.groups == group)
        selected[in_group] = within(boundaries[group], bits[in_group], lambda positions: batch.ids_at(in_group[positions]))
    return selected


def _decide(batch: KeyBatch, boundaries: dict):
    """Key batch -> (unit, selected ordinals); ``remaining``: the batch's unselected records."""
    selected = selected_mask(batch, boundaries)
    yield batch.unit, batch.ordinals[selected]
    yield beam.pvalue.TaggedOutput("remaining", batch.take(~selected))


class SelectTop(beam.PTransform):
    """Select the first ``quota_fn(counts)[g]`` records of each group ``g`` by (key desc, id asc).

    Input: ``KeyBatch`` es. ``expand`` returns ``{"selected": (unit, selected ordinals) per batch,
    "remaining": each batch's unselected records (a ``KeyBatch``), "stats": {"pool": {g: count},
    "quota": {g: quota}}}``.

    Args:
        quota_fn: picklable callable ``{group: eligible count} -> {group: quota}``, e.g.
            ``TotalQuota(n=1000)``; with ``quota_input``, called as ``quota_fn(counts, value)``.
        quota_input: optional singleton PCollection whose value the quotas also depend on (e.g.
            per-cluster statistics).
    """

    def __init__(self, quota_fn, quota_input: beam.PCollection | None = None):
        super().__init__()
        self._quota_fn = quota_fn
        self._quota_input = quota_input

    def expand(self, batches):
        counts = batches | "GroupCounts" >> beam.Map(group_counts) | "CountPerGroup" >> beam.CombineGlobally(tally.CountsCombineFn())
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
        decided = batches | "Decide" >> beam.FlatMap(_decide, beam.pvalue.AsSingleton(boundaries)).with_outputs("remaining", main="selected")
        stats = counts | "Stats" >> beam.Map(lambda pool, quota: {"pool": pool, "quota": quota}, beam.pvalue.AsSingleton(quotas))
        return {"selected": decided.selected, "remaining": decided.remaining, "stats": stats}


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

    Input: ``KeyBatch`` es with ``round_keys`` (n, T), one column per round. Round t selects
    ``split_quota(total.total(pool), shares)[t]`` records by (key t desc, id asc) among the records
    no earlier round selected, ``pool`` the eligible count before round 0: the reference DSIR's
    ``resample`` with ``separate_targets``. ``expand`` returns ``{"selected": [per round, (unit,
    selected ordinals) elements], "stats": SelectTop's (pool, summed quotas) plus "rounds"}``.

    Args:
        total: the overall quota, e.g. ``TotalQuota(n=1000)``.
        n_rounds: T >= 1.
        shares: singleton PCollection, T non-negative shares of the total, summing to 1.
    """

    def __init__(self, total: TotalQuota, n_rounds: int, shares: beam.PCollection):
        super().__init__()
        if n_rounds < 1:
            raise ValueError(f"n_rounds={n_rounds}; expected >= 1")
        self._total, self._n_rounds, self._shares = total, n_rounds, shares

    def expand(self, batches):
        quota_input = self._shares | "FirstRoundInputs" >> beam.Map(_first_round_inputs)
        selected, round_stats, remaining = [], [], batches
        for t in range(self._n_rounds):
            chosen = remaining | f"Round{t}Keys" >> beam.Map(KeyBatch.round, t) | f"Round{t}" >> SelectTop(RoundQuota(self._total, t), quota_input)
            round_stats.append(chosen["stats"])
            selected.append(chosen["selected"])
            if t == 0 and self._n_rounds > 1:  # later rounds split the total of round 0's pool
                quota_input = chosen["stats"] | "LaterRoundInputs" >> beam.Map(_later_round_inputs, beam.pvalue.AsSingleton(self._shares))
            remaining = chosen["remaining"]
        stats = round_stats[0] | "RoundsStats" >> beam.Map(_rounds_stats, *[beam.pvalue.AsSingleton(s) for s in round_stats[1:]])
        return {"selected": selected, "stats": stats}
