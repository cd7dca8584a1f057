"""``winnow select``: score every record once into a features table, then select exactly N and write them.

    shards ──► [fit]     small fitted state          (score.build_fit; skipped when nothing is fitted)
    shards ──► [score]   features/unit-*.parquet     (score.build_score; map-only, per unit)
    features ─► [decide] dedup, quotas, exact-N     (decide.build_decide; compact rows only)
    shards ──► [write]   selected/ scores/ errors/   (same pipeline as decide; per unit, text re-read)

The passes run as three Beam pipelines (fit, score, decide+write), one after the other, each on
the runner the flags ask for. Separate pipelines are what make the features table a real artefact:
``--features DIR`` starts at the decide pass (re-selection with other selection options, no text
scored again), and ``--resume`` skips the fit when it is complete and every unit whose marker
exists. The cost is one job start per pass on a distributed runner.

Selection per method (``decide``; the top N by key, ties by id): random ``uniform(seed, id)``;
dsir ``log w + Gumbel(seed, id)`` (importance resampling without replacement) or ``log w`` with
``--dsir-top-k``, one round per target with ``--dsir-separate-targets``; zipfit the alignment
(top-k, as the paper); kmeans the diversity greedy's gains inside clusters (``diversity.py``) or a
quota strategy's per-cluster quotas with ``uniform(seed, id)`` within; combined the quality
candidates (top M by ``s + Gumbel(seed, id)``, ``combined.py``) thinned to N by the same
diversity greedy (``--combined-diversity``).
"""

import argparse
import dataclasses
import logging
import tempfile
import time

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from winnow.pipelines import decide, features, options, progress, report, runner, score
from winnow.pipelines.features import FeaturesError, FeaturesTable
from winnow.transforms import dedup, dsir, embed, io, kmeans, minhash, quotas, schema, select, semdedup, zipfit
from winnow.transforms.combined import CombinedConfig
from winnow.transforms.diversity import DiversityConfig

LOG = logging.getLogger("winnow")
METHODS = ("random", "dsir", "zipfit", "kmeans", "combined")
TARGET_METHODS = frozenset({"dsir", "zipfit"})
DEDUP_CHOICES = ("none", "exact", "minhash", "exact,minhash")
DEFAULT_FRACTION = 0.1
USAGE = ("winnow select --input GLOB [--input GLOB ...] --output DIR [--target GLOB ...] [--num-select N | --fraction F]\n"
         "              [--method random|dsir|zipfit|kmeans|combined] [--dedup none|exact|minhash|exact,minhash]\n"
         "              [--features DIR] [--overwrite | --resume] [--config FILE.yaml] [options] [Beam pipeline options]\n"
         "       (--input may be omitted with --features, and --input/--output given in the --config file)")


def dedup_steps(text: str) -> str:
    """argparse type: 'none' or a comma list of 'exact' and 'minhash', normalized to that order."""
    steps = {step.strip() for step in text.split(",") if step.strip()}
    if steps == {"none"}:
        return "none"
    if not steps or not steps <= {"exact", "minhash"}:
        raise argparse.ArgumentTypeError(f"{text!r}; expected one of {', '.join(DEDUP_CHOICES)}")
    return ",".join(step for step in ("exact", "minhash") if step in steps)


def add_run_arguments(parser, output_help: str) -> None:
    """``--output --write-scores --overwrite --resume --features --progress`` (select and dedup)."""
    output = parser.add_argument_group("output")
    output.add_argument("--output", metavar="DIR", help=output_help)
    output.add_argument("--write-scores", action="store_true", help="also write scores/*.parquet: every valid record's id, winnow's columns, selected flag and drop reason")
    mode = output.add_mutually_exclusive_group()
    mode.add_argument("--overwrite", action="store_true", help="replace every entry a previous run left in DIR")
    mode.add_argument("--resume", action="store_true", help="continue a killed or failed run in DIR: complete passes and units are kept")
    output.add_argument("--features", metavar="DIR", help="start at the decide pass from this features table (OUT/features of an earlier run)")
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML file of options, Beam's included (keys are the flag names); flags win")


def select_parser() -> argparse.ArgumentParser:
    parser = options.Parser(
        prog="winnow select", usage=USAGE, allow_abbrev=False,
        description="Select a subset of raw text shards that is on target and diverse, and write it as Parquet with a report.",
        epilog="Any other --flag is a Beam pipeline option, e.g. --runner DataflowRunner --project P "
        "--temp_location gs://B/tmp, or --direct_running_mode multi_processing --direct_num_workers 2. "
        "Default runner: Beam's local FnApiRunner (offline).",
    )
    inputs = parser.add_argument_group("input")
    options.add_input_arguments(inputs, "raw shards")
    inputs.add_argument("--target", action="append", metavar="GLOB", help="target sample, same formats (repeatable); needed by dsir and zipfit, used by combined")
    add_run_arguments(parser, "output directory (local or any Beam filesystem)")
    selection = parser.add_argument_group("selection")
    size = selection.add_mutually_exclusive_group()
    size.add_argument("--num-select", type=options.positive_int, metavar="N", help="select exactly N records (all of them if fewer are eligible)")
    size.add_argument("--fraction", type=options.fraction, metavar="F", help=f"select round(F x eligible records) (default: {DEFAULT_FRACTION})")
    selection.add_argument("--method", choices=METHODS, default="combined", help="how records are scored and selected (default: %(default)s)")
    selection.add_argument("--dedup", type=dedup_steps, default="none", metavar="|".join(DEDUP_CHOICES),
                           help="duplicate removal before selection: exact (normalized text) and/or minhash (near-duplicates) (default: %(default)s)")
    selection.add_argument("--against", action="append", metavar="DIR", help="drop records that duplicate a document of this dedup index (repeatable)")
    selection.add_argument("--dedup-index", metavar="DIR", help="write (or append to) a dedup index of the records this run keeps")
    selection.add_argument("--seed", type=int, default=0, help="seed of the selection; same seed, same output on any runner (default: %(default)s)")
    selection.add_argument("--fit-seed", "--kmeans-seed", type=int, default=1, dest="fit_seed",
                           help="seed of the fitted samples (embedding, k-means, ZIP-FIT target sample, DSIR raw budget) and k-means++: a scoring option (default: %(default)s)")
    options.add_minhash_arguments(parser.add_argument_group("near-duplicates (--dedup minhash)"), "dedup-")
    dsir_group = parser.add_argument_group("dsir (hashed n-gram importance resampling, Xie et al. 2023)")
    defaults = dsir.DsirConfig()
    dsir_group.add_argument("--dsir-buckets", type=options.positive_int, default=defaults.buckets, help="hash buckets (default: %(default)s)")
    dsir_group.add_argument("--dsir-ngrams", type=options.positive_int, default=defaults.ngrams, help="n-gram order; 2 = unigrams and bigrams (default: %(default)s)")
    dsir_group.add_argument("--dsir-min-tokens", type=int, default=defaults.min_tokens, help="documents with fewer tokens are dropped too_short (default: %(default)s)")
    dsir_group.add_argument("--dsir-raw-token-budget", type=options.positive_int, metavar="TOKENS", help="fit the raw distribution on a seeded subset of about this many tokens (default: all)")
    dsir_group.add_argument("--dsir-hash", choices=dsir.HASHES, default=defaults.hash,
                            help="fast: vectorised hashing; sha256: the reference's buckets (on text without combining marks) (default: %(default)s)")
    dsir_group.add_argument("--dsir-top-k", action="store_true", help="select the top N log weights instead of importance resampling")
    dsir_group.add_argument("--dsir-separate-targets", action="store_true",
                            help="each --target is its own target dataset: select its share of N by its own weights, target by target (the reference's separate_targets)")
    dsir_group.add_argument("--dsir-target-proportions", type=options.shares, metavar="P,P,...",
                            help="with --dsir-separate-targets: each target's share of N, in --target order (default: its share of the targets' n-grams)")
    zipfit_group = parser.add_argument_group("zipfit (compression alignment to the target)")
    zipfit_group.add_argument("--zipfit-mode", choices=zipfit.MODES, default=zipfit.ZSTD_DICT, help="zstd_dict: linear in the data; faithful: the paper's gzip NCD, documents x targets compressions (default: %(default)s)")
    zipfit_group.add_argument("--zipfit-level", type=int, help="compressor level: gzip 0-9 (faithful, default 9) or zstd 1-22 (zstd_dict, default 3)")
    zipfit_group.add_argument("--zipfit-target-sample", type=options.positive_int, default=256, metavar="N", help="use at most N target documents, a seeded sample (default: %(default)s)")
    cluster_group = parser.add_argument_group("kmeans and combined (embeddings, clusters, per-cluster quotas)")
    cluster_group.add_argument("--kmeans-k", type=options.positive_int, metavar="K", help="clusters (default: sqrt(n/2), capped)")
    cluster_group.add_argument("--kmeans-strategy", choices=quotas.STRATEGIES, default=quotas.DIVERSITY,
                               help="kmeans: diversity (greedy log-determinant per cluster, merged by gain) or per-cluster quotas (default: %(default)s)")
    cluster_group.add_argument("--kmeans-sample", type=options.positive_int, default=50_000, metavar="N", help="records k-means is fitted on, a seeded sample (default: %(default)s)")
    cluster_group.add_argument("--semdedup-eps", type=float, metavar="EPS", help="drop records with cosine > 1 - EPS to a kept record of their cluster as semantic_duplicate (default: off)")
    cluster_group.add_argument("--embedding-field", metavar="FIELD", help="use precomputed embeddings from this input field instead of hashed tf-idf")
    cluster_group.add_argument("--embed-dim", type=options.positive_int, metavar="D", help="embedding width (default: 256 for hashed tf-idf)")
    combined_defaults = CombinedConfig()
    cluster_group.add_argument("--combined-dsir-weight", type=float, default=combined_defaults.dsir_weight, help="weight of the standardized DSIR log weight in combined (default: %(default)s)")
    cluster_group.add_argument("--combined-zipfit-weight", type=float, default=combined_defaults.zipfit_weight, help="weight of the standardized ZIP-FIT alignment in combined (default: %(default)s)")
    cluster_group.add_argument("--combined-diversity", type=float, default=DiversityConfig().diversity, metavar="D",
                               help="combined with a target: 0 selects by quality only (as dsir), 1 by diversity only; in between the "
                               "diversity step drops the most redundant share D (1 - N/n) of the quality candidates (default: %(default)s)")
    return parser


# Scoring options as the manifest records them -> the flag that sets each (for "this option changed" errors).
SCORING_FLAGS = {
    ("read", "text_field"): "--text-field", ("read", "id_field"): "--id-field",
    ("minhash", "num_perm"): "--dedup-num-perm", ("minhash", "shingle"): "--dedup-shingle", ("minhash", "shingle_kind"): "--dedup-shingle-kind",
    ("minhash", "seed"): "--minhash-seed",
    ("dsir", "buckets"): "--dsir-buckets", ("dsir", "ngrams"): "--dsir-ngrams", ("dsir", "raw_token_budget"): "--dsir-raw-token-budget",
    ("dsir", "hash"): "--dsir-hash", ("dsir", "separate_targets"): "--dsir-separate-targets",
    ("dsir", "target_proportions"): "--dsir-target-proportions", ("dsir", "seed"): "--fit-seed",
    ("zipfit", "mode"): "--zipfit-mode", ("zipfit", "level"): "--zipfit-level", ("zipfit", "target_sample"): "--zipfit-target-sample",
    ("zipfit", "seed"): "--fit-seed",
    ("embed", "dim"): "--embed-dim", ("embed", "embedding_field"): "--embedding-field", ("embed", "seed"): "--fit-seed",
    ("kmeans", "k"): "--kmeans-k", ("kmeans", "sample_size"): "--kmeans-sample", ("kmeans", "seed"): "--fit-seed",
    ("targets", None): "--target", ("inputs", None): "--input",
}
MINHASH_SCORING = ("num_perm", "shingle", "shingle_kind", "seed", "shingle_hash", "permutation")


@dataclasses.dataclass(frozen=True)
class SelectJob:
    """A validated ``winnow select`` (or ``winnow dedup``) run."""

    name: str
    inputs: tuple[str, ...]
    targets: tuple[str, ...]
    output: str
    mode: str  # new, overwrite or resume
    features_dir: str | None
    scoring: score.ScoreOptions
    deciding: decide.DecideOptions
    dedup_index: str | None = None

    @property
    def target_sets(self) -> list[list[str]]:
        """The target datasets' globs: one per ``--target`` with separate targets, else all of them as one."""
        if self.scoring.dsir is not None and self.scoring.dsir.separate_targets:
            return [[glob] for glob in self.targets]
        return [list(self.targets)] if self.targets else []

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "SelectJob":
        """Raises UsageError for missing or contradictory options."""
        options.require(args, "output")
        if not args.input and not args.features:
            raise options.UsageError("--input is required (or --features, whose manifest names the inputs; see --help)")
        read = options.read_config(args)
        if args.method in TARGET_METHODS and not args.target and not args.features:  # a features table holds the target's scores
            raise options.UsageError(f"--method {args.method} needs --target (a sample of the data you want more of)")
        if args.dsir_target_proportions is not None and not args.dsir_separate_targets:
            raise options.UsageError("--dsir-target-proportions needs --dsir-separate-targets (each --target its own target dataset)")
        if args.dsir_separate_targets and args.method != "dsir":
            raise options.UsageError(f"--dsir-separate-targets selects per target with --method dsir, not --method {args.method}")
        if args.dsir_target_proportions is not None and len(args.dsir_target_proportions) != len(args.target or ()):
            raise options.UsageError(
                f"--dsir-target-proportions has {len(args.dsir_target_proportions)} shares for {len(args.target or ())} --target; give one per --target")
        uses_target = args.method in TARGET_METHODS or (args.method == "combined" and bool(args.target))
        runs_dsir = args.method == "dsir" or (args.method == "combined" and uses_target)
        runs_zipfit = args.method == "zipfit" or (args.method == "combined" and uses_target and args.combined_zipfit_weight != 0)
        clusters = args.method in ("kmeans", "combined")
        minhash_config = options.minhash_config(args, "dedup-")
        dsir_config = options.build_config(dsir.DsirConfig, {"buckets": "--dsir-buckets", "ngrams": "--dsir-ngrams", "min_tokens": "--dsir-min-tokens",
                                                              "raw_token_budget": "--dsir-raw-token-budget", "target_proportions": "--dsir-target-proportions"},
                                           buckets=args.dsir_buckets, ngrams=args.dsir_ngrams, min_tokens=args.dsir_min_tokens,
                                           raw_token_budget=args.dsir_raw_token_budget, hash=args.dsir_hash, separate_targets=args.dsir_separate_targets,
                                           target_proportions=args.dsir_target_proportions, seed=args.fit_seed) if runs_dsir else None
        scoring = score.ScoreOptions(
            read=read, exact=dedup.ExactDedupConfig(),
            minhash=minhash_config if "minhash" in args.dedup else None,
            dsir=dsir_config,
            zipfit=options.build_config(zipfit.ZipfitConfig, {"level": "--zipfit-level", "target_sample": "--zipfit-target-sample"},
                                        mode=args.zipfit_mode, level=args.zipfit_level, target_sample=args.zipfit_target_sample,
                                        seed=args.fit_seed) if runs_zipfit else None,
            embed=options.build_config(embed.EmbedConfig, {"dim": "--embed-dim", "embedding_field": "--embedding-field"},
                                       dim=args.embed_dim, seed=args.fit_seed, embedding_field=args.embedding_field) if clusters else None,
            kmeans=options.build_config(kmeans.KMeansConfig, {"k": "--kmeans-k", "sample_size": "--kmeans-sample"},
                                        k=args.kmeans_k, sample_size=args.kmeans_sample, seed=args.fit_seed) if clusters else None,
        )
        quota = select.TotalQuota(n=args.num_select) if args.num_select is not None else select.TotalQuota(fraction=args.fraction or DEFAULT_FRACTION)
        deciding = decide.DecideOptions(
            method=args.method, quota=quota, dedup=args.dedup, minhash=minhash_config, seed=args.seed, runs_dsir=runs_dsir,
            dsir_top_k=args.dsir_top_k, rounds=len(args.target) if args.dsir_separate_targets else 1, strategy=args.kmeans_strategy,
            min_tokens=args.dsir_min_tokens,
            combined=options.build_config(CombinedConfig, {"dsir_weight": "--combined-dsir-weight", "zipfit_weight": "--combined-zipfit-weight"},
                                          dsir_weight=args.combined_dsir_weight, zipfit_weight=args.combined_zipfit_weight),
            diversity=options.build_config(DiversityConfig, {"diversity": "--combined-diversity"}, diversity=args.combined_diversity),
            semdedup=None if args.semdedup_eps is None else options.build_config(semdedup.SemDedupConfig, {"eps": "--semdedup-eps"}, eps=args.semdedup_eps),
            write_scores=args.write_scores, against=tuple(args.against or ()),
        )
        if args.method == "combined" and args.kmeans_strategy != quotas.DIVERSITY:
            raise options.UsageError(f"--kmeans-strategy {args.kmeans_strategy} sets quotas for --method kmeans; combined selects with the diversity step")
        if deciding.semdedup is not None and not clusters:
            raise options.UsageError(f"--semdedup-eps compares records within k-means clusters: it needs --method kmeans or combined, not {args.method}")
        if (args.against or args.dedup_index) and args.dedup == "none":
            raise options.UsageError("--against and --dedup-index need --dedup exact, minhash or exact,minhash")
        mode = "overwrite" if args.overwrite else "resume" if args.resume else "new"
        return cls("select", tuple(args.input or ()), tuple(args.target or ()), local_path(args.output), mode, local_path(args.features), scoring,
                   dataclasses.replace(deciding, against=tuple(map(local_path, deciding.against))), local_path(args.dedup_index))


def local_path(path: str | None) -> str | None:
    """A directory flag's value as every worker must see it: absolute when local (workers have other working directories)."""
    return None if path is None else io.resolve_pattern(path.rstrip("/") or "/")


def main(argv: list[str]) -> int:
    """Run ``winnow select``; returns the exit code. Raises UsageError, InputError, JobFailed, KeyboardInterrupt."""
    args, beam_flags = options.parse(select_parser(), argv)
    job = SelectJob.from_args(args)
    from winnow.pipelines import jobs

    jobs.run(job, argv, beam_flags, args)
    return 0
