"""Per-cluster selection quotas: how many records each cluster contributes to a selection of N.

Selection strategies (``cluster_quotas``; ``select.py`` then keeps, in each cluster, the ``quota``
records with the highest ``within_cluster_key``):
- ``balanced``: equal targets N/K over the non-empty clusters, as the kMQ sampler of "Diversify
  and Conquer" (Yu et al. 2024, github.com/for-ai/iterative-data-selection, which takes
  ``min(N / K, n_j)`` per cluster); here the leftovers of small clusters are redistributed, so
  exactly N are chosen.
- ``proportional``: targets ``N * n_j / n`` (stratified sampling), largest-remainder rounding.
- ``prototypes``: proportional quotas; within a cluster the records farthest from the centroid
  come first, i.e. the most prototypical (nearest) ones are dropped, the self-supervised
  prototype metric of Sorscher et al. 2022 ("Beyond neural scaling laws: beating power law
  scaling via data pruning"). Deviation: they prune by one global distance threshold; here the
  pruning rate is the same in every cluster.
- ``complexity``: the DBP quotas above.
Other strategies rank within a cluster by the method's score (random, DSIR or ZIP-FIT).

Complexity (Abbas et al. 2024, "Effective pruning of web-scale datasets based on complexity of
concept clusters", DBP; ``kmeans.cluster_complexity`` gives C_j):

    target_j  = N * softmax(C / tau)_j   (tau = 0.5, their ``prune.py`` default)

DBP turns the targets into integer quotas with a quadratic program, ``min ||x - target||^2``
subject to ``sum x = N`` and ``0 <= x_j <= n_j``. Its solution is ``x_j = clip(target_j + mu, 0,
n_j)`` for the ``mu`` that meets the sum: additive water-filling, which ``water_fill`` computes
exactly (bisection on mu) and then rounds by largest remainder. Deviation: DBP's optional lower
bound per cluster (``cls_bal_ratio``) is not used.
"""

import dataclasses

import numpy as np

from winnow.transforms.validation import check_choice, check_int, check_number, is_number

DIVERSITY = "diversity"  # not a quota rule: the log-determinant greedy of diversity.py, merged by gain
COMPLEXITY = "complexity"  # the one strategy that reads the fitted centroids (its C_j)
QUOTA_STRATEGIES = ("balanced", "proportional", "prototypes", COMPLEXITY)
STRATEGIES = (DIVERSITY, *QUOTA_STRATEGIES)
COMPLEXITY_TEMPERATURE = 0.5
_BISECTION_STEPS = 200


def check_strategy(strategy) -> str:
    """``strategy`` after checking it is one of ``QUOTA_STRATEGIES``; raises ValueError."""
    check_choice("strategy", strategy, QUOTA_STRATEGIES)
    return strategy


def water_fill(targets: np.ndarray, capacities: np.ndarray, total: int) -> np.ndarray:
    """Integer quotas (K,) int64 closest to ``targets`` with sum ``total`` and ``0 <= q_j <= capacities_j``.

    Real solution ``x_j = clip(targets_j + mu, 0, capacities_j)``, mu found by bisection (the sum
    is continuous and non-decreasing in mu); then floors plus one unit for the ``total - sum``
    largest fractional parts (ties to the lower index). Expects 0 <= total <= sum(capacities),
    targets (K,) float64, capacities (K,) int64 >= 0.
    """
    capacities = np.asarray(capacities, dtype=np.int64)
    if total == 0:
        return np.zeros(len(capacities), dtype=np.int64)
    targets = np.asarray(targets, dtype=np.float64)
    low, high = -targets.max(), float((capacities - targets).max())  # sums 0 and sum(capacities)
    for _ in range(_BISECTION_STEPS):
        middle = (low + high) / 2.0
        if np.clip(targets + middle, 0, capacities).sum() < total:
            low = middle
        else:
            high = middle
    shares = np.clip(targets + high, 0, capacities)
    quotas = np.minimum(np.floor(shares).astype(np.int64), capacities)
    # sum(shares) is total up to round-off, so fewer than K units remain and every cluster with a
    # fractional share has room for one more.
    remainder = total - int(quotas.sum())
    fractions = np.round(shares - quotas, 9)  # equal in exact arithmetic -> equal here, so ties go by index
    order = np.lexsort((np.arange(len(shares)), -fractions))
    room = order[quotas[order] < capacities[order]]
    quotas[room[:remainder]] += 1
    return quotas


def cluster_quotas(
    strategy: str,
    cluster_sizes: dict[int, int],
    n: int,
    complexity: dict[int, float] | None = None,
    temperature: float = COMPLEXITY_TEMPERATURE,
) -> dict[int, int]:
    """Records to select per cluster: sums to exactly ``min(n, sum(sizes))``, never above a size.

    Targets over the non-empty clusters (module docstring): ``balanced`` N/K each,
    ``proportional`` and ``prototypes`` ``N * n_j / n``, ``complexity`` ``N * softmax(C / tau)``;
    then ``water_fill``. Deterministic: ties go to the smaller cluster id.

    Args:
        strategy: one of ``STRATEGIES``.
        cluster_sizes: cluster id -> eligible records in it (>= 0).
        n: records to select in total (>= 0).
        complexity: cluster id -> C_j, required for ``complexity`` (e.g. ``stats["complexity"]``
            of ``ClusterKMeans``).
        temperature: tau of the complexity softmax (> 0).

    Returns:
        cluster id -> quota, for every id in ``cluster_sizes``.

    Raises:
        ValueError: an unknown strategy, a negative n or size, missing or non-finite complexities.

    Example:
        >>> cluster_quotas("balanced", {0: 2, 1: 10, 2: 10}, 12)
        {0: 2, 1: 5, 2: 5}
    """
    check_strategy(strategy)
    check_int("n", n, 0)
    for cluster, size in cluster_sizes.items():
        check_int(f"cluster_sizes[{cluster}]", size, 0)
    clusters = sorted(cluster_sizes)
    sizes = np.array([cluster_sizes[c] for c in clusters], dtype=np.int64)
    total = int(min(n, sizes.sum()))
    active = sizes > 0
    weights = np.zeros(len(clusters))
    if strategy == "balanced":
        weights[active] = 1.0
    elif strategy in ("proportional", "prototypes"):
        weights = sizes.astype(np.float64)
    else:
        if complexity is None or any(c not in complexity for c in clusters):
            raise ValueError("strategy='complexity' needs complexity[c] for every cluster c in cluster_sizes")
        if not is_number(temperature) or not temperature > 0:
            raise ValueError(f"temperature={temperature!r}; expected a number > 0")
        scores = np.array([complexity[c] for c in clusters], dtype=np.float64) / temperature
        if not np.isfinite(scores).all():
            raise ValueError(f"complexity={complexity!r}; expected finite numbers")
        if active.any():
            weights[active] = np.exp(scores[active] - scores[active].max())  # stable softmax numerator
    targets = total * weights / weights.sum() if total else np.zeros(len(clusters))
    quotas = water_fill(targets, sizes, total)
    return {c: int(q) for c, q in zip(clusters, quotas)}


def within_cluster_key(strategy: str, cluster_distance, score):
    """The key the selection ranks a cluster's records by (highest first).

    ``prototypes``: ``cluster_distance`` (keep the farthest from the centroid, Sorscher et al.
    2022); every other strategy: ``score``, the method's key (a seeded uniform hash for random
    selection, DSIR or ZIP-FIT scores when present). Works on floats or numpy arrays.
    """
    return cluster_distance if check_strategy(strategy) == "prototypes" else score


@dataclasses.dataclass(frozen=True)
class StrategyQuota:
    """The selection's quota function for clusters: ``total`` records split by ``strategy``.

    Called as ``quota(counts, inputs)`` (``select.SelectTop``'s ``quota_fn``): ``counts`` the
    eligible records per cluster, ``inputs["complexity"]`` the clusters' C_j (``complexity`` only).
    """

    total: object  # select.TotalQuota: total(pool) -> records to select
    strategy: str = "balanced"
    temperature: float = COMPLEXITY_TEMPERATURE

    def __post_init__(self):
        check_strategy(self.strategy)
        check_number("temperature", self.temperature, 0.0, open_low=True)

    def __call__(self, counts: dict[int, int], inputs: dict) -> dict[int, int]:
        n = self.total.total(sum(counts.values()))
        return cluster_quotas(self.strategy, counts, n, inputs.get("complexity"), self.temperature)
