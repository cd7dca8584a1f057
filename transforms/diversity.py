"""Diversity selection: greedy log-determinant per cluster, conditioned on the rest, merged by marginal gain.

Objective. For unit-norm embeddings x_i (rows of X) and a ridge lambda > 0, the L-ensemble kernel
``L = I + X Xᵀ / lambda`` (a determinantal point process, Kulesza & Taskar 2012) scores a set S by

    f(S) = log det L_S = log det(I_d + X_Sᵀ X_S / lambda)        (Sylvester's determinant identity)

f is monotone submodular, so the greedy that adds the document of largest marginal gain

    gain_i(S) = f(S + i) - f(S) = log(1 + g_i),   g_i = x_iᵀ (lambda I_d + B + X_Sᵀ X_S)⁻¹ x_i

(B = 0 for now) is within 1 - 1/e of the best set of its size (Nemhauser, Wolsey & Fisher 1978)
and its gains never increase from one pick to the next. ``greedy_logdet`` is the MAP greedy of
Chen, Zhang & Zhou 2018 ("Fast Greedy MAP Inference for Determinantal Point Process to Improve
Recommendation Diversity", NeurIPS), whose incremental Cholesky keeps ``d_i^2 = 1 + g_i`` for
every candidate. Deviation: we keep the same quantities in the primal (d-dimensional) form, the
inverse ``A⁻¹ = (lambda I + B + X_Sᵀ X_S)⁻¹`` updated by Sherman-Morrison after each pick j:

    u = A⁻¹ x_j,   g_i <- g_i - (x_iᵀ u)^2 / (1 + g_j),   A⁻¹ <- A⁻¹ - u uᵀ / (1 + g_j),

the last updates held as the rows w = u / sqrt(1 + g_j) of a (k, d) block W, ``A⁻¹ = Â⁻¹ - Wᵀ W``,
and folded into Â⁻¹ with one matrix product every ``FOLD_PICKS`` picks (a rank-one update per pick
rewrites the whole (d, d) array three times; the fold nearly halved a large re-selection's greedy),
which costs O(m d + d^2) per pick for m candidates however many are picked (their form costs
O(m (d + t)) at pick t and holds an (m, t) factor) and never degenerates past d picks: the ridge
keeps A invertible. The ridge sets how soft the repulsion is: a document orthogonal to every pick
gains log(1 + 1/lambda), one repeating a direction picked t times about log(1 + 1/(lambda + t)).
lambda -> 0 is the volume (pure DPP MAP) greedy; lambda -> inf ranks by ``x_iᵀ X_Sᵀ X_S x_i``,
the summed squared similarity to the picks: the greedy for the order-2 Vendi score (Friedman &
Dieng 2023, "The Vendi Score: A Diversity Evaluation Metric for Machine Learning").

Groups. The pool is clustered first (``kmeans.py``) so that one cluster fits one worker; a
cluster of more than ``max_group_size`` candidates is cut into ``g = ceil(m / max_group_size)``
groups, member i (in id order) going to group ``i mod g`` (``split_groups``). Each group runs
the greedy alone, for ``r = min(m, ceil(rho N m / M))`` picks (``group_pick_count``; m
candidates in the group, M in the pool, N to select, oversampling rho).

Conditioning on the other groups. A group's greedy sees only its own picks, so on its own it
spreads them over directions that are new *for the group*: documents on the group's edge, which
other groups cover too. Each group h therefore starts from the background

    B_h = beta (N / M) (G - G_h),     G = Σ_pool x xᵀ,  G_h = Σ_{x in h} x xᵀ,

the Gram matrix the other groups' picks would have if they were a proportional sample of their
candidates, weighted by beta (``background``). Its gains are then gains against an estimate of
the whole selection, so directions the rest of the pool already covers gain little. G is a
fixed-size (d, d) statistic (``gram_statistic``: on a 2**-GRAM_BITS grid, so that sums over any
split of the pool are exact and every runner gets the same bits); the group computes G_h itself.

Quotas by marginal gain. No quota per cluster is fixed in advance: every group reports its
greedy order with each pick's gain (forced non-increasing, rounded to ``GAIN_DECIMALS``), and the
selection is the N candidates of the pool with the largest gains, ties to the smaller id. With
the conditioning the gains of different groups measure the same thing, so this is the greedy on
the sum of the groups' conditioned log-determinants: the next document comes from the group whose
next gain is largest, and a tight cluster of near-duplicates, whose gains fall fast, stops early.
A group gives at most its r picks (``oversample`` times its proportional share); ``Σ r >= N``
always, so exactly N are selected. Related: GreeDi (Mirzasoleiman et al. 2013, "Distributed
Submodular Maximization") also runs the greedy per partition, then a second greedy over the
union, which here would need all candidates in one worker.

Length prior. A very short document has few n-grams, so its embedding is far from every other and
the greedy favours it. Each gain gets ``log(min(1, length / min_length))`` added
(``length_prior``): the gain of the DPP with quality ``q_i^2 = min(1, length_i / min_length)``
(Kulesza & Taskar's ``L = diag(q) K diag(q)``). None turns it off.

Quality and diversity (``combined`` with a target). The caller gives a quality key per document,
for DSIR ``log w + Gumbel(seed, id)`` (Gumbel top-k, Kool et al. 2019: the top N are DSIR's
importance resample, Xie et al. 2023). The candidates are the top ``M(D)`` by that key, ties to
the smaller id, with

    1 / M = (1 - D) / N + D / n,        i.e.   N / M = 1 - D (1 - N / n),

n the pool size; the diversity step then selects N of the M candidates (G summed over the
candidates), without looking at the key. D = 0 gives M = N: every candidate is selected, the
quality-only selection exactly. D = 1 gives M = n: the pure diversity selection. In between the
diversity step drops a share ``D (1 - N / n)`` of the quality candidates, the most redundant.
Without a quality key every document is a candidate whatever D.

Why this method (measurements: ``benchmarks/bench_diversity.py``, section "Diversity selection" of
``benchmarks/RESULTS.md``, Vendi score under an embedding winnow does not use). Inside the same
clusters with the same quotas, the log-determinant greedy scores with the order-2 Vendi greedy;
the order-1 Vendi greedy (add the document that most raises the Vendi score, the Vendi-RAG idea,
Rezaei & Dieng 2025) scores no higher for an eigendecomposition per candidate and pick, and
k-center / max-min (Gonzalez 1985) chases outliers and scores lowest. Unlike the order-2 greedy,
the log-determinant has marginal gains to merge and a conditioned form. Without the conditioning,
per-cluster greedy selections lose most of their advantage at realistic numbers of clusters, and
merging them by gain does worse than random; conditioning raises the same selection with
proportional quotas, and with it merging by gain matches the best quota rule from cluster
statistics (proportional, balanced, sqrt(size x the cluster's Vendi score), the Vendi score,
size x spread, rounded by ``quotas.water_fill``) at few clusters and beats them at many, about as
diverse as one greedy over the whole pool, whose cost is not bounded. The length prior keeps
short documents at or below their share of the pool at a small cost in the score. The default D
is the largest (in steps of 0.1) at which every measured pool and target keeps 0.9 of DSIR's
target precision; the other defaults are the measured choices too.

Cost per group: ``O(r m d + r d^2 + m d^2 + d^3)`` time (picks, the initial gains, the inverse of
``lambda I + B_h``) and (m, d) float64 plus (d, d) memory; per candidate ``O(rho (N / M) m d)``
with m <= ``max_group_size``, so bounded whatever the cluster sizes.

Determinism. Rows are rescaled to unit norm in float64 (float16-stored embeddings would otherwise
break the first pick's ties by their rounding), gains are rounded to ``GAIN_DECIMALS`` before
every comparison, ties go to the lower row index, and G is exact: pass each cluster's rows sorted
by id and the selection depends on the input set only, on any runner or worker count (given the
same floating-point results of the BLAS products on the machines that run the groups).
"""

import dataclasses
import math

import numpy as np

from winnow.transforms import vectors as vector_rows
from winnow.transforms.validation import check_int, check_number

DEFAULT_DIVERSITY = 0.3
DEFAULT_RIDGE = 3.0
DEFAULT_BACKGROUND = 2.0
DEFAULT_OVERSAMPLE = 2.0
DEFAULT_MAX_GROUP_SIZE = 5_000
DEFAULT_MIN_LENGTH = 250
FOLD_PICKS = 32  # greedy_logdet's pending rank-one updates, folded into the inverse together
GAIN_DECIMALS = 9  # equal in exact arithmetic -> equal after rounding, so ties go by index
GRAM_BITS = 10  # pool Gram on a 2**-10 grid: integer sums, exact in float64 up to 2**33 rows


@dataclasses.dataclass(frozen=True)
class DiversityConfig:
    """Settings of the diversity selection (module docstring).

    Attributes:
        diversity: D in [0, 1]; with a quality key, 0 selects by quality only, 1 by diversity
            only. The default comes from the measured frontier (``benchmarks/RESULTS.md``).
        ridge: lambda > 0 of the kernel ``I + X Xᵀ / lambda``; larger is a softer repulsion.
        background: beta >= 0, the weight of the other groups' expected picks each group's
            greedy is conditioned on; 0 runs every group as if it were alone.
        oversample: rho >= 1; a group computes at most rho times its proportional share of picks.
        max_group_size: most candidates one greedy run sees (memory and cost bound).
        min_length: documents shorter than this many characters (the features table's
            ``length``) have their gains lowered by ``log(length / min_length)``
            (``length_prior``); None disables the prior.
    """

    diversity: float = DEFAULT_DIVERSITY
    ridge: float = DEFAULT_RIDGE
    background: float = DEFAULT_BACKGROUND
    oversample: float = DEFAULT_OVERSAMPLE
    max_group_size: int = DEFAULT_MAX_GROUP_SIZE
    min_length: int | None = DEFAULT_MIN_LENGTH

    def __post_init__(self):
        check_number("diversity", self.diversity, 0.0, 1.0)
        check_number("ridge", self.ridge, 0.0, math.inf, open_low=True, open_high=True)
        check_number("background", self.background, 0.0, math.inf, open_high=True)
        check_number("oversample", self.oversample, 1.0, math.inf, open_high=True)
        check_int("max_group_size", self.max_group_size, 1)
        check_int("min_length", self.min_length, 1, allow_none=True)


# --- core --------------------------------------------------------------------------------------


def candidate_count(n_select: int, n_pool: int, diversity: float) -> int:
    """M, the quality candidates the diversity step chooses from: ``ceil(1 / ((1 - D) / N + D / n))``.

    Clipped to [N, n]; expects 0 <= N <= n and D in [0, 1]. M = N at D = 0, M = n at D = 1.

    Example:
        >>> candidate_count(100, 1000, 0.5)
        182
    """
    if n_select == 0:
        return 0
    inverse = (1.0 - diversity) / n_select + diversity / n_pool
    return int(min(n_pool, max(n_select, math.ceil(1.0 / inverse - 1e-9))))


def gram_statistic(vectors) -> np.ndarray:
    """(d, d) float64 ``Qᵀ Q``, Q = ``round(vector_rows.unit_rows(vectors) * 2**GRAM_BITS)``: the pool Gram on a grid.

    Every entry is an integer below 2**53 for up to 2**33 rows, so sums of these statistics are
    exact in float64 in any order: a Gram accumulated by a combiner over any split of the pool
    is bit-identical on every runner and worker count. ``gram / 4**GRAM_BITS`` approximates
    ``Xᵀ X`` of the unit rows to about 1e-3 per coordinate, the precision of float16 storage.
    """
    grid = np.round(vector_rows.unit_rows(vectors) * float(1 << GRAM_BITS))
    return grid.T @ grid


def length_prior(lengths, min_length: int | None) -> np.ndarray:
    """(m,) float64 ``log(min(1, length / min_length))``: 0 from ``min_length`` up, zeros if it is None.

    The log of a DPP quality ``q_i^2 = min(1, length_i / min_length)`` (Kulesza & Taskar 2012,
    ``L = diag(q) K diag(q)``): a greedy gain plus this prior is the gain of the weighted kernel,
    so a document a quarter of ``min_length`` long must bring log 4 more diversity to be picked.
    Lengths below 1 count as 1.
    """
    lengths = np.asarray(lengths, dtype=np.float64)
    if min_length is None:
        return np.zeros(lengths.shape)
    return np.log(np.minimum(1.0, np.maximum(lengths, 1.0) / min_length))


def greedy_logdet(vectors, n_picks: int, ridge: float, background=None, log_prior=None) -> tuple[np.ndarray, np.ndarray]:
    """Greedy MAP of the kernel ``I + X Xᵀ / ridge``: the picks in order and their marginal gains.

    Each step adds the row of largest ``round(log(1 + g_i) + p_i, GAIN_DECIMALS)``, ties to the
    lowest index, with ``g_i = x_iᵀ (ridge I + B + X_Sᵀ X_S)⁻¹ x_i`` (module docstring), B the
    ``background`` (the Gram of documents picked elsewhere, which the picks are conditioned on,
    so directions they cover gain less) and p the ``log_prior``. Expects validated input.

    Args:
        vectors: (m, d) float array; rows are rescaled to unit norm (``unit_rows``).
        n_picks: picks to make, 0 <= n_picks <= m.
        ridge: lambda > 0.
        background: (d, d) symmetric positive semi-definite float array, or None for zero.
        log_prior: (m,) float64 per-row log quality (e.g. ``length_prior``), or None for zero.

    Returns:
        ``(picks (n_picks,) int64 row indices in pick order, gains (n_picks,) float64)``: each
        pick's rounded score, non-increasing up to the rounding.

    Example:
        >>> picks, gains = greedy_logdet([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], 2, ridge=1.0)
        >>> picks.tolist(), gains.round(4).tolist()
        ([0, 2], [0.6931, 0.6931])
    """
    rows = vector_rows.unit_rows(vectors)
    m, d = rows.shape
    if background is None:
        inverse = np.eye(d) / ridge  # A⁻¹ with nothing picked
        g = np.einsum("ij,ij->i", rows, rows) / ridge
    else:
        inverse = np.linalg.inv(ridge * np.eye(d) + np.asarray(background, dtype=np.float64))
        inverse = (inverse + inverse.T) / 2.0  # exactly symmetric, as the updates keep it
        g = np.einsum("ij,ij->i", rows @ inverse, rows)
    prior = np.zeros(m) if log_prior is None else np.asarray(log_prior, dtype=np.float64)
    taken = np.zeros(m, dtype=bool)
    picks = np.empty(n_picks, dtype=np.int64)
    gains = np.empty(n_picks, dtype=np.float64)
    pending = np.empty((FOLD_PICKS, d))  # W: A⁻¹ = inverse - Wᵀ W over its first k rows
    k = 0
    for step in range(n_picks):
        # g can dip a hair below 0 by round-off once a direction is exhausted
        score = np.round(np.log1p(np.maximum(g, 0.0)) + prior, GAIN_DECIMALS)
        score[taken] = -np.inf
        j = int(np.argmax(score))  # first maximum: ties to the lowest index
        picks[step], gains[step] = j, score[j]
        taken[j] = True
        u = inverse @ rows[j] - pending[:k].T @ (pending[:k] @ rows[j])
        scale = 1.0 / (1.0 + g[j])
        projections = rows @ u
        g -= scale * projections * projections
        np.multiply(u, math.sqrt(scale), out=pending[k])
        k += 1
        if k == FOLD_PICKS:
            inverse -= pending.T @ pending
            k = 0
    return picks, gains


def split_groups(n_members: int, max_group_size: int) -> np.ndarray:
    """(n_members,) int64 group of each member (in id order): ``i mod ceil(n_members / max_group_size)``."""
    n_groups = max(1, -(-n_members // max_group_size))
    return np.arange(n_members, dtype=np.int64) % n_groups


def group_pick_count(group_size: int, n_candidates: int, n_select: int, oversample: float) -> int:
    """r, the greedy picks a group computes: ``min(m, ceil(rho N m / M))`` (0 when N or m is 0).

    Expects 0 <= N <= M and 0 <= m <= M. Summed over groups partitioning the M candidates, r is
    at least N (``rho >= 1``), so the merge by gain always finds N documents.
    """
    if n_select == 0 or group_size == 0:
        return 0
    return int(min(group_size, math.ceil(oversample * n_select * group_size / n_candidates - 1e-9)))


def diversity_keys(
    vectors, lengths, n_candidates: int, n_select: int, pool_gram, config: DiversityConfig
) -> np.ndarray:
    """Selection keys of one cluster's candidates: their greedy gain if picked, else -inf.

    The cluster is cut into groups (``split_groups``); group h runs ``greedy_logdet`` for
    ``group_pick_count`` picks with the ``length_prior`` and the background
    ``B_h = beta (N / M) (G - G_h)``: the Gram of the other groups' picks if they were a
    proportional sample of them, G the pool Gram and G_h the group's own (both
    ``gram_statistic / 4**GRAM_BITS``). Within a group the keys follow the greedy order (a
    running minimum of the gains), so the selection, the N candidates of the whole pool with the
    largest keys (ties to the smaller id: ``select.py``'s exact-N selection, or ``top_indices``
    in memory), takes a prefix of each group's picks up to ties. With ``n_candidates <=
    n_select`` every candidate is selected and every key is 0.

    Args:
        vectors: (m, d) float embeddings of the cluster's candidates, rows sorted by id.
        lengths: (m,) document lengths in characters, or None for no prior.
        n_candidates: M, candidates in the whole pool (>= m).
        n_select: N, documents to select from the whole pool (<= M).
        pool_gram: (d, d) float64 sum of ``gram_statistic`` over all M candidates of the pool,
            computed from the same vectors (e.g. the stored float16 ones) as ``vectors``.
        config: a validated ``DiversityConfig``.

    Returns:
        (m,) float64 keys; the number of finite ones is the sum of the groups' pick counts.
    """
    vectors = np.asarray(vectors)
    m = vectors.shape[0]
    if n_candidates <= n_select:  # every candidate is selected (D = 0): no greedy to run
        return np.zeros(m)
    prior = None if lengths is None else length_prior(lengths, config.min_length)
    pool_gram = np.asarray(pool_gram, dtype=np.float64)
    weight = config.background * n_select / n_candidates / float(1 << (2 * GRAM_BITS))
    keys = np.full(m, -np.inf)
    groups = split_groups(m, config.max_group_size)
    for group in range(int(groups.max(initial=-1)) + 1):
        members = np.flatnonzero(groups == group)
        r = group_pick_count(len(members), n_candidates, n_select, config.oversample)
        background = weight * (pool_gram - gram_statistic(vectors[members]))
        picks, gains = greedy_logdet(
            vectors[members], r, config.ridge, background, None if prior is None else prior[members]
        )
        keys[members[picks]] = np.minimum.accumulate(gains)
    return keys


def top_indices(keys, n: int) -> np.ndarray:
    """(n,) int64 indices of the n largest keys, ties to the lower index, in ascending index order."""
    keys = np.asarray(keys, dtype=np.float64)
    order = np.lexsort((np.arange(len(keys)), -keys))
    return np.sort(order[:n])


def select_diverse(
    vectors, clusters, n_select: int, config: DiversityConfig, quality_keys=None, lengths=None
) -> np.ndarray:
    """The whole selection in memory: what the pipeline computes cluster by cluster.

    Candidates are the top ``candidate_count(N, n, D)`` rows by ``quality_keys`` (ties to the
    lower index), or every row without quality keys; then ``diversity_keys`` per cluster
    (clusters in ascending order, each cluster's rows in index order, the pool Gram summed over
    the candidates) and the top N keys.

    Args:
        vectors: (n, d) float embeddings, rows sorted by id.
        clusters: (n,) int cluster of each row.
        n_select: N, 0 <= N <= n.
        config: the settings.
        quality_keys: (n,) float quality key per row (e.g. DSIR's Gumbel key), or None.
        lengths: (n,) document lengths in characters, or None for no length prior.

    Returns:
        (N,) int64 selected row indices, ascending.

    Raises:
        ValueError: ``config`` is not a DiversityConfig, shapes disagree, N is out of range, or
            vectors, keys or lengths are not finite.
    """
    if not isinstance(config, DiversityConfig):
        raise ValueError(f"config={config!r}; expected a DiversityConfig")
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim != 2 or not np.isfinite(vectors).all():
        raise ValueError(f"vectors have shape {vectors.shape}; expected finite floats (n, d)")
    n = vectors.shape[0]
    clusters = np.asarray(clusters)
    if clusters.shape != (n,) or not np.issubdtype(clusters.dtype, np.integer):
        raise ValueError(f"clusters have shape {clusters.shape} and dtype {clusters.dtype}; expected ({n},) ints")
    check_int("n_select", n_select, 0, n)
    for name, values in (("quality_keys", quality_keys), ("lengths", lengths)):
        if values is not None and (np.shape(values) != (n,) or not np.isfinite(np.asarray(values, float)).all()):
            raise ValueError(f"{name} have shape {np.shape(values)}; expected ({n},) finite numbers")
    candidates = np.ones(n, dtype=bool)
    n_candidates = n
    if quality_keys is not None:
        n_candidates = candidate_count(n_select, n, config.diversity)
        candidates[:] = False
        candidates[top_indices(quality_keys, n_candidates)] = True
    pool_gram = gram_statistic(vectors[candidates])
    keys = np.full(n, -np.inf)
    for cluster in np.unique(clusters[candidates]):
        members = np.flatnonzero(candidates & (clusters == cluster))
        member_lengths = None if lengths is None else np.asarray(lengths)[members]
        keys[members] = diversity_keys(vectors[members], member_lengths, n_candidates, n_select, pool_gram, config)
    return top_indices(keys, n_select)
