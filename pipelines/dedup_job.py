"""``winnow dedup``: remove exact and near duplicates, keep one record per duplicate group.

The same passes as ``winnow select`` (``jobs.py``) with nothing to score but the exact key and
the MinHash signature, and a selection that keeps every record no dedup step dropped:

    shards ──► [score]  features/unit-*.parquet: exact hashes, MinHash signatures
    features ─► [decide] exact groups, LSH buckets -> verified links -> components (+ guard)
    shards ──► [write]  selected/ (the kept records), scores/, errors/, report

Exact duplicates share their normalized text (NFKC, case-folded, whitespace collapsed); near
duplicates are connected components of MinHash-LSH links whose estimated Jaccard similarity
reaches ``--threshold``. The smallest id of each group or component is kept; the others are
dropped ``exact_duplicate`` / ``near_duplicate`` with ``winnow_duplicate_of`` naming it.
``--index DIR`` writes the kept records into a dedup index, ``--against DIR`` drops duplicates
of an index's documents (``dedup_index.py``).
"""

import argparse
import dataclasses

from winnow.pipelines import decide, jobs, options, score, select_job
from winnow.transforms import dedup, select

DEDUP_CHOICES = ("exact", "minhash", "exact,minhash")
USAGE = ("winnow dedup --input GLOB [--input GLOB ...] --output DIR [--dedup exact|minhash|exact,minhash]\n"
         "             [--threshold 0.8 --num-perm 128 --shingle 5] [--write-scores] [--index DIR] [--against DIR ...]\n"
         "             [--max-cluster-size N] [--overwrite | --resume] [--config FILE.yaml] [Beam pipeline options]")


def dedup_parser() -> argparse.ArgumentParser:
    parser = options.Parser(
        prog="winnow dedup", usage=USAGE, allow_abbrev=False,
        description="Remove exact and near-duplicate records (MinHash-LSH, connected components) and write the kept ones as Parquet.",
        epilog="Any other --flag is a Beam pipeline option. Default runner: Beam's local FnApiRunner (offline).",
    )
    options.add_input_arguments(parser, "records")
    select_job.add_run_arguments(parser, "output directory (local or any Beam filesystem)")
    parser.add_argument("--dedup", type=select_job.dedup_steps, default="exact,minhash", metavar="|".join(DEDUP_CHOICES),
                        help="exact (normalized text), minhash (near-duplicates), or both (default: %(default)s)")
    parser.add_argument("--index", metavar="DIR", help="write (or append to) a dedup index of the kept records")
    parser.add_argument("--against", action="append", metavar="DIR", help="drop records that duplicate a document of this dedup index (repeatable)")
    options.add_minhash_arguments(parser.add_argument_group("near-duplicates"), "")
    return parser


def job_from_args(args: argparse.Namespace) -> select_job.SelectJob:
    """Raises UsageError for missing or contradictory options."""
    options.require(args, "output")
    if not args.input and not args.features:
        raise options.UsageError("--input is required (or --features, whose manifest names the inputs; see --help)")
    if args.dedup == "none":
        raise options.UsageError("--dedup none: nothing to do; expected exact, minhash or exact,minhash")
    minhash_config = options.minhash_config(args, "")
    scoring = score.ScoreOptions(options.read_config(args), dedup.ExactDedupConfig(), minhash_config if "minhash" in args.dedup else None)
    deciding = decide.DecideOptions(method="all", quota=select.TotalQuota(fraction=1.0), dedup=args.dedup, minhash=minhash_config, seed=0,
                                    runs_dsir=False, write_scores=args.write_scores, against=tuple(args.against or ()))
    mode = "overwrite" if args.overwrite else "resume" if args.resume else "new"
    deciding = dataclasses.replace(deciding, against=tuple(map(select_job.local_path, deciding.against)))
    return select_job.SelectJob("dedup", tuple(args.input or ()), (), select_job.local_path(args.output), mode, select_job.local_path(args.features),
                                scoring, deciding, select_job.local_path(args.index))


def main(argv: list[str]) -> int:
    """Run ``winnow dedup``; returns the exit code. Raises UsageError, InputError, JobFailed, KeyboardInterrupt."""
    args, beam_flags = options.parse(dedup_parser(), argv)
    jobs.run(job_from_args(args), argv, beam_flags, args)
    return 0
