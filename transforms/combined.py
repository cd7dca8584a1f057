"""The default ``combined`` method: on target by importance resampling, diverse by the log-determinant greedy.

Quality (with a target). Each score is standardized over the eligible pool and summed with
weights, in the units of DSIR's log importance weight:

    key(x) = sigma_dsir · Σ_m w_m (v_m(x) - mean_m) / std_m + Gumbel(seed, id)

over m in {dsir_log_weight, zipfit_alignment}; mean and std (population) come from mergeable
moments ``(n, mean, M2)`` (Chan, Golub & LeVeque's pairwise update, no cancelling
``Σv² - n·mean²``). With the default weights (DSIR 1, ZIP-FIT 0) the key is DSIR's own,
``log w + Gumbel`` up to a constant, so its top N is DSIR's importance resample (Gumbel top-k,
Kool et al. 2019; Xie et al. 2023).

Diversity (``diversity.py``). The candidates are the top ``M(D)`` documents by the key,
``1/M = (1 - D)/N + D/n``; the log-determinant greedy, run per k-means cluster and conditioned on
the rest of the pool, then selects N of them. D = 0 is the quality-only selection (M = N), D = 1
ignores the scores (every document a candidate). Without a target there is no key and the
selection is the diversity step's alone. The default D is the largest at which every measured
pool keeps 0.9 of DSIR's target precision (``benchmarks/RESULTS.md``, "Diversity selection").
"""

import dataclasses
from typing import NamedTuple

import apache_beam as beam
import numpy as np

from winnow.transforms.validation import check_number

NAMESPACE = "winnow.combined"


@dataclasses.dataclass(frozen=True)
class CombinedConfig:
    """Quality weights of ``combined`` (CLI: ``--combined-dsir-weight --combined-zipfit-weight``); D is
    ``diversity.DiversityConfig.diversity`` (``--combined-diversity``).

    Attributes:
        dsir_weight, zipfit_weight: weights of the standardized scores in the key; ZIP-FIT is only
            scored when its weight is not 0.
    """

    dsir_weight: float = 1.0
    zipfit_weight: float = 0.0

    def __post_init__(self):
        check_number("dsir_weight", self.dsir_weight)
        check_number("zipfit_weight", self.zipfit_weight)


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
    """(n,) float64 ``Σ_m w_m (v_m - mean_m) / std_m`` over the score columns given."""
    total = None
    for name, values in columns.items():
        term = weights[name] * (np.asarray(values, dtype=np.float64) - moments[name].mean) / moments[name].std
        total = term if total is None else total + term
    return total


def quality_keys(columns: dict[str, np.ndarray], moments: dict[str, Moments], weights: dict[str, float], gumbel: np.ndarray,
                 scale_column: str) -> np.ndarray:
    """(n,) float64 ``std(scale_column) · quality_score + gumbel``: the key whose top N is importance resampling."""
    return moments[scale_column].std * quality_score(columns, moments, weights) + gumbel


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
