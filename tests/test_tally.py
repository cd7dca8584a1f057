"""Tests for transforms/tally.py: exit names, count helpers, CountsCombineFn and the Exits counters."""

import itertools

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.util import assert_that, equal_to

from tests.helpers import local_pipeline
from winnow.transforms import tally


def test_exit_names():
    assert tally.invalid_exit("invalid_json") == "invalid_invalid_json"
    assert tally.invalid_exit("zero_norm") == "invalid_zero_norm"
    assert (tally.KEPT, tally.ALREADY_DROPPED) == ("kept", "already_dropped")


def test_count_values_and_merge_counts():
    counts = tally.count_values(["a", "b", "a", None])
    assert counts == {"a": 2, "b": 1, None: 1} and type(counts) is dict
    assert tally.count_values([]) == {}
    merged = tally.merge_counts([{"a": 1, "b": 2}, {}, {"b": 3, "c": 0}])
    assert merged == {"a": 1, "b": 5, "c": 0} and type(merged) is dict
    assert tally.merge_counts([]) == {}


def test_counts_combine_fn_four_methods_empty_and_any_merge_order():
    fn = tally.CountsCombineFn()
    assert fn.extract_output(fn.create_accumulator()) == {}
    assert fn.extract_output(fn.merge_accumulators([fn.create_accumulator(), fn.create_accumulator()])) == {}
    left = fn.add_input(fn.add_input(fn.create_accumulator(), {0: 3, 1: 1}), {1: 2})
    right = fn.add_input(fn.create_accumulator(), {2: 5, 0: 1})
    for order in itertools.permutations([left, right, fn.create_accumulator()]):
        out = fn.extract_output(fn.merge_accumulators(list(order)))
        assert out == {0: 4, 1: 3, 2: 5} and type(out) is dict
    assert dict(left) == {0: 3, 1: 3}  # merging left the accumulators as they were


class _CountExits(beam.DoFn):
    """Each element is one batch's ``{exit: records}`` tally."""

    def setup(self):
        self._exits = tally.Exits("winnow.test")

    def process(self, counts):
        self._exits.count(counts)
        yield sum(counts.values())


def test_exits_count_a_batch_at_a_time_into_beam_counters_and_skip_zeros():
    pipeline = local_pipeline()
    batches = [{"kept": 2, "too_short": 1}, {"kept": 1, tally.invalid_exit("zero_norm"): 1, "near_duplicate": 0}, {}]
    sizes = pipeline | beam.Create(batches) | beam.ParDo(_CountExits())
    assert_that(sizes, equal_to([3, 2, 0]))
    result = pipeline.run()
    result.wait_until_finish()
    got = {}
    for counter in result.metrics().query(MetricsFilter().with_namespace("winnow.test"))["counters"]:
        got[counter.key.metric.name] = got.get(counter.key.metric.name, 0) + counter.committed
    assert got == {"kept": 3, "too_short": 1, "invalid_zero_norm": 1}  # no counter for an exit nothing took
