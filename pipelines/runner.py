"""What every winnow job shares: the Beam runner choice, output directory policy, stats and report.

The default runner is local and offline: Beam's ``DirectRunner`` first tries to download the
Prism runner binary (and hangs where DNS hangs) before falling back to its batch engine, the
``FnApiRunner``; winnow runs on the ``FnApiRunner`` directly when no runner or ``DirectRunner``
is asked for. ``--direct_running_mode`` (in_memory, multi_threading, multi_processing) and
``--direct_num_workers`` apply to it as they do to the DirectRunner. Any other ``--runner``
(DataflowRunner, FlinkRunner, SparkRunner, PortableRunner, ...) is used as given.
"""

import json
import logging
import os
import re
import time

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import DebugOptions, PipelineOptions, PortableOptions, StandardOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner, worker_handlers

from winnow.pipelines import report
from winnow.pipelines.options import UsageError
from winnow.transforms import io, schema

LOG = logging.getLogger("winnow")
LOCAL_RUNNERS = (None, "DirectRunner", "direct", "FnApiRunner")
TIMED_FLUSH_EXPERIMENT = "data_buffer_time_limit_ms"
OUTPUT_ENTRIES = ("selected", "scores", "errors", "report.json", "report.html", report.STATS_FILE)


class JobFailed(Exception):
    """The pipeline failed; the message is the cause a user can act on."""


def make_pipeline(beam_flags: list[str]) -> beam.Pipeline:
    """A pipeline on the runner the flags ask for, the offline local one by default.

    Turns Beam's timed data flushes off for every ``FnApiRunner`` of this process
    (``disable_timed_data_flushes``), whatever the runner: a process-wide Beam setting.

    Raises:
        UsageError: the flags turn timed data flushes on in Beam's Python workers
            (``--experiments data_buffer_time_limit_ms=N``, or that key in an
            ``--environment_config`` JSON); they lose data.
    """
    options = PipelineOptions(beam_flags)
    flag = timed_flush_flag(options)
    if flag:
        raise UsageError(f"{flag} {TIMED_FLUSH_EXPERIMENT}: Beam 2.77's timed data flushes lose records; leave it unset")
    disable_timed_data_flushes()
    runner = FnApiRunner() if options.view_as(StandardOptions).runner in LOCAL_RUNNERS else None
    return beam.Pipeline(runner=runner, options=options)


def timed_flush_flag(options: PipelineOptions) -> str | None:
    """The flag that sets a nonzero ``data_buffer_time_limit_ms`` for Beam's workers, else None.

    Raises:
        UsageError: ``--environment_config`` starts like JSON but is not.
    """
    if options.view_as(DebugOptions).lookup_experiment(TIMED_FLUSH_EXPERIMENT) not in (None, "0"):
        return "--experiments"
    config = options.view_as(PortableOptions).environment_config or ""
    if not config.lstrip().startswith("{"):
        return None
    try:
        time_limit = json.loads(config).get(TIMED_FLUSH_EXPERIMENT)
    except json.JSONDecodeError as error:
        raise UsageError(f"--environment_config: not valid JSON ({error})") from None
    return "--environment_config" if time_limit not in (None, 0, "0") else None


def disable_timed_data_flushes() -> None:
    """Make the local runner's gRPC data streams flush by size, never from a timer (Beam 2.77 loses data).

    In ``multi_threading`` and ``multi_processing`` mode, and in Beam's local job service, the
    ``FnApiRunner`` streams each stage's input to its SDK workers over gRPC; in ``multi_threading``
    the workers stream their outputs back the same way. A timer thread flushes these streams once a
    second (``data_plane.TimeBasedBufferingClosableOutputStream``): the flush hands the buffer on,
    then empties it without stopping the thread that writes, so bytes written in between are
    dropped, and a flush during an element's encoding cuts the element in two. Runs then lose
    records between stages or fail to decode them.

    This sets the runner's time limit to 0: no timer thread. The runner then sends a worker its
    share of a stage's input as one message at the end (protobuf caps a message at 2 GiB). Splitting
    it is no way out: the runner sends the whole input before it starts the bundle, and a worker
    queues at most 5 messages (100 MB) of a bundle not yet started, so a split input deadlocks
    (tried: at 1M documents). Affects the ``FnApiRunner`` s of this process. Call it before running
    winnow's transforms on the local runner in a pipeline of your own.

    Raises:
        RuntimeError: this Beam has no such setting (a version other than 2.77); re-check the bug.
    """
    if not hasattr(worker_handlers, "DATA_BUFFER_TIME_LIMIT_MS"):
        raise RuntimeError("Beam's FnApiRunner has changed: re-check winnow's workaround for its timed data flushes")
    worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = 0


def prepare_output(output: str, overwrite: bool) -> None:
    """Refuse an output directory holding a previous run, or clear winnow's entries with ``overwrite``.

    Only winnow's own entries (``OUTPUT_ENTRIES``) are deleted; a run never mixes with another.

    Raises:
        UsageError: the directory holds a previous run's output and ``overwrite`` is false.
    """
    if os.path.isfile(output):  # a local file; object stores (gs://...) have no files in the way of a prefix
        raise UsageError(f"--output {output}: is a file, not a directory")
    existing = [FileSystems.join(output, name) for name in OUTPUT_ENTRIES if FileSystems.exists(FileSystems.join(output, name))]
    if existing and not overwrite:
        raise UsageError(f"--output {output} already holds a run ({', '.join(existing)}); pass --overwrite to replace it")
    if existing:
        FileSystems.delete(existing)
    if not FileSystems.exists(output):
        try:
            FileSystems.mkdirs(output)
        except OSError as err:
            raise UsageError(f"--output {output}: cannot create the directory ({err})") from None


def camel(name: str) -> str:
    """A snake_case name as the CamelCase part of a step label: ``target_invalid`` -> ``TargetInvalid``."""
    return name.title().replace("_", "")


def collect_stats(stats: dict[str, beam.PCollection], output: str) -> None:
    """Write the singleton stats PCollections as one JSON object ``{name: value}`` to ``output``."""
    pairs = [stats[name] | f"Name{camel(name)}" >> beam.Map(lambda value, n=name: (n, value)) for name in sorted(stats)]
    (
        pairs
        | "FlattenStats" >> beam.Flatten()
        | "StatsToDict" >> beam.combiners.ToDict()
        | "StatsToJson" >> beam.Map(lambda d: json.dumps(d, sort_keys=True, default=_json_default))
        | "WriteStats" >> beam.io.WriteToText(FileSystems.join(output, report.STATS_FILE), shard_name_template="")
    )


def _json_default(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def outcome_stats(records: beam.PCollection, errors: beam.PCollection) -> dict[str, beam.PCollection]:
    """``outcomes``: {selected or drop reason: count}; ``invalid``: {reason: count} of input errors.

    Errors of the target set (``"role": "target"``) are counted apart, as ``target_invalid``:
    they are not records of the input.
    """
    outcomes = (
        records
        | "Outcome" >> beam.Map(lambda r: schema.SELECTED if r.get(schema.SELECTED) else r[schema.DROP_REASON])
        | "CountOutcomes" >> beam.combiners.Count.PerElement()
        | "OutcomesToDict" >> beam.combiners.ToDict()
    )
    by_role = errors | "SplitByRole" >> beam.Partition(lambda e, _: int(e.get("role") == io.TARGET_ROLE), 2)
    counts = {}
    for name, role_errors in (("invalid", by_role[0]), ("target_invalid", by_role[1])):
        counts[name] = (
            role_errors
            | f"Reason{camel(name)}" >> beam.Map(lambda e: e["reason"])
            | f"Count{camel(name)}" >> beam.combiners.Count.PerElement()
            | f"{camel(name)}ToDict" >> beam.combiners.ToDict()
        )
    return {"outcomes": outcomes, **counts}


def write_outputs(decided: beam.PCollection, errors: beam.PCollection, output: str, selected_schema, write_scores: bool) -> beam.PCollection:
    """Write ``selected/``, optionally ``scores/``, and ``errors/``; return the selected records."""
    selected = decided | "KeepSelected" >> beam.Filter(lambda r: r[schema.SELECTED])
    selected | "WriteSelected" >> io.WriteParquet(f"{output}/selected/part", selected_schema)
    if write_scores:
        decided | "WriteScores" >> io.WriteParquet(f"{output}/scores/part", io.scores_schema())
    errors | "WriteErrors" >> io.WriteErrors(f"{output}/errors/part")
    return selected


def execute(name: str, argv: list[str], output: str, overwrite: bool, beam_flags: list[str], build, job_options: dict, warnings_fn) -> dict:
    """Prepare ``output``, build the pipeline with ``build(pipeline)``, run it, write the report.

    Returns the report document. Raises UsageError (output in use) or JobFailed.
    """
    started = time.perf_counter()
    pipeline = make_pipeline(beam_flags)
    prepare_output(output, overwrite)
    build(pipeline)
    built = time.perf_counter()
    stages = [part.full_label for part in pipeline.transforms_stack[0].parts]
    LOG.info("%s: pipeline built in %.1fs; running %d stages", name, built - started, len(stages))
    LOG.debug("%s: stages %s", name, ", ".join(stages))
    result = run(pipeline)
    ran = time.perf_counter()
    document = finish(
        output, result, ["winnow", name, *argv], {**job_options, "beam_flags": beam_flags},
        {"build": round(built - started, 3), "run": round(ran - built, 3)}, warnings_fn,
    )
    counts = document["counts"]
    for warning in document["warnings"]:
        LOG.warning("%s: %s", name, warning)
    LOG.info("%s: finished in %.1fs; busiest stages (s): %s", name, document["timings_s"]["total"],
             ", ".join(f"{stage} {secs}" for stage, secs in list(document["stage_busy_s"].items())[:5]))
    LOG.info("%s: read %d, invalid %d, selected %d, dropped %s -> %s",
             name, counts["input"], counts["invalid"], counts["selected"], counts["dropped"], output)
    return document


_CAUSE = re.compile(r"(?:InputError|UsageError|ValueError): (.+)")


def run(pipeline: beam.Pipeline) -> beam.runners.runner.PipelineResult:
    """Run to completion; a failure becomes ``JobFailed`` carrying the root cause's message."""
    try:
        result = pipeline.run()
        result.wait_until_finish()
    except Exception as err:  # Beam wraps worker exceptions in runner-specific types
        causes = _CAUSE.findall(str(err))
        raise JobFailed(causes[-1] if causes else f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}") from err
    return result


def records_read(result) -> int | None:
    """The reader's ``records_read`` counter, or None when the runner does not report metrics."""
    try:
        counters = result.metrics().query(MetricsFilter().with_namespace(io.NAMESPACE).with_name("records_read"))["counters"]
    except (NotImplementedError, AttributeError, KeyError):
        return None
    return sum(c.committed or 0 for c in counters) if counters else 0


STAGE_TIME_METRIC = "ptransform_execution_time:total_msecs"


def stage_seconds(result) -> dict[str, float]:
    """Busy seconds per top-level stage (e.g. ``ReadInputs``, ``ScoreDsir``), summed over workers.

    From Beam's ``ptransform_execution_time`` monitoring counters; empty when the runner does
    not report them.
    """
    try:
        counters = result.monitoring_metrics().query()["counters"]
    except (AttributeError, NotImplementedError, KeyError):
        return {}
    msecs: dict[str, int] = {}
    for counter in counters:
        if STAGE_TIME_METRIC in counter.key.metric.name:
            stage = counter.key.step.split("/")[0]
            msecs[stage] = msecs.get(stage, 0) + (counter.committed or 0)
    return {stage: round(total / 1000, 3) for stage, total in sorted(msecs.items(), key=lambda kv: -kv[1]) if total}


def finish(output: str, result, command: list[str], options: dict, timings: dict, warnings_fn) -> dict:
    """Turn the run's stats into report.json and report.html; return the report.

    ``warnings_fn(stats) -> list[str]`` adds the job's warnings (e.g. fewer eligible records than asked for).
    """
    started = time.perf_counter()
    stats_path = FileSystems.join(output, report.STATS_FILE)
    stats = report.read_json(stats_path)
    FileSystems.delete([stats_path])
    timings = {**timings, "report": 0.0}
    document = report.build_report(stats, records_read(result), command, options, timings, warnings_fn(stats))
    document["stage_busy_s"] = stage_seconds(result)
    if not all(document["checks"].values()):
        raise JobFailed(f"accounting check failed: {document['checks']}; counts {document['counts']}")
    document["timings_s"]["report"] = round(time.perf_counter() - started, 3)
    document["timings_s"]["total"] = round(sum(v for k, v in document["timings_s"].items() if k != "total"), 3)
    report.write_text(FileSystems.join(output, "report.html"), report.render_html(document))
    # report.json last: its presence marks a complete run.
    report.write_text(FileSystems.join(output, "report.json"), json.dumps(document, indent=2, sort_keys=True))
    return document
