"""Running a select or dedup job: plan, then the fit, score and decide+write pipelines, then the report.

Planning happens before anything is written: the inputs are matched and probed (a wrong
``--text-field``, a reserved column name or mixed id types fail here), the output directory is
checked, and the work units are laid out. The plan is the features table's ``manifest.json``; a
``--resume`` run compares its own plan with it and refuses a changed scoring option, naming it.
"""

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from winnow.pipelines import decide, dedup_cache, dedup_index, features, options, progress, report, runner, score
from winnow.pipelines.features import FeaturesError, FeaturesTable
from winnow.transforms import dedup, io, schema
from winnow.transforms.dsir import DsirConfig
from winnow.transforms.embed import EmbedConfig
from winnow.transforms.kmeans import KMeansConfig
from winnow.transforms.minhash import MinHashConfig
from winnow.transforms.zipfit import ZipfitConfig

LOG = logging.getLogger("winnow")


@dataclasses.dataclass
class Plan:
    """Where a run's work units come from and how its records are read."""

    ids: io.IdPolicy
    target_units: list[list[io.Unit]]
    target_ids: list[io.IdPolicy]
    manifest: dict


def _probe(globs: list[str], read: io.ReadConfig) -> tuple[list[tuple[str, int]], io.IdPolicy]:
    files = io.match_inputs(globs)
    return files, io.check_probes([io.probe_file(path, read) for path, _ in files], read, io.common_root(globs))


def _count_lines(files, read: io.ReadConfig, beam_flags: list[str], work: str) -> dict:
    """Line starts of every range of the JSON Lines files split into several units, counted by a Beam pipeline."""
    ranges = [(path, start, stop) for path, size in files if io.input_format(path) == io.JSONL
              for start, stop, _, _ in io.file_units(path, size, read.split_bytes) if size > read.split_bytes]
    if not ranges:
        return {}
    path = FileSystems.join(work, "line-starts.json")
    with runner.make_pipeline(beam_flags) as pipeline:
        counts = (
            pipeline
            | "ListRanges" >> beam.Create(ranges)
            | "SpreadRanges" >> beam.Reshuffle()
            | "CountLineStarts" >> beam.Map(lambda r: (f"{r[0]}@{r[1]}", io.count_line_starts(*r)))
            | "LineStartsDict" >> beam.combiners.ToDict()
        )
        _ = counts | "WriteLineStarts" >> beam.Map(lambda value: features.write_json(path, value))
    counted = features.read_json(path)
    FileSystems.delete([path])
    return counted


def plan(job, beam_flags: list[str], table: FeaturesTable) -> Plan:
    """Match and probe the inputs and targets, lay out the units; the manifest to write or compare.

    Raises:
        InputError: an input problem found before the run.
        UsageError: an empty target.
    """
    read = job.scoring.read
    files, ids = _probe(list(job.inputs), read)
    target_units, target_ids = [], []
    for globs in job.target_sets:
        try:
            target_files, target_id = _probe(globs, read)
        except io.InputError as err:
            raise io.InputError(f"--target: {err} (--text-field and --id-field apply to the target too)") from None
        units = io.plan_units(target_files, read)
        if not any(batch.ids for unit in units for batch in io.read_unit(unit, read, target_id)):
            raise options.UsageError(f"--target {' '.join(globs)}: no valid record with a text field {read.text_field!r} "
                                     f"(--text-field applies to the target too; --method {job.deciding.method} needs a non-empty target)")
        target_units.append(units)
        target_ids.append(target_id)
    manifest = {
        "version": features.VERSION, "inputs": list(job.inputs), "files": [list(f) for f in files], "ids": dataclasses.asdict(ids),
        "targets": job.target_sets, "target_ids": [dataclasses.asdict(t) for t in target_ids],
        "target_units": [[dataclasses.asdict(u) for u in units] for units in target_units],
        "scoring": recorded_scoring(job.scoring),
    }
    return Plan(ids, target_units, target_ids, manifest)


def recorded_scoring(scoring: score.ScoreOptions) -> dict:
    """The scoring options as the manifest records them (MinHash: its scoring fields only)."""
    recorded = json.loads(json.dumps(scoring.recorded()))  # as the manifest reads back: lists, not tuples
    if recorded["minhash"] is not None:
        from winnow.pipelines.select_job import MINHASH_SCORING

        recorded["minhash"] = {name: recorded["minhash"][name] for name in MINHASH_SCORING}
    return recorded


def _flag(section: str, name: str | None) -> str:
    from winnow.pipelines.select_job import SCORING_FLAGS

    return SCORING_FLAGS.get((section, name), f"{section}.{name}")


def changed_option(recorded: dict, wanted: dict) -> str | None:
    """The flag of the first scoring option that differs between a manifest and this run, or None."""
    for section in sorted(set(recorded) | set(wanted)):
        old, new = recorded.get(section), wanted.get(section)
        if old == new:
            continue
        if not isinstance(old, dict) or not isinstance(new, dict):
            return f"{_flag(section, None)} (the features table has {'no ' + section + ' scores' if old is None else section + ' scores'})"
        for name in sorted(set(old) | set(new)):
            if old.get(name) != new.get(name):
                return f"{_flag(section, name)} {new.get(name)!r} (the features table has {old.get(name)!r})"
    return None


def given_conflict(recorded: dict, args) -> str | None:
    """The first scoring flag given on this command line whose value differs from the features table's, or None."""
    from winnow.pipelines.select_job import SCORING_FLAGS

    sections_of: dict[str, list[str]] = {}
    for (section, _), flag in SCORING_FLAGS.items():
        sections_of.setdefault(flag, []).append(section)
    for (section, name), flag in SCORING_FLAGS.items():
        if name is None or flag not in args.given:
            continue
        dest = "fit_seed" if flag == "--fit-seed" else flag.lstrip("-").replace("-", "_")
        value = getattr(args, dest, None)
        value = list(value) if isinstance(value, tuple) else value
        if recorded.get(section) is None:
            if len(sections_of[flag]) == 1:  # a flag of this method alone (--fit-seed seeds several)
                return f"{flag} {value!r} (the features table has no {section} scores)"
            continue
        if recorded[section].get(name) != value:
            return f"{flag} {value!r} (the features table has {recorded[section].get(name)!r})"
    return None


def scoring_from_manifest(recorded: dict, selection_minhash: MinHashConfig) -> score.ScoreOptions:
    """The ScoreOptions a features table was scored with (MinHash: its scoring fields with this run's selection ones)."""
    def build(config_class, section):
        values = recorded.get(section)
        if values is None:
            return None
        return config_class(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    minhash = recorded.get("minhash")
    return score.ScoreOptions(
        read=build(io.ReadConfig, "read"), exact=build(dedup.ExactDedupConfig, "exact"),
        minhash=None if minhash is None else dataclasses.replace(selection_minhash, **minhash),
        dsir=build(DsirConfig, "dsir"), zipfit=build(ZipfitConfig, "zipfit"), embed=build(EmbedConfig, "embed"), kmeans=build(KMeansConfig, "kmeans"),
    )


def _units_of(manifest: dict) -> list[io.Unit]:
    return [io.Unit(**u) for u in manifest["units"]]


def _ids_of(manifest: dict) -> io.IdPolicy:
    return io.IdPolicy(**manifest["ids"])


def prepare_features(job, beam_flags: list[str], table: FeaturesTable, fresh: Plan) -> dict:
    """The manifest of this run's features table: written now, or (``--resume``) the existing one if it matches."""
    path = table.path(features.MANIFEST)
    if features.exists(path):
        existing = features.read_json(path)
        changed = changed_option(existing["scoring"], fresh.manifest["scoring"])
        if existing["files"] != fresh.manifest["files"]:
            changed = f"--input (the files or their sizes differ from {table.root}'s manifest)"
        if changed:
            raise options.UsageError(f"--resume: {changed}; the features table in --output was made with other options "
                                     "(use --overwrite to start again)")
        return existing
    counted = _count_lines([tuple(f) for f in fresh.manifest["files"]], job.scoring.read, beam_flags, table.root)
    units = io.plan_units([tuple(f) for f in fresh.manifest["files"]], job.scoring.read,
                          line_starts=lambda path, start, stop: counted[f"{path}@{start}"])
    manifest = {**fresh.manifest, "units": [dataclasses.asdict(u) for u in units]}
    features.write_json(path, manifest)
    return manifest


def reselection_manifest(job, table: FeaturesTable, args) -> dict:
    """The manifest of the ``--features`` table, after checking this run can select from it.

    Raises:
        UsageError: an incomplete table, other inputs, a changed scoring option, or a method whose
            scores the table lacks.
    """
    try:
        manifest = table.manifest()
    except FeaturesError as err:
        raise options.UsageError(f"--features {table.root}: {err}") from None
    if job.inputs:
        files = [list(f) for f in io.match_inputs(list(job.inputs))]
        if files != manifest["files"]:
            raise options.UsageError(f"--input names other files than the features table's inputs ({', '.join(manifest['inputs'])})")
    missing = [u["index"] for u in manifest["units"] if u["index"] not in table.complete_units()]
    if missing:
        raise options.UsageError(f"--features {table.root}: {len(missing)} of {len(manifest['units'])} units are not scored "
                                 "(resume that run with --resume first)")
    changed = given_conflict(manifest["scoring"], args)
    if changed:
        raise options.UsageError(f"{changed}: a scoring option; score again without --features")
    columns = _table_columns(table, manifest)
    needed = decide.REQUIRED_COLUMNS.get(job.deciding.method)
    if needed is not None and needed not in columns:
        raise options.UsageError(f"--method {job.deciding.method}: the features table has no {needed} column (it was scored for another method)")
    if "minhash" in job.deciding.dedup and features.SIGNATURE not in columns:
        raise options.UsageError("--dedup minhash: the features table has no MinHash signatures (it was scored without --dedup minhash)")
    return manifest


def _table_columns(table: FeaturesTable, manifest: dict) -> tuple[str, ...]:
    first = manifest["units"][0]["index"] if manifest["units"] else None
    if first is None:
        return ()
    return tuple(pq.read_schema(FileSystems.open(table.shard(first))).names)


def _layout(job, table: FeaturesTable, manifest: dict, progress_folder: str | None) -> decide.Layout:
    units = _units_of(manifest)
    ids = _ids_of(manifest)
    summaries = [table.summary(u.index) for u in units]
    input_schema, conflicts = io.unify_fields([features.schema_from_text(s["schema"]) for s in summaries])
    id_column = job.scoring.read.id_field if ids.has_field else schema.ID
    columns = _table_columns(table, manifest)
    method_columns = decide.method_columns(job.deciding.method, columns)
    output_fields = list(input_schema) + ([schema.field(schema.ID)] if not ids.has_field else [])
    output_fields += [schema.field(decide.SCORE_COLUMNS[name]) for name in method_columns if name in decide.SCORE_COLUMNS]
    if job.deciding.rounds > 1:
        output_fields.append(schema.field(schema.DSIR_TARGET))
    fit = table.fit_state() if table.fit_complete() else None
    dsir_layout = None
    if fit is not None and fit.dsir is not None:
        dsir_layout = decide.DsirLayout(job.scoring.dsir, fit.dsir.target_counts, fit.dsir.raw.counts, fit.dsir.shares)
    valid = sum(s["valid"] for s in summaries)
    # the centroids only where a step reads them: every DoFn holding the layout pickles them
    centroids = fit.centroids if fit is not None and job.deciding.complexity_quotas else None
    return decide.Layout(
        table=table, table_columns=columns, units=tuple(units), read=job.scoring.read, ids=ids, id_column=id_column,
        input_schema=input_schema, output_schema=pa.schema(output_fields), output=job.output, shards=dedup.shard_count(valid),
        dsir=dsir_layout, centroids=centroids, index_units={}, progress=progress_folder,
    ), {"conflicts": sorted(set(conflicts) | {c for s in summaries for c in s["conflicts"]}), "records": sum(s["records"] for s in summaries),
        "valid": valid, "invalid": _merge([s["invalid"] for s in summaries])}


def _merge(counts: list[dict]) -> dict:
    total: dict = {}
    for one in counts:
        for name, n in one.items():
            total[name] = total.get(name, 0) + n
    return total


def _run(pipeline_builder, beam_flags: list[str], folder: str | None, name: str, total_bytes: int, done_bytes: int = 0):
    """Build and run one pass's pipeline with its progress shown; returns (result, seconds)."""
    started = time.perf_counter()
    pipeline = runner.make_pipeline(beam_flags)
    pipeline_builder(pipeline)
    LOG.info("%s pass: built in %.1fs, running%s", name, time.perf_counter() - started,
             "" if folder is not None else f" on {pipeline.runner.__class__.__name__}; its UI shows the progress, job states follow")
    with progress.Watcher(folder, name, total_bytes, done_bytes):
        result = runner.run(pipeline)
    return result, round(time.perf_counter() - started, 3)


def run(job, argv: list[str], beam_flags: list[str], args) -> dict:
    """Plan, run the passes, write the report; returns the report document.

    Raises:
        UsageError, InputError: before anything is written; JobFailed: a pass failed;
        KeyboardInterrupt: with ``interrupted_message`` set for the command to print.
    """
    started = time.perf_counter()
    runner.check_beam_flags(beam_flags)
    reselect = job.features_dir is not None
    table = FeaturesTable(job.features_dir or FileSystems.join(job.output, "features"))
    fresh = None if reselect else plan(job, beam_flags, table)
    manifest = reselection_manifest(job, table, args) if reselect else None
    if reselect:  # the scores are the table's: its scoring options, whatever this command line leaves out
        scoring = scoring_from_manifest(manifest["scoring"], job.deciding.minhash)
        runs_dsir = job.deciding.method == "dsir" or (job.deciding.method == "combined" and scoring.dsir is not None)
        minhash = scoring.minhash or job.deciding.minhash  # the table's shingles and permutations, this run's bands and threshold
        job = dataclasses.replace(job, scoring=scoring, deciding=dataclasses.replace(job.deciding, runs_dsir=runs_dsir, minhash=minhash))
    runner.prepare_output(job.output, job.mode, reads_from=job.features_dir)
    folder = tempfile.mkdtemp(prefix="winnow-progress-") if runner.is_local(beam_flags) else None
    timings = {"plan": round(time.perf_counter() - started, 3)}
    try:
        if not reselect:
            if not FileSystems.exists(table.root):
                FileSystems.mkdirs(table.root)
            manifest = prepare_features(job, beam_flags, table, fresh)
            units = _units_of(manifest)
            total = sum(u.size for u in units)
            if job.scoring.needs_fit and not table.fit_complete():
                _, timings["fit"] = _run(lambda p: score.build_fit(p, job.scoring, table, units, fresh.target_units, fresh.ids, fresh.target_ids, folder),
                                         beam_flags, folder, "fit", total)
            complete = table.complete_units()
            todo = [u for u in units if u.index not in complete]
            if todo:
                _, timings["score"] = _run(lambda p: score.build_score(p, job.scoring, table, todo, fresh.ids, folder), beam_flags, folder, "score",
                                           total, total - sum(u.size for u in todo))
        layout, read_stats = _layout(job, table, manifest, folder)
        index_options = dedup_index.index_options(manifest["scoring"])
        if job.deciding.against:
            layout = dataclasses.replace(layout, index_units=dedup_index.against_units(list(job.deciding.against), index_options))
        cache = dedup_cache.dedup_cache(table, job.deciding.dedup, job.deciding.minhash, job.deciding.against, owns_table=not reselect)
        if cache is not None and cache.reuse:
            LOG.info("dedup: reusing the decisions saved in %s (same dedup options)", cache.root)
        pool_key = dedup_cache.pool_key(job.deciding.too_short_below, job.deciding.semdedup)
        layout = dataclasses.replace(layout, dedup_cache=cache, saved_pool=dedup_cache.saved_pool(cache, pool_key))
        if job.dedup_index:
            prefix = dedup_index.prepare_output(job.dedup_index, index_options)
            job = dataclasses.replace(job, deciding=dataclasses.replace(job.deciding, index_shards=FileSystems.join(job.dedup_index, prefix)))
        stats_path = FileSystems.join(job.output, runner.STATS_FILE)

        def build(pipeline):
            runner.collect_stats(pipeline, decide.build_decide(pipeline, job.deciding, layout), stats_path)

        result, timings["decide_write"] = _run(build, beam_flags, folder, "write", sum(u.size for u in layout.units))
        stats = features.read_json(stats_path)
        FileSystems.delete([stats_path])
        if cache is not None and not cache.reuse:
            dedup_cache.publish(cache, stats)
        if cache is not None and not reselect and layout.saved_pool is None:  # the table's own run saves its pool's statistics
            dedup_cache.publish_pool(cache, pool_key, stats)
        if job.dedup_index:
            dedup_index.publish(job.dedup_index, index_options, prefix, {int(k): v for k, v in stats.pop("index_rows").items()})
        _remove_write_markers(job.output)
        started_report = time.perf_counter()
        document = report.build_report(job, stats, read_stats, table, ["winnow", job.name, *argv], beam_flags, timings, result)
        timings["report"] = round(time.perf_counter() - started_report, 3)
        report.write(job.output, document)
    except KeyboardInterrupt:
        runner.clean_temporary(job.output)
        done = len(table.complete_units()) if FileSystems.exists(table.root) else 0
        total_units = len(manifest["units"]) if manifest else 0
        raise KeyboardInterrupt(f"interrupted: {done} of {total_units} units scored; rerun with --resume to continue") from None
    except Exception:
        runner.clean_temporary(job.output)  # a failed run leaves no file of winnow's half written
        raise
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
    return document


def _remove_write_markers(output: str) -> None:
    """The write pass's per-unit markers (``selected/_part-*.json``) are only for --resume; a finished run drops them."""
    matched = FileSystems.match([FileSystems.join(output, "selected", "_part-*.json")])[0].metadata_list
    if matched:
        FileSystems.delete([meta.path for meta in matched])
