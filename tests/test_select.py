"""Selection core: order-preserving key bits, radix narrowing, ties, quotas, and SelectTop end to end."""

import random

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import local_pipeline
from winnow.transforms import schema, select


@given(st.lists(st.floats(allow_nan=False, width=64), min_size=2, max_size=50))
def test_order_bits_preserve_order(keys):
    bits = select.order_bits(np.array(keys))
    for a, ka in zip(bits, keys):
        for b, kb in zip(bits, keys):
            if ka < kb:
                assert a < b
            if ka == kb and not (ka == 0.0 and str(ka) != str(kb)):
                assert a == b


@given(st.lists(st.floats(width=64), min_size=1, max_size=50))
def test_key_bits_equals_order_bits(keys):
    assert [select.key_bits(k) for k in keys] == select.order_bits(np.array(keys)).tolist()


def test_order_bits_nan_ranks_lowest():
    bits = select.order_bits(np.array([np.nan, -np.inf, -1.0, 0.0, 2.5]))
    assert bits[0] <= bits[1] < bits[2] < bits[3] < bits[4]


def test_hash_uniform_is_deterministic_in_unit_interval_and_seeded():
    ids = [f"doc-{i}" for i in range(1000)]
    u = select.hash_uniform(ids, seed=3)
    assert np.array_equal(u, select.hash_uniform(ids, seed=3))
    assert not np.array_equal(u, select.hash_uniform(ids, seed=4))
    assert (u > 0).all() and (u < 1).all()
    assert abs(u.mean() - 0.5) < 0.03


def test_gumbel_noise_has_the_gumbel_mean():
    noise = select.gumbel_noise([str(i) for i in range(20000)], seed=0)
    assert abs(noise.mean() - np.euler_gamma) < 0.03


def test_narrow_picks_the_digit_holding_the_rank():
    histogram = np.zeros(1 << select.DIGIT_BITS, dtype=np.int64)
    histogram[[10, 20, 30]] = [5, 3, 2]  # from the top: digit 30 holds ranks 1-2, 20 ranks 3-5, 10 ranks 6-10
    assert select.narrow((select.SEARCH, 0, 1), histogram) == (select.SEARCH, 30, 1)
    assert select.narrow((select.SEARCH, 0, 3), histogram) == (select.SEARCH, 20, 1)
    assert select.narrow((select.SEARCH, 0, 5), histogram) == (select.SEARCH, 20, 3)
    assert select.narrow((select.SEARCH, 1, 10), histogram) == (select.SEARCH, (1 << select.DIGIT_BITS) | 10, 5)


def test_boundary_from_ties_orders_by_bits_then_id():
    candidates = [(5, "b"), (7, "z"), (5, "a"), (5, "c")]
    assert select.boundary_from_ties(candidates, 1) == (select.FOUND, 7, "z")
    assert select.boundary_from_ties(candidates, 3) == (select.FOUND, 5, "b")
    state = select.boundary_from_ties(candidates, 3)
    assert [select.is_selected(state, b, i) for b, i in candidates] == [True, True, True, False]


def test_initial_states_and_total_quota():
    quota = select.TotalQuota(n=10)
    assert quota({0: 4}) == {0: 4}
    assert select.initial_states({0: 4, 1: 20, 2: 5}, {0: 4, 1: 10, 2: 0}) == {0: (select.ALL,), 1: (select.SEARCH, 0, 10), 2: (select.NONE,)}
    assert select.TotalQuota(fraction=0.25)({0: 10}) == {0: 3}
    with pytest.raises(ValueError, match="exactly one"):
        select.TotalQuota(n=1, fraction=0.5)
    with pytest.raises(ValueError, match="fraction=1.5"):
        select.TotalQuota(fraction=1.5)


def test_count_per_group_combine_fn_merges_in_any_order():
    combine = select.CountPerGroupCombineFn()
    batch_a = select._KeyBatch([(0, 1.0, "a"), (1, 2.0, "b"), (0, 3.0, "c")])
    batch_b = select._KeyBatch([(1, 1.0, "d")])
    acc_a = combine.add_input(combine.create_accumulator(), batch_a)
    acc_b = combine.add_input(combine.create_accumulator(), batch_b)
    expected = {0: 2, 1: 2}
    assert combine.extract_output(combine.merge_accumulators([acc_a, acc_b])) == expected
    assert combine.extract_output(combine.merge_accumulators([acc_b, acc_a])) == expected
    assert combine.extract_output(combine.create_accumulator()) == {}


def test_histogram_combine_fn():
    combine = select.HistogramCombineFn()
    acc = combine.add_input(combine.create_accumulator(), np.array([1, 1, 5]))
    merged = combine.extract_output(combine.merge_accumulators([acc, combine.create_accumulator()]))
    assert merged[1] == 2 and merged[5] == 1 and merged.sum() == 3


def _brute_force(records, quotas):
    chosen = set()
    for group, quota in quotas.items():
        eligible = [r for r in records if r.get(select.GROUP) == group and schema.is_eligible(r)]
        eligible.sort(key=lambda r: (-r[select.KEY], r["id"]))
        chosen |= {r["id"] for r in eligible[:quota]}
    return chosen


def _records(n, seed):
    rng = random.Random(seed)
    records = []
    for i in range(n):
        group = i % 3
        # group 2 is massively tied, group 1 has negative and zero keys
        key = rng.choice([0.5, 1.0, 1.0 + 1e-15]) if group == 2 else rng.choice([-rng.random(), 0.0, rng.random()])
        record = {"id": f"d{rng.randrange(10**9):09d}-{i}", "text": "x", select.KEY: key, select.GROUP: group}
        if i % 11 == 0:
            record[schema.DROP_REASON] = schema.TOO_SHORT
        records.append(record)
    return records


def _quotas_for_test(counts):
    wanted = {0: 37, 1: 0, 2: 150}
    return {g: min(wanted[g], c) for g, c in counts.items()}


def _run_select(records, **flags):
    with local_pipeline(**flags) as pipeline:
        out = pipeline | beam.Create(records) | select.SelectTop(_quotas_for_test)
        selected = out["records"] | beam.Filter(lambda r: r["selected"]) | beam.Map(lambda r: r["id"])
        assert_that(selected, equal_to(sorted(_brute_force(records, {0: 37, 1: 0, 2: 150}))), label="selected")
        reasons = out["records"] | beam.Map(lambda r: (r["selected"], r.get(schema.DROP_REASON)))
        n_short = sum(1 for r in records if r.get(schema.DROP_REASON))
        expected = [(True, None)] * 187 + [(False, schema.TOO_SHORT)] * n_short + [(False, schema.NOT_SELECTED)] * (len(records) - 187 - n_short)
        assert_that(reasons, equal_to(expected), label="reasons")
        assert_that(out["records"] | beam.Filter(lambda r: select.KEY in r or select.GROUP in r), equal_to([]), label="private")


def test_select_top_equals_brute_force_with_groups_ties_and_dropped_records():
    _run_select(_records(1500, seed=1))


def test_select_top_same_result_on_multiple_worker_processes():
    _run_select(_records(600, seed=2), direct_running_mode="multi_processing", direct_num_workers=2)


def test_select_top_on_empty_input():
    with local_pipeline() as pipeline:
        out = pipeline | beam.Create([]) | select.SelectTop(select.TotalQuota(n=5))
        assert_that(out["records"], equal_to([]), label="records")
        assert_that(out["stats"], equal_to([{"pool": {}, "quota": {}}]), label="stats")


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(min_value=-5, max_value=5, allow_nan=False), min_size=1, max_size=60), st.integers(1, 60))
def test_radix_select_core_matches_sorting(keys, quota):
    """The core steps in plain numpy (what SelectTop runs per stage) give the sorted top-quota."""
    ids = [f"{i:03d}" for i in range(len(keys))]
    batch = select._KeyBatch([(0, k, i) for k, i in zip(keys, ids)])
    states = select.initial_states({0: len(keys)}, {0: min(quota, len(keys))})
    for pass_index in range(select.N_PASSES):
        histograms = {g: select.HistogramCombineFn().add_input(select.HistogramCombineFn().create_accumulator(), d)
                      for g, d in select._digit_values(batch, states, pass_index)}
        states = select._narrow_all(states, histograms)
    ties = {}
    for group, pair in select._tied_candidates(batch, states):
        ties.setdefault(group, []).append(pair)
    boundary = select._resolve_all(states, ties)[0]
    chosen = {i for b, i in zip(batch.bits.tolist(), ids) if select.is_selected(boundary, b, i)}
    expected = {i for _, i in sorted(zip(keys, ids), key=lambda p: (-p[0], p[1]))[:quota]}
    assert chosen == expected


def test_split_quota_gives_the_remainder_to_the_last_share():
    assert select.split_quota(10, [1 / 3, 1 / 3, 1 / 3]) == [3, 3, 4]
    assert select.split_quota(10, [0.75, 0.25]) == [7, 3]
    assert select.split_quota(5, [0.0, 1.0]) == [0, 5]


def test_round_quota_splits_the_total_of_the_first_pool():
    quota = select.RoundQuota(select.TotalQuota(fraction=0.5), 1)
    # pool of 40 before round 0 -> total 20 -> [15, 5]; round 1 gets 5 whatever remains
    assert quota({0: 25}, (40, [0.75, 0.25])) == {0: 5}
    assert select.RoundQuota(select.TotalQuota(n=20), 0)({0: 40}, (None, [0.75, 0.25])) == {0: 15}


def test_round_seed_keeps_round_zero_and_separates_later_rounds():
    assert select.round_seed(7, 0) == 7
    noise = [select.gumbel_noise([f"d{i}" for i in range(200)], select.round_seed(7, t)) for t in range(3)]
    assert np.array_equal(noise[0], select.gumbel_noise([f"d{i}" for i in range(200)], 7))
    assert abs(np.corrcoef(noise[1], noise[2])[0, 1]) < 0.2


def _rounds_brute_force(records, quotas):
    """Round t takes the first quotas[t] of the records left, by (t-th key desc, id asc)."""
    left = [r for r in records if schema.is_eligible(r)]
    chosen = {}
    for t, quota in enumerate(quotas):
        left.sort(key=lambda r: (-r[select.ROUND_KEYS][t], r["id"]))
        chosen.update({r["id"]: t for r in left[:quota]})
        left = left[quota:]
    return chosen


def test_select_in_rounds_equals_sequential_brute_force():
    rng = random.Random(4)
    records = []
    for i in range(900):
        # round 1 prefers what round 0 prefers too, so the rounds compete for the same records
        first = rng.random()
        record = {"id": f"r{i:04d}", "text": "x", select.ROUND_KEYS: [first, first + rng.random() * 0.5, rng.choice([0.0, 1.0])]}
        if i % 13 == 0:
            record[schema.DROP_REASON] = schema.EXACT_DUPLICATE
        records.append(record)
    n_eligible = sum(schema.is_eligible(r) for r in records)
    expected = _rounds_brute_force(records, select.split_quota(100, [0.5, 0.3, 0.2]))
    with local_pipeline() as pipeline:
        shares = pipeline | "Shares" >> beam.Create([[0.5, 0.3, 0.2]])
        out = pipeline | beam.Create(records) | select.SelectInRounds(select.TotalQuota(n=100), 3, shares, "round")
        outcome = out["records"] | beam.Map(lambda r: (r["id"], r["selected"], r.get("round"), r.get(schema.DROP_REASON), sorted(r)))
        fields = sorted(["id", "text", schema.SELECTED])

        def check(rows):
            assert len(rows) == len(records)
            assert {i: t for i, chosen, t, _, _ in rows if chosen} == expected
            reasons = {reason for _, chosen, _, reason, _ in rows if not chosen}
            assert reasons == {schema.EXACT_DUPLICATE, schema.NOT_SELECTED}
            assert all(keys in (fields, sorted([*fields, "round"]), sorted([*fields, schema.DROP_REASON])) for *_, keys in rows)

        assert_that(outcome, check)
        assert_that(
            out["stats"],
            equal_to([{"pool": {0: n_eligible}, "quota": {0: 100}, "rounds": [
                {"pool": {0: n_eligible}, "quota": {0: 50}},
                {"pool": {0: n_eligible - 50}, "quota": {0: 30}},
                {"pool": {0: n_eligible - 80}, "quota": {0: 20}},
            ]}]),
            label="stats",
        )


def _counters(result) -> dict[str, int]:
    """winnow.select counters summed over the steps (every round's Decide counts)."""
    totals = {}
    for counter in result.metrics().query(MetricsFilter().with_namespace(select.NAMESPACE))["counters"]:
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + counter.committed
    return totals


@pytest.mark.parametrize("total, selected", [(select.TotalQuota(fraction=0.5), 4), (select.TotalQuota(n=20), 8)])
def test_select_in_rounds_counts_each_record_once_and_caps_at_the_pool(total, selected):
    """8 eligible records and 2 dropped ones, 3 rounds: half of them, or all when N > pool."""
    records = [{"id": f"r{i}", "text": "x", select.ROUND_KEYS: [i, -i, i % 3]} for i in range(8)]
    records += [{"id": f"d{i}", "text": "x", schema.DROP_REASON: schema.TOO_SHORT} for i in range(2)]
    pipeline = local_pipeline()
    shares = pipeline | "Shares" >> beam.Create([[0.25, 0.25, 0.5]])
    out = pipeline | beam.Create(records) | select.SelectInRounds(total, 3, shares, "round")
    assert_that(out["records"] | beam.Filter(lambda r: r["selected"]) | beam.combiners.Count.Globally(), equal_to([selected]))
    result = pipeline.run()
    result.wait_until_finish()
    counters = _counters(result)
    assert (counters.get("selected", 0), counters.get(schema.NOT_SELECTED, 0)) == (selected, 8 - selected)
