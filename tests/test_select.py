"""Tests for transforms/select.py: order-preserving key bits, radix narrowing, ties and boundaries, quotas,
KeyBatch, and SelectTop / SelectInRounds end to end against sorting."""

import itertools
import random

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import local_pipeline
from winnow.transforms import select
from winnow.transforms.select import KeyBatch, TotalQuota


def _batch(unit, ids, keys, groups=None, round_keys=None) -> KeyBatch:
    n = len(ids)
    return KeyBatch(
        unit,
        np.arange(n, dtype=np.int64),
        np.array(ids, dtype=object),
        np.zeros(n, np.int64) if groups is None else np.asarray(groups, np.int64),
        np.asarray(keys, np.float64),
        None if round_keys is None else np.asarray(round_keys, np.float64),
    )


# --- keys --------------------------------------------------------------------------------


@settings(deadline=None, derandomize=True, database=None)
@given(st.lists(st.floats(allow_nan=False, width=64), min_size=2, max_size=50))
def test_order_bits_preserve_order(keys):
    bits = select.order_bits(np.array(keys))
    assert bits.dtype == np.uint64
    for a, ka in zip(bits, keys):
        for b, kb in zip(bits, keys):
            if ka < kb:
                assert a < b
            if ka == kb and not (ka == 0.0 and str(ka) != str(kb)):  # -0.0 and 0.0 are equal floats, not equal bits
                assert a == b


def test_order_bits_hand_worked_and_nan_ranks_lowest():
    bits = select.order_bits(np.array([1.0, -1.0, 0.0]))
    # 1.0 = 0x3FF0...: sign bit set; -1.0 = 0xBFF0...: all bits flipped; 0.0 -> 0x8000...
    assert bits.tolist() == [0xBFF0000000000000, 0x400FFFFFFFFFFFFF, 0x8000000000000000]
    bits = select.order_bits(np.array([np.nan, -np.inf, -1.0, 0.0, 2.5]))
    assert bits[0] <= bits[1] < bits[2] < bits[3] < bits[4]


def test_digits_and_prefixes_most_significant_first():
    bits = np.array([0x0123456789ABCDEF], dtype=np.uint64)
    assert [select.digits(bits, p)[0] for p in range(4)] == [0x0123, 0x4567, 0x89AB, 0xCDEF]
    assert select.digits(bits, 0).dtype == np.int64
    assert [int(select.prefixes(bits, n)[0]) for n in range(4)] == [0, 0x0123, 0x01234567, 0x0123456789AB]


# --- quotas ------------------------------------------------------------------------------


def test_total_quota_n_or_rounded_fraction_capped_at_the_pool():
    assert TotalQuota(n=10)({0: 4}) == {0: 4}
    assert TotalQuota(n=10)({0: 40, 1: 3}) == {0: 10, 1: 3}
    assert TotalQuota(fraction=0.25)({0: 10}) == {0: 3}  # 2.5 rounds half up
    assert TotalQuota(fraction=0.25).total(6) == 2  # 1.5 -> 2
    assert TotalQuota(fraction=0.5).total(0) == 0 and TotalQuota(n=0).total(9) == 0
    with pytest.raises(ValueError, match="exactly one"):
        TotalQuota(n=1, fraction=0.5)
    with pytest.raises(ValueError, match="exactly one"):
        TotalQuota()
    with pytest.raises(ValueError, match="fraction=1.5"):
        TotalQuota(fraction=1.5)
    with pytest.raises(ValueError, match="n=-1"):
        TotalQuota(n=-1)


@pytest.mark.parametrize("n", [2.5, True])
def test_total_quota_rejects_a_non_integer_n(n):
    with pytest.raises(ValueError, match="n="):
        TotalQuota(n=n)


def test_split_quota_gives_the_remainder_to_the_last_share():
    assert select.split_quota(10, [1 / 3, 1 / 3, 1 / 3]) == [3, 3, 4]
    assert select.split_quota(10, [0.75, 0.25]) == [7, 3]
    assert select.split_quota(5, [0.0, 1.0]) == [0, 5]
    assert select.split_quota(0, [0.5, 0.5]) == [0, 0]


def test_round_quota_splits_the_total_of_the_first_pool():
    quota = select.RoundQuota(TotalQuota(fraction=0.5), 1)
    # pool of 40 before round 0 -> total 20 -> [15, 5]; round 1 gets 5 whatever remains
    assert quota({0: 25}, (40, [0.75, 0.25])) == {0: 5}
    assert quota({0: 3}, (40, [0.75, 0.25])) == {0: 3}  # never more than is left
    assert select.RoundQuota(TotalQuota(n=20), 0)({0: 40}, (None, [0.75, 0.25])) == {0: 15}  # round 0: its own pool
    assert select.RoundQuota(TotalQuota(n=20), 0)({}, (None, [1.0])) == {}


def test_initial_states():
    states = select.initial_states({0: 4, 1: 20, 2: 5, 3: 2}, {0: 4, 1: 10, 2: 0})
    assert states == {0: (select.ALL,), 1: (select.SEARCH, 0, 10), 2: (select.NONE,), 3: (select.NONE,)}


# --- narrowing, ties, boundaries -----------------------------------------------------------


def test_narrow_picks_the_digit_holding_the_rank():
    histogram = np.zeros(1 << select.DIGIT_BITS, dtype=np.int64)
    histogram[[10, 20, 30]] = [5, 3, 2]  # from the top: digit 30 holds ranks 1-2, 20 ranks 3-5, 10 ranks 6-10
    assert select.narrow((select.SEARCH, 0, 1), histogram) == (select.SEARCH, 30, 1)
    assert select.narrow((select.SEARCH, 0, 3), histogram) == (select.SEARCH, 20, 1)
    assert select.narrow((select.SEARCH, 0, 5), histogram) == (select.SEARCH, 20, 3)
    assert select.narrow((select.SEARCH, 1, 10), histogram) == (select.SEARCH, (1 << select.DIGIT_BITS) | 10, 5)


def test_boundary_from_ties_orders_by_bits_then_id_and_within_applies_it():
    candidates = [(5, "b"), (7, "z"), (5, "a"), (5, "c")]
    assert select.boundary_from_ties(candidates, 1) == (select.FOUND, 7, "z")
    state = select.boundary_from_ties(candidates, 3)
    assert state == (select.FOUND, 5, "b")
    bits = np.array([b for b, _ in candidates], dtype=np.uint64)
    ids = np.array([i for _, i in candidates], dtype=object)
    assert select.within(state, bits, ids.__getitem__).tolist() == [True, True, True, False]


def test_within_all_none_and_integer_ids():
    bits = np.array([1, 2, 3], dtype=np.uint64)
    ids = np.array([10, 2, 7])
    assert select.within((select.ALL,), bits, ids.__getitem__).tolist() == [True] * 3
    assert select.within((select.NONE,), bits, ids.__getitem__).tolist() == [False] * 3
    assert select.within((select.FOUND, 2, 2), bits, ids.__getitem__).tolist() == [False, True, True]
    assert select.within((select.FOUND, 3, 6), bits, ids.__getitem__).tolist() == [False, False, False]  # 7 > 6: out
    assert select.within((select.FOUND, 9, "x"), np.zeros(0, np.uint64), np.zeros(0, object).__getitem__).tolist() == []


# --- KeyBatch ----------------------------------------------------------------------------


def test_key_batch_take_round_and_group_counts():
    batch = _batch(3, ["a", "b", "c", "d"], [0.5, 0.1, 0.9, 0.3], groups=[2, 0, 2, 5], round_keys=[[1, 4], [2, 3], [3, 2], [4, 1]])
    assert select.group_counts(batch) == {0: 1, 2: 2, 5: 1}
    taken = batch.take(np.array([True, False, True, False]))
    assert taken.unit == 3 and taken.ordinals.tolist() == [0, 2] and taken.ids.tolist() == ["a", "c"]
    assert taken.groups.tolist() == [2, 2] and taken.keys.tolist() == [0.5, 0.9] and taken.round_keys.tolist() == [[1, 4], [3, 2]]
    second = batch.round(1)
    assert second.keys.tolist() == [4.0, 3.0, 2.0, 1.0] and second.groups.tolist() == [0, 0, 0, 0]
    assert second.round_keys is batch.round_keys and second.ids is batch.ids
    plain = _batch(0, ["x"], [1.0]).take(np.array([False]))
    assert plain.round_keys is None and len(plain.ordinals) == 0
    assert select.group_counts(plain) == {}


def test_selected_mask_applies_each_groups_boundary():
    batch = _batch(0, ["a", "b", "c", "d", "e"], [0.9, 0.5, 0.5, 0.1, 0.7], groups=[0, 0, 0, 1, 1])
    boundaries = {0: (select.FOUND, int(select.order_bits(np.array([0.5]))[0]), "b"), 1: (select.NONE,)}
    assert select.selected_mask(batch, boundaries).tolist() == [True, True, False, False, False]


def test_histogram_combine_fn_four_methods_and_merge_order():
    fn = select.HistogramCombineFn()
    empty = fn.extract_output(fn.create_accumulator())
    assert empty.shape == (1 << select.DIGIT_BITS,) and empty.sum() == 0
    a = fn.add_input(fn.create_accumulator(), np.array([1, 1, 5]))
    b = fn.add_input(fn.add_input(fn.create_accumulator(), np.array([5])), np.array([65535]))
    for order in itertools.permutations([a, b, fn.create_accumulator()]):
        merged = fn.extract_output(fn.merge_accumulators(list(order)))
        assert merged[1] == 2 and merged[5] == 2 and merged[65535] == 1 and merged.sum() == 5
    assert a[5] == 1  # merging left the accumulator as it was


def _radix_in_numpy(batches: list[KeyBatch], quotas: dict) -> set:
    """SelectTop's stages in plain numpy, stage by stage as the pipeline runs them."""
    counts = {}
    for batch in batches:
        for group, count in select.group_counts(batch).items():
            counts[group] = counts.get(group, 0) + count
    states = select.initial_states(counts, {g: min(quotas.get(g, 0), c) for g, c in counts.items()})
    fn = select.HistogramCombineFn()
    for pass_index in range(select.N_PASSES):
        histograms = {}
        for batch in batches:
            for group, digit_values in select._digit_values(batch, states, pass_index):
                histograms[group] = fn.add_input(histograms.get(group, fn.create_accumulator()), digit_values)
        states = select._narrow_all(states, histograms)
    ties = {}
    for batch in batches:
        for group, pair in select._tied_candidates(batch, states):
            ties.setdefault(group, []).append(pair)
    boundaries = select._resolve_all(states, ties)
    return {(b.unit, int(o)) for b in batches for o in b.ordinals[select.selected_mask(b, boundaries)]}


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(
    st.lists(st.tuples(st.sampled_from([-5.0, -0.5, 0.0, 1e-300, 0.25, 0.25 + 2**-54, 3.0, 7.5, np.inf, -np.inf]) | st.floats(-5, 5), st.integers(0, 2)), min_size=1, max_size=60),
    st.dictionaries(st.integers(0, 2), st.integers(0, 60)),
    st.integers(1, 4),
)
def test_radix_select_core_matches_sorting(records, quotas, n_batches):
    """The core steps give, per group, the first quota records by (key desc, id asc); keys massively tied."""
    ids = [f"{i:03d}" for i in range(len(records))]
    cut = [len(records) * b // n_batches for b in range(n_batches + 1)]
    batches = [_batch(b, ids[cut[b]:cut[b + 1]], [k for k, _ in records[cut[b]:cut[b + 1]]], [g for _, g in records[cut[b]:cut[b + 1]]])
               for b in range(n_batches)]
    row_of = {i: (b.unit, int(o)) for b in batches for o, i in zip(b.ordinals, b.ids)}
    expected = set()
    for group in range(3):
        members = sorted((-records[i][0], ids[i]) for i in range(len(records)) if records[i][1] == group)
        expected |= {row_of[i] for _, i in members[: quotas.get(group, 0)]}
    assert _radix_in_numpy(batches, quotas) == expected


# --- SelectTop ---------------------------------------------------------------------------


def _pool(n: int, seed: int) -> list[KeyBatch]:
    """Batches of a pool in 3 groups: group 2 massively tied, group 1 with negative and zero keys."""
    rng = random.Random(seed)
    batches, i = [], 0
    for unit in range(6):
        ids, keys, groups = [], [], []
        for _ in range(n // 6):
            group = i % 3
            key = rng.choice([0.5, 1.0, 1.0 + 1e-15]) if group == 2 else rng.choice([-rng.random(), 0.0, rng.random()])
            ids.append(f"d{rng.randrange(10**9):09d}-{i}")
            keys.append(key)
            groups.append(group)
            i += 1
        batches.append(_batch(unit, ids, keys, groups))
    return batches


WANTED = {0: 37, 1: 0, 2: 150}


def _wanted_quotas(counts):
    return {g: min(WANTED.get(g, 0), c) for g, c in counts.items()}


def _brute_force(batches: list[KeyBatch], quotas: dict) -> set:
    rows = [(b.unit, int(o), i, int(g), float(k)) for b in batches for o, i, g, k in zip(b.ordinals, b.ids, b.groups, b.keys)]
    chosen = set()
    for group, quota in quotas.items():
        members = sorted((r for r in rows if r[3] == group), key=lambda r: (-r[4], r[2]))
        chosen |= {(r[0], r[1]) for r in members[:quota]}
    return chosen


def _flat_selected(selected, label: str = "Flat"):
    return selected | label >> beam.FlatMapTuple(lambda unit, ordinals: [(unit, int(o)) for o in ordinals])


def _run_select_top(batches, **flags):
    counts = {}
    for batch in batches:
        for group, count in select.group_counts(batch).items():
            counts[group] = counts.get(group, 0) + count
    chosen = _brute_force(batches, _wanted_quotas(counts))
    everything = {(b.unit, int(o)) for b in batches for o in b.ordinals}
    with local_pipeline(**flags) as p:
        out = p | beam.Create(batches) | select.SelectTop(_wanted_quotas)
        assert_that(_flat_selected(out["selected"]), equal_to(sorted(chosen)), label="selected")
        remaining = out["remaining"] | beam.FlatMap(lambda b: [(b.unit, int(o)) for o in b.ordinals])
        assert_that(remaining, equal_to(sorted(everything - chosen)), label="remaining")
        assert_that(out["stats"], equal_to([{"pool": counts, "quota": _wanted_quotas(counts)}]), label="stats")


def test_select_top_equals_brute_force_with_groups_ties_and_several_units():
    _run_select_top(_pool(1500, seed=1))


def test_select_top_same_result_on_multiple_worker_processes():
    _run_select_top(_pool(600, seed=2), direct_running_mode="multi_processing", direct_num_workers=2)


class _IdLookup:
    """A ``KeyBatch`` id lookup over per-unit id arrays that records which rows it was asked for."""

    def __init__(self, batches: list[KeyBatch]):
        self._ids = {b.unit: b.ids for b in batches}
        self.asked: list[tuple[int, int]] = []
        self.calls = 0

    def __call__(self, unit, ordinals):
        self.calls += 1
        self.asked += [(unit, int(o)) for o in ordinals]
        return self._ids[unit][ordinals].tolist()


def test_an_id_lookup_selects_as_the_id_arrays_and_is_asked_for_tied_records_only():
    batches = _pool(1500, seed=3)
    lookup = _IdLookup(batches)
    looked_up = [b._replace(ids=lookup) for b in batches]
    counts = {g: sum(int((b.groups == g).sum()) for b in batches) for g in range(3)}
    chosen = _brute_force(batches, _wanted_quotas(counts))
    assert _radix_in_numpy(looked_up, WANTED) == chosen
    tied, lookups = set(), set()  # per group with a boundary, the records whose top 48 key bits equal the boundary record's
    for group in (0, 2):  # group 1's quota is 0: no boundary
        members = sorted((-float(k), b.unit, int(o)) for b in batches for o, g, k in zip(b.ordinals, b.groups, b.keys) if g == group)
        top_bits = select.prefixes(select.order_bits(-np.array([key for key, _, _ in members])), select.N_PASSES)
        group_tied = {(unit, o) for (_, unit, o), bits in zip(members, top_bits) if bits == top_bits[WANTED[group] - 1]}
        tied |= group_tied
        lookups |= {(group, unit) for unit, _ in group_tied}
    assert set(lookup.asked) == tied and len(tied) < counts[2]  # group 2's boundary lies among keys tied in 48 bits
    assert lookup.calls == 2 * len(lookups)  # once per batch and group with tied records: gathering ties, deciding
    with local_pipeline() as p:
        out = p | beam.Create(looked_up) | select.SelectTop(_wanted_quotas)
        assert_that(_flat_selected(out["selected"]), equal_to(sorted(chosen)))


def test_select_top_on_empty_input():
    with local_pipeline() as p:
        out = p | beam.Create([]) | select.SelectTop(TotalQuota(n=5))
        assert_that(out["selected"], equal_to([]), label="selected")
        assert_that(out["remaining"], equal_to([]), label="remaining")
        assert_that(out["stats"], equal_to([{"pool": {}, "quota": {}}]), label="stats")


def _quota_from_side_input(counts, caps):
    return {g: min(caps.get(g, 0), c) for g, c in counts.items()}


def test_select_top_quota_input_and_integer_ids():
    batches = [
        KeyBatch(0, np.array([0, 1, 2]), np.array([5, 3, 9]), np.array([0, 1, 1]), np.array([0.2, 0.9, 0.9])),
        KeyBatch(1, np.array([0, 1]), np.array([4, 8]), np.array([1, 0]), np.array([0.9, 0.7])),
    ]
    # group 1: keys 0.9 (ids 3, 9, 4) all tied: ids ascending, 3 and 4; group 0: the top one, id 8
    with local_pipeline() as p:
        caps = p | "Caps" >> beam.Create([{0: 1, 1: 2}])
        out = p | beam.Create(batches) | select.SelectTop(_quota_from_side_input, caps)
        assert_that(_flat_selected(out["selected"]), equal_to([(0, 1), (1, 0), (1, 1)]), label="selected")
        assert_that(out["stats"], equal_to([{"pool": {0: 2, 1: 3}, "quota": {0: 1, 1: 2}}]), label="stats")


# --- SelectInRounds ----------------------------------------------------------------------


def _rounds_brute_force(rows, quotas):
    """Round t takes the first quotas[t] of the records left, by (t-th key desc, id asc)."""
    left = list(rows)
    chosen = {}
    for t, quota in enumerate(quotas):
        left.sort(key=lambda r: (-r[3][t], r[2]))
        chosen.update({(r[0], r[1]): t for r in left[:quota]})
        left = left[quota:]
    return chosen


def test_select_in_rounds_equals_sequential_brute_force():
    rng = random.Random(4)
    batches, rows = [], []
    for unit in range(3):
        ids, round_keys = [], []
        for j in range(300):
            first = rng.random()  # round 1 prefers what round 0 prefers too: the rounds compete for records
            keys = [first, first + rng.random() * 0.5, rng.choice([0.0, 1.0])]
            ids.append(f"r{unit}-{j:04d}")
            round_keys.append(keys)
            rows.append((unit, j, ids[-1], keys))
        batches.append(_batch(unit, ids, [k[0] for k in round_keys], round_keys=round_keys))
    expected = _rounds_brute_force(rows, select.split_quota(100, [0.5, 0.3, 0.2]))
    with local_pipeline() as p:
        shares = p | "Shares" >> beam.Create([[0.5, 0.3, 0.2]])
        out = p | beam.Create(batches) | select.SelectInRounds(TotalQuota(n=100), 3, shares)
        assert len(out["selected"]) == 3
        for t, selected in enumerate(out["selected"]):
            assert_that(_flat_selected(selected, f"Flat{t}"), equal_to(sorted(k for k, r in expected.items() if r == t)), label=f"round{t}")
        assert_that(
            out["stats"],
            equal_to([{"pool": {0: 900}, "quota": {0: 100}, "rounds": [
                {"pool": {0: 900}, "quota": {0: 50}},
                {"pool": {0: 850}, "quota": {0: 30}},
                {"pool": {0: 820}, "quota": {0: 20}},
            ]}]),
            label="stats",
        )


def test_select_in_rounds_takes_each_record_once_and_caps_at_the_pool():
    """8 records, N = 20 > pool: the rounds' quotas split 8, [2, 2, 4], and every record is taken once."""
    batch = _batch(0, [f"r{i}" for i in range(8)], [0.0] * 8, round_keys=[[i, -i, i % 3] for i in range(8)])
    with local_pipeline() as p:
        shares = p | "Shares" >> beam.Create([[0.25, 0.25, 0.5]])
        out = p | beam.Create([batch]) | select.SelectInRounds(TotalQuota(n=20), 3, shares)
        # round 0 takes the 2 highest i, round 1 the 2 lowest (-i), round 2 the 4 left
        for t, ordinals in enumerate([[6, 7], [0, 1], [2, 3, 4, 5]]):
            assert_that(_flat_selected(out["selected"][t], f"Flat{t}"), equal_to([(0, o) for o in ordinals]), label=f"round{t}")
        assert_that(out["stats"] | beam.Map(lambda s: s["quota"]), equal_to([{0: 8}]), label="quota")


def test_select_in_rounds_needs_a_round():
    with pytest.raises(ValueError, match="n_rounds=0"):
        select.SelectInRounds(TotalQuota(n=1), 0, None)
