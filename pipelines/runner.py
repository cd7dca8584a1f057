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
import types

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import DebugOptions, PipelineOptions, PortableOptions, StandardOptions, TypeOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner, worker_handlers
from apache_beam.runners.worker import sdk_worker
from apache_beam.transforms import userstate

from winnow.pipelines.options import UsageError
from winnow.transforms import io

LOG = logging.getLogger("winnow")
LOCAL_RUNNERS = (None, "DirectRunner", "direct", "FnApiRunner")
TIMED_FLUSH_EXPERIMENT = "data_buffer_time_limit_ms"
STATS_FILE = "_winnow_stats.json"


class JobFailed(Exception):
    """The pipeline failed; the message is the cause a user can act on."""


def make_pipeline(beam_flags: list[str]) -> beam.Pipeline:
    """A pipeline on the runner the flags ask for, the offline local one by default.

    Beam's pipeline type check is off unless the flags set it (``--pipeline_type_check``). Turns
    Beam's timed data flushes off for every ``FnApiRunner`` of this process
    (``disable_timed_data_flushes``), whatever the runner: a process-wide Beam setting, as are
    ``release_idle_bundle_processors`` and ``memoize_dofn_specs``.

    Raises:
        UsageError: the flags turn timed data flushes on in Beam's Python workers
            (``--experiments data_buffer_time_limit_ms=N``, or that key in an
            ``--environment_config`` JSON); they lose data.
    """
    options = check_beam_flags(beam_flags)
    if not any(flag.startswith("--pipeline_type_check") for flag in beam_flags):
        # Beam's construction-time type check compares the hints of every step with its input's;
        # winnow declares none (``with_input_types``) for it to enforce, and it took a large share
        # of a pass's build time
        options.view_as(TypeOptions).pipeline_type_check = False
    disable_timed_data_flushes()
    release_idle_bundle_processors()
    memoize_dofn_specs()
    runner = FnApiRunner() if options.view_as(StandardOptions).runner in LOCAL_RUNNERS else None
    return beam.Pipeline(runner=runner, options=options)


def check_beam_flags(beam_flags: list[str]) -> PipelineOptions:
    """The pipeline options of the flags; UsageError when they turn Beam's timed data flushes on."""
    options = PipelineOptions(beam_flags)
    flag = timed_flush_flag(options)
    if flag:
        raise UsageError(f"{flag} {TIMED_FLUSH_EXPERIMENT}: Beam 2.77's timed data flushes lose records; leave it unset")
    return options


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


BUNDLE_PROCESSOR_IDLE_S = 1.0


def release_idle_bundle_processors() -> bool:
    """Let the Python SDK workers of this process shut down a stage's bundle processor ``BUNDLE_PROCESSOR_IDLE_S`` after its last bundle.

    A worker keeps each stage's processor for reuse, 60 s by default, and a kept processor holds
    memory from its last bundle. On the local runner, where a pass's ~100 stages each run once and
    in turn, that memory piled up over a pass (measured in benchmarks/RESULTS.md, "Scale"). Affects
    the workers created after the call (the local runner's in-process one). False when this Beam
    has no such setting (nothing changed).
    """
    if not hasattr(sdk_worker, "DEFAULT_BUNDLE_PROCESSOR_CACHE_SHUTDOWN_THRESHOLD_S"):
        return False
    sdk_worker.DEFAULT_BUNDLE_PROCESSOR_CACHE_SHUTDOWN_THRESHOLD_S = BUNDLE_PROCESSOR_IDLE_S
    return True


def memoize_dofn_specs() -> None:
    """Make Beam's ``userstate.get_dofn_specs`` (a DoFn's state and timer specs) compute once per DoFn type and methods in this process.

    Beam reads the signature of every method of a DoFn (about thirty) each time it asks, and asks
    several times per step whenever a stage's bundle processor is built, which the local runner
    does for every stage of a pass: a fixed cost of every run, large for a small one. The specs are the
    defaults of the methods' parameters, so the methods' functions key the cache; a DoFn whose
    methods differ (another class, or an instance's own bound method) gets its own entry.
    """
    if getattr(userstate.get_dofn_specs, "memoized", False):
        return
    compute, known = userstate.get_dofn_specs, {}

    def get_dofn_specs(dofn):
        key = (type(dofn), *((name, method.__func__) for name in dir(dofn)
                             if isinstance(method := getattr(dofn, name, None), types.MethodType)))
        if key not in known:
            known[key] = compute(dofn)
        return known[key]

    get_dofn_specs.memoized = True
    userstate.get_dofn_specs = get_dofn_specs


# Every entry winnow makes in an output directory (``--overwrite`` clears exactly these).
OUTPUT_ENTRIES = ("selected", "scores", "errors", "features", "report.json", "report.html", STATS_FILE)
TEMPORARY_MARK = ".inprogress-"


def prepare_output(output: str, mode: str, reads_from: str | None = None) -> None:
    """Check the output directory for a run of ``mode`` ("new", "overwrite" or "resume") and create it.

    "new" refuses a directory holding any entry winnow makes; "overwrite" deletes them first (but
    refuses when ``reads_from``, a features table this run reads, lies inside ``output``);
    "resume" keeps them. Leftover temporary files of a killed run are removed in every mode.

    Raises:
        UsageError: the directory is a file, cannot be created, holds a run (mode "new"), or holds
            the features table the run reads (mode "overwrite").
    """
    if os.path.isfile(output):  # a local file; object stores (gs://...) have no files in the way of a prefix
        raise UsageError(f"--output {output}: is a file, not a directory")
    existing = [FileSystems.join(output, name) for name in OUTPUT_ENTRIES if FileSystems.exists(FileSystems.join(output, name))]
    if existing and mode == "new":
        raise UsageError(f"--output {output} already holds a run ({', '.join(existing)}); pass --overwrite to replace it or --resume to continue it")
    if existing and mode == "overwrite":
        if reads_from is not None and _inside(reads_from, output):
            raise UsageError(f"--overwrite would delete {reads_from}, the --features table this run reads; write to another --output")
        FileSystems.delete(existing)
    if not FileSystems.exists(output):
        try:
            FileSystems.mkdirs(output)
        except OSError as err:
            raise UsageError(f"--output {output}: cannot create the directory ({err})") from None
    clean_temporary(output)


def _inside(path: str, directory: str) -> bool:
    path, directory = path.rstrip("/"), directory.rstrip("/")
    if io.is_local(path) and io.is_local(directory):
        path, directory = os.path.realpath(path), os.path.realpath(directory)
    return path == directory or path.startswith(directory + "/")


def clean_temporary(output: str) -> None:
    """Delete every temporary file winnow left under ``output`` (``*.inprogress-*``: a killed write)."""
    for kind in ("selected", "scores", "errors", "features"):
        matched = FileSystems.match([FileSystems.join(output, kind, f"*{TEMPORARY_MARK}*")])[0].metadata_list
        if matched:
            FileSystems.delete([meta.path for meta in matched])
    if FileSystems.exists(FileSystems.join(output, STATS_FILE)):
        FileSystems.delete([FileSystems.join(output, STATS_FILE)])


def camel(name: str) -> str:
    """A snake_case name as the CamelCase part of a step label: ``target_invalid`` -> ``TargetInvalid``."""
    return name.title().replace("_", "")


def _json_default(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def collect_stats(pipeline: beam.Pipeline, stats: dict[str, beam.PCollection], path: str) -> None:
    """Write the singleton stats PCollections as one JSON object ``{name: value}`` to ``path`` (no Beam temp files)."""

    def write(_, **values):
        with FileSystems.create(path, mime_type="application/json") as handle:
            handle.write(json.dumps(values, sort_keys=True, default=_json_default).encode("utf-8"))

    _ = pipeline | "StatsSeed" >> beam.Create([None]) | "WriteStats" >> beam.Map(
        write, **{name: beam.pvalue.AsSingleton(value) for name, value in stats.items()})


_CAUSE = re.compile(r"(?:InputError|UsageError|ValueError): (.+)")
_WHERE = re.compile(r" \[while running [^\]]*\]")


def run(pipeline: beam.Pipeline) -> beam.runners.runner.PipelineResult:
    """Run to completion; a failure becomes ``JobFailed`` carrying the root cause's message.

    Ctrl-C reaches the local runner's threads as a ``KeyboardInterrupt`` wrapped in a RuntimeError:
    both become ``KeyboardInterrupt`` here, for the command to report as an interrupt.
    """
    try:
        result = pipeline.run()
        result.wait_until_finish()
    except KeyboardInterrupt:
        raise
    except Exception as err:  # Beam wraps worker exceptions in runner-specific types
        if "KeyboardInterrupt" in str(err):
            raise KeyboardInterrupt from None
        message = str(err).strip()
        causes = _CAUSE.findall(message)
        if causes:
            cause = causes[-1]
        elif isinstance(err, ValueError):  # winnow's own checks raise ValueError with the whole message
            cause = message
        else:
            cause = f"{type(err).__name__}: {message.splitlines()[-1] if message else ''}"
        raise JobFailed(_WHERE.sub("", cause)) from err
    return result


def counters(result, namespace: str) -> dict[str, int] | None:
    """The committed Beam counters of ``namespace``, or None when the runner reports no metrics."""
    try:
        found = result.metrics().query(MetricsFilter().with_namespace(namespace))["counters"]
    except (NotImplementedError, AttributeError, KeyError):
        return None
    totals: dict[str, int] = {}
    for counter in found:
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + (counter.committed or 0)
    return totals


def is_local(beam_flags: list[str]) -> bool:
    """The run uses the local FnApiRunner (progress files and Ctrl-C reach it)."""
    return PipelineOptions(beam_flags).view_as(StandardOptions).runner in LOCAL_RUNNERS


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
