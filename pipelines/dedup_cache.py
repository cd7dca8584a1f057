"""The dedup decisions of a features table, kept beside it so that re-selection does not deduplicate again.

Deduplication depends only on the features table and the dedup options, never on the selection
options, so the run that owns a features table saves its decide pass's dedup decisions under
``features/dedup-<key>/`` (``key`` = a hash of the dedup options); a later ``--features`` run with
the same dedup options reads them instead of rerunning the exact and LSH shuffles, the connected
components and the id check (the saved decisions exist only if that check passed)::

    dedup-<key>/unit-00000.pkl   the unit's decisions, one tuple of arrays per dedup step (``merge_streams``)
    dedup-<key>/stats.json       the dedup stats of the report; written last, it marks the set complete
    dedup-<key>/pool-<pool>.json the report's statistics of the eligible pool (``metrics.pool_part``:
                                 score quantiles and histogram, Vendi), ``pool`` = ``pool_key``

The pool (the report's "all" subset) is what dedup leaves after the other rules that do not
depend on the selection (DSIR's too-short rule, SemDeDup); computing its statistics took a sizeable
share of a re-selection, so the table's own run saves them too.

Runs with ``--against`` neither save nor reuse decisions: the indexes they read can change.
"""

import dataclasses
import hashlib
import json
import pickle

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from winnow.pipelines import features, metrics
from winnow.pipelines.features import FeaturesTable
from winnow.transforms import dedup
from winnow.transforms.minhash import MinHashConfig

VERSION = 1
STREAMS = ("exact", "near")  # the dedup steps' per-unit decision streams
STATS = ("dedup_exact", "dedup_minhash")  # their report stats


@dataclasses.dataclass(frozen=True)
class DedupCache:
    """Where one set of dedup decisions of a features table lives, and whether this run reads or writes it."""

    root: str
    reuse: bool  # True: the set is complete and this run reads it; False: this run writes it

    def unit_path(self, unit: int) -> str:
        return FileSystems.join(self.root, f"unit-{unit:05d}.pkl")

    @property
    def stats_path(self) -> str:
        return FileSystems.join(self.root, "stats.json")

    def pool_path(self, key: str) -> str:
        return FileSystems.join(self.root, f"pool-{key}.json")


def cache_key(steps: str, minhash: MinHashConfig) -> str:
    """A short hash of the options dedup decisions depend on (the steps, the MinHash config, the format)."""
    return _short_hash({"version": VERSION, "dedup": steps, "minhash": dataclasses.asdict(minhash) if "minhash" in steps else None})


def pool_key(too_short_below: int | None, semdedup) -> str:
    """A short hash of what makes the eligible pool beside the dedup decisions: the too-short rule's
    token count (``DecideOptions.too_short_below``, None when it does not apply) and the SemDeDup config (or None)."""
    return _short_hash({"min_tokens": too_short_below, "semdedup": dataclasses.asdict(semdedup) if semdedup is not None else None})


def _short_hash(options: dict) -> str:
    """16 hex digits of the SHA-256 of ``options`` as sorted JSON: a file-name key of a set of options."""
    return hashlib.sha256(json.dumps(options, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def dedup_cache(table: FeaturesTable, steps: str, minhash: MinHashConfig, against: tuple, owns_table: bool) -> DedupCache | None:
    """The saved decisions of ``steps`` ("exact", "minhash", "exact,minhash") this run reads (complete,
    any run) or writes (the table's own run), else None."""
    if steps == "none" or against:
        return None
    root = table.path(f"dedup-{cache_key(steps, minhash)}")
    cache = DedupCache(root, reuse=True)
    if features.exists(cache.stats_path):
        return cache
    return DedupCache(root, reuse=False) if owns_table else None


def merge_streams(grouped: dict) -> dict[str, tuple]:
    """A unit's grouped decisions -> {stream: one tuple of arrays}: the parts (one per component or
    shard that reached the unit) joined column by column, for the streams that have any."""
    merged = {}
    for name in STREAMS:
        parts = list(grouped.get(name, []))
        if parts:
            merged[name] = tuple(dedup.concat_parts(parts))
    return merged


def merged_outputs(element):
    """(unit, ``merge_streams`` of its decisions) -> ``(unit, decisions)`` on the output of each stream."""
    unit, merged = element
    for name, decisions in merged.items():
        yield beam.pvalue.TaggedOutput(name, (unit, decisions))


def publish(cache: DedupCache, stats: dict) -> None:
    """Write the stats file that completes a written set (after the pass that wrote its units succeeded)."""
    features.write_json(cache.stats_path, {name: stats[name] for name in STATS if name in stats})


def saved_pool(cache: DedupCache | None, key: str) -> dict | None:
    """The pool statistics saved under ``key`` (``publish_pool``) when this run reads the decisions, else None."""
    if cache is None or not cache.reuse or not features.exists(cache.pool_path(key)):
        return None
    return features.read_json(cache.pool_path(key))


def publish_pool(cache: DedupCache, key: str, stats: dict) -> None:
    """Save a run's statistics of its pool (``metrics.pool_part`` of its stats) under ``key``, if it has any."""
    part = metrics.pool_part(stats)
    if part["scores"] or "vendi" in part:
        features.write_json(cache.pool_path(key), part)


class _SaveUnitFn(beam.DoFn):
    """(unit, ``merge_streams`` of its decisions) -> the unit's file of the cache."""

    def __init__(self, cache: DedupCache):
        self._cache = cache

    def process(self, element):
        unit, merged = element
        features.write_bytes(self._cache.unit_path(unit), pickle.dumps(merged, protocol=pickle.HIGHEST_PROTOCOL))


class _LoadUnitFn(beam.DoFn):
    """Unit -> its saved decisions, on the outputs ``exact`` and ``near`` as the dedup steps emit them."""

    def __init__(self, cache: DedupCache):
        self._cache = cache

    def process(self, unit: int):
        yield from merged_outputs((unit, pickle.loads(features.read_bytes(self._cache.unit_path(unit)))))


def save(merged: beam.PCollection, cache: DedupCache) -> None:
    """Write every unit's decisions (``merged``: (unit, ``merge_streams`` of its grouped decisions))."""
    _ = merged | "SaveDedup" >> beam.ParDo(_SaveUnitFn(cache))


def load(pipeline: beam.Pipeline, units: beam.PCollection, cache: DedupCache, dedup_steps: str) -> tuple[dict, dict]:
    """The saved decision streams and stats of the steps in ``dedup_steps``: ({stream: PCollection}, {stat: PCollection})."""
    loaded = units | "LoadDedup" >> beam.ParDo(_LoadUnitFn(cache)).with_outputs(*STREAMS)
    saved = features.read_json(cache.stats_path)
    steps = {"exact": ("exact", "dedup_exact"), "minhash": ("near", "dedup_minhash")}
    streams, stats = {}, {}
    for step, (stream, stat) in steps.items():
        if step in dedup_steps:
            streams[stream] = loaded[stream]
            stats[stat] = pipeline | f"Saved{stat.title().replace('_', '')}" >> beam.Create([saved[stat]])
    return streams, stats
