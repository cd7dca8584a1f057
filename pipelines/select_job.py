"""``winnow select``: read shards, drop duplicates, score, select exactly N, write Parquet and a report.

Pipeline shape (each step a labelled Beam transform)::

    ReadInputs -> [Dedup] -> Score<Method> -> AttachKeys -> SelectTop -> WriteSelected
                                                                      -> WriteScores (--write-scores)
    ReadTarget ----^ (target methods)
    errors of every stage -> WriteErrors;   outcomes and method stats -> report.json / report.html

Selection keys per method (``transforms/select.py`` picks the top N by key, ties by id):

- ``random``: ``u(seed, id)``, uniform;
- ``dsir``: ``log w + Gumbel(seed, id)``, importance resampling without replacement (Gumbel
  top-k), or ``log w`` with ``--dsir-top-k``; with ``--dsir-separate-targets`` one round per
  ``--target`` (``select.SelectInRounds``), round t keyed by the weight against target t and
  its own noise;
- ``zipfit``: ``zipfit_alignment``, top-k as in the paper.
- ``kmeans``: records are embedded and clustered; each cluster gets a quota
  (``--kmeans-strategy``) and within it the key is ``u(seed, id)`` (or, for ``prototypes``, the
  distance to the centroid: the least prototypical first).
- ``combined`` (QuaDMix-style, "Quality-Diversity Balanced Data Selection"): per-cluster quotas
  mixing the ``kmeans`` strategy's quotas with the clusters' quality mass (``ClusterQuota``), and
  within a cluster importance resampling on
  ``s(x) = w_dsir * z(dsir_log_weight) + w_zipfit * z(zipfit_alignment)``, z the score
  standardized over the eligible pool: key ``s(x) + T * Gumbel(seed, id)``, i.e. sampling
  without replacement with probability proportional to ``exp(s(x) / T)``. Without ``--target``
  the quality terms drop out and it is pure diversity selection.
"""

import argparse
import dataclasses
import math

import apache_beam as beam
import numpy as np

from winnow.pipelines import options, runner
from winnow.transforms import dedup, dsir, embed, io, kmeans, minhash, schema, select, vendi, zipfit

METHODS = ("random", "dsir", "zipfit", "kmeans", "combined")
TARGET_METHODS = frozenset({"dsir", "zipfit"})
CLUSTER_METHODS = frozenset({"kmeans", "combined"})
COMBINED_SCORES = (schema.DSIR_LOG_WEIGHT, schema.ZIPFIT_ALIGNMENT)
PLOTTED_SCORES = (schema.DSIR_LOG_WEIGHT, schema.ZIPFIT_ALIGNMENT, schema.CLUSTER_DISTANCE)
N_QUANTILES = 21  # the report plots each score's distribution as 21 quantiles, 0 to 1 in steps of 0.05
N_HISTOGRAM_BINS = 30  # and as a histogram of this many equal-width bins
DEDUP_CHOICES = ("none", "exact", "minhash", "exact,minhash")
DEFAULT_FRACTION = 0.1
BASELINE_SEED_OFFSET = 1  # the random baseline of the metrics uses seed + 1, independent of the selection


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
    options.add_input_arguments(inputs, "raw shards")
    inputs.add_argument("--target", action="append", metavar="GLOB", help="target sample, same formats (repeatable); needed by dsir and zipfit, used by combined")
    output = parser.add_argument_group("output")
    output.add_argument("--output", metavar="DIR", help="output directory (local or any Beam filesystem)")
    output.add_argument("--write-scores", action="store_true", help="also write scores/*.parquet: every valid record's scores, selected flag and drop reason")
    output.add_argument("--overwrite", action="store_true", help="replace a previous run's output in DIR")
    selection = parser.add_argument_group("selection")
    size = selection.add_mutually_exclusive_group()
    size.add_argument("--num-select", type=options.positive_int, metavar="N", help="select exactly N records (all of them if fewer are eligible)")
    size.add_argument("--fraction", type=options.fraction, metavar="F", help=f"select round(F x eligible records) (default: {DEFAULT_FRACTION})")
    selection.add_argument("--method", choices=METHODS, default="combined", help="how records are scored and selected (default: %(default)s)")
    selection.add_argument("--dedup", type=_dedup_steps, default="none", metavar="|".join(DEDUP_CHOICES),
                           help="duplicate removal before selection: exact (normalized text) and/or minhash (near-duplicates) (default: %(default)s)")
    selection.add_argument("--seed", type=int, default=0, help="seed of every random choice; same seed, same output on any runner (default: %(default)s)")
    options.add_minhash_arguments(parser.add_argument_group("near-duplicates (--dedup minhash)"), "dedup-")
    dsir_group = parser.add_argument_group("dsir (hashed n-gram importance resampling, Xie et al. 2023)")
    dsir_group.add_argument("--dsir-buckets", type=options.positive_int, default=10_000, help="hash buckets (default: %(default)s)")
    dsir_group.add_argument("--dsir-ngrams", type=options.positive_int, default=2, help="n-gram order; 2 = unigrams and bigrams (default: %(default)s)")
    dsir_group.add_argument("--dsir-min-tokens", type=int, default=100, help="documents with fewer tokens are dropped too_short (default: %(default)s)")
    dsir_group.add_argument("--dsir-raw-token-budget", type=options.positive_int, metavar="TOKENS", help="fit the raw distribution on a seeded subset of about this many tokens (default: all)")
    dsir_group.add_argument("--dsir-hash", choices=dsir.HASHES, default="fast", help="fast: vectorised hashing; sha256: the reference's buckets exactly (default: %(default)s)")
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
    cluster_group.add_argument("--kmeans-strategy", choices=kmeans.STRATEGIES, default="balanced", help="per-cluster quotas (default: %(default)s)")
    cluster_group.add_argument("--kmeans-sample", type=options.positive_int, default=50_000, metavar="N", help="records k-means is fitted on, a seeded sample (default: %(default)s)")
    cluster_group.add_argument("--kmeans-refine-passes", type=int, default=0, metavar="P", help="Lloyd updates over all records after the sample fit (default: %(default)s)")
    cluster_group.add_argument("--semdedup-eps", type=float, metavar="EPS", help="drop records with cosine > 1 - EPS to a kept record of their cluster as semantic_duplicate (default: off)")
    cluster_group.add_argument("--embedding-field", metavar="FIELD", help="use precomputed embeddings from this input field instead of hashed tf-idf")
    cluster_group.add_argument("--embed-dim", type=options.positive_int, metavar="D", help="embedding width (default: 256 for hashed tf-idf)")
    cluster_group.add_argument("--combined-dsir-weight", type=float, default=1.0, help="weight of the standardized DSIR log weight in combined (default: %(default)s)")
    cluster_group.add_argument("--combined-zipfit-weight", type=float, default=1.0, help="weight of the standardized ZIP-FIT alignment in combined (default: %(default)s)")
    cluster_group.add_argument("--combined-diversity", type=float, default=0.6, metavar="D",
                               help="combined: share of each cluster's quota set by --kmeans-strategy; the rest follows the cluster's quality mass (default: %(default)s)")
    cluster_group.add_argument("--combined-temperature", type=float, default=3.0, help="T of the Gumbel noise in combined; smaller is greedier (default: %(default)s)")
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML file of options (keys are the flag names); flags win")
    return parser


def _dedup_steps(text: str) -> str:
    """argparse type: 'none' or a comma list of 'exact' and 'minhash', normalized to that order."""
    steps = {step.strip() for step in text.split(",") if step.strip()}
    if steps == {"none"}:
        return "none"
    if not steps or not steps <= {"exact", "minhash"}:
        raise argparse.ArgumentTypeError(f"{text!r}; expected one of {', '.join(DEDUP_CHOICES)}")
    return ",".join(step for step in ("exact", "minhash") if step in steps)


@dataclasses.dataclass(frozen=True)
class SelectJob:
    """A validated ``winnow select`` run."""

    inputs: tuple[str, ...]
    targets: tuple[str, ...]
    output: str
    read: io.ReadConfig
    quota: select.TotalQuota
    method: str
    dedup: str
    minhash: minhash.MinHashConfig
    seed: int
    write_scores: bool
    overwrite: bool
    dsir: dsir.DsirConfig
    dsir_top_k: bool
    zipfit: zipfit.ZipfitConfig
    embed: embed.EmbedConfig
    kmeans: kmeans.KMeansConfig
    combined_weights: tuple[float, float]
    combined_temperature: float
    combined_diversity: float

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "SelectJob":
        """Raises UsageError for missing or contradictory options."""
        read = options.read_config(args, "input", "output")
        if args.num_select is not None and args.fraction is not None:
            raise options.UsageError(f"give --num-select ({args.num_select}) or --fraction ({args.fraction}), not both")
        if args.method in TARGET_METHODS and not args.target:
            raise options.UsageError(f"--method {args.method} needs --target (a sample of the data you want more of)")
        if args.dsir_target_proportions is not None and not args.dsir_separate_targets:
            raise options.UsageError("--dsir-target-proportions needs --dsir-separate-targets (each --target its own target dataset)")
        if args.dsir_separate_targets and args.method != "dsir":
            raise options.UsageError(f"--dsir-separate-targets selects per target with --method dsir, not --method {args.method}")
        if args.dsir_target_proportions is not None and len(args.dsir_target_proportions) != len(args.target or ()):
            raise options.UsageError(
                f"--dsir-target-proportions has {len(args.dsir_target_proportions)} shares for {len(args.target or ())} --target; give one per --target"
            )
        quota = select.TotalQuota(n=args.num_select) if args.num_select is not None else select.TotalQuota(fraction=args.fraction or DEFAULT_FRACTION)
        try:
            return cls(
                inputs=tuple(args.input), targets=tuple(args.target or ()), output=args.output.rstrip("/"),
                read=read,
                quota=quota, method=args.method, dedup=args.dedup, minhash=options.minhash_config(args, "dedup-", args.seed + 1),
                seed=args.seed, write_scores=args.write_scores, overwrite=args.overwrite,
                dsir=dsir.DsirConfig(
                    buckets=args.dsir_buckets, ngrams=args.dsir_ngrams, min_tokens=args.dsir_min_tokens,
                    raw_token_budget=args.dsir_raw_token_budget, hash=args.dsir_hash,
                    separate_targets=args.dsir_separate_targets, target_proportions=args.dsir_target_proportions,
                ),
                dsir_top_k=args.dsir_top_k,
                zipfit=zipfit.ZipfitConfig(mode=args.zipfit_mode, level=args.zipfit_level, target_sample=args.zipfit_target_sample, seed=args.seed),
                embed=embed.EmbedConfig(dim=args.embed_dim, seed=args.seed, embedding_field=args.embedding_field),
                kmeans=kmeans.KMeansConfig(
                    k=args.kmeans_k, sample_size=args.kmeans_sample, seed=args.seed, refine_passes=args.kmeans_refine_passes,
                    strategy=args.kmeans_strategy, semdedup_eps=args.semdedup_eps,
                ),
                combined_weights=(args.combined_dsir_weight, args.combined_zipfit_weight),
                combined_temperature=_positive(args.combined_temperature, "--combined-temperature"),
                combined_diversity=_unit(args.combined_diversity, "--combined-diversity"),
            )
        except (TypeError, ValueError) as err:
            raise options.UsageError(str(err)) from None

    @property
    def uses_target(self) -> bool:
        return self.method in TARGET_METHODS or (self.method == "combined" and bool(self.targets))

    @property
    def runs_dsir(self) -> bool:
        return self.method == "dsir" or (self.method == "combined" and self.uses_target)

    @property
    def runs_zipfit(self) -> bool:
        return self.method == "zipfit" or (self.method == "combined" and self.uses_target)

    @property
    def selects_per_target(self) -> bool:
        return self.dsir.separate_targets

    @property
    def target_sets(self) -> list[list[str]]:
        """The target datasets' globs: one per ``--target`` with ``--dsir-separate-targets``, else all of them as one."""
        return [[glob] for glob in self.targets] if self.selects_per_target else [list(self.targets)]


def _unit(value: float, flag: str) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{flag} {value}; expected 0 <= value <= 1")
    return value


def _positive(value: float, flag: str) -> float:
    if not value > 0:
        raise ValueError(f"{flag} {value}; expected > 0")
    return value


@dataclasses.dataclass(frozen=True)
class ClusterQuota:
    """Quotas per k-means cluster: ``total`` records overall.

    ``kmeans``: split by ``kmeans.cluster_quotas`` (the ``--kmeans-strategy``). ``combined``
    mixes that split with the clusters' quality mass, QuaDMix-style: target
    ``t_c = d * q_c + (1 - d) * N * M_c / sum(M)``, ``q_c`` the strategy's quota, ``M_c`` the sum of
    ``exp(s(x) / T)`` over the cluster (the share of N that importance resampling over the whole
    pool would draw from it), ``d`` = ``diversity``; then the nearest integers summing to N within
    the cluster sizes (``kmeans.water_fill``).
    """

    total: select.TotalQuota
    config: kmeans.KMeansConfig
    diversity: float = 1.0

    def __call__(self, counts: dict[int, int], cluster_inputs: dict) -> dict[int, int]:
        stats, quality = cluster_inputs["stats"], cluster_inputs["quality"]
        complexity = stats.get("complexity") if self.config.strategy == "complexity" else None
        n = self.total.total(sum(counts.values()))
        quotas = kmeans.cluster_quotas(self.config.strategy, counts, n, complexity, self.config.complexity_temperature)
        if not quality or self.diversity >= 1.0:
            return quotas
        clusters = sorted(counts)
        mass = np.array([quality.get(c, 0.0) for c in clusters])
        share = mass / mass.sum() if mass.sum() > 0 else np.zeros(len(clusters))
        targets = self.diversity * np.array([quotas[c] for c in clusters], dtype=np.float64) + (1 - self.diversity) * n * share
        mixed = kmeans.water_fill(targets, np.array([counts[c] for c in clusters]), n)
        return {c: int(q) for c, q in zip(clusters, mixed)}


def _quality_mass(record: dict, moments: dict, job: "SelectJob") -> list[tuple[int, float]]:
    """``[(cluster, exp(s(x) / T))]`` for an eligible clustered record (exponent capped at 700)."""
    if not schema.is_eligible(record):
        return []
    score = combined_score(record, moments, job.combined_weights) / job.combined_temperature
    return [(record[schema.CLUSTER], math.exp(min(score, 700.0)))]


def _cluster_inputs(stats: dict, quality: dict | None = None) -> dict:
    return {"stats": stats, "quality": quality}


class MomentsCombineFn(beam.CombineFn):
    """Records -> ``{column: (mean, std)}`` of the eligible records' ``COMBINED_SCORES`` (std 1 when 0)."""

    def create_accumulator(self):
        return {column: (0, 0.0, 0.0) for column in COMBINED_SCORES}

    def add_input(self, moments, record):
        if not schema.is_eligible(record):
            return moments
        for column in COMBINED_SCORES:
            value = record.get(column)
            if value is not None:
                n, total, squares = moments[column]
                moments[column] = (n + 1, total + value, squares + value * value)
        return moments

    def merge_accumulators(self, accumulators):
        merged = self.create_accumulator()
        for moments in accumulators:
            for column, (n, total, squares) in moments.items():
                m_n, m_total, m_squares = merged[column]
                merged[column] = (m_n + n, m_total + total, m_squares + squares)
        return merged

    def extract_output(self, moments):
        out = {}
        for column, (n, total, squares) in moments.items():
            mean = total / n if n else 0.0
            variance = max(squares / n - mean * mean, 0.0) if n else 0.0
            out[column] = (mean, math.sqrt(variance) or 1.0)
        return out


def combined_score(record: dict, moments: dict, weights: tuple[float, float]) -> float:
    """``sum_m w_m * (score_m - mean_m) / std_m`` over the scores the record has."""
    total = 0.0
    for column, weight in zip(COMBINED_SCORES, weights):
        value = record.get(column)
        if value is not None:
            mean, std = moments[column]
            total += weight * (value - mean) / std
    return total


def selection_key(record: dict, job: SelectJob, moments: dict | None = None) -> float:
    """The key SelectTop ranks an eligible record by (highest first), per the module docstring."""
    if job.method == "combined":
        noise = job.combined_temperature * select.gumbel_from_id(record[schema.ID], job.seed)
        score = combined_score(record, moments, job.combined_weights) + noise
        return kmeans.within_cluster_key(job.kmeans.strategy, record[schema.CLUSTER_DISTANCE], score)
    if job.method == "kmeans":
        score = select.uniform_from_id(record[schema.ID], job.seed)
        return kmeans.within_cluster_key(job.kmeans.strategy, record[schema.CLUSTER_DISTANCE], score)
    if job.method == "dsir":
        return dsir_key(record[schema.DSIR_LOG_WEIGHT], record[schema.ID], job)
    if job.method == "zipfit":
        return record[schema.ZIPFIT_ALIGNMENT]
    return select.uniform_from_id(record[schema.ID], job.seed)


def dsir_key(log_weight: float, doc_id: str, job: SelectJob, round_index: int = 0) -> float:
    """``log w + Gumbel`` (noise from ``select.round_seed(seed, round)`` and the id), or ``log w`` with ``--dsir-top-k``."""
    if job.dsir_top_k:
        return log_weight
    return log_weight + select.gumbel_from_id(doc_id, select.round_seed(job.seed, round_index))


def _attach_key(record: dict, job: SelectJob, moments: dict | None = None) -> dict:
    if not schema.is_eligible(record):
        return record
    if job.selects_per_target:
        weights = record[schema.DSIR_TARGET_LOG_WEIGHTS]
        return {**record, select.ROUND_KEYS: [dsir_key(w, record[schema.ID], job, t) for t, w in enumerate(weights)]}
    group = record[schema.CLUSTER] if job.method in CLUSTER_METHODS else 0
    return {**record, select.KEY: selection_key(record, job, moments), select.GROUP: group}


def _was_eligible(record: dict) -> bool:
    """In the selection pool: selected, or eligible but not selected."""
    return record[schema.SELECTED] or record.get(schema.DROP_REASON) == schema.NOT_SELECTED


def _in_random_baseline(record: dict, selection_stats: dict, seed: int) -> bool:
    """A seeded random subset of the selection pool, of the selection's size in expectation."""
    pool, chosen = sum(selection_stats["pool"].values()), sum(selection_stats["quota"].values())
    return _was_eligible(record) and select.uniform_from_id(record[schema.ID], seed + BASELINE_SEED_OFFSET) * pool < chosen


class _Stages:
    """Collects each stage's stats and errors while the pipeline is built."""

    def __init__(self):
        self.stats: dict[str, beam.PCollection] = {}
        self.errors: list[beam.PCollection] = []

    def apply(self, records: beam.PCollection, name: str, label: str, transform: beam.PTransform) -> beam.PCollection:
        """``records | label >> transform``; keep its ``stats`` under ``name`` and its ``errors``."""
        out = records | label >> transform
        if "stats" in out:
            self.stats[name] = out["stats"]
        if "errors" in out:
            self.errors.append(out["errors"])
        return out


def _dsir_metrics(selected_counts, target_counts, raw_counts, baseline_counts) -> dict:
    """The paper's KL reduction of the DSIR selection and of a random selection of the same size."""
    return {
        "kl_reduction_selected": dsir.kl_reduction(target_counts, raw_counts, selected_counts),
        "kl_reduction_random": dsir.kl_reduction(target_counts, raw_counts, baseline_counts),
    }


def _read_targets(pipeline: beam.Pipeline, job: SelectJob, stages: _Stages, target_files: list[list[tuple[str, int]]]) -> list[beam.PCollection]:
    """The target records, one PCollection per target dataset (``SelectJob.target_sets``)."""
    return [
        stages.apply(pipeline, "read_target", f"ReadTarget{t if job.selects_per_target else ''}",
                     io.ReadDocuments(globs, job.read, io.TARGET_ROLE, files=files))["records"]
        for t, (globs, files) in enumerate(zip(job.target_sets, target_files, strict=True))
    ]


def build(pipeline: beam.Pipeline, job: SelectJob, selected_schema, input_files: list[tuple[str, int]],
          target_files: list[list[tuple[str, int]]]) -> None:
    """Add the whole select job to ``pipeline``; ``*_files`` are the inputs and target sets, listed (``io.match_inputs``)."""
    stages = _Stages()
    read = stages.apply(pipeline, "read", "ReadInputs", io.ReadDocuments(job.inputs, job.read, unique_ids=True, files=input_files))
    records = read["records"]
    targets = _read_targets(pipeline, job, stages, target_files) if job.uses_target else []
    if "exact" in job.dedup:
        records = stages.apply(records, "dedup_exact", "DedupExact", dedup.DedupExact())["records"]
    if "minhash" in job.dedup:
        records = stages.apply(records, "dedup_minhash", "DedupNearMinHash", dedup.DedupNearMinHash(job.minhash))["records"]
    scored_dsir = None
    if job.runs_dsir:
        scored_dsir = stages.apply(records, "dsir", "ScoreDsir", dsir.ScoreDsir(targets, job.dsir))
        records = scored_dsir["records"]
    if job.runs_zipfit:  # one target set: separate targets are dsir-only
        records = stages.apply(records, "zipfit", "ScoreZipfit", zipfit.ScoreZipfit(targets[0], job.zipfit))["records"]
    if job.method in CLUSTER_METHODS:
        records = stages.apply(records, "embed", "Embed", embed.Embed(job.embed))["records"]
        clustered = stages.apply(records, "kmeans", "ClusterKMeans", kmeans.ClusterKMeans(job.kmeans))
        records = clustered["records"]
        if job.kmeans.semdedup_eps is not None:
            records = stages.apply(records, "semdedup", "SemanticDedup", kmeans.SemanticDedup(job.kmeans.semdedup_eps))["records"]
    quota_fn, quota_input, key_args = job.quota, None, []
    if job.method == "combined":
        moments = beam.pvalue.AsSingleton(records | "ScoreMoments" >> beam.CombineGlobally(MomentsCombineFn()))
        key_args = [moments]
        quality = records | "QualityMass" >> beam.FlatMap(_quality_mass, moments, job) | "QualityPerCluster" >> beam.CombinePerKey(sum)
        quota_fn = ClusterQuota(job.quota, job.kmeans, job.combined_diversity)
        quota_input = clustered["stats"] | "ClusterInputs" >> beam.Map(_cluster_inputs, beam.pvalue.AsDict(quality))
    elif job.method == "kmeans":
        quota_fn = ClusterQuota(job.quota, job.kmeans)
        quota_input = clustered["stats"] | "ClusterInputs" >> beam.Map(_cluster_inputs)
    keyed = records | "AttachKeys" >> beam.Map(_attach_key, job, *key_args)
    if job.selects_per_target:
        rounds = select.SelectInRounds(job.quota, len(job.targets), scored_dsir["target_shares"], schema.DSIR_TARGET)
        chosen = stages.apply(keyed, "selection", "SelectPerTarget", rounds)
    else:
        chosen = stages.apply(keyed, "selection", "SelectTop", select.SelectTop(quota_fn, quota_input))
    decided = chosen["records"]
    errors = stages.errors | "FlattenErrors" >> beam.Flatten()
    selected = runner.write_outputs(decided, errors, job.output, selected_schema, job.write_scores)
    if job.method != "random":
        stages.stats.update(_selection_metrics(job, decided, selected, chosen["stats"], scored_dsir))
    runner.collect_stats({**runner.outcome_stats(decided, errors), **stages.stats}, job.output)


def score_quantiles(pool: beam.PCollection, selected: beam.PCollection, columns: list[str]) -> beam.PCollection:
    """``{column: {"all": [q_0..q_1], "selected": [...]}}``: approximate quantiles (fixed-size sketches)."""
    parts = []
    for column in columns:
        for name, subset in (("all", pool), ("selected", selected)):
            label = f"{runner.camel(column)}{runner.camel(name)}"
            parts.append(
                subset
                | f"Values{label}" >> beam.FlatMap(lambda r, c=column: [r[c]] if r.get(c) is not None else [])
                | f"Quantiles{label}" >> beam.ApproximateQuantiles.Globally(N_QUANTILES)
                | f"Tag{label}" >> beam.Map(lambda q, c=column, n=name: (c, n, q))
            )
    return (
        parts
        | "FlattenQuantiles" >> beam.Flatten()
        | "QuantilesToList" >> beam.combiners.ToList()
        | "QuantilesToDict" >> beam.Map(lambda items: {c: {n: q for c2, n, q in items if c2 == c} for c, _, _ in items})
    )


def histogram_bin(value: float, low: float, high: float, bins: int) -> int:
    """The bin of ``value`` among ``bins`` equal-width bins over [low, high]; values outside go to the end bins."""
    if high <= low:
        return 0
    return min(max(int((value - low) / (high - low) * bins), 0), bins - 1)


def _pool_range(quantiles: dict, column: str) -> tuple[float, float] | None:
    """The pool's (min, max) of ``column``: its quantiles 0 and 1; None when no pool record has the score."""
    pool = quantiles.get(column, {}).get("all")
    return (pool[0], pool[-1]) if pool else None


def _score_bins(record: dict, columns: list[str], quantiles: dict, name: str) -> list[tuple[str, str, int]]:
    """``(column, name, bin)`` of each score the record has; bins span the pool's range (``_pool_range``)."""
    out = []
    for column in columns:
        value, bounds = record.get(column), _pool_range(quantiles, column)
        if value is not None and bounds:
            out.append((column, name, histogram_bin(value, *bounds, N_HISTOGRAM_BINS)))
    return out


def _histograms(bin_counts: list[tuple[tuple[str, str, int], int]], quantiles: dict) -> dict:
    """``{column: {"edges": [b_0..b_K], "all": [n_0..n_K-1], "selected": [...]}}`` from per-bin counts."""
    out = {}
    for column in quantiles:
        bounds = _pool_range(quantiles, column)
        if bounds:
            out[column] = {"edges": np.linspace(*bounds, N_HISTOGRAM_BINS + 1).tolist(),
                           **{name: [0] * N_HISTOGRAM_BINS for name in ("all", "selected")}}
    for (column, name, index), count in bin_counts:
        out[column][name][index] = count
    return out


def score_histograms(pool: beam.PCollection, selected: beam.PCollection, columns: list[str], quantiles: beam.PCollection) -> beam.PCollection:
    """``{column: {"edges", "all", "selected"}}``: counts in ``N_HISTOGRAM_BINS`` equal-width bins over the pool's range.

    The range is the pool's minimum and maximum from ``score_quantiles`` (a side input), so the
    counts take one pass and fixed-size state (one count per bin).
    """
    in_range = beam.pvalue.AsSingleton(quantiles)
    parts = [
        subset | f"ScoreBins{runner.camel(name)}" >> beam.FlatMap(_score_bins, columns, in_range, name)
        for name, subset in (("all", pool), ("selected", selected))
    ]
    return (
        parts
        | "FlattenScoreBins" >> beam.Flatten()
        | "CountScoreBins" >> beam.combiners.Count.PerElement()
        | "ScoreBinsToList" >> beam.combiners.ToList()
        | "ScoreBinsToHistograms" >> beam.Map(_histograms, in_range)
    )


def _selection_metrics(job: SelectJob, decided, selected, selection_stats, scored_dsir) -> dict[str, beam.PCollection]:
    """Score distributions, Vendi (all / selected / random) and DSIR KL reduction (selected / random)."""
    metrics = {}
    # A seeded random subset of the pool, of the selection's size: the baseline of every comparison.
    baseline = decided | "RandomBaseline" >> beam.Filter(_in_random_baseline, beam.pvalue.AsSingleton(selection_stats), job.seed)
    pool = decided | "Pool" >> beam.Filter(_was_eligible)
    plotted = [column for column, ran in zip(PLOTTED_SCORES, (job.runs_dsir, job.runs_zipfit, job.method in CLUSTER_METHODS)) if ran]
    metrics["score_quantiles"] = score_quantiles(pool, selected, plotted)
    metrics["score_histograms"] = score_histograms(pool, selected, plotted, metrics["score_quantiles"])
    if job.method in CLUSTER_METHODS:
        # Diversity of the pool, the selection and the baseline, on the same embeddings.
        for name, subset in (("all", pool), ("selected", selected), ("random", baseline)):
            metrics[f"vendi_{name}"] = (subset | f"Vendi{runner.camel(name)}" >> vendi.VendiOfRecords(embed.EMBEDDING))["stats"]
    if scored_dsir is not None:
        metrics["dsir_kl"] = (
            selected
            | "CountSelectedNgrams" >> dsir.CountNgrams(job.dsir)
            | "KlReduction" >> beam.Map(
                _dsir_metrics,
                beam.pvalue.AsSingleton(scored_dsir["target_counts"]),
                beam.pvalue.AsSingleton(scored_dsir["raw_counts"]),
                beam.pvalue.AsSingleton(baseline | "CountBaselineNgrams" >> dsir.CountNgrams(job.dsir)),
            )
        )
    return metrics


def check_target(job: SelectJob, target_files: list[list[tuple[str, int]]]) -> None:
    """Raises UsageError when a target method's target (each one, with separate targets) holds no valid record.

    ``target_files``: the files of each target set (``io.match_inputs``).
    """
    if not job.uses_target:
        return
    for globs, files in zip(job.target_sets, target_files, strict=True):
        if not io.has_valid_record(files, job.read):
            raise options.UsageError(f"--target {' '.join(globs)}: no valid record (--method {job.method} needs a non-empty target)")


def main(argv: list[str]) -> int:
    """Run ``winnow select``; returns the exit code. Raises UsageError, InputError, JobFailed."""
    args, beam_flags = options.parse(select_parser(), argv)
    job = SelectJob.from_args(args)
    # Each glob set is listed once, for the checks here and for the read.
    input_files = io.match_inputs(job.inputs)
    selected_schema = io.selected_schema(io.probe_extra_fields(input_files, job.read))
    target_files = [io.match_inputs(globs) for globs in job.target_sets] if job.uses_target else []
    check_target(job, target_files)
    runner.execute(
        "select", argv, job.output, job.overwrite, beam_flags, lambda pipeline: build(pipeline, job, selected_schema, input_files, target_files),
        dataclasses.asdict(job), lambda stats: _warnings(job, stats),
    )
    return 0


def _warnings(job: SelectJob, stats: dict) -> list[str]:
    """Warn when fewer records were eligible than asked for (all of them are then selected)."""
    pool = sum(stats["selection"]["pool"].values()) if stats.get("selection") else 0
    if job.quota.n is not None and job.quota.n > pool:
        return [f"--num-select {job.quota.n} is more than the {pool} eligible records; all {pool} were selected"]
    return []


