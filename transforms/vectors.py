"""Embedding vectors: parsing, checking, unit rows and widths.

An embedding reaches winnow either from its own hashed tf-idf embedding (``embed.py``) or from an
input field (``--embedding-field``): a list of numbers, or the bytes of float32 little-endian
values. ``parse_embedding`` accepts both and says why a value is unusable, as a dead-letter reason
(``deadletter.EMBEDDING_REASONS``). The features table keeps the unit vectors (``unit_vectors``)
in its own compact form (``features.embedding_array``).
"""

import json

import numpy as np

from winnow.transforms import deadletter

FLOAT32_LE = np.dtype("<f4")


def parse_embedding(value, normalize: bool) -> tuple[np.ndarray | None, str | None]:
    """``(vector (d,) float64, None)`` for a usable embedding, else ``(None, reason)``.

    ``value``: a sequence of numbers, a numpy array, bytes of float32 little-endian values, or a
    JSON array as text (a field whose values conflict in type is read as strings, ``io.py``).
    With ``normalize`` an all-zero vector is unusable (its cosine similarity is undefined).
    ``deadletter.DIM_MISMATCH`` is never returned here: it needs the corpus width.
    """
    if value is None:
        return None, deadletter.NO_EMBEDDING
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None, deadletter.NOT_NUMERIC
        if not isinstance(value, list):
            return None, deadletter.NOT_NUMERIC
    if isinstance(value, (bytes, bytearray, memoryview)):
        if len(value) % FLOAT32_LE.itemsize:
            return None, deadletter.BAD_SHAPE
        value = np.frombuffer(value, dtype=FLOAT32_LE)
    try:
        vector = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None, deadletter.NOT_NUMERIC
    if vector.ndim != 1 or vector.size == 0:
        return None, deadletter.BAD_SHAPE
    if not np.isfinite(vector).all():
        return None, deadletter.NON_FINITE
    if normalize and not vector.any():
        return None, deadletter.ZERO_NORM
    return vector, None


def unit_vectors(values: list, dim: int) -> tuple[np.ndarray, list[str | None]]:
    """Embedding values -> ((n, dim) float32 unit rows, per value None or the reason it is unusable).

    Unusable rows (any ``parse_embedding`` reason, or a width other than ``dim``) are zero.
    """
    out = np.zeros((len(values), dim), dtype=np.float32)
    reasons: list[str | None] = []
    for i, value in enumerate(values):
        vector, reason = parse_embedding(value, normalize=True)
        if reason is None and vector.shape[0] != dim:
            reason = deadletter.DIM_MISMATCH
        if reason is None:
            out[i] = unit_rows(vector)[0]
        reasons.append(reason)
    return out, reasons


def unit_rows(vectors) -> np.ndarray:
    """(m, d) float64 copy of ``vectors`` with every nonzero row scaled to unit norm (zero rows stay zero).

    Rows whose squared norm overflows or underflows (inf, or below the smallest normal float)
    are divided by their largest magnitude first, so their norm is exact; the others are divided
    by their norm directly.
    """
    rows = np.array(vectors, dtype=np.float64, ndmin=2)
    with np.errstate(over="ignore", under="ignore"):
        squares = np.einsum("ij,ij->i", rows, rows)
    unsafe = ~np.isfinite(squares) | (squares < np.finfo(np.float64).tiny)
    norms = np.sqrt(squares)
    if unsafe.any():
        peak = np.abs(rows[unsafe]).max(axis=1, keepdims=True)
        rows[unsafe] = np.divide(rows[unsafe], peak, out=np.zeros_like(rows[unsafe]), where=peak > 0)
        norms[unsafe] = np.linalg.norm(rows[unsafe], axis=1)
    return np.divide(rows, norms[:, None], out=rows, where=norms[:, None] > 0)


def mode_width(width_counts: dict[int, int]) -> int | None:
    """The most frequent vector width (ties to the smaller); None when there are no counts."""
    if not width_counts:
        return None
    return min(width_counts, key=lambda width: (-width_counts[width], width))


def width_of(value) -> int | None:
    """The width of a usable embedding value, None for an unusable one."""
    vector, _ = parse_embedding(value, normalize=True)
    return None if vector is None else vector.shape[0]
