"""``winnow vendi``: the Vendi score of a dataset, printed as the last line of stdout.

Embeddings come from an input field (``--embedding-field``) or, by default, from winnow's hashed
tf-idf embedding of the text (``transforms/embed.py``). Two reads of the shards, never a shuffle
of the text: the first fits the embedding projection on a seeded sample (or finds the field's
most common width), the second embeds every record and accumulates the d x d Gram matrix
(``vendi.GramCombineFn``), so the score is exact in the dual form on any runner and any size.
Records that cannot be read or embedded are counted and reported on stderr, never silently lost.
"""

import argparse
import math
import shutil
import tempfile

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems

from winnow.pipelines import features, options, runner
from winnow.transforms import embed, io, tally, vectors, vendi

STATS = "vendi.json"


def vendi_parser() -> argparse.ArgumentParser:
    parser = options.Parser(
        prog="winnow vendi", allow_abbrev=False,
        usage="winnow vendi --input GLOB [--input GLOB ...] [--q 1] [--embedding-field FIELD] [options] [Beam pipeline options]",
        description="Print the Vendi score (Friedman & Dieng 2023; order q, Pasarkar & Dieng 2023) of a dataset.",
        epilog="Any other --flag is a Beam pipeline option. The last line of stdout is the score.",
    )
    options.add_input_arguments(parser, "records")
    parser.add_argument("--q", type=_order, default=1.0, help="order q in [0, inf]; 'inf' for the max-eigenvalue order (default: 1)")
    parser.add_argument("--embedding-field", metavar="FIELD", help="use precomputed embeddings from this field (default: hashed tf-idf of the text)")
    parser.add_argument("--embed-dim", type=options.positive_int, metavar="D", help="embedding width of hashed tf-idf (default: 256)")
    parser.add_argument("--fit-seed", type=int, default=1, help="seed of the embedding's sample and projection (default: %(default)s)")
    parser.add_argument("--work-dir", metavar="DIR", help="where the job leaves its result for this command to read; "
                        "must be reachable from the workers on a remote runner, e.g. gs://bucket/tmp (default: a local temp dir)")
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML file of options, Beam's included (keys are the flag names); flags win")
    return parser


def _order(text: str) -> float:
    try:
        return vendi.check_order(math.inf if text.strip().lower() in ("inf", "infinity") else float(text))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


class _ReadFn(beam.DoFn):
    """Unit -> per batch, ``(ids, texts)`` or the embedding field's values; ``invalid``: {reason: records}."""

    def __init__(self, read: io.ReadConfig, ids: io.IdPolicy, field: str | None):
        self._read, self._ids, self._field = read, ids, field

    def process(self, unit: io.Unit):
        for batch in io.read_unit(unit, self._read, self._ids):
            yield beam.pvalue.TaggedOutput("invalid", tally.count_values(reason for _, _, reason, _ in batch.invalid))
            if self._field is not None:
                values = batch.table.column(self._field).to_pylist() if self._field in batch.table.column_names else [None] * len(batch.ids)
                yield batch.ids, values
            elif batch.ids:
                yield batch.ids, batch.texts


class _EmbedFn(beam.DoFn):
    """(ids, texts or field values) -> (n, d) unit vectors; ``invalid``: {reason: records} of unusable field values."""

    def __init__(self, config: embed.EmbedConfig):
        self._config = config

    def setup(self):
        self._vectorizer = embed.make_vectorizer(self._config) if self._config.embedding_field is None else None

    def process(self, batch, fitted):
        _, values = batch
        if self._vectorizer is not None:
            found, _ = embed.embed_texts(values, self._vectorizer, fitted)
            yield found
            return
        found, reasons = vectors.unit_vectors(values, fitted)
        usable = np.array([r is None for r in reasons], dtype=bool)
        yield beam.pvalue.TaggedOutput("invalid", tally.count_values(r for r in reasons if r is not None))
        if usable.any():
            yield found[usable]


def _widths(batch) -> dict:
    return tally.count_values(w for w in map(vectors.width_of, batch[1]) if w is not None)


def main(argv: list[str]) -> int:
    args, beam_flags = options.parse(vendi_parser(), argv)
    options.require(args, "input")
    read = options.read_config(args)
    config = options.build_config(embed.EmbedConfig, {"dim": "--embed-dim", "embedding_field": "--embedding-field"},
                                  dim=args.embed_dim, seed=args.fit_seed, embedding_field=args.embedding_field)
    files = io.match_inputs(list(args.input))
    probes = [io.probe_file(path, read) for path, _ in files]
    ids = io.check_probes(probes, read, io.common_root(list(args.input)))
    if config.embedding_field is not None and probes[0].fields and config.embedding_field not in probes[0].fields:
        raise options.UsageError(f"--embedding-field {config.embedding_field}: no such field in the first records of {probes[0].path} "
                                 f"(fields: {', '.join(probes[0].fields)})")
    units = io.plan_units(files, read)
    own_dir = None if args.work_dir else tempfile.mkdtemp(prefix="winnow-vendi-")  # removed after the run
    path = FileSystems.join(args.work_dir or own_dir, STATS)
    pipeline = runner.make_pipeline(beam_flags)
    listed = pipeline | "ListUnits" >> beam.Create(units) | "SpreadUnits" >> beam.Reshuffle()
    first = listed | "ReadForFit" >> beam.ParDo(_ReadFn(read, ids, config.embedding_field)).with_outputs("invalid", main="batches")
    if config.embedding_field is None:
        fitted = (
            first.batches
            | "SampleEntries" >> beam.FlatMap(lambda batch, seed: embed.sample_entries(batch[0], batch[1], seed), config.seed)
            | "SampleTexts" >> beam.combiners.Top.Smallest(config.sample_size)
            | "FitProjection" >> beam.Map(embed.fit_on_sample, config)
        )
    else:
        fitted = (
            first.batches
            | "Widths" >> beam.Map(_widths)
            | "CountWidths" >> beam.CombineGlobally(tally.CountsCombineFn())
            | "ModeWidth" >> beam.Map(lambda counts, dim: dim or vectors.mode_width(counts) or 1, config.dim)
        )
    second = listed | "Read" >> beam.ParDo(_ReadFn(read, ids, config.embedding_field)).with_outputs("invalid", main="batches")
    embedded = second.batches | "Embed" >> beam.ParDo(_EmbedFn(config), beam.pvalue.AsSingleton(fitted)).with_outputs("invalid", main="vectors")
    gram = embedded.vectors | "AccumulateGram" >> beam.CombineGlobally(vendi.GramCombineFn())
    invalid = (second.invalid, embedded.invalid) | "FlattenInvalid" >> beam.Flatten() | "SumInvalid" >> beam.CombineGlobally(tally.CountsCombineFn())
    _ = gram | "WriteResult" >> beam.Map(
        lambda gram_n, invalid_, q: features.write_json(path, {"vendi": vendi.vendi_stats(*gram_n, q=q), "invalid": invalid_}),
        beam.pvalue.AsSingleton(invalid), args.q)
    try:
        runner.run(pipeline)
        result = features.read_json(path)
        FileSystems.delete([path])
    finally:
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)
    stats = result["vendi"]
    runner.LOG.info("vendi: %d embeddings of dimension %s; invalid or without an embedding: %s; profile %s",
                    stats["n_vectors"], stats["dim"], result["invalid"] or "none", stats["profile"])
    print(repr(float(stats["vendi_score"])))
    return 0
