"""The decide and write passes: from the features table to ``selected/``, ``scores/``, ``errors/`` and the stats.

    features ─► [decide] compact rows only: exact groups, LSH bands -> components, too short,
                         SemDeDup, keys, quotas, exact-N selection and its random baseline
    shards ──► [write]  per unit: re-read the text, keep the selected rows, append winnow's
                         columns, write Parquet with the input's own schema

Every shuffle carries compact arrays keyed by shard, unit or cluster; text is read only per unit,
from the shards themselves: by the write step, and by the near-dedup guard for the members of a
component above ``--max-cluster-size`` (their shingle sets, not their text, go on to the
component). Decisions reach a unit as grouped arrays of ordinals (``CoGroupByKey`` on the unit),
and each per-unit step reads the columns it needs from the unit's features shard itself, so the
features never travel either.
"""

import dataclasses
import json
import uuid
from typing import NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from winnow.pipelines import dedup_cache, features, metrics, progress
from winnow.pipelines.dedup_cache import DedupCache
from winnow.pipelines.features import FeaturesTable
from winnow.transforms import combined, deadletter, dedup, diversity, dsir, io, kmeans, quotas, schema, seeded, select, semdedup, tally
from winnow.transforms.combined import CombinedConfig
from winnow.transforms.diversity import DiversityConfig
from winnow.transforms.minhash import MinHashConfig, band_keys
from winnow.transforms.select import KeyBatch, TotalQuota
from winnow.transforms.semdedup import SemDedupConfig

NAMESPACE = "winnow.decide"
SAMPLES_PER_OUTCOME = 5  # report: sample documents per outcome, and members per duplicate cluster shown
SAMPLED_CLUSTERS = 5  # report: the largest near-duplicate clusters and exact groups shown with their members
OPENING_CHARS = 300
ROW_GROUP_BYTES = 32 << 20  # selected/: a row group per ~32 MB of Arrow data, not one per read batch of a few selected rows
SCORE_COLUMNS = {  # features column -> winnow column, in output order
    features.DSIR_LOG_WEIGHT: schema.DSIR_LOG_WEIGHT,
    features.DSIR_TARGET_LOG_WEIGHTS: schema.DSIR_TARGET_LOG_WEIGHTS,
    features.ZIPFIT_ALIGNMENT: schema.ZIPFIT_ALIGNMENT,
    features.CLUSTER: schema.CLUSTER,
    features.CLUSTER_DISTANCE: schema.CLUSTER_DISTANCE,
}
PLOTTED = (features.DSIR_LOG_WEIGHT, features.ZIPFIT_ALIGNMENT, features.CLUSTER_DISTANCE)
# outcome codes of a valid row, in precedence order (schema.DROP_REASONS); 0 = still eligible
ELIGIBLE = 0
CODES = {reason: code for code, reason in enumerate(schema.DROP_REASONS, start=1)}


@dataclasses.dataclass(frozen=True)
class DecideOptions:
    """The selection options (free on re-selection from a features table) and what the run writes.

    Attributes:
        method: random, dsir, zipfit, kmeans or combined (or "all" for ``winnow dedup``: keep every eligible record).
        quota: how many to select.
        dedup: "none", "exact", "minhash" or "exact,minhash".
        minhash: the MinHash config (its threshold, bands, guard and rounds apply here).
        seed: the selection seed.
        runs_dsir: DSIR scores exist and the method uses them (its too-short rule applies).
        min_tokens: DSIR's too-short rule: fewer tokens than this is ``too_short``.
        dsir_top_k: rank by the log weight instead of importance resampling.
        rounds: T > 1 to select target by target (``--dsir-separate-targets``), else 1.
        strategy: kmeans: ``diversity`` (the log-determinant greedy) or a cluster quota strategy.
        combined: the combined method's quality weights.
        diversity: the diversity step's settings (D, the greedy's ridge, ...).
        semdedup: SemDeDup within clusters, or None.
        write_scores: also write ``scores/``.
        against: dedup indexes (their directories) whose documents this run's must not duplicate.
        index_shards: with ``--dedup-index``, the path prefix of the index shards this run writes
            (its selected records' ids, hashes and signatures), else None.
    """

    method: str
    quota: TotalQuota
    dedup: str
    minhash: MinHashConfig
    seed: int
    runs_dsir: bool
    min_tokens: int = 100
    dsir_top_k: bool = False
    rounds: int = 1
    strategy: str = quotas.DIVERSITY
    combined: CombinedConfig = CombinedConfig()
    diversity: DiversityConfig = DiversityConfig()
    semdedup: SemDedupConfig | None = None
    write_scores: bool = False
    against: tuple[str, ...] = ()
    index_shards: str | None = None

    @property
    def clusters(self) -> bool:
        return self.method in ("kmeans", "combined")

    @property
    def too_short_below(self) -> int | None:
        """The token count below which an eligible record is ``too_short``, or None when the rule does not apply."""
        return self.min_tokens if self.runs_dsir and self.min_tokens else None

    @property
    def diverse(self) -> bool:
        """Selected by the diversity step (``diversity.py``), not by per-cluster quotas."""
        return self.method == "combined" or (self.method == "kmeans" and self.strategy == quotas.DIVERSITY)

    @property
    def complexity_quotas(self) -> bool:
        """kmeans with the complexity strategy: the one step that reads the k-means centroids."""
        return self.method == "kmeans" and self.strategy == quotas.COMPLEXITY


class DsirLayout(NamedTuple):
    """What the decide pass needs of the DSIR fit: the config, the target and raw n-gram counts, the target shares."""

    config: dsir.DsirConfig
    target_counts: np.ndarray
    raw_counts: np.ndarray
    shares: tuple


@dataclasses.dataclass(frozen=True)
class Layout:
    """What the decide and write passes read and write.

    Attributes:
        table: the features table; ``table_columns`` its columns.
        units: the work units of the table's inputs.
        read, ids: how the shards are read (for the write step), and the id policy of the inputs.
        id_column: the output column holding the id (the id field, or ``winnow_id``).
        input_schema: the input columns' unified schema; ``output_schema`` that plus winnow's columns.
        output: the output directory.
        shards: dedup shards (``dedup.shard_count`` of the valid records).
        dsir: the DSIR fit's ``DsirLayout`` (KL reduction, rounds), or None.
        centroids: the k-means centroids (the complexity strategy), or None.
        index_units: dedup index units -> their shard paths.
        progress: the progress folder, or None.
        dedup_cache: the features table's saved dedup decisions this run reads or writes, or None.
        saved_pool: the statistics of this run's pool saved beside those decisions
            (``dedup_cache.saved_pool``), or None.
    """

    table: FeaturesTable
    table_columns: tuple[str, ...]
    units: tuple[io.Unit, ...]
    read: io.ReadConfig
    ids: io.IdPolicy
    id_column: str
    input_schema: pa.Schema
    output_schema: pa.Schema
    output: str
    shards: int
    dsir: DsirLayout | None = None
    centroids: np.ndarray | None = None
    index_units: dict = dataclasses.field(default_factory=dict)
    progress: str | None = None
    dedup_cache: DedupCache | None = None
    saved_pool: dict | None = None

    def part(self, kind: str, unit: int, suffix: str) -> str:
        return FileSystems.join(self.output, kind, f"part-{unit:05d}{suffix}")


# --- per-unit steps ----------------------------------------------------------------------------


def _valid(table: pa.Table) -> np.ndarray:
    return np.asarray(table.column(features.INVALID_REASON).is_null().to_numpy(zero_copy_only=False), dtype=bool)


def _ids(table: pa.Table) -> np.ndarray:
    return np.array(table.column(features.ID).to_pylist(), dtype=object)


def _floats(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)


def _ordinal_set(grouped, field: int = 0) -> np.ndarray:
    parts = [part[field] for part in grouped]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


class _ExactRowsFn(beam.DoFn):
    """Unit -> (unit, ordinals, ids, exact hashes) of its valid records."""

    def __init__(self, table: FeaturesTable):
        self._table = table

    def process(self, unit: int):
        rows = self._table.read(unit, [features.ID, features.INVALID_REASON, features.EXACT_HASH])
        valid = _valid(rows)
        yield unit, np.flatnonzero(valid), _ids(rows)[valid], features.hashes_of(rows.column(features.EXACT_HASH))[valid]


ID_SHARD_ROWS = 500_000  # ids per shard of the uniqueness check


class _IdShardsFn(beam.DoFn):
    """Unit -> (shard, (ids, sources)) of its valid records, sharded by a hash of the id (the uniqueness check)."""

    def __init__(self, table: FeaturesTable, units: tuple, shards: int):
        self._table, self._units, self._shards = table, units, shards

    def process(self, unit: int):
        rows = self._table.read(unit, [features.ID, features.INVALID_REASON, features.POSITION])
        valid = _valid(rows)
        ids = _ids(rows)[valid]
        positions = rows.column(features.POSITION).to_numpy()[valid]
        shard = dedup.shard_of(seeded.hash64(ids, "id-check"), self._shards)
        path = self._units[unit].path
        for s, rows in dedup.key_groups(shard):
            yield s, (ids[rows], [f"{path}:{p}" for p in positions[rows].tolist()])


def _duplicate_ids(element):
    """(shard, [(ids, sources)]) -> (id, (records, its two first sources)) for every id held by two or more records."""
    _, parts = element
    seen: dict = {}
    for ids, sources in parts:
        for doc_id, source in zip(ids.tolist(), sources):
            seen.setdefault(doc_id, []).append(source)
    for doc_id, sources in seen.items():
        if len(sources) > 1:
            yield doc_id, (len(sources), sorted(sources)[:2])


def check_unique(duplicate: list) -> None:
    """Raise ValueError naming the id, its records and two of their sources when ``duplicate`` holds one."""
    if duplicate:
        doc_id, (count, sources) = duplicate[0]
        raise ValueError(f"duplicate id {doc_id!r}: {count} records, in {' and '.join(sources)}; ids must be unique across the inputs")


class _BandRowsFn(beam.DoFn):
    """(unit, {"exact": drops}) -> (unit, ordinals, band keys) of its valid records that exact dedup kept."""

    def __init__(self, table: FeaturesTable, band_rows: tuple[int, int]):
        self._table, self._band_rows = table, band_rows

    def process(self, element):
        unit, grouped = element
        rows = self._table.read(unit, [features.INVALID_REASON, features.SIGNATURE])
        keep = _valid(rows)
        keep[_ordinal_set(grouped.get("exact", []))] = False
        ordinals = np.flatnonzero(keep)
        yield unit, ordinals, band_keys(features.signatures_of(rows.column(features.SIGNATURE))[ordinals], *self._band_rows)


class _IndexRowsFn(beam.DoFn):
    """(index unit, the run's key filter) -> the unit's rows that can meet a run document, as the exact
    (``band_rows`` None: rows with an exact hash in the filter) or near (rows with a band key in it)
    dedup steps take them. The other rows share no key with the run, so they could only link indexed
    documents to one another, which dedup never does."""

    def __init__(self, index_units: dict, band_rows: tuple[int, int] | None):
        self._index_units, self._band_rows = index_units, band_rows

    def process(self, unit: int, run_keys: np.ndarray):
        shard = pq.ParquetFile(FileSystems.open(self._index_units[unit]))
        if self._band_rows is None:
            rows = shard.read(columns=[features.ID, features.EXACT_HASH])
            hashes = features.hashes_of(rows.column(features.EXACT_HASH))
            ordinals = np.flatnonzero(dedup.key_filter_contains(run_keys, hashes[:, 0]))
            yield unit, ordinals, _ids(rows.take(pa.array(ordinals))), hashes[ordinals]
        else:  # the shard's stored band keys when they are this run's bands, else computed from its signatures
            stored = (shard.schema_arrow.metadata or {}).get(features.BAND_ROWS_KEY) == features.band_rows_tag(self._band_rows)
            if stored:
                keys = features.fixed_lists_of(shard.read(columns=[features.BAND_KEYS]).column(features.BAND_KEYS), np.uint64)
            else:
                keys = band_keys(features.signatures_of(shard.read(columns=[features.SIGNATURE]).column(features.SIGNATURE)), *self._band_rows)
            ordinals = np.flatnonzero(dedup.key_filter_contains(run_keys, keys.reshape(-1)).reshape(keys.shape).any(axis=1))
            yield unit, ordinals, keys[ordinals]


class UnitTexts(dedup.TextSource):
    """``dedup.TextSource`` over the run's input shards: parses only the rows asked for (``io.read_unit``'s ``only``)."""

    def __init__(self, units: tuple, read: io.ReadConfig, ids: io.IdPolicy):
        self._units, self._read, self._ids = units, read, ids

    def texts(self, unit: int, ordinals: np.ndarray) -> list[str]:
        found = {}
        for batch in io.read_unit(self._units[unit], self._read, self._ids, only=ordinals):
            found.update(zip(batch.ordinals.tolist(), batch.texts))
        missing = [o for o in ordinals.tolist() if o not in found]
        if missing:
            raise io.InputError(f"{self._units[unit].path}: record {missing[0]} of unit {unit} was scored but is no longer valid; "
                                "has the input changed since the features were written?")
        return [found[o] for o in ordinals.tolist()]


def _run_keys(rows: beam.PCollection, keys_of, bits: int, label: str) -> beam.pvalue.AsSingleton:
    """The key filter of the run's rows' keys (``keys_of(element)`` -> uint64 keys), as a side input."""
    return beam.pvalue.AsSingleton(rows | f"{label}Keys" >> beam.Map(keys_of) | f"{label}Filter" >> beam.CombineGlobally(dedup.KeyFilterCombineFn(bits)))


@dataclasses.dataclass
class Pool:
    """One unit's eligible records after dedup and the too-short rule: ordinals, ids and score columns."""

    unit: int
    ordinals: np.ndarray
    ids: np.ndarray
    scores: dict  # features column -> (n,) array (DSIR target weights: (n, T))


class _PoolFn(beam.DoFn):
    """(unit, {"exact", "near"}) -> (unit, Pool) of its eligible records; ``too_short``: (unit, (ordinals,))."""

    def __init__(self, table: FeaturesTable, options: DecideOptions, score_columns: list[str]):
        self._table, self._options, self._score_columns = table, options, score_columns

    def process(self, element):
        unit, grouped = element
        columns = [features.ID, features.INVALID_REASON, *self._score_columns]
        rows = self._table.read(unit, columns)
        eligible = _valid(rows)
        eligible[_ordinal_set(grouped.get("exact", []))] = False
        for ordinals, _, _, _, dropped in grouped.get("near", []):
            eligible[ordinals[dropped]] = False
        if self._options.too_short_below is not None:
            short = eligible & (rows.column(features.DSIR_LENGTH).to_numpy(zero_copy_only=False) < self._options.too_short_below)
            eligible &= ~short
            if short.any():
                yield beam.pvalue.TaggedOutput("too_short", (unit, (np.flatnonzero(short),)))
        ordinals = np.flatnonzero(eligible)
        scores = {}
        for name in columns[2:]:
            column = rows.column(name)
            if name == features.DSIR_TARGET_LOG_WEIGHTS:
                values = column.take(pa.array(ordinals)).to_pylist()
                scores[name] = np.array(values, dtype=np.float64) if values else np.zeros((0, 0))
            else:
                scores[name] = column.to_numpy(zero_copy_only=False)[ordinals]
        yield unit, Pool(unit, ordinals, _ids(rows)[ordinals], scores)


class _EmbeddingsFn(beam.DoFn):
    """(unit, Pool) -> (unit, ordinals, ids, clusters, (n, d) float32 unit embeddings) of the pool's rows."""

    def __init__(self, table: FeaturesTable):
        self._table = table

    def process(self, element):
        unit, pool = element
        rows = self._table.read(unit, [features.EMBEDDING], pool.ordinals)
        yield unit, pool.ordinals, pool.ids, pool.scores[features.CLUSTER].astype(np.int64), features.embeddings_of(rows.column(features.EMBEDDING))


def _cluster_partials(element):
    """Pool embeddings -> (cluster, kmeans.ClusterStats) partial sums (the complexity strategy's d_intra)."""
    _, _, _, clusters, found = element
    return kmeans.cluster_partials(found, clusters, np.zeros(len(clusters))) if len(clusters) else []


def _semantic_groups(element, sizes: dict, max_group_size: int):
    """Pool embeddings -> ((cluster, part), (docrefs, ids, vectors)) per SemDeDup group."""
    unit, ordinals, ids, clusters, found = element
    parts = np.array([semdedup.group_part(str(i), semdedup.group_parts(sizes[c], max_group_size)) for i, c in zip(ids, clusters.tolist())],
                     dtype=np.int64)
    for cluster, part in sorted(set(zip(clusters.tolist(), parts.tolist()))):
        mask = (clusters == cluster) & (parts == part)
        yield (cluster, part), (dedup.docrefs(unit, ordinals[mask]), ids[mask], found[mask])


class _SemanticDedupFn(beam.DoFn):
    """((cluster, part), [(docrefs, ids, vectors)]) -> per unit (unit, (ordinals, kept ids)) of the duplicates;
    ``groups``: (records compared, duplicates) per group."""

    def __init__(self, eps: float):
        self._eps = eps

    def setup(self):
        self._exits = tally.Exits(semdedup.NAMESPACE)

    def process(self, element):
        _, parts = element
        refs, ids, found = dedup.concat_parts(parts)
        order = np.argsort(ids, kind="stable")
        refs, ids, found = refs[order], ids[order], found[order]
        duplicate_of = semdedup.semantic_duplicates(found, self._eps)
        duplicates = duplicate_of >= 0
        self._exits.count({tally.KEPT: int((~duplicates).sum()), schema.SEMANTIC_DUPLICATE: int(duplicates.sum())})
        yield beam.pvalue.TaggedOutput("groups", (len(ids), int(duplicates.sum())))
        dropped, kept = refs[duplicates], ids[duplicate_of[duplicates]]
        for unit, mask in dedup.unit_masks(dropped):
            yield unit, (dedup.ordinal_of(dropped[mask]), kept[mask])


def _without_semantic(element):
    """(unit, {"pool": [Pool], "semantic": [(ordinals, kept ids)]}) -> (unit, Pool) without the semantic duplicates."""
    unit, grouped = element
    for pool in grouped["pool"]:
        drop = np.isin(pool.ordinals, _ordinal_set(grouped["semantic"]))
        yield unit, Pool(unit, pool.ordinals[~drop], pool.ids[~drop], {name: values[~drop] for name, values in pool.scores.items()})


def _semdedup_stats(totals: tuple, sizes: dict, config: SemDedupConfig) -> dict:
    groups, records, duplicates, largest = totals
    return {"eps": config.eps, "max_group_size": config.max_group_size, "groups": groups, "records": records,
            "semantic_duplicates": duplicates, "largest_group": largest,
            "split_clusters": sum(1 for size in sizes.values() if size > config.max_group_size)}


# --- selection keys ------------------------------------------------------------------------------


def quality_columns(pool: Pool) -> dict[str, np.ndarray]:
    """The combined method's quality scores in a pool (the features table's: ZIP-FIT only when scored)."""
    return {name: pool.scores[name].astype(np.float64) for name in (features.DSIR_LOG_WEIGHT, features.ZIPFIT_ALIGNMENT) if name in pool.scores}


def _quality_weights(options: DecideOptions) -> dict[str, float]:
    return {features.DSIR_LOG_WEIGHT: options.combined.dsir_weight, features.ZIPFIT_ALIGNMENT: options.combined.zipfit_weight}


def selection_keys(pool: Pool, options: DecideOptions, id_lookup) -> KeyBatch:
    """The ``KeyBatch`` of a pool for ``options.method`` (``select.py`` keeps the top keys of each group).

    random: ``seeded.uniform(id)``; dsir: ``log w + Gumbel(seed, id)`` (``log w`` with top-k; one
    column per target with separate targets, round t's noise from ``round_seed(seed, t)``);
    zipfit: the alignment; kmeans with a quota strategy: per cluster, ``uniform(id)``, or for
    ``prototypes`` the distance to the centroid (the least prototypical first). The diversity
    step (kmeans' default strategy, and combined) keys its candidates itself (``diversity_keys``).
    ``id_lookup`` is the batch's ids (``FeaturesTable.ids``): the selection reads tied records' ids only.
    """
    n = len(pool.ordinals)
    groups = np.zeros(n, np.int64)
    round_keys = None
    if options.method == "dsir":
        if options.rounds > 1:
            weights = pool.scores[features.DSIR_TARGET_LOG_WEIGHTS].reshape(n, options.rounds)
            noise = np.stack([seeded.gumbel(pool.ids, seeded.round_seed(options.seed, t)) for t in range(options.rounds)], axis=1) if n else 0
            round_keys = weights if options.dsir_top_k else weights + noise
            keys = round_keys[:, 0] if n else np.zeros(0)
        else:
            weights = pool.scores[features.DSIR_LOG_WEIGHT].astype(np.float64)
            keys = weights if options.dsir_top_k else weights + seeded.gumbel(pool.ids, options.seed)
    elif options.method == "zipfit":
        keys = pool.scores[features.ZIPFIT_ALIGNMENT].astype(np.float64)
    elif options.method == "kmeans":
        groups = pool.scores[features.CLUSTER].astype(np.int64)
        distances = pool.scores[features.CLUSTER_DISTANCE].astype(np.float64)
        keys = quotas.within_cluster_key(options.strategy, distances, seeded.uniform(pool.ids, options.seed))
    else:
        keys = seeded.uniform(pool.ids, options.seed)
    return KeyBatch(pool.unit, pool.ordinals, id_lookup, groups, np.asarray(keys, np.float64), round_keys)


def quality_batch(pool: Pool, options: DecideOptions, moments: dict, id_lookup) -> KeyBatch:
    """The combined method's quality keys of a pool (``combined.quality_keys``), one group."""
    keys = combined.quality_keys(quality_columns(pool), moments, _quality_weights(options), seeded.gumbel(pool.ids, options.seed),
                                 features.DSIR_LOG_WEIGHT)
    return KeyBatch(pool.unit, pool.ordinals, id_lookup, np.zeros(len(pool.ordinals), np.int64), keys)


def baseline_keys(pool: Pool, seed: int, id_lookup) -> KeyBatch:
    """Random keys of the report's baseline, one group: the unit's row keys (``seeded.row_keys``, stream
    ``baseline:<unit>``) in (0, 1); a random sample independent of the selection, hashing no id."""
    keys = seeded.row_keys(seed, f"baseline:{pool.unit}", pool.ordinals)
    return KeyBatch(pool.unit, pool.ordinals, id_lookup, np.zeros(len(pool.ordinals), np.int64), seeded.unit_interval(keys))


@dataclasses.dataclass(frozen=True)
class SizeQuota:
    """Quota of the random baseline: exactly the selection's size (its stats' summed quota), from one group."""

    def __call__(self, counts: dict[int, int], selection_stats: dict) -> dict[int, int]:
        return {group: min(sum(selection_stats["quota"].values()), count) for group, count in counts.items()}


# --- finishing a unit --------------------------------------------------------------------------


@dataclasses.dataclass
class Chosen:
    """What the write step needs of one unit: its selected ordinals and their winnow columns, its baseline ordinals."""

    unit: int
    ordinals: np.ndarray
    columns: dict  # winnow column -> Arrow array aligned with ``ordinals``
    baseline: np.ndarray


def _temporary(path: str) -> str:
    """A temporary name next to ``path``; ``runner.clean_temporary`` removes leftovers of a killed run."""
    return f"{path}.inprogress-{uuid.uuid4().hex[:12]}"


def write_atomically(path: str, write) -> None:
    """``write(handle)`` into a temporary file, then move it to ``path`` (a reader never sees half a file)."""
    temporary = _temporary(path)
    with FileSystems.create(temporary, mime_type="application/octet-stream") as handle:
        write(handle)
    FileSystems.rename([temporary], [path])


def _arrow(values: np.ndarray, arrow_type: pa.DataType) -> pa.Array:
    if pa.types.is_list(arrow_type):
        return pa.array([None if v is None else list(v) for v in values], arrow_type)
    return pa.array(values.tolist() if values.dtype == object else values, arrow_type)


class _FinishUnitFn(beam.DoFn):
    """(unit, grouped decisions) -> the unit's ``scores/`` and ``errors/`` parts written.

    Outputs: main ``Chosen``; ``counts``: {outcome or invalid_<reason>: records}; ``values``:
    (score, "all" | "selected", (n,) row keys, (n,) values); ``vectors``: ("all" | "selected" | "random", (n, d));
    ``samples``: (outcome, (key, unit, ordinal)) candidates for the report's sample documents.
    With ``pool_saved``, the "all" subset's statistics are saved ones: no "all" values or vectors.
    """

    def __init__(self, layout: Layout, options: DecideOptions, score_columns: list[str], plotted: list[str], vectors_wanted: bool,
                 pool_saved: bool):
        self._layout, self._options, self._score_columns = layout, options, score_columns
        self._plotted, self._vectors, self._subsets = plotted, vectors_wanted, ("selected",) if pool_saved else (metrics.ALL, "selected")

    def setup(self):
        self._exits = tally.Exits(NAMESPACE)

    def process(self, element, duplicate, cluster_members):
        check_unique(duplicate)
        unit, g = element
        layout, options = self._layout, self._options
        columns = [features.ID, features.POSITION, features.INVALID_REASON, features.RAW, *self._score_columns]
        rows = layout.table.read(unit, columns)
        n = rows.num_rows
        valid = _valid(rows)
        code = np.where(valid, ELIGIBLE, -1).astype(np.int8)
        duplicate_of = np.full(n, None, dtype=object)
        duplicate_source = np.full(n, None, dtype=object)
        cluster = np.full(n, None, dtype=object)
        for ordinals, kept_ids, kept_sources in g.get("exact", []):
            code[ordinals] = CODES[schema.EXACT_DUPLICATE]
            duplicate_of[ordinals] = [str(i) for i in kept_ids]
            duplicate_source[ordinals] = [self._source_name(s) for s in kept_sources]
        for ordinals, rep_ids, rep_sources, cluster_ids, dropped in g.get("near", []):
            cluster[ordinals] = cluster_ids.tolist()
            near = ordinals[dropped & (code[ordinals] == ELIGIBLE)]
            which = dropped & (code[ordinals] == ELIGIBLE)
            code[near] = CODES[schema.NEAR_DUPLICATE]
            duplicate_of[near] = [str(i) for i in rep_ids[which]]
            duplicate_source[near] = [self._source_name(s) for s in rep_sources[which]]
        for (ordinals,) in g.get("too_short", []):
            code[ordinals] = CODES[schema.TOO_SHORT]
        for ordinals, kept_ids in g.get("semantic", []):
            code[ordinals] = CODES[schema.SEMANTIC_DUPLICATE]
            duplicate_of[ordinals] = [str(i) for i in kept_ids]
        pool = code == ELIGIBLE
        selected = np.zeros(n, dtype=bool)
        round_of = np.full(n, None, dtype=object)
        for t in range(options.rounds):
            for ordinals in g.get(f"selected{t}", []):
                selected[ordinals] = True
                round_of[ordinals] = t
        code[pool & ~selected] = CODES[schema.NOT_SELECTED]
        baseline = np.zeros(n, dtype=bool)
        for ordinals in g.get("baseline", []):
            baseline[ordinals] = True
        reasons = np.array([None, *schema.DROP_REASONS], dtype=object)
        drop_reason = np.where(code > 0, reasons[np.clip(code, 0, None)], None)
        invalid = [r for r in rows.column(features.INVALID_REASON).to_pylist() if r is not None]
        counts = {**tally.count_values(drop_reason[valid & ~selected].tolist()), schema.SELECTED: int(selected.sum()),
                  **{tally.invalid_exit(r): c for r, c in tally.count_values(invalid).items()}}
        self._exits.count(counts)
        yield beam.pvalue.TaggedOutput("counts", counts)
        self._write_errors(unit, rows, valid)
        scores = {SCORE_COLUMNS[name]: rows.column(name) for name in self._score_columns if name in SCORE_COLUMNS}
        if options.write_scores:
            self._write_scores(unit, rows, valid, scores, selected, drop_reason, duplicate_of, duplicate_source, cluster)
        if options.index_shards is not None:
            yield beam.pvalue.TaggedOutput("index_rows", (unit, self._write_index_shard(unit, rows, selected)))
        chosen = {name: column.take(pa.array(np.flatnonzero(selected))) for name, column in scores.items()}
        if options.rounds > 1:
            chosen[schema.DSIR_TARGET] = pa.array(round_of[selected].tolist(), pa.int32())
        yield Chosen(unit, np.flatnonzero(selected), chosen, np.flatnonzero(baseline))
        masks = {metrics.ALL: pool | selected, "selected": selected, "random": baseline}
        keys = seeded.row_keys(options.seed, f"report:{unit}", np.arange(n))  # the report's choices among rows
        for name in self._plotted:
            values = rows.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
            for subset in self._subsets:
                in_subset = masks[subset] & ~np.isnan(values)
                yield beam.pvalue.TaggedOutput("values", (SCORE_COLUMNS[name], subset, keys[in_subset], values[in_subset]))
        if self._vectors:
            # float16 as stored: GramCombineFn converts a block of rows at a time
            found = features.embeddings_of(layout.table.read(unit, [features.EMBEDDING]).column(features.EMBEDDING), features.EMBEDDING_DTYPE)
            for name in (*self._subsets, "random"):
                if masks[name].any():
                    yield beam.pvalue.TaggedOutput("vectors", (name, found[masks[name]]))
        ids = _ids(rows)
        outcome = np.where(selected, "selected", drop_reason)
        for name in set(outcome[valid].tolist()):
            rows_of = np.flatnonzero(valid & (outcome == name))
            best = rows_of[np.argsort(keys[rows_of], kind="stable")[:SAMPLES_PER_OUTCOME]]
            for row in best.tolist():
                yield beam.pvalue.TaggedOutput("samples", (name, (int(keys[row]), unit, row, str(ids[row]), duplicate_of[row])))
        if cluster_members:  # the few members of the report's largest clusters found in this unit
            names = pa.array(list(cluster_members), pa.string())
            found = pc.is_in(rows.column(features.ID).cast(pa.string()), value_set=names).to_numpy(zero_copy_only=False)
            for row in np.flatnonzero(valid & found).tolist():
                label = cluster_members[str(ids[row])]
                yield beam.pvalue.TaggedOutput("samples", (label, (int(keys[row]), unit, row, str(ids[row]), duplicate_of[row])))

    def _write_index_shard(self, unit: int, rows: pa.Table, selected: np.ndarray) -> int:
        """The unit's selected records as a dedup index shard (id, exact hash; with signatures, signature and the
        band keys of this run's bands, named in the schema metadata); returns the rows written."""
        kept = np.flatnonzero(selected)
        if not len(kept):
            return 0
        names = [features.EXACT_HASH] + ([features.SIGNATURE] if features.SIGNATURE in self._layout.table_columns else [])
        shard = self._layout.table.read(unit, names, kept)
        table = pa.table({features.ID: rows.column(features.ID).take(pa.array(kept)), features.EXACT_HASH: shard.column(features.EXACT_HASH)})
        if features.SIGNATURE in names:
            band_rows = self._options.minhash.band_rows
            signatures = features.signatures_of(shard.column(features.SIGNATURE))
            keys = band_keys(signatures, *band_rows)
            table = table.append_column(features.SIGNATURE, features.signature_array(signatures))
            table = table.append_column(features.BAND_KEYS, features.fixed_rows_array(keys)).replace_schema_metadata(
                {features.BAND_ROWS_KEY: features.band_rows_tag(band_rows)})
        write_atomically(f"{self._options.index_shards}-{unit:05d}.parquet",
                         lambda handle: pq.write_table(table, handle, **features.parquet_options(table.schema)))
        return len(kept)

    def _source_name(self, source: int) -> str | None:
        against = self._options.against
        return against[source] if source < len(against) else None

    def _write_errors(self, unit: int, rows: pa.Table, valid: np.ndarray) -> None:
        invalid = np.flatnonzero(~valid)
        if not len(invalid):
            return
        path = self._layout.units[unit].path
        positions = rows.column(features.POSITION).to_numpy()
        reasons = rows.column(features.INVALID_REASON).to_pylist()
        raws = rows.column(features.RAW).to_pylist()
        lines = "".join(
            json.dumps(deadletter.dead_letter(path, int(positions[i]), reasons[i], raws[i] or ""), ensure_ascii=False, sort_keys=True) + "\n"
            for i in invalid.tolist()
        )
        write_atomically(self._layout.part("errors", unit, ".jsonl"), lambda handle: handle.write(lines.encode("utf-8")))

    def _write_scores(self, unit, rows, valid, scores, selected, drop_reason, duplicate_of, duplicate_source, cluster) -> None:
        keep = pa.array(np.flatnonzero(valid))
        ids = rows.column(features.ID).take(keep)
        columns = {self._layout.id_column: ids.cast(pa.string()) if self._layout.id_column == schema.ID else ids}
        columns.update({name: column.take(keep) for name, column in scores.items()})
        columns[schema.DUPLICATE_OF] = _arrow(duplicate_of[valid], pa.string())
        if self._options.against:
            columns[schema.DUPLICATE_SOURCE] = _arrow(duplicate_source[valid], pa.string())
        if "minhash" in self._options.dedup:
            columns[schema.DEDUP_CLUSTER] = _arrow(cluster[valid], pa.int64())
        columns[schema.SELECTED] = pa.array(selected[valid])
        columns[schema.DROP_REASON] = _arrow(drop_reason[valid], pa.string())
        table = pa.table(columns)
        write_atomically(self._layout.part("scores", unit, ".parquet"), lambda handle: pq.write_table(table, handle, compression="zstd"))


def _in_sorted(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """(n,) bool: which ``values`` occur in the ascending array ``sorted_set`` (``np.isin`` without sorting again)."""
    if not len(sorted_set):
        return np.zeros(len(values), bool)
    return sorted_set[np.minimum(np.searchsorted(sorted_set, values), len(sorted_set) - 1)] == values


class _WriteSelectedFn(beam.DoFn):
    """Chosen -> ``selected/part-NNNNN.parquet``: the unit's selected rows, input columns as read plus winnow's.

    Parses only the unit's records it needs (``io.read_unit``'s ``only``): also counts the hashed n-grams of the selected and baseline records
    (KL reduction) and takes the openings of the report's sample documents. A unit whose marker
    (``selected/_part-NNNNN.json``, its stats) exists is not written again (``--resume``).
    """

    def __init__(self, layout: Layout, output_schema: pa.Schema, dsir_config):
        self._layout, self._schema, self._dsir_config = layout, output_schema, dsir_config

    def setup(self):
        self._hasher = dsir.NgramHasher(self._dsir_config) if self._dsir_config is not None else None
        self._reporter = progress.Reporter(self._layout.progress, "write")

    def process(self, chosen: Chosen, samples: dict):
        layout = self._layout
        marker = layout.part("selected", chosen.unit, ".json").replace("/part-", "/_part-")
        if features.exists(marker):
            self._reporter.unit_done(layout.units[chosen.unit].size)
            yield _stats_from_json(features.read_json(marker))
            return
        unit = layout.units[chosen.unit]
        wanted = {ordinal: name for name, entries in samples.items() for _, u, ordinal, _, _ in entries if u == chosen.unit}
        buckets = 0 if self._hasher is None else self._dsir_config.buckets
        counts = {"selected": np.zeros(buckets, np.int64), "random": np.zeros(buckets, np.int64)}
        openings, written = {}, 0
        selected_set = chosen.ordinals
        wanted_ordinals = np.array(sorted(wanted), np.int64)

        def write(handle):
            nonlocal written
            with pq.ParquetWriter(handle, self._schema, compression="zstd") as writer:
                row_groups = _RowGroups(writer)
                baseline = chosen.baseline if self._hasher is not None else selected_set[:0]  # only the KL counts read it
                needed = np.union1d(np.union1d(selected_set, baseline), wanted_ordinals).astype(np.int64)
                for batch in io.read_unit(unit, layout.read, layout.ids, only=needed):
                    self._reporter.add(batch.records, batch.read_bytes)
                    take = np.flatnonzero(_in_sorted(batch.ordinals, selected_set))
                    for i in np.flatnonzero(_in_sorted(batch.ordinals, wanted_ordinals)).tolist():
                        openings[ordinal_key(chosen.unit, int(batch.ordinals[i]))] = batch.texts[i][:OPENING_CHARS]
                    if self._hasher is not None:
                        for name, ordinals in (("selected", selected_set), ("random", chosen.baseline)):
                            picked = [batch.texts[i] for i in np.flatnonzero(_in_sorted(batch.ordinals, ordinals)).tolist()]
                            if picked:
                                counts[name] += dsir.ngram_counts(self._hasher.featurize(picked), buckets)
                    if not len(take):
                        continue
                    table = io.conform(batch.table.take(pa.array(take)), layout.input_schema)
                    where = np.searchsorted(chosen.ordinals, batch.ordinals[take])
                    if not layout.ids.has_field:
                        table = table.append_column(schema.field(schema.ID), pa.array([batch.ids[i] for i in take.tolist()], pa.string()))
                    for name, column in chosen.columns.items():
                        table = table.append_column(schema.field(name), column.take(pa.array(where)).cast(schema.COLUMN_TYPES[name]))
                    row_groups.add(table.select(self._schema.names).cast(self._schema))
                    written += len(take)
                row_groups.flush()

        write_atomically(layout.part("selected", chosen.unit, ".parquet"), write)
        self._reporter.unit_done(unit.size)
        stats = {"unit": chosen.unit, "written": written, "kl_counts": {k: v.tolist() for k, v in counts.items()}, "openings": openings}
        features.write_json(marker, stats)
        yield _stats_from_json(stats)


class _RowGroups:
    """Tables for a ``ParquetWriter``, written as one row group each time they reach ``ROW_GROUP_BYTES`` (and at ``flush``)."""

    def __init__(self, writer: pq.ParquetWriter):
        self._writer, self._pending, self._bytes = writer, [], 0

    def add(self, table: pa.Table) -> None:
        self._pending.append(table)
        self._bytes += table.nbytes
        if self._bytes >= ROW_GROUP_BYTES:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self._writer.write_table(pa.concat_tables(self._pending))
        self._pending, self._bytes = [], 0


def _stats_from_json(stats: dict) -> dict:
    return {**stats, "kl_counts": {k: np.asarray(v, np.int64) for k, v in stats["kl_counts"].items()}}


@dataclasses.dataclass(frozen=True)
class CandidateQuota:
    """Quota of the quality candidates (``combined``): M = ``diversity.candidate_count(N, n, D)`` of the n in the pool."""

    total: TotalQuota
    diversity: float

    def __call__(self, counts: dict[int, int]) -> dict[int, int]:
        return {group: diversity.candidate_count(self.total.total(n), n, self.diversity) for group, n in counts.items()}


@dataclasses.dataclass(frozen=True)
class PoolQuota:
    """Quota of the diversity step's final selection: N of the whole pool (its size a side input), from the candidates."""

    total: TotalQuota

    def __call__(self, counts: dict[int, int], pool_size: int) -> dict[int, int]:
        return {group: min(self.total.total(pool_size), n) for group, n in counts.items()}


class _CandidateRowsFn(beam.DoFn):
    """(unit, candidate ordinals) -> (unit, ordinals, ids, clusters, lengths, (m, d) float16 stored embeddings)."""

    def __init__(self, table: FeaturesTable):
        self._table = table

    def process(self, element):
        unit, ordinals = element
        rows = self._table.read(unit, [features.ID, features.CLUSTER, features.LENGTH, features.EMBEDDING], ordinals)
        yield (unit, np.asarray(ordinals, np.int64), _ids(rows), rows.column(features.CLUSTER).to_numpy().astype(np.int64),
               rows.column(features.LENGTH).to_numpy(), features.embeddings_of(rows.column(features.EMBEDDING), features.EMBEDDING_DTYPE))


def _gram_partial(element) -> np.ndarray:
    return diversity.gram_statistic(element[5])


def _by_cluster(element):
    """Candidate rows -> (cluster, (docrefs, ids, lengths, vectors)) per cluster."""
    unit, ordinals, ids, clusters, lengths, found = element
    for cluster in np.unique(clusters).tolist():
        mask = clusters == cluster
        yield cluster, (dedup.docrefs(unit, ordinals[mask]), ids[mask], lengths[mask], found[mask])


class _DiversityKeysFn(beam.DoFn):
    """(cluster, [candidate rows]) -> per unit, a KeyBatch of the cluster's candidates keyed by ``diversity_keys``."""

    def __init__(self, config: DiversityConfig, id_lookup):
        self._config, self._id_lookup = config, id_lookup

    def process(self, element, pool_gram, n_candidates: int, n_select: int):
        _, parts = element
        refs, ids, lengths, found = dedup.concat_parts(parts)
        order = np.argsort(ids, kind="stable")
        keys = diversity.diversity_keys(found[order], lengths[order], n_candidates, n_select, pool_gram, self._config)
        refs = refs[order]
        for unit, mask in dedup.unit_masks(refs):
            yield KeyBatch(unit, dedup.ordinal_of(refs[mask]), self._id_lookup, np.zeros(int(mask.sum()), np.int64), keys[mask])


def _diverse_stats(final: dict, pool_size: int, n_candidates: int) -> dict:
    return {"pool": {0: pool_size}, "quota": final["quota"], "candidates": n_candidates}


def _diverse_selection(pipeline, pool, options: DecideOptions, layout: Layout):
    """The diversity step (``diversity.py``): candidates, the pool Gram, per-cluster greedy keys, exact N by key.

    Returns ([(unit, selected ordinals)], the selection's stats).
    """
    id_lookup = layout.table.ids
    pool_size = pool | "PoolSizes" >> beam.Map(lambda element: len(element[1].ordinals)) | "PoolSize" >> beam.CombineGlobally(sum)
    if options.method == "combined" and options.runs_dsir:
        # the quality key (DSIR's importance-resampling key, ZIP-FIT mixed in by weight) -> the top M(D) candidates
        moments = pool | "QualityPartials" >> beam.Map(lambda element: quality_columns(element[1])) | "Moments" >> beam.CombineGlobally(
            combined.MomentsCombineFn())
        candidates = (
            pool
            | "QualityKeys" >> beam.Map(lambda element, m: quality_batch(element[1], options, m, id_lookup), beam.pvalue.AsSingleton(moments))
            | "SelectCandidates" >> select.SelectTop(CandidateQuota(options.quota, options.diversity.diversity))
        )["selected"]
    else:  # no quality key: every eligible record is a candidate
        candidates = pool | "AllCandidates" >> beam.MapTuple(lambda unit, p: (unit, p.ordinals))
    # (unit, ordinals) -> candidate rows with their stored embeddings -> the pool Gram, and the rows by cluster
    rows = candidates | "CandidateRows" >> beam.ParDo(_CandidateRowsFn(layout.table))
    gram = rows | "GramPartials" >> beam.Map(_gram_partial) | "PoolGram" >> beam.CombineGlobally(_sum_arrays)
    n_candidates = rows | "CandidateSizes" >> beam.Map(lambda element: len(element[1])) | "CandidateCount" >> beam.CombineGlobally(sum)
    n_select = pool_size | "SelectCount" >> beam.Map(options.quota.total)
    keyed = (
        rows
        | "ByCluster" >> beam.FlatMap(_by_cluster)
        | "GroupClusters" >> beam.GroupByKey()
        | "DiversityKeys" >> beam.ParDo(_DiversityKeysFn(options.diversity, id_lookup), beam.pvalue.AsSingleton(gram),
                                        beam.pvalue.AsSingleton(n_candidates), beam.pvalue.AsSingleton(n_select))
    )
    chosen = keyed | "SelectDiverse" >> select.SelectTop(PoolQuota(options.quota), pool_size)
    stats = chosen["stats"] | "DiverseStats" >> beam.Map(_diverse_stats, beam.pvalue.AsSingleton(pool_size), beam.pvalue.AsSingleton(n_candidates))
    return [chosen["selected"]], stats


def _sum_arrays(arrays) -> np.ndarray | int:
    return sum(arrays, 0)


METHOD_COLUMNS = {
    "random": (), "all": (),
    "dsir": (features.DSIR_LOG_WEIGHT, features.DSIR_TARGET_LOG_WEIGHTS, features.DSIR_LENGTH),
    "zipfit": (features.ZIPFIT_ALIGNMENT,),
    "kmeans": (features.CLUSTER, features.CLUSTER_DISTANCE),
    "combined": (features.DSIR_LOG_WEIGHT, features.DSIR_LENGTH, features.ZIPFIT_ALIGNMENT, features.CLUSTER, features.CLUSTER_DISTANCE),
}
REQUIRED_COLUMNS = {"dsir": features.DSIR_LOG_WEIGHT, "zipfit": features.ZIPFIT_ALIGNMENT, "kmeans": features.CLUSTER, "combined": features.CLUSTER}


def method_columns(method: str, table_columns) -> list[str]:
    """The features columns a method selects by (and writes as winnow columns), among those the table has."""
    return [name for name in METHOD_COLUMNS[method] if name in table_columns]


# --- the pipeline --------------------------------------------------------------------------------


def _join(keyed_units: beam.PCollection, streams: dict, label: str) -> beam.PCollection:
    """(unit, {"unit": [None], name: [payloads]}) for every unit, whatever reached it."""
    return {"unit": keyed_units, **streams} | label >> beam.CoGroupByKey()


def _pool_counts(element) -> dict[int, int]:
    _, pool = element
    return tally.count_values(pool.scores[features.CLUSTER].astype(np.int64).tolist()) if features.CLUSTER in pool.scores else {}


def _complexity(stats: dict, centroids: np.ndarray, neighbors: int) -> dict:
    values = kmeans.cluster_complexity(centroids, stats, neighbors)
    return {c: float(values[c]) for c in range(len(centroids))}


def _named_singletons(pipeline: beam.Pipeline, singletons: dict, label: str) -> beam.PCollection:
    """One ``{name: value}`` from singleton PCollections (an empty dict for none)."""
    return pipeline | f"{label}Seed" >> beam.Create([None]) | label >> beam.Map(
        lambda _, **values: values, **{name: beam.pvalue.AsSingleton(pc) for name, pc in singletons.items()})


def _merge_dicts(dicts) -> dict:
    merged = {}
    for one in dicts:
        merged.update(one)
    return merged


def _sample_documents(openings: dict, samples: dict) -> dict:
    """{outcome: [{"id", "duplicate_of", "opening"}]} of the report's sample documents."""
    return {name: [{"id": doc_id, "duplicate_of": duplicate_of, "opening": openings.get(ordinal_key(unit, ordinal), "")}
                   for _, unit, ordinal, doc_id, duplicate_of in entries]
            for name, entries in samples.items()}


CLUSTER_LABELS = {"exact": "exact duplicate group of", "near": "near-duplicate cluster of"}


def _cluster_members(_, **groups) -> dict[str, str]:
    """{member id: "<kind> <kept id>"} of the largest duplicate groups' sampled members (the report shows their openings)."""
    members = {}
    for kind, summary in groups.items():
        for group in summary["largest"][:SAMPLED_CLUSTERS]:
            for member in group["ids"]:
                members.setdefault(str(member), f"{CLUSTER_LABELS[kind]} {group['kept']}")
    return members


def ordinal_key(unit: int, ordinal: int) -> str:
    return f"{unit}:{ordinal}"


def _semantic_dedup(pool, keyed, layout: Layout, config: SemDedupConfig):
    """SemDeDup within clusters: (the pool without the duplicates, the drops per unit, the stats)."""
    sizes = pool | "SemanticSizes" >> beam.Map(_pool_counts) | "SumSemanticSizes" >> beam.CombineGlobally(tally.CountsCombineFn())
    decided = (
        pool
        | "SemanticVectors" >> beam.ParDo(_EmbeddingsFn(layout.table))
        | "SemanticGroups" >> beam.FlatMap(_semantic_groups, beam.pvalue.AsSingleton(sizes), config.max_group_size)
        | "GroupSemantic" >> beam.GroupByKey()
        | "SemanticDedup" >> beam.ParDo(_SemanticDedupFn(config.eps)).with_outputs("groups", main="drops")
    )
    remaining = {"pool": pool, "semantic": decided.drops} | "JoinSemantic" >> beam.CoGroupByKey() | "WithoutSemantic" >> beam.FlatMap(_without_semantic)
    stats = (
        decided.groups
        | "SumSemanticGroups" >> beam.CombineGlobally(semdedup.DedupStatsCombineFn())
        | "SemanticStats" >> beam.Map(_semdedup_stats, beam.pvalue.AsSingleton(sizes), config)
    )
    return remaining, decided.drops, stats


def _dedup(pipeline, units, keyed, options: DecideOptions, layout: Layout) -> tuple[dict, dict]:
    """The exact and near dedup steps of ``options.dedup``: ({"exact", "near": per-unit decisions}, their stats)."""
    run_source = len(options.against)
    index_units = sorted(layout.index_units)
    streams: dict[str, beam.PCollection] = {}
    stats: dict[str, beam.PCollection] = {}
    if "exact" in options.dedup:
        # unit -> (unit, ordinals, ids, hashes) -> exact drops per unit
        rows = units | "ExactRows" >> beam.ParDo(_ExactRowsFn(layout.table))
        if index_units:
            run_keys = _run_keys(rows, lambda element: element[3][:, 0], dedup.key_filter_bits(layout.shards * dedup.ROWS_PER_SHARD), "RunExact")
            indexed = pipeline | "ListIndexExact" >> beam.Create(index_units) | "IndexExactRows" >> beam.ParDo(
                _IndexRowsFn(layout.index_units, None), run_keys)
            rows = (rows, indexed) | "WithIndexExact" >> beam.Flatten()
        exact = rows | "DedupExact" >> dedup.DedupExact(layout.shards, run_source)
        streams["exact"] = exact["drops"]
        stats["dedup_exact"] = exact["groups"]
    if "minhash" in options.dedup:
        # unit + its exact drops -> (unit, ordinals, band keys) of the rows exact dedup kept -> near decisions
        band_rows = options.minhash.band_rows
        banded = _join(keyed, {k: v for k, v in streams.items() if k == "exact"}, "JoinExactDrops") | "BandRows" >> beam.ParDo(
            _BandRowsFn(layout.table, band_rows))
        if index_units:
            run_keys = _run_keys(banded, lambda element: element[2].reshape(-1),
                                 dedup.key_filter_bits(layout.shards * dedup.ROWS_PER_SHARD * band_rows[0]), "RunBand")
            indexed = pipeline | "ListIndexNear" >> beam.Create(index_units) | "IndexBandRows" >> beam.ParDo(
                _IndexRowsFn(layout.index_units, band_rows), run_keys)
            banded = (banded, indexed) | "WithIndexNear" >> beam.Flatten()
        source = features.FeaturesSignatures(layout.table, layout.index_units)
        texts = UnitTexts(layout.units, layout.read, layout.ids)
        near = banded | "DedupNear" >> dedup.DedupNear(options.minhash, source, texts, layout.shards * band_rows[0], run_source)
        streams["near"] = near["decisions"]
        stats["dedup_minhash"] = near["stats"]
    return streams, stats


def _usable_pool_stats(saved: dict | None, plotted: list[str], vectors_wanted: bool) -> dict | None:
    """The saved pool statistics if they hold every plotted score's (and, when wanted, the Vendi stats), else None."""
    if saved is None or not set(plotted) <= set(saved["scores"]) or (vectors_wanted and "vendi" not in saved):
        return None
    return {"scores": {name: saved["scores"][name] for name in plotted}, "vendi": saved.get("vendi")}


def build_decide(pipeline: beam.Pipeline, options: DecideOptions, layout: Layout, complexity_neighbors: int = kmeans.COMPLEXITY_NEIGHBORS
                 ) -> dict[str, beam.PCollection]:
    """Add the decide and write passes to ``pipeline``; returns the run's stats as singleton PCollections."""
    stats: dict[str, beam.PCollection] = {}
    score_columns = method_columns(options.method, layout.table_columns)
    id_lookup = layout.table.ids  # every KeyBatch's id lookup: ids cross no stage boundary
    units = pipeline | "ListUnits" >> beam.Create([u.index for u in layout.units]) | "SpreadUnits" >> beam.Reshuffle()
    keyed = units | "KeyUnits" >> beam.Map(lambda unit: (unit, None))
    cache = layout.dedup_cache
    if cache is not None and cache.reuse:
        streams, dedup_stats = dedup_cache.load(pipeline, units, cache, options.dedup)
    else:
        streams, dedup_stats = _dedup(pipeline, units, keyed, options, layout)
    stats.update(dedup_stats)
    joined = _join(keyed, dict(streams), "JoinDedup")
    # one element per unit and step from here on (a component or shard each before): cheaper joins
    merged = joined | "MergeDedup" >> beam.MapTuple(lambda unit, grouped: (unit, dedup_cache.merge_streams(grouped)))
    if cache is not None and not cache.reuse:
        dedup_cache.save(merged, cache)
    outputs = merged | "SplitDedup" >> beam.FlatMap(dedup_cache.merged_outputs).with_outputs(*dedup_cache.STREAMS)
    streams = {name: outputs[name] for name in streams}
    # unit + its dedup decisions -> (unit, Pool) of eligible rows; too-short rows on the side
    pooled = joined | "Pool" >> beam.ParDo(
        _PoolFn(layout.table, options, score_columns)).with_outputs("too_short", main="pool")
    pool = pooled.pool
    streams["too_short"] = pooled.too_short
    if options.semdedup is not None:
        pool, streams["semantic"], stats["semdedup"] = _semantic_dedup(pool, keyed, layout, options.semdedup)
    if options.diverse:
        selections, stats["selection"] = _diverse_selection(pipeline, pool, options, layout)
    else:
        quota_fn, quota_input = options.quota, None
        if options.method == "kmeans":  # a quota strategy: quotas per cluster, then the keys within each
            inputs = {}
            if options.complexity_quotas:
                sums = (
                    pool
                    | "PoolVectors" >> beam.ParDo(_EmbeddingsFn(layout.table))
                    | "ClusterPartials" >> beam.FlatMap(_cluster_partials)
                    | "SumClusters" >> beam.CombinePerKey(kmeans.ClusterStatsCombineFn())
                    | "ClusterSums" >> beam.combiners.ToDict()
                )
                inputs["complexity"] = sums | "Complexity" >> beam.Map(_complexity, layout.centroids, complexity_neighbors)
            quota_fn = quotas.StrategyQuota(options.quota, options.strategy)
            quota_input = _named_singletons(pipeline, inputs, "QuotaInputs")
        keyed_pool = pool | "Keys" >> beam.Map(lambda element: selection_keys(element[1], options, id_lookup))
        if options.method == "all":
            selections = [pool | "SelectAll" >> beam.MapTuple(lambda unit, p: (unit, p.ordinals))]
            stats["selection"] = keyed_pool | "AllCounts" >> beam.Map(select.group_counts) | "CountAll" >> beam.CombineGlobally(
                tally.CountsCombineFn()) | "AllStats" >> beam.Map(lambda counts: {"pool": counts, "quota": counts})
        elif options.rounds > 1:
            shares = pipeline | "TargetShares" >> beam.Create([list(layout.dsir.shares)])
            chosen = keyed_pool | "SelectPerTarget" >> select.SelectInRounds(options.quota, options.rounds, shares)
            selections, stats["selection"] = chosen["selected"], chosen["stats"]
        else:
            chosen = keyed_pool | "SelectTop" >> select.SelectTop(quota_fn, quota_input)
            selections, stats["selection"] = [chosen["selected"]], chosen["stats"]
    for t, selected in enumerate(selections):
        streams[f"selected{t}"] = selected
    plotted = [name for name in PLOTTED if name in score_columns]
    vectors_wanted = options.clusters and features.EMBEDDING in layout.table_columns
    saved = _usable_pool_stats(layout.saved_pool, [SCORE_COLUMNS[name] for name in plotted], vectors_wanted)
    kl_wanted = layout.dsir is not None and options.runs_dsir
    if vectors_wanted or kl_wanted:  # the random baseline is the report's Vendi and KL reference, nothing else's
        streams["baseline"] = (
            pool
            | "BaselineKeys" >> beam.MapTuple(lambda unit, p: baseline_keys(p, options.seed, id_lookup))
            | "SelectBaseline" >> select.SelectTop(SizeQuota(), stats["selection"])
        )["selected"]
    # ids must be unique: decisions and ties go by id. The check is a side input of the first step that
    # writes, so a duplicate fails the job before any output is written. Saved dedup decisions passed it.
    duplicate = pipeline | "CheckedIds" >> beam.Create([[]]) if cache is not None and cache.reuse else (
        units
        | "IdShards" >> beam.ParDo(_IdShardsFn(layout.table, layout.units, max(1, layout.shards * dedup.ROWS_PER_SHARD // ID_SHARD_ROWS)))
        | "GroupIds" >> beam.GroupByKey()
        | "DuplicateIds" >> beam.FlatMap(_duplicate_ids)
        | "SmallestDuplicate" >> beam.combiners.Top.Smallest(1, key=lambda item: str(item[0]))
    )
    groups = {}
    if "dedup_exact" in stats:
        groups["exact"] = stats["dedup_exact"]
    if "dedup_minhash" in stats:
        groups["near"] = stats["dedup_minhash"] | "LargestClusters" >> beam.Map(lambda near: {"largest": near["largest_clusters"]})
    cluster_members = pipeline | "ClusterSeed" >> beam.Create([None]) | "ClusterMembers" >> beam.Map(
        _cluster_members, **{kind: beam.pvalue.AsSingleton(value) for kind, value in groups.items()})
    finished = _join(keyed, streams, "JoinDecisions") | "FinishUnits" >> beam.ParDo(
        _FinishUnitFn(layout, options, score_columns, plotted, vectors_wanted, saved is not None), beam.pvalue.AsSingleton(duplicate),
        beam.pvalue.AsSingleton(cluster_members)).with_outputs("counts", "values", "vectors", "samples", "index_rows", main="chosen")
    samples = (
        finished.samples
        | "SampleCandidates" >> beam.combiners.Top.PerKey(SAMPLES_PER_OUTCOME, key=lambda entry: -entry[0])
        | "SamplesDict" >> beam.combiners.ToDict()
    )
    written = finished.chosen | "WriteSelected" >> beam.ParDo(
        _WriteSelectedFn(layout, layout.output_schema, layout.dsir.config if kl_wanted else None), beam.pvalue.AsSingleton(samples))
    stats["counts"] = metrics.outcome_counts(finished.counts)
    if options.index_shards is not None:
        stats["index_rows"] = finished.index_rows | "IndexRows" >> beam.combiners.ToDict()
    stats["written"] = written | "Written" >> beam.Map(lambda s: s["written"]) | "SumWritten" >> beam.CombineGlobally(sum)
    stats["samples"] = written | "Openings" >> beam.Map(lambda s: s["openings"]) | "MergeOpenings" >> beam.CombineGlobally(_merge_dicts) | "Samples" >> beam.Map(
        _sample_documents, beam.pvalue.AsSingleton(samples))
    if plotted:
        stats["score_distributions"] = metrics.score_distributions(finished.values, saved and saved["scores"])
    if vectors_wanted:
        stats["vendi"] = metrics.vendi_scores(finished.vectors, saved and saved["vendi"])
    if kl_wanted:
        stats["dsir_kl"] = metrics.kl_reduction(written, layout.dsir.target_counts, layout.dsir.raw_counts)
    return stats
