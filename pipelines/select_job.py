"""``winnow select``: read shards, drop duplicates, score, select exactly N, write Parquet and a report.

Pipeline shape (each step a labelled Beam transform)::

    ReadInputs -> [Dedup] -> Score<Method> -> AttachKeys -> SelectTop -> WriteSelected
                                                                      -> WriteScores (--write-scores)
    ReadInputs.errors -> WriteErrors;   all outcomes -> Stats -> report.json / report.html
"""

import argparse
import dataclasses
import time

import apache_beam as beam

from pipelines import options, runner
from transforms import io, schema, select

METHODS = ("random",)
TARGET_METHODS = frozenset()
DEDUP_CHOICES = ("none",)
DEFAULT_FRACTION = 0.1


def select_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="winnow select",
        allow_abbrev=False,
        description="Select the best, most diverse subset of raw text shards and write it as Parquet.",
        epilog="Any other --flag is a Beam pipeline option, e.g. --runner DataflowRunner --project P "
        "--temp_location gs://B/tmp, or --direct_running_mode multi_processing --direct_num_workers 2. "
        "Default runner: Beam's local FnApiRunner (offline).",
    )
    inputs = parser.add_argument_group("input")
    inputs.add_argument("--input", action="append", metavar="GLOB", help="raw shards: .jsonl, .jsonl.gz, .jsonl.zst, .parquet (repeatable)")
    inputs.add_argument("--target", action="append", metavar="GLOB", help="target sample, same formats (repeatable); needed by target methods")
    inputs.add_argument("--text-field", default="text", help="field holding the document text (default: %(default)s)")
    inputs.add_argument("--id-field", default="id", help="field holding the document id; absent ids become '<file>:<position>' (default: %(default)s)")
    output = parser.add_argument_group("output")
    output.add_argument("--output", metavar="DIR", help="output directory (local or any Beam filesystem)")
    output.add_argument("--write-scores", action="store_true", help="also write scores/*.parquet: every valid record's scores, selected flag and drop reason")
    output.add_argument("--overwrite", action="store_true", help="replace a previous run's output in DIR")
    selection = parser.add_argument_group("selection")
    size = selection.add_mutually_exclusive_group()
    size.add_argument("--num-select", type=options.positive_int, metavar="N", help="select exactly N records (all of them if fewer are eligible)")
    size.add_argument("--fraction", type=options.fraction, metavar="F", help=f"select round(F x eligible records) (default: {DEFAULT_FRACTION})")
    selection.add_argument("--method", choices=METHODS, default="random", help="how records are scored and selected (default: %(default)s)")
    selection.add_argument("--dedup", choices=DEDUP_CHOICES, default="none", help="duplicate removal before selection (default: %(default)s)")
    selection.add_argument("--seed", type=int, default=0, help="seed of every random choice; same seed, same output on any runner (default: %(default)s)")
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML file of options (keys are the flag names); flags win")
    return parser


@dataclasses.dataclass(frozen=True)
class SelectJob:
    """A validated ``winnow select`` run."""

    inputs: tuple[str, ...]
    targets: tuple[str, ...]
    output: str
    read: io.ReadConfig
    quota: select.TotalQuota
    method: str
    seed: int
    write_scores: bool
    overwrite: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "SelectJob":
        """Raises UsageError for missing or contradictory options."""
        if not args.input:
            raise options.UsageError("--input is required (a glob of raw shards)")
        if not args.output:
            raise options.UsageError("--output is required (a directory)")
        if args.num_select is not None and args.fraction is not None:
            raise options.UsageError(f"give --num-select ({args.num_select}) or --fraction ({args.fraction}), not both")
        if args.method in TARGET_METHODS and not args.target:
            raise options.UsageError(f"--method {args.method} needs --target (a sample of the data you want more of)")
        quota = select.TotalQuota(n=args.num_select) if args.num_select is not None else select.TotalQuota(fraction=args.fraction or DEFAULT_FRACTION)
        try:
            read = io.ReadConfig(text_field=args.text_field, id_field=args.id_field)
        except ValueError as err:
            raise options.UsageError(str(err)) from None
        return cls(
            inputs=tuple(args.input), targets=tuple(args.target or ()), output=args.output.rstrip("/"), read=read,
            quota=quota, method=args.method, seed=args.seed, write_scores=args.write_scores, overwrite=args.overwrite,
        )


def _attach_random_key(record: dict, seed: int) -> dict:
    if not schema.is_eligible(record):
        return record
    return {**record, select.KEY: select.uniform_from_id(record[schema.ID], seed), select.GROUP: 0}


def build(pipeline: beam.Pipeline, job: SelectJob, selected_schema) -> None:
    """Add the whole select job to ``pipeline``."""
    read = pipeline | "ReadInputs" >> io.ReadDocuments(job.inputs, job.read)
    records, errors = read["records"], read["errors"]
    keyed = records | "AttachKeys" >> beam.Map(_attach_random_key, job.seed)
    chosen = keyed | "SelectTop" >> select.SelectTop(job.quota)
    decided = chosen["records"]
    (
        decided
        | "KeepSelected" >> beam.Filter(lambda r: r[schema.SELECTED])
        | "WriteSelected" >> io.WriteParquet(f"{job.output}/selected/part", selected_schema)
    )
    if job.write_scores:
        decided | "WriteScores" >> io.WriteParquet(f"{job.output}/scores/part", io.scores_schema())
    errors | "WriteErrors" >> io.WriteErrors(f"{job.output}/errors/part")
    stats = {**runner.outcome_stats(decided, errors), "selection": chosen["stats"]}
    runner.collect_stats(stats, job.output)


def main(argv: list[str]) -> int:
    """Run ``winnow select``; returns the exit code. Raises UsageError, InputError, JobFailed."""
    started = time.perf_counter()
    args, beam_flags = options.parse(select_parser(), argv)
    job = SelectJob.from_args(args)
    selected_schema = io.selected_schema(io.probe_extra_fields(list(job.inputs), job.read))
    runner.prepare_output(job.output, job.overwrite)
    pipeline = runner.make_pipeline(beam_flags)
    build(pipeline, job, selected_schema)
    built = time.perf_counter()
    runner.LOG.info("select: pipeline built in %.1fs; running", built - started)
    result = runner.run(pipeline)
    ran = time.perf_counter()
    document = runner.finish(
        job.output, result, ["winnow", "select", *argv], _job_options(job, beam_flags),
        {"build": round(built - started, 3), "run": round(ran - built, 3)}, lambda stats: _warnings(job, stats),
    )
    counts = document["counts"]
    for warning in document["warnings"]:
        runner.LOG.warning("select: %s", warning)
    runner.LOG.info(
        "select: read %d, invalid %d, selected %d, dropped %s -> %s",
        counts["input"], counts["invalid"], counts["selected"], counts["dropped"], job.output,
    )
    return 0


def _warnings(job: SelectJob, stats: dict) -> list[str]:
    """Warn when fewer records were eligible than asked for (all of them are then selected)."""
    pool = sum(stats["selection"]["pool"].values()) if stats.get("selection") else 0
    if job.quota.n is not None and job.quota.n > pool:
        return [f"--num-select {job.quota.n} is more than the {pool} eligible records; all {pool} were selected"]
    return []


def _job_options(job: SelectJob, beam_flags: list[str]) -> dict:
    described = dataclasses.asdict(job)
    described["beam_flags"] = beam_flags
    return described
