"""``winnow dedup``: remove exact and near duplicates, keep one record per duplicate cluster.

    ReadInputs -> DedupExact -> DedupNearMinHash -> WriteSelected (the kept records)
    errors -> WriteErrors;   outcomes and dedup stats -> report.json / report.html

Exact duplicates share their normalized text (NFKC, case-folded, whitespace collapsed);
near duplicates are connected components of MinHash-LSH links whose estimated Jaccard
similarity reaches ``--threshold``. The smallest id of each group or component is kept; the
others are dropped ``exact_duplicate`` / ``near_duplicate`` with ``duplicate_of`` naming it.
"""

import argparse
import dataclasses

import apache_beam as beam

from winnow.pipelines import options, runner
from winnow.transforms import dedup, io, minhash, schema


def dedup_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="winnow dedup", allow_abbrev=False,
        description="Remove exact and near-duplicate records (MinHash-LSH, connected components) and write the kept ones as Parquet.",
        epilog="Any other --flag is a Beam pipeline option. Default runner: Beam's local FnApiRunner (offline).",
    )
    options.add_input_arguments(parser, "records")
    parser.add_argument("--output", metavar="DIR", help="output directory (local or any Beam filesystem)")
    parser.add_argument("--write-scores", action="store_true", help="also write scores/*.parquet: every valid record's duplicate_of, selected flag and drop reason")
    parser.add_argument("--overwrite", action="store_true", help="replace a previous run's output in DIR")
    parser.add_argument("--seed", type=int, default=1, help="seed of the MinHash permutations (default: %(default)s)")
    options.add_minhash_arguments(parser.add_argument_group("near-duplicates"), "")
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML file of options (keys are the flag names); flags win")
    return parser


@dataclasses.dataclass(frozen=True)
class DedupJob:
    """A validated ``winnow dedup`` run."""

    inputs: tuple[str, ...]
    output: str
    read: io.ReadConfig
    minhash: minhash.MinHashConfig
    write_scores: bool
    overwrite: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "DedupJob":
        read = options.read_config(args, "input", "output")
        return cls(tuple(args.input), args.output.rstrip("/"), read, options.minhash_config(args, "", args.seed),
                   args.write_scores, args.overwrite)


def _mark_kept(record: dict) -> dict:
    return {**record, schema.SELECTED: schema.is_eligible(record)}


def build(pipeline: beam.Pipeline, job: DedupJob, selected_schema, input_files: list[tuple[str, int]]) -> None:
    read = pipeline | "ReadInputs" >> io.ReadDocuments(job.inputs, job.read, unique_ids=True, files=input_files)
    exact = read["records"] | "DedupExact" >> dedup.DedupExact()
    near = exact["records"] | "DedupNearMinHash" >> dedup.DedupNearMinHash(job.minhash)
    decided = near["records"] | "MarkKept" >> beam.Map(_mark_kept)
    errors = [read["errors"], exact["errors"], near["errors"]] | "FlattenErrors" >> beam.Flatten()
    runner.write_outputs(decided, errors, job.output, selected_schema, job.write_scores)
    stats = {**runner.outcome_stats(decided, errors), "dedup_exact": exact["stats"], "dedup_minhash": near["stats"]}
    runner.collect_stats(stats, job.output)


def main(argv: list[str]) -> int:
    """Run ``winnow dedup``; returns the exit code. Raises UsageError, InputError, JobFailed."""
    args, beam_flags = options.parse(dedup_parser(), argv)
    job = DedupJob.from_args(args)
    input_files = io.match_inputs(job.inputs)  # listed once, for the schema probe and the read
    selected_schema = io.selected_schema(io.probe_extra_fields(input_files, job.read))
    runner.execute("dedup", argv, job.output, job.overwrite, beam_flags, lambda pipeline: build(pipeline, job, selected_schema, input_files),
                   dataclasses.asdict(job), lambda stats: [])
    return 0
