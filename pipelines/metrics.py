"""The report's metrics as one composite: score distributions, Vendi, KL reduction, outcome counts.

Every metric is a fixed-size combine over per-unit partials (arrays, Gram matrices, n-gram
counts), never a collect of documents:

- score distributions: 21 quantiles (0 to 1 in steps of 0.05) of each score over the eligible
  pool ("all") and the selection, read from a seeded sample of ``QUANTILE_SAMPLE`` values
  (``SampleQuantilesCombineFn``: exact below that size, and the minimum and maximum always exact),
  so they are the same on every runner and worker count; and a histogram of ``HISTOGRAM_BINS``
  equal-width bins between the pool's 1% and 99% quantiles plus an underflow and an overflow bin,
  so one outlier does not squeeze the distribution into one bar;
- Vendi score (q = 1 and its profile) of the pool, the selection and a random baseline of exactly
  the selection's size, on the run's embeddings (``vendi.GramCombineFn``, dual form);
- DSIR's KL reduction of the selection and of the baseline (``dsir.kl_reduction``).
"""

import apache_beam as beam
import numpy as np

from winnow.transforms import dsir, tally, vendi

ALL = "all"  # the subset of every eligible record (the pool)
N_QUANTILES = 21
QUANTILE_SAMPLE = 1 << 16  # values per score and subset the quantiles are read from (rank error: sd at most 1/512)
HISTOGRAM_BINS = 30
ROBUST_RANGE = (0.01, 0.99)


def histogram_edges(quantiles: list[float]) -> list[float]:
    """``HISTOGRAM_BINS + 1`` edges between the 1% and 99% quantiles (the whole range when they meet)."""
    qs = np.linspace(0.0, 1.0, len(quantiles))
    low, high = (float(np.interp(q, qs, quantiles)) for q in ROBUST_RANGE)
    if not high > low:
        low, high = quantiles[0], quantiles[-1]
    if not high > low:
        high = low + 1.0
    return np.linspace(low, high, HISTOGRAM_BINS + 1).tolist()


def bin_counts(values: np.ndarray, edges: list[float]) -> np.ndarray:
    """(HISTOGRAM_BINS + 2,) int64 counts: underflow, the bins, overflow (a value on the top edge is in the last bin)."""
    edges = np.asarray(edges)
    index = np.searchsorted(edges, values, side="right")  # 0: below, len(edges): above
    index[values == edges[-1]] = len(edges) - 1
    return np.bincount(index, minlength=len(edges) + 1).astype(np.int64)


def sample_quantiles(values: np.ndarray, low: float, high: float) -> list[float]:
    """``N_QUANTILES`` quantiles at 0, 0.05, ..., 1 of a sample's values (its order statistics, numpy's
    ``inverted_cdf``), the set's exact ``low`` and ``high`` at 0 and 1; [] for no values."""
    if not len(values):
        return []
    found = np.quantile(values, np.linspace(0.0, 1.0, N_QUANTILES), method="inverted_cdf")
    found[0], found[-1] = low, high
    return found.tolist()


def smallest_keys(keys: np.ndarray, values: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``size`` (key, value) pairs of smallest key (equal keys: smallest value), as a set: the same for any order of the pairs."""
    if len(keys) <= size:
        return keys, values
    cutoff = np.partition(keys, size - 1)[size - 1]
    below, at = np.flatnonzero(keys < cutoff), np.flatnonzero(keys == cutoff)
    at = at[np.argsort(values[at], kind="stable")[: size - len(below)]]
    keep = np.concatenate([below, at])
    return keys[keep], values[keep]


class SampleQuantilesCombineFn(beam.CombineFn):
    """``(keys (n,) uint64, values (n,) float64)`` batches -> ``sample_quantiles`` of the values of the
    ``size`` smallest keys, with the exact minimum and maximum of all.

    Keys are seeded per row (``seeded.row_keys``): the sample is uniform, and the same set whatever
    the order and split of the batches, so the quantiles are too. Accumulator: (keys, values, low, high).
    """

    def __init__(self, size: int = QUANTILE_SAMPLE):
        self._size = size

    def create_accumulator(self):
        return np.zeros(0, np.uint64), np.zeros(0), np.inf, -np.inf

    def add_input(self, accumulator, batch):
        keys, values = np.asarray(batch[0], np.uint64), np.asarray(batch[1], np.float64)
        if not len(values):
            return accumulator
        return self.merge_accumulators([accumulator, (keys, values, values.min(), values.max())])

    def merge_accumulators(self, accumulators):
        accumulators = [self.create_accumulator(), *accumulators]
        keys, values = smallest_keys(np.concatenate([a[0] for a in accumulators]), np.concatenate([a[1] for a in accumulators]), self._size)
        return keys, values, min(a[2] for a in accumulators), max(a[3] for a in accumulators)

    def extract_output(self, accumulator):
        _, values, low, high = accumulator
        return sample_quantiles(values, low, high)


def _edges_of(quantiles: dict) -> dict:
    return {name: histogram_edges(by_subset[ALL]) for name, by_subset in quantiles.items() if by_subset.get(ALL)}


def _binned(element, edges: dict):
    (name, subset), (_, values) = element
    if name in edges and len(values):
        yield (name, subset), bin_counts(values, edges[name])


def _distributions(quantiles: dict, counts: dict, edges: dict) -> dict:
    out = {}
    for (name, subset), value in quantiles.items():
        out.setdefault(name, {"quantiles": {}, "histogram": {"edges": edges.get(name), "underflow": {}, "overflow": {}, "counts": {}}})
        out[name]["quantiles"][subset] = value
    for (name, subset), binned in counts.items():
        histogram = out[name]["histogram"]
        histogram["underflow"][subset], histogram["overflow"][subset] = int(binned[0]), int(binned[-1])
        histogram["counts"][subset] = binned[1:-1].tolist()
    return out


def score_distributions(values: beam.PCollection, saved_pool: dict | None = None) -> beam.PCollection:
    """``(score, subset, (n,) uint64 row keys, (n,) values)`` partials -> ``{score: {"quantiles": {subset: [21]}, "histogram": {...}}}``.

    ``saved_pool``: ``{score: pool_part's entry}``, the "all" subset of an earlier run over the same
    pool; its quantiles and bins stand in for that subset, which ``values`` then does not carry.
    """
    keyed = values | "KeyValues" >> beam.Map(lambda element: ((element[0], element[1]), (element[2], np.asarray(element[3], np.float64))))
    quantiles = keyed | "Quantiles" >> beam.CombinePerKey(SampleQuantilesCombineFn()) | "QuantilesDict" >> beam.combiners.ToDict()
    if saved_pool:
        quantiles = quantiles | "SavedQuantiles" >> beam.Map(
            lambda q: {**q, **{(name, ALL): saved["quantiles"] for name, saved in saved_pool.items()}})
    by_score = quantiles | "QuantilesByScore" >> beam.Map(lambda q: _by_score(q))
    edges = by_score | "HistogramEdges" >> beam.Map(_edges_of)
    counts = (
        keyed
        | "BinValues" >> beam.FlatMap(_binned, beam.pvalue.AsSingleton(edges))
        | "SumBins" >> beam.CombinePerKey(lambda parts: np.sum(list(parts), axis=0))
        | "BinsDict" >> beam.combiners.ToDict()
    )
    if saved_pool:
        counts = counts | "SavedBins" >> beam.Map(
            lambda c: {**c, **{(name, ALL): np.array([saved["underflow"], *saved["counts"], saved["overflow"]]) for name, saved in saved_pool.items()}})
    return quantiles | "Distributions" >> beam.Map(_distributions, beam.pvalue.AsSingleton(counts), beam.pvalue.AsSingleton(edges))


def pool_part(stats: dict) -> dict:
    """The statistics of a run's "all" subset (its eligible pool), as ``score_distributions`` and
    ``vendi_scores`` take them back: ``{"scores": {score: {"quantiles", "underflow", "overflow", "counts"}},
    "vendi": the pool's Vendi stats (when computed)}``."""
    scores = {}
    for name, distribution in stats.get("score_distributions", {}).items():
        histogram = distribution["histogram"]
        if ALL in distribution["quantiles"] and ALL in histogram["counts"]:
            scores[name] = {"quantiles": distribution["quantiles"][ALL], "underflow": histogram["underflow"][ALL],
                            "overflow": histogram["overflow"][ALL], "counts": histogram["counts"][ALL]}
    vendi_all = stats.get("vendi", {}).get(ALL)
    return {"scores": scores, **({"vendi": vendi_all} if vendi_all is not None else {})}


def _by_score(quantiles: dict) -> dict:
    out = {}
    for (name, subset), value in quantiles.items():
        out.setdefault(name, {})[subset] = value
    return out


def vendi_scores(vectors: beam.PCollection, saved_pool: dict | None = None) -> beam.PCollection:
    """``(subset, (n, d) vectors)`` partials -> ``{subset: vendi.vendi_stats}`` (q = 1, cosine kernel).

    ``saved_pool``: the "all" subset's stats from an earlier run over the same pool (``pool_part``),
    used instead of its vectors, which ``vectors`` then does not carry.
    """
    scores = (
        vectors
        | "GramPerSubset" >> beam.CombinePerKey(vendi.GramCombineFn())
        | "VendiStats" >> beam.MapTuple(lambda subset, gram_n: (subset, vendi.vendi_stats(*gram_n)))
        | "VendiDict" >> beam.combiners.ToDict()
    )
    if saved_pool is None:
        return scores
    return scores | "SavedVendi" >> beam.Map(lambda computed: {**computed, ALL: saved_pool})


def kl_reduction(write_stats: beam.PCollection, target_counts: np.ndarray, raw_counts: np.ndarray) -> beam.PCollection:
    """Per-unit write stats (their n-gram counts) -> ``{"kl_reduction_selected", "kl_reduction_random"}``.

    Both against the raw distribution the weights were fitted on: the selection's reduction, and
    that of a random subset of the selection's size (the paper's baseline: about 0 for a large
    subset, below 0 for a small one, whose sparse n-gram histogram is far from every distribution).
    """

    def reductions(counts: dict) -> dict:
        return {f"kl_reduction_{name}": dsir.kl_reduction(target_counts, raw_counts, counts[name]) for name in ("selected", "random")}

    return (
        write_stats
        | "NgramCounts" >> beam.Map(lambda stats: stats["kl_counts"])
        | "SumNgramCounts" >> beam.CombineGlobally(_SumArraysCombineFn())
        | "KlReduction" >> beam.Map(reductions)
    )


class _SumArraysCombineFn(beam.CombineFn):
    """``{name: array}`` dicts -> their elementwise sums per name."""

    def create_accumulator(self):
        return {}

    def add_input(self, accumulator, arrays):
        for name, value in arrays.items():
            accumulator[name] = accumulator[name] + value if name in accumulator else np.array(value)
        return accumulator

    def merge_accumulators(self, accumulators):
        merged = {}
        for accumulator in accumulators:
            self.add_input(merged, accumulator)
        return merged

    def extract_output(self, accumulator):
        return accumulator


def outcome_counts(counts: beam.PCollection) -> beam.PCollection:
    """Per-unit ``{outcome or invalid_<reason>: records}`` -> ``{"outcomes": {...}, "invalid": {reason: records}}``."""

    def split(total: dict) -> dict:
        invalid = {name[len("invalid_"):]: n for name, n in total.items() if name.startswith("invalid_")}
        return {"outcomes": {name: n for name, n in total.items() if not name.startswith("invalid_")}, "invalid": invalid}

    return counts | "SumCounts" >> beam.CombineGlobally(tally.CountsCombineFn()) | "SplitCounts" >> beam.Map(split)
