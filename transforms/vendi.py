"""Vendi score of order q: the effective number of distinct items in a collection.

Method (Friedman & Dieng 2023, "The Vendi Score: A Diversity Evaluation Metric for Machine
Learning"; orders other than 1 from Pasarkar & Dieng 2023, "Cousins of the Vendi Score"). For n
items and a positive semi-definite similarity kernel ``K`` (n, n) with ``K_ii = 1``:

    VS_q = exp(H_q(λ)),   λ = eigenvalues of K / n   (they sum to 1 because K_ii = 1),

where ``H_q`` is the Rényi entropy of λ, over the nonzero λ_i only (0·log 0 = 0):

    q = 0:      H_0 = log #{i : λ_i > 0}
    q = 1:      H_1 = -Σ_i λ_i log λ_i                (Shannon; the default)
    q = inf:    H_∞ = -log max_i λ_i
    otherwise:  H_q = log(Σ_i λ_i^q) / (1 - q)       (evaluated as a log-sum-exp)

VS_q lies in [1, rank K] and does not increase with q. n identical items score 1 and n mutually
orthogonal items score n, for every q.

Dual form. With the cosine (``normalize=True``) or linear kernel on embeddings ``X`` (n, d),
``K = X Xᵀ``, and the nonzero eigenvalues of ``X Xᵀ / n`` are those of ``Xᵀ X / n`` (d, d).
``Xᵀ X`` is a sum over rows, so it streams: ``GramCombineFn`` keeps the fixed-size accumulator
(``Xᵀ X`` float64 (d, d), n), O(n·d²) to fill and O(d³) to finish whatever n is, and
``VendiScore`` runs it as one global combine on any runner. The in-memory
``vendi_score`` decomposes whichever of ``X Xᵀ`` and ``Xᵀ X`` is smaller. ``vendi_score_from_kernel``
is the exact n × n path for any other similarity function.

Choices where the reference (``vendi-score`` 0.0.3, ``vendi_score/vendi.py``) is silent or differs:

- "Nonzero" eigenvalue: ``λ_i > m·ε·max_j λ_j``, with m the side of the decomposed matrix and ε
  the float64 machine epsilon (``numpy.linalg.matrix_rank``'s default for a symmetric matrix);
  smaller values, and the slightly negative ones round-off produces, count as 0. The reference
  keeps every ``λ_i > 0``, so for a rank-deficient kernel (e.g. its dual form with n < d) its
  q = 0 score counts round-off noise and its q < 1 scores shift slightly; for full-rank kernels
  the two agree.
- Empty input (n = 0), or a kernel without a positive eigenvalue: VS_q = 0.0 for every q (the
  effective number of items of an empty collection; any other collection of unit vectors
  scores at least 1).
- ``normalize=False`` uses the vectors as given. As in the reference, the eigenvalues of
  ``Xᵀ X / n`` are not rescaled to sum to 1, so the score is only meaningful for unit rows.
- ``normalize=True`` rejects all-zero rows (their cosine similarity is undefined); the
  reference keeps them as zero rows, which silently lowers the trace of ``K / n`` below 1.
- The reference's ``score_X`` ignores q (always q = 1); here q is honoured everywhere.
"""

import dataclasses
import math
from collections.abc import Iterable, Sequence

import apache_beam as beam
import numpy as np

from winnow.transforms import vectors
from winnow.transforms.validation import check_int, is_number

NAMESPACE = "winnow.vendi"
EMPTY_SCORE = 0.0
PROFILE_ORDERS = (0.0, 0.5, 1.0, 2.0, math.inf)
# Rows per Xᵀ X update: a (1024, d) float64 block keeps BLAS busy while staying a few MB. The
# blockwise forms' speed against the reference's single Xᵀ X over all rows is in
# benchmarks/RESULTS.md, section "Vendi score".
BATCH_SIZE = 1024
_EPS = np.finfo(np.float64).eps


# --- configuration -----------------------------------------------------------------------


def check_order(q) -> float:
    """``q`` as a float after checking it is a number in [0, inf]; raises TypeError/ValueError."""
    if not is_number(q):
        raise TypeError(f"q={q!r}; expected a number in [0, inf]")
    if math.isnan(q) or q < 0:
        raise ValueError(f"q={q!r}; expected a number in [0, inf]")
    return float(q)


def order_label(q: float) -> str:
    """JSON-safe name of an order: ``"inf"``, ``"0.5"``, ``"1"``, ..."""
    return "inf" if math.isinf(q) else f"{q:g}"


@dataclasses.dataclass(frozen=True)
class VendiConfig:
    """Settings of a Vendi computation.

    Attributes:
        q: order, a number in [0, inf] (``math.inf`` for the max-eigenvalue order). Default 1.
        normalize: scale every embedding to unit L2 norm first (cosine kernel); False uses the
            linear kernel on the vectors as given (they should then be unit vectors).
        dim: embedding dimension d, or None to take it from the first vector.
    """

    q: float = 1.0
    normalize: bool = True
    dim: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "q", check_order(self.q))
        if not isinstance(self.normalize, bool):
            raise TypeError(f"normalize={self.normalize!r}; expected a bool")
        check_int("dim", self.dim, 1, allow_none=True)


# --- core: eigenvalues to scores ---------------------------------------------------------


def renyi_entropy(p: np.ndarray, q: float) -> float:
    """Rényi entropy H_q (nats) of the weights ``p`` (k,) float64, all > 0, k >= 1 (see module doc)."""
    if q == 0.0:
        return math.log(p.size)
    if q == 1.0:
        return float(-(p * np.log(p)).sum())
    if math.isinf(q):
        return -math.log(p.max())
    scaled = q * np.log(p)  # log Σ p^q as a log-sum-exp: no under/overflow at large q
    top = scaled.max()
    return (top + math.log(np.exp(scaled - top).sum())) / (1.0 - q)


def positive_eigenvalues(matrix: np.ndarray) -> np.ndarray:
    """Eigenvalues of the symmetric ``matrix`` (m, m) above ``m·ε·max λ``, ascending, float64.

    Only the lower triangle is read. The tolerance is ``numpy.linalg.matrix_rank``'s for a
    symmetric matrix; below it an eigenvalue is round-off of a zero one.
    """
    if matrix.shape[0] == 0:
        return np.zeros(0)
    eigenvalues = np.linalg.eigvalsh(matrix)
    tolerance = max(matrix.shape[0] * _EPS * eigenvalues[-1], 0.0)
    return eigenvalues[eigenvalues > tolerance]


def scores_of_eigenvalues(p: np.ndarray, orders: Iterable[float]) -> list[float]:
    """``[exp(H_q(p)) for q in orders]``; ``EMPTY_SCORE`` for each order when ``p`` is empty."""
    if p.size == 0:
        return [EMPTY_SCORE for _ in orders]
    return [math.exp(renyi_entropy(p, q)) for q in orders]


def _profile_from_gram(gram: np.ndarray, n: int, orders: Iterable[float]) -> dict[float, float]:
    orders = list(orders)
    if n == 0:
        return dict.fromkeys(orders, EMPTY_SCORE)
    return dict(zip(orders, scores_of_eigenvalues(positive_eigenvalues(gram / n), orders)))


# --- core: Gram accumulation -------------------------------------------------------------


def as_vector_batch(vectors, dim: int | None, normalize: bool) -> np.ndarray:
    """A (d,) vector, a (b, d) batch or a list of (d,) vectors as one (b, d) float64 array.

    Raises:
        ValueError: the vectors are ragged, not 1-D/2-D, empty, not ``dim`` long, not finite, or
            (with ``normalize``) all-zero.
    """
    try:
        batch = np.asarray(vectors, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"vectors must be numeric and of equal length: {error}") from None
    if batch.ndim == 1:
        batch = batch[np.newaxis, :]
    if batch.ndim != 2 or batch.shape[1] == 0:
        raise ValueError(f"vectors have shape {batch.shape}; expected (d,) or (b, d) with d >= 1")
    if dim is not None and batch.shape[1] != dim:
        raise ValueError(f"vectors have dimension {batch.shape[1]}; expected dim={dim}")
    if not np.isfinite(batch).all():
        raise ValueError("vectors contain NaN or infinite values")
    if normalize and batch.size and not np.any(batch, axis=1).all():
        raise ValueError("an all-zero vector has no cosine similarity; drop it or use normalize=False")
    return batch


def batch_gram(batch: np.ndarray, normalize: bool, product_dtype=np.float64) -> np.ndarray:
    """``Xᵀ X`` (d, d) float64 of a validated batch X (b, d), rows scaled to unit norm if ``normalize``.

    The rows are scaled in float64; the product runs in ``product_dtype``: float32 for rows stored
    in half precision (``GramCombineFn``), whose own rounding (about 1e-3) is far above float32's
    (about 1e-7 per block), at a quarter of float64's cost.
    """
    if normalize:
        batch = vectors.unit_rows(batch)
    batch = batch.astype(product_dtype, copy=False)
    return (batch.T @ batch).astype(np.float64, copy=False)


def merge_grams(parts: Iterable[tuple]) -> tuple:
    """Sum of ``(gram (d, d) or None, n)`` pairs; ``(None, 0)`` when every part is empty.

    Raises:
        ValueError: two parts have different dimensions d.
    """
    total, count = None, 0
    for gram, n in parts:
        if gram is None:
            continue
        if total is None:
            total = gram.copy()
        elif gram.shape != total.shape:
            raise ValueError(f"cannot merge Gram matrices of dimension {total.shape[0]} and {gram.shape[0]}")
        else:
            total += gram
        count += n
    return total, count


# --- core: public scores -----------------------------------------------------------------


def vendi_score(X, q: float = 1.0, normalize: bool = True) -> float:
    """Vendi score of order ``q`` of the rows of ``X`` under the cosine (or linear) kernel.

    Decomposes ``Xᵀ X / n`` (d, d) when n >= d (the dual form), else ``X Xᵀ / n`` (n, n): the
    nonzero eigenvalues are the same and the smaller matrix is cheaper.

    Args:
        X: (n, d) array-like of floats.
        q: order in [0, inf].
        normalize: scale rows to unit norm first (cosine similarity).

    Returns:
        VS_q as a float; ``EMPTY_SCORE`` (0.0) for n = 0.

    Example:
        >>> round(vendi_score(np.eye(3), q=2), 9)  # three orthogonal vectors
        3.0
    """
    q = check_order(q)
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] == 0:
        raise ValueError(f"X has shape {X.shape}; expected (n, d) with d >= 1")
    X = as_vector_batch(X, None, normalize)
    n, d = X.shape
    if n == 0:
        return EMPTY_SCORE
    if n >= d:
        # Blockwise Xᵀ X: normalizes one block at a time instead of copying all of X.
        matrix = sum(batch_gram(X[start : start + BATCH_SIZE], normalize) for start in range(0, n, BATCH_SIZE))
    else:
        if normalize:
            X = vectors.unit_rows(X)
        matrix = X @ X.T
    return scores_of_eigenvalues(positive_eigenvalues(matrix / n), [q])[0]


def vendi_score_from_kernel(K, q: float = 1.0) -> float:
    """Vendi score of order ``q`` from a similarity matrix: exp(H_q(eigenvalues of K / n)).

    Args:
        K: (n, n) symmetric positive semi-definite array-like, ``K_ii = 1`` for a proper score.
        q: order in [0, inf].

    Returns:
        VS_q as a float; ``EMPTY_SCORE`` (0.0) for n = 0.
    """
    q = check_order(q)
    K = np.asarray(K, dtype=np.float64)
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(f"K has shape {K.shape}; expected a square (n, n) matrix")
    if not np.isfinite(K).all():
        raise ValueError("K contains NaN or infinite values")
    if not np.allclose(K, K.T, rtol=1e-8, atol=1e-12):
        raise ValueError("K is not symmetric")
    if K.shape[0] == 0:
        return EMPTY_SCORE
    return scores_of_eigenvalues(positive_eigenvalues(K / K.shape[0]), [q])[0]


def vendi_profile_from_gram(gram, n: int, orders: Sequence[float] = PROFILE_ORDERS) -> dict[float, float]:
    """``{q: VS_q}`` for several orders from one eigendecomposition of ``gram / n``.

    Args:
        gram: (d, d) float64 ``Xᵀ X`` of the (normalized) vectors, as ``GramCombineFn`` returns.
        n: the number of vectors summed into ``gram`` (>= 0).
        orders: orders in [0, inf].

    Returns:
        ``{float(q): VS_q}``; every value is ``EMPTY_SCORE`` when n = 0.
    """
    orders = [check_order(q) for q in orders]
    gram = np.asarray(gram, dtype=np.float64)
    if gram.ndim != 2 or gram.shape[0] != gram.shape[1]:
        raise ValueError(f"gram has shape {gram.shape}; expected a square (d, d) matrix")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n={n!r}; expected an int >= 0")
    return _profile_from_gram(gram, int(n), orders)


def vendi_from_gram(gram, n: int, q: float = 1.0) -> float:
    """VS_q from the dual-form statistics ``(gram = Xᵀ X (d, d), n)``; 0.0 when n = 0."""
    return vendi_profile_from_gram(gram, n, [q])[check_order(q)]


def vendi_stats(gram: np.ndarray, n: int, q: float = 1.0, normalize: bool = True) -> dict:
    """JSON-ready summary: n, d, the order-q score and the ``PROFILE_ORDERS`` profile (one eigendecomposition)."""
    orders = list(dict.fromkeys([*PROFILE_ORDERS, q]))
    profile = _profile_from_gram(gram, n, orders)
    return {
        "n_vectors": n,
        "dim": gram.shape[0],
        "q": order_label(q),
        "normalize": normalize,
        "vendi_score": profile[q],
        "profile": {order_label(order): profile[order] for order in PROFILE_ORDERS},
    }


# --- Beam wrappers -----------------------------------------------------------------------


class GramCombineFn(beam.CombineFn):
    """Vectors (d,), batches (b, d) or lists of (d,) vectors -> ``(Xᵀ X float64 (d, d), n)``.

    The output feeds ``vendi_from_gram``. The accumulator is ``(gram, n)``, fixed size; with
    ``dim=None`` the gram is None until the first vector fixes d. No input gives ``((0, 0), 0)``
    (or ``(zeros (dim, dim), 0)``), which scores 0.0. A float16 batch (stored embeddings) is
    multiplied in float32 (``batch_gram``); every other input in float64. Bad vectors raise
    ValueError (see ``as_vector_batch``): this is for vectors a program made; screen input records
    first (``vectors.unit_vectors``).

    Args:
        dim: embedding dimension d, or None to take it from the first vector.
        normalize: scale each vector to unit norm before accumulating (cosine kernel).
    """

    def __init__(self, dim: int | None = None, normalize: bool = True):
        super().__init__()
        VendiConfig(normalize=normalize, dim=dim)
        self._dim, self._normalize = dim, normalize

    def create_accumulator(self):
        if self._dim is None:
            return None, 0
        return np.zeros((self._dim, self._dim)), 0

    def add_input(self, accumulator, vectors):
        if isinstance(vectors, np.ndarray) and vectors.ndim == 2 and len(vectors) > BATCH_SIZE:
            # a large batch BATCH_SIZE rows at a time: its float64 copies stay small and in cache
            for start in range(0, len(vectors), BATCH_SIZE):
                accumulator = self.add_input(accumulator, vectors[start : start + BATCH_SIZE])
            return accumulator
        gram, n = accumulator
        batch = as_vector_batch(vectors, self._dim if gram is None else gram.shape[0], self._normalize)
        half = getattr(vectors, "dtype", None) == np.float16
        update = batch_gram(batch, self._normalize, np.float32 if half else np.float64)
        if gram is None:
            return update, batch.shape[0]
        gram += update  # Beam lets add_input update its accumulator in place
        return gram, n + batch.shape[0]

    def merge_accumulators(self, accumulators):
        return merge_grams(accumulators)

    def extract_output(self, accumulator):
        gram, n = accumulator
        if gram is None:
            return np.zeros((0, 0)), 0
        return gram, n


class VendiScore(beam.PTransform):
    """PCollection of embedding vectors (d,) -> PCollection of one float, their VS_q.

    Example: ``score = vectors | VendiScore(q=1)``; an empty input scores 0.0.

    Args:
        q: order in [0, inf].
        normalize: cosine kernel (unit-norm rows) if True, else the linear kernel.
        dim: d if known (checked on every vector), else None.

    Raises (at pipeline run time):
        ValueError: a vector is not (d,), not finite, or all-zero with ``normalize``.
    """

    def __init__(self, q: float = 1.0, normalize: bool = True, dim: int | None = None):
        super().__init__()
        self._config = VendiConfig(q=q, normalize=normalize, dim=dim)

    def default_label(self):
        return f"VendiScore(q={order_label(self._config.q)})"

    def expand(self, vectors):
        config = self._config
        # Fixed-size blocks: each Xᵀ X update is one BLAS call instead of one per vector.
        grams = (
            vectors
            | "BatchVectors" >> beam.BatchElements(min_batch_size=BATCH_SIZE, max_batch_size=BATCH_SIZE)
            | "AccumulateGram" >> beam.CombineGlobally(GramCombineFn(config.dim, config.normalize))
        )
        # (gram (d, d), n) -> float
        return grams | "Score" >> beam.MapTuple(vendi_from_gram, q=config.q)
