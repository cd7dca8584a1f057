"""The default ``combined`` method: quality scores against a target, balanced by cluster diversity.

Quality (with a target; QuaDMix-style, "Quality-Diversity Balanced Data Selection"): each score
is standardized over the eligible pool and summed with weights,

    s(x) = w_dsir · z(dsir_log_weight) + w_zipfit · z(zipfit_alignment),   z(v) = (v - mean) / std,

the mean and std (population) of each score over the pool coming from mergeable moments
``(n, mean, M2)`` (Chan, Golub & LeVeque's pairwise update, no cancelling ``Σv² - n·mean²``).

Quotas per k-means cluster c mix the clustering strategy's quota ``q_c`` (``quotas.py``) with the
cluster's quality mass ``M_c = Σ_{x in c} exp(s(x) / T)``, the share of N that importance
resampling over the whole pool would draw from c:

    t_c = D · q_c + (1 - D) · N · M_c / Σ_c' M_c',

D = ``diversity``, then the nearest integers summing to N within the cluster sizes
(``quotas.water_fill``). ``log M_c`` is accumulated in log space (``np.logaddexp``), so no
exponent overflows whatever s / T is. Within a cluster the key is ``s(x) + T · Gumbel(seed, id)``:
sampling without replacement with probability proportional to ``exp(s(x) / T)``. Without a target
the quality terms are absent and the selection is the strategy's alone.
"""

import dataclasses
from typing import NamedTuple

import apache_beam as beam
import numpy as np

from winnow.transforms import quotas
from winnow.transforms.validation import check_number

NAMESPACE = "winnow.combined"


@dataclasses.dataclass(frozen=True)
class CombinedConfig:
    """Settings of ``combined`` (CLI: ``--combined-dsir-weight --combined-zipfit-weight
    --combined-diversity --combined-temperature``).

    Attributes:
        dsir_weight, zipfit_weight: weights of the standardized scores in s(x).
        diversity: D in [0, 1], the share of each cluster's quota set by the clustering strategy.
        temperature: T > 0 of the Gumbel noise; smaller is greedier.
    """

    dsir_weight: float = 1.0
    zipfit_weight: float = 1.0
    diversity: float = 0.6
    temperature: float = 3.0

    def __post_init__(self):
        check_number("dsir_weight", self.dsir_weight)
        check_number("zipfit_weight", self.zipfit_weight)
        check_number("diversity", self.diversity, 0.0, 1.0)
        check_number("temperature", self.temperature, 0.0, open_low=True)


class Moments(NamedTuple):
    """Count, mean and sum of squared deviations (M2) of some values; ``Moments(0, 0.0, 0.0)`` for none."""

    n: int
    mean: float
    m2: float

    @property
    def std(self) -> float:
        """Population standard deviation, 1.0 when it is 0 (a constant score standardizes to 0)."""
        return float(np.sqrt(self.m2 / self.n)) if self.n and self.m2 > 0 else 1.0


EMPTY_MOMENTS = Moments(0, 0.0, 0.0)


def moments_of(values: np.ndarray) -> Moments:
    """The moments of a (n,) float array."""
    values = np.asarray(values, dtype=np.float64)
    if not len(values):
        return EMPTY_MOMENTS
    mean = float(values.mean())
    return Moments(len(values), mean, float(((values - mean) ** 2).sum()))


def merge_moments(a: Moments, b: Moments) -> Moments:
    """The moments of the union: ``n = n_a + n_b``, ``M2 = M2_a + M2_b + δ² n_a n_b / n``, δ = mean_b - mean_a."""
    if not a.n:
        return b
    if not b.n:
        return a
    n = a.n + b.n
    delta = b.mean - a.mean
    return Moments(n, a.mean + delta * b.n / n, a.m2 + b.m2 + delta * delta * a.n * b.n / n)


def quality_score(columns: dict[str, np.ndarray], moments: dict[str, Moments], weights: dict[str, float]) -> np.ndarray:
    """(n,) float64 ``s(x) = Σ_m w_m (v_m - mean_m) / std_m`` over the score columns present."""
    total = None
    for name, values in columns.items():
        term = weights[name] * (np.asarray(values, dtype=np.float64) - moments[name].mean) / moments[name].std
        total = term if total is None else total + term
    return total


def cluster_log_mass(clusters: np.ndarray, scores: np.ndarray, temperature: float) -> dict[int, float]:
    """``{c: log Σ_{x in c} exp(s(x) / T)}`` of one batch (clusters (n,) int, scores (n,) float)."""
    out = {}
    for cluster in np.unique(clusters).tolist():
        scaled = scores[clusters == cluster] / temperature
        top = scaled.max()
        out[cluster] = float(top + np.log(np.exp(scaled - top).sum()))
    return out


def mixed_quotas(strategy_quotas: dict[int, int], sizes: dict[int, int], log_mass: dict[int, float], n: int,
                 diversity: float) -> dict[int, int]:
    """Quotas ``t_c = D q_c + (1 - D) N M_c / Σ M`` rounded by ``water_fill`` (module docstring)."""
    if not log_mass or diversity >= 1.0:
        return strategy_quotas
    clusters = sorted(sizes)
    logs = np.array([log_mass.get(c, -np.inf) for c in clusters])
    share = np.exp(logs - np.logaddexp.reduce(logs)) if np.isfinite(logs).any() else np.zeros(len(clusters))
    targets = diversity * np.array([strategy_quotas[c] for c in clusters], np.float64) + (1 - diversity) * n * share
    mixed = quotas.water_fill(targets, np.array([sizes[c] for c in clusters]), n)
    return {c: int(q) for c, q in zip(clusters, mixed)}


@dataclasses.dataclass(frozen=True)
class MixedQuota:
    """The selection's quota function of ``combined``: the strategy's quotas mixed with the clusters' quality mass.

    Called as ``quota(counts, inputs)``; ``inputs["log_mass"]`` holds ``{cluster: log M_c}`` (absent
    without a target: the strategy's quotas as they are).
    """

    strategy: quotas.StrategyQuota
    diversity: float

    def __call__(self, counts: dict[int, int], inputs: dict) -> dict[int, int]:
        strategy_quotas = self.strategy(counts, inputs)
        return mixed_quotas(strategy_quotas, counts, inputs.get("log_mass") or {}, sum(strategy_quotas.values()), self.diversity)


# --- Beam wrappers ---------------------------------------------------------------------------


class MomentsCombineFn(beam.CombineFn):
    """``{column: (n,) values}`` per batch -> ``{column: Moments}`` over all batches."""

    def create_accumulator(self):
        return {}

    def add_input(self, accumulator, columns):
        for name, values in columns.items():
            accumulator[name] = merge_moments(accumulator.get(name, EMPTY_MOMENTS), moments_of(values))
        return accumulator

    def merge_accumulators(self, accumulators):
        merged = {}
        for accumulator in accumulators:
            for name, moments in accumulator.items():
                merged[name] = merge_moments(merged.get(name, EMPTY_MOMENTS), moments)
        return merged

    def extract_output(self, accumulator):
        return accumulator


class LogMassCombineFn(beam.CombineFn):
    """``{cluster: log mass}`` per batch (``cluster_log_mass``) -> the same over all batches (log-space sums)."""

    def create_accumulator(self):
        return {}

    def add_input(self, accumulator, log_mass):
        for cluster, value in log_mass.items():
            accumulator[cluster] = float(np.logaddexp(accumulator.get(cluster, -np.inf), value))
        return accumulator

    def merge_accumulators(self, accumulators):
        merged = {}
        for accumulator in accumulators:
            self.add_input(merged, accumulator)
        return merged

    def extract_output(self, accumulator):
        return accumulator
