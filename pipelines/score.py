"""The fit and score passes: read the shards in batches and turn every record into one features row.

    shards ──► [fit]    text in batches -> small fitted state (features/fit.pkl): DSIR raw counts
                         (a CombineFn), the seeded samples of the embedding projection and of
                         k-means, the target's models; a second read embeds the k-means sample
    shards ──► [score]  text in batches + fitted state -> features/unit-NNNNN.parquet per unit

Both passes are map-only over work units: the text is read where it is scored and never crosses a
shuffle. Each batch is tokenized and hashed once (``text.TokenHasher``) for DSIR and the embedding
(``BatchScorer``). A unit's shard is written under a temporary name, moved into place, then its
completion marker is written, so a killed run resumes at the first unit without one.
"""

import dataclasses
import json
import os
import uuid

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from winnow.pipelines import features, progress
from winnow.pipelines.features import FeaturesTable, FitState
from winnow.transforms import deadletter, dedup, dsir, embed, io, kmeans, minhash, seeded, tally, vectors, zipfit
from winnow.transforms.dedup import ExactDedupConfig
from winnow.transforms.dsir import DsirConfig
from winnow.transforms.embed import EmbedConfig
from winnow.transforms.io import ReadConfig
from winnow.transforms.kmeans import KMeansConfig
from winnow.transforms.minhash import MinHashConfig
from winnow.transforms.text import TokenHasher
from winnow.transforms.zipfit import ZipfitConfig

NAMESPACE = "winnow.score"
TARGET_ERRORS = "target-errors.jsonl"


@dataclasses.dataclass(frozen=True)
class ScoreOptions:
    """Every option the features rows depend on (the scoring options of CONTRACT.md).

    A method's config is None when the method does not run; ``exact`` always runs (a cheap hash).
    """

    read: ReadConfig
    exact: ExactDedupConfig
    minhash: MinHashConfig | None = None
    dsir: DsirConfig | None = None
    zipfit: ZipfitConfig | None = None
    embed: EmbedConfig | None = None
    kmeans: KMeansConfig | None = None

    @property
    def needs_fit(self) -> bool:
        return any(c is not None for c in (self.dsir, self.zipfit, self.embed))

    @property
    def reads_raw_in_fit(self) -> bool:
        return self.dsir is not None or self.embed is not None

    def columns(self, embedding_width: int | None) -> dict[str, pa.DataType]:
        """The scoring columns of the features shards (``features.py``)."""
        columns = {features.EXACT_HASH: pa.binary(16)}
        if self.minhash is not None:
            columns[features.SIGNATURE] = features.fixed_rows_type(np.uint32, self.minhash.num_perm)  # features.signature_array
        if self.dsir is not None:
            columns[features.DSIR_LOG_WEIGHT] = pa.float64()
            if self.dsir.separate_targets:
                columns[features.DSIR_TARGET_LOG_WEIGHTS] = pa.list_(pa.float64())
            columns[features.DSIR_LENGTH] = pa.int64()
        if self.zipfit is not None:
            columns[features.ZIPFIT_ALIGNMENT] = pa.float64()
        if self.embed is not None:
            columns[features.EMBEDDING] = features.fixed_rows_type(features.EMBEDDING_DTYPE, embedding_width)  # features.embedding_array
            columns[features.CLUSTER] = pa.int32()
            columns[features.CLUSTER_DISTANCE] = pa.float32()
        return columns

    def recorded(self) -> dict:
        """The options as JSON-ready values, for the manifest (a changed one needs a new table)."""
        return {name: (dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value)
                for name, value in dataclasses.asdict(self).items()}


# --- scoring one batch ------------------------------------------------------------------------


class BatchScorer:
    """``UnitBatch`` -> its features rows (a ``pa.Table`` in ordinal order, invalid records included).

    Holds the per-worker state (hashers, compressors, the fitted models); build one per worker.
    """

    def __init__(self, options: ScoreOptions, fit: FitState | None, schema: pa.Schema):
        self._options, self._fit, self.schema = options, fit, schema
        self._tokens = TokenHasher()
        self._minhash_params = None
        if options.minhash is not None:
            self._minhash_params = minhash.permutation_params(options.minhash.num_perm, options.minhash.seed, options.minhash.permutation)
        self._dsir = dsir.DsirScorer(fit.dsir, options.dsir) if options.dsir is not None else None
        self._zipfit = zipfit.AlignmentScorer(fit.zipfit) if options.zipfit is not None else None
        self._vectorizer = None
        if options.embed is not None and options.embed.embedding_field is None:
            self._vectorizer = embed.make_vectorizer(options.embed)
        self._shared_orders = self._shared_ngram_orders()

    def _shared_ngram_orders(self) -> int | None:
        """The n-gram order to hash once for DSIR and the word embedding together, or None."""
        options = self._options
        wants = []
        if options.dsir is not None and options.dsir.hash == "fast":
            wants.append(options.dsir.ngrams)
        if self._vectorizer is not None and isinstance(self._vectorizer, embed.WordNgramVectorizer) and options.embed.ngram_range[0] == 1:
            wants.append(options.embed.ngram_range[1])
        return max(wants) if len(wants) == 2 else None

    def score(self, batch: io.UnitBatch, first_ordinal: int) -> tuple[pa.Table, dict]:
        """(features rows of the batch's records, {exit: records} of records the embedding field made invalid).

        ``first_ordinal``: the ordinal of the batch's first record; its records are consecutive.
        """
        texts, n = batch.texts, batch.records
        rows = batch.ordinals - first_ordinal  # row of each valid record in the batch's table
        invalid_reason, raw, position = [None] * n, [None] * n, np.zeros(n, np.int64)
        position[rows] = batch.positions
        for ordinal, line, reason, preview in batch.invalid:
            invalid_reason[ordinal - first_ordinal], raw[ordinal - first_ordinal] = reason, preview
            position[ordinal - first_ordinal] = line
        usable = np.ones(len(texts), dtype=bool)
        exits: dict[str, int] = {}
        grams = self._tokens.ngram_hashes(texts, self._shared_orders) if self._shared_orders and texts else None
        normalized = dedup.normalized_texts(texts, self._options.exact)  # MinHash's too, with the default steps
        columns = {features.EXACT_HASH: features.hash_array(_spread(dedup.exact_hashes(normalized), rows, n))}
        if self._minhash_params is not None:
            shared = normalized if self._options.exact == dedup.ExactDedupConfig() else None
            signatures = minhash.minhash_signatures(texts, self._options.minhash, self._minhash_params, shared)
            columns[features.SIGNATURE] = features.signature_array(_spread(signatures, rows, n))
        if self._options.embed is not None:
            found, reasons = self._embeddings(batch, grams)
            for i, reason in enumerate(reasons):
                if reason is not None:
                    usable[i] = False
                    invalid_reason[rows[i]] = reason
                    raw[rows[i]] = deadletter.raw_preview(json.dumps(batch.table.slice(i, 1).to_pylist()[0], default=str, ensure_ascii=False))
                    exits[tally.invalid_exit(reason)] = exits.get(tally.invalid_exit(reason), 0) + 1
            labels, distances = kmeans.assign_clusters(found, self._fit.centroids) if len(texts) else (np.zeros(0, np.int64), np.zeros(0))
            columns[features.EMBEDDING] = features.embedding_array(_spread(found, rows, n))
            columns[features.CLUSTER] = _column(labels.astype(np.int32), rows, n, usable)
            columns[features.CLUSTER_DISTANCE] = _column(distances.astype(np.float32), rows, n, usable)
        if self._dsir is not None:
            weights, lengths = self._dsir.score(texts, grams) if texts else (np.zeros((0,) + self._fit.dsir.ratio.shape[:-1]), np.zeros(0, np.int64))
            columns[features.DSIR_LOG_WEIGHT] = _column(weights if weights.ndim == 1 else weights[:, 0], rows, n, usable)
            if self._options.dsir.separate_targets:
                per_target = _spread_list(weights[usable, 1:].tolist(), rows[usable], n)
                columns[features.DSIR_TARGET_LOG_WEIGHTS] = pa.array(per_target, pa.list_(pa.float64()))
            columns[features.DSIR_LENGTH] = _column(lengths.astype(np.int64), rows, n, usable)
        if self._zipfit is not None:
            columns[features.ZIPFIT_ALIGNMENT] = _column(self._zipfit.score([t.encode("utf-8") for t in texts]), rows, n, usable)
        ids = [None] * n
        lengths = np.zeros(n, np.int64)
        for row, doc_id, text, ok in zip(rows.tolist(), batch.ids, texts, usable.tolist()):
            if ok:
                ids[row], lengths[row] = doc_id, len(text)
        table = pa.table({
            features.ORDINAL: np.arange(first_ordinal, first_ordinal + n, dtype=np.int32), features.POSITION: position,
            features.ID: pa.array(ids, self.schema.field(features.ID).type), features.INVALID_REASON: pa.array(invalid_reason, pa.string()),
            features.RAW: pa.array(raw, pa.string()), features.LENGTH: lengths, **columns,
        })
        return table.select(self.schema.names).cast(self.schema), exits

    def _embeddings(self, batch: io.UnitBatch, grams) -> tuple[np.ndarray, list[str | None]]:
        """((n, d) float32 unit vectors, per valid record None or why its embedding-field vector is unusable)."""
        config = self._options.embed
        if config.embedding_field is None:
            if not batch.texts:
                return np.zeros((0, config.hashed_dim), np.float32), []
            found, _ = embed.embed_texts(batch.texts, self._vectorizer, self._fit.projection, grams)
            return found, [None] * len(batch.texts)
        table = batch.table
        values = table.column(config.embedding_field).to_pylist() if config.embedding_field in table.column_names else [None] * len(batch.texts)
        return vectors.unit_vectors(values, self._fit.embedding_width)


def _spread(values: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray:
    """(n, ...) zeros with ``values`` at ``rows``."""
    out = np.zeros((n,) + np.asarray(values).shape[1:], dtype=np.asarray(values).dtype)
    out[rows] = values
    return out


def _spread_list(values: list, rows: np.ndarray, n: int) -> list:
    out = [None] * n
    for row, value in zip(rows.tolist(), values):
        out[row] = value
    return out


def _column(values: np.ndarray, rows: np.ndarray, n: int, usable: np.ndarray) -> pa.Array:
    """(n,) Arrow array holding ``values[i]`` at ``rows[i]`` where ``usable[i]``, null elsewhere."""
    keep = np.asarray(usable, dtype=bool)
    null = np.ones(n, dtype=bool)
    null[rows[keep]] = False
    return pa.array(_spread(np.asarray(values)[keep], rows[keep], n), mask=null)


# --- the fit pass ------------------------------------------------------------------------------


class _FitReadFn(beam.DoFn):
    """Unit -> ``(ids, texts)`` of each batch's valid records (or ``(ids, field values)`` with an embedding field).

    ``role``: ``"target"`` for a target set, whose dead letters go to the ``errors`` output.
    """

    def __init__(self, read: io.ReadConfig, ids: io.IdPolicy, progress_folder: str | None, role: str | None = None,
                 embedding_field: str | None = None):
        self._read, self._ids, self._progress, self._role, self._field = read, ids, progress_folder, role, embedding_field

    def setup(self):
        self._reporter = progress.Reporter(self._progress, "fit" if self._role is None else "fit_target")

    def process(self, unit: io.Unit):
        for batch in io.read_unit(unit, self._read, self._ids):
            self._reporter.add(batch.records, batch.read_bytes)
            if self._role is not None:
                for _, position, reason, raw in batch.invalid:
                    yield beam.pvalue.TaggedOutput(io.ERRORS, deadletter.dead_letter(unit.path, position, reason, raw, self._role))
            if self._field is not None:
                values = batch.table.column(self._field).to_pylist() if self._field in batch.table.column_names else [None] * len(batch.ids)
                yield batch.ids, values
            elif batch.ids:
                yield batch.ids, batch.texts
        self._reporter.unit_done(unit.size)


def _sample_candidates(ids_and_texts, seed: int):
    """(ids, texts) -> ``(rank, str(id), text)`` of each record (``seeded.sample_rank``): the k-means sample is the smallest."""
    ids, texts = ids_and_texts
    return zip(seeded.sample_rank(ids, seed).tolist(), map(str, ids), texts)


EMBED_SAMPLE_BATCH = 4096  # texts embedded at once: the n-gram matrices of a block, not of the whole sample


def _embed_sample(sample: list, projection, config: embed.EmbedConfig) -> list:
    """The k-means sample's ``(rank, id, text)`` -> its ``(rank, id, vector)`` list, embedded as the score pass embeds.

    Block by block: an embedding does not depend on its batch (``embed.embed_texts``), and the
    n-gram count matrices of 50,000 texts at once took over a gigabyte. The vectors are rows of
    the blocks' arrays (views, not one array each), passed on to the fit in the same stage.
    """
    vectorizer = embed.make_vectorizer(config)
    entries = []
    for start in range(0, len(sample), EMBED_SAMPLE_BATCH):
        block = sample[start : start + EMBED_SAMPLE_BATCH]
        found, _ = embed.embed_texts([text for _, _, text in block], vectorizer, projection)
        entries += [(rank, doc_id, vector) for (rank, doc_id, _), vector in zip(block, found)]
    return entries


def _field_widths(ids_and_values) -> dict[int, int]:
    return tally.count_values(w for w in map(vectors.width_of, ids_and_values[1]) if w is not None)


def _field_entries(ids_and_values, width: int | None, seed: int):
    ids, values = ids_and_values
    found, reasons = vectors.unit_vectors(values, width or 0)
    usable = [i for i, reason in enumerate(reasons) if reason is None]
    return kmeans.sample_entries([ids[i] for i in usable], found[usable], seed)


def _count(ids_and_texts) -> int:
    return len(ids_and_texts[0])


class _WriteFitFn(beam.DoFn):
    """The fitted singletons -> features/fit.pkl and fit.json (the marker), written once."""

    def __init__(self, table: FeaturesTable, options: ScoreOptions):
        self._table, self._options = table, options

    def process(self, _, dsir_model=None, zipfit_model=None, projection=None, width=None, centroids=None, target_errors=None,
                records=0):
        stats = {"records_fitted": records}
        if dsir_model is not None:
            stats["dsir"] = dsir_model.stats()
        if zipfit_model is not None:
            stats["zipfit"] = zipfit_model.stats()
        if projection is not None:
            stats["embed"] = embed.projection_stats(projection, self._options.embed)
        if width is not None:
            stats["embed"] = {"mode": "field", "field": self._options.embed.embedding_field, "dim": width}
        if centroids is not None:
            stats["kmeans"] = {"k": int(len(centroids)), "sample_size": self._options.kmeans.sample_size}
        if target_errors is not None:
            stats["target_invalid"] = tally.count_values(letter["reason"] for letter in target_errors)
            features.write_bytes(self._table.path(TARGET_ERRORS),
                                 "".join(json.dumps(letter, ensure_ascii=False, sort_keys=True) + "\n" for letter in target_errors).encode("utf-8"))
        self._table.write_fit_state(FitState(dsir_model, zipfit_model, projection, width, centroids, stats))
        yield stats


def build_fit(pipeline: beam.Pipeline, options: ScoreOptions, table: FeaturesTable, units: list[io.Unit],
              target_sets: list[list[io.Unit]], ids: io.IdPolicy, target_ids: list[io.IdPolicy], progress_folder: str | None) -> None:
    """Add the fit pass to ``pipeline``: the fitted state of ``options`` -> ``table``'s fit.pkl."""
    side = {}
    field = options.embed.embedding_field if options.embed is not None else None
    if options.reads_raw_in_fit:
        # unit -> (ids, texts) per batch; every fit below reads this one stream, fused with the read
        raw = (
            pipeline
            | "ListRawUnits" >> beam.Create(units)
            | "SpreadRawUnits" >> beam.Reshuffle()
            | "ReadRaw" >> beam.ParDo(_FitReadFn(options.read, ids, progress_folder, embedding_field=field))
        )
        records = raw | "CountRecords" >> beam.Map(_count) | "SumRecords" >> beam.CombineGlobally(sum)
        side["records"] = beam.pvalue.AsSingleton(records)
    errors = []
    if options.dsir is not None or options.zipfit is not None:
        targets = []
        for t, (target_units, target_id) in enumerate(zip(target_sets, target_ids)):
            read = (
                pipeline
                | f"ListTarget{t}" >> beam.Create(target_units)
                | f"ReadTarget{t}" >> beam.ParDo(_FitReadFn(options.read, target_id, progress_folder, role=deadletter.TARGET_ROLE))
                .with_outputs(io.ERRORS, main="texts")
            )
            targets.append(read.texts)
            errors.append(read[io.ERRORS])
        side["target_errors"] = beam.pvalue.AsList(errors | "FlattenTargetErrors" >> beam.Flatten())
    if options.dsir is not None:
        raw_totals = raw | "FitDsirRaw" >> beam.CombineGlobally(dsir.raw_totals_combine(options.dsir))
        target_totals = [
            texts | f"TargetTexts{t}" >> beam.Map(lambda pair: pair[1]) | f"FitDsirTarget{t}" >> beam.CombineGlobally(dsir.NgramCountsCombineFn(options.dsir))
            for t, texts in enumerate(targets)
        ]
        model = raw_totals | "DsirModel" >> beam.Map(
            lambda raw_, *targets_, config: dsir.fit_model(raw_, list(targets_), config),
            *[beam.pvalue.AsSingleton(t) for t in target_totals], config=options.dsir)
        side["dsir_model"] = beam.pvalue.AsSingleton(model)
    if options.zipfit is not None:
        pooled_targets = targets | "PoolTargets" >> beam.Flatten()
        zipfit_model = (
            pooled_targets
            | "ZipfitEntries" >> beam.FlatMap(lambda pair, seed: zipfit.target_entries(pair[0], pair[1], seed), options.zipfit.seed)
            | "SampleZipfitTargets" >> beam.combiners.Top.Smallest(options.zipfit.target_sample)
            | "FitZipfit" >> beam.Map(zipfit.fit_on_sample, options.zipfit)
        )
        side["zipfit_model"] = beam.pvalue.AsSingleton(zipfit_model)
    if options.embed is not None:
        seed = options.kmeans.seed
        if field is None:
            projection = (
                raw
                | "ProjectionEntries" >> beam.FlatMap(lambda pair, seed_: embed.sample_entries(pair[0], pair[1], seed_), seed)
                | "SampleProjection" >> beam.combiners.Top.Smallest(options.embed.sample_size)
                | "FitProjection" >> beam.Map(embed.fit_on_sample, options.embed)
            )
            side["projection"] = beam.pvalue.AsSingleton(projection)
            # the k-means sample: the texts of the smallest ranks, taken in this read (no second read), then embedded
            sample = (
                raw
                | "KMeansCandidates" >> beam.FlatMap(_sample_candidates, seed)
                | "KMeansSample" >> beam.combiners.Top.Smallest(options.kmeans.sample_size)
                | "EmbedSample" >> beam.Map(_embed_sample, beam.pvalue.AsSingleton(projection), options.embed)
            )
        else:
            width = (
                raw | "FieldWidths" >> beam.Map(_field_widths) | "CountWidths" >> beam.CombineGlobally(tally.CountsCombineFn())
                | "ModeWidth" >> beam.Map(lambda counts, dim: dim or vectors.mode_width(counts), options.embed.dim)
            )
            side["width"] = beam.pvalue.AsSingleton(width)
            sample = (
                raw
                | "FieldEntries" >> beam.FlatMap(_field_entries, beam.pvalue.AsSingleton(width), seed)
                | "SampleVectors" >> beam.combiners.Top.Smallest(options.kmeans.sample_size, key=lambda entry: (entry[0], entry[1]))
            )
        centroids = sample | "FitCentroids" >> beam.Map(kmeans.fit_on_sample, side["records"], options.kmeans)
        side["centroids"] = beam.pvalue.AsSingleton(centroids)
    _ = (
        pipeline
        | "FitSeed" >> beam.Create([None])
        | "WriteFit" >> beam.ParDo(_WriteFitFn(table, options), **side)
    )


# --- the score pass ----------------------------------------------------------------------------


def table_scorer(options: ScoreOptions, table: FeaturesTable, ids: io.IdPolicy) -> BatchScorer:
    """The BatchScorer of a features table's rows, with the table's fitted state."""
    fit = table.fit_state() if options.needs_fit else None
    width = None if fit is None or options.embed is None else (
        fit.embedding_width if options.embed.embedding_field is not None else options.embed.hashed_dim)
    return BatchScorer(options, fit, features.features_schema(ids.id_type, options.columns(width)))


def _temporary(path: str) -> str:
    """A temporary name next to ``path``; ``runner.cleanup`` removes leftovers of a killed run."""
    return f"{path}.inprogress-{uuid.uuid4().hex[:12]}"


class _ScoreUnitFn(beam.DoFn):
    """Unit -> its features shard and marker written (skipped when the marker exists); yields the marker's summary."""

    def __init__(self, options: ScoreOptions, table: FeaturesTable, ids: io.IdPolicy, progress_folder: str | None):
        self._options, self._table, self._ids, self._progress = options, table, ids, progress_folder

    def setup(self):
        self._scorer = table_scorer(self._options, self._table, self._ids)
        self._exits = tally.Exits(NAMESPACE)
        self._reporter = progress.Reporter(self._progress, "score")

    def process(self, unit: io.Unit):
        if features.exists(self._table.marker(unit.index)):
            yield self._table.summary(unit.index)
            return
        shard = self._table.shard(unit.index)
        temporary = _temporary(shard)
        records, valid, schemas, conflicts, invalid = 0, 0, [], set(), {}
        with FileSystems.create(temporary, mime_type="application/octet-stream") as handle:
            with pq.ParquetWriter(handle, self._scorer.schema, **features.parquet_options(self._scorer.schema)) as writer:
                for batch in io.read_unit(unit, self._options.read, self._ids):
                    rows, exits = self._scorer.score(batch, records)
                    writer.write_table(rows)
                    records += batch.records
                    reasons = tally.count_values(r for r in rows.column(features.INVALID_REASON).to_pylist() if r is not None)
                    for reason, count in reasons.items():
                        invalid[reason] = invalid.get(reason, 0) + count
                    valid += batch.records - sum(reasons.values())
                    schemas.append(batch.table.schema)
                    conflicts |= batch.conflicts
                    self._exits.count({tally.KEPT: batch.records - sum(reasons.values()), **{tally.invalid_exit(r): c for r, c in reasons.items()}})
                    self._reporter.add(batch.records, batch.read_bytes)
        FileSystems.rename([temporary], [shard])
        unit_schema, unit_conflicts = io.unify_fields(schemas)
        summary = {
            "unit": unit.index, "records": records, "valid": valid, "invalid": invalid,
            "schema": features.schema_to_text(unit_schema), "conflicts": sorted(conflicts | set(unit_conflicts)),
        }
        features.write_json(self._table.marker(unit.index), summary)  # last: marks the unit complete
        self._reporter.unit_done(unit.size)
        yield summary


def build_score(pipeline: beam.Pipeline, options: ScoreOptions, table: FeaturesTable, units: list[io.Unit], ids: io.IdPolicy,
                progress_folder: str | None) -> None:
    """Add the score pass over ``units`` to ``pipeline`` (units already complete are skipped)."""
    _ = (
        pipeline
        | "ListUnits" >> beam.Create(units)
        | "SpreadUnits" >> beam.Reshuffle()
        | "ScoreUnits" >> beam.ParDo(_ScoreUnitFn(options, table, ids, progress_folder))
    )
