"""Counting exits: the one vocabulary and helper every DoFn counts its outcomes with.

Every record leaves every step through exactly one named exit: ``kept``, ``already_dropped``, a
drop reason of ``schema.DROP_REASONS``, or ``invalid_<reason>`` (``deadletter.REASONS``). A DoFn
tallies a whole batch in a dict and hands it to Beam counters once per batch (namespace
``winnow.<module>``). The report's counts come from count PCollections computed in the pipeline,
which exist on every runner; these counters cross-check them where the runner reports metrics.
"""

from collections import Counter
from collections.abc import Iterable, Mapping

import apache_beam as beam
from apache_beam.metrics import Metrics

KEPT = "kept"
ALREADY_DROPPED = "already_dropped"


def invalid_exit(reason: str) -> str:
    """The exit name of records invalid for ``reason``: ``invalid_<reason>``."""
    return f"invalid_{reason}"


class Exits:
    """Beam counters of one step's exits, incremented a batch at a time.

    Build it in ``DoFn.setup``; call ``count(tally)`` with a ``{exit: records}`` mapping per batch.
    """

    def __init__(self, namespace: str):
        self._namespace = namespace
        self._counters: dict[str, object] = {}

    def count(self, tally: Mapping[str, int]) -> None:
        for exit_name, records in tally.items():
            if records:
                if exit_name not in self._counters:
                    self._counters[exit_name] = Metrics.counter(self._namespace, exit_name)
                self._counters[exit_name].inc(int(records))


def count_values(values: Iterable) -> dict:
    """``{value: occurrences}`` of an iterable (plain dict, for JSON stats)."""
    return dict(Counter(values))


def merge_counts(counts: Iterable[Mapping]) -> dict:
    """The sum of ``{key: count}`` mappings (missing keys count 0)."""
    total: Counter = Counter()
    for one in counts:
        total.update(one)
    return dict(total)


class CountsCombineFn(beam.CombineFn):
    """``{key: count}`` mappings (one per batch) -> their sum, a plain dict (empty for no input)."""

    def create_accumulator(self):
        return Counter()

    def add_input(self, accumulator, counts):
        accumulator.update(counts)
        return accumulator

    def merge_accumulators(self, accumulators):
        merged = Counter()
        for accumulator in accumulators:
            merged.update(accumulator)
        return merged

    def extract_output(self, accumulator):
        return dict(accumulator)
