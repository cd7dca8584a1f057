"""Tests for transforms/vectors.py: parsing embeddings with dead-letter reasons, unit rows, widths."""

import numpy as np
import pyarrow as pa
import pytest

from winnow.transforms import deadletter, vectors
from winnow.transforms.vectors import mode_width, parse_embedding, unit_rows, unit_vectors, width_of


# --- parse_embedding -----------------------------------------------------------------------


def test_parse_embedding_accepts_lists_and_arrays_as_float64():
    vector, why = parse_embedding([1, 2, 3], normalize=True)
    assert why is None and vector.dtype == np.float64
    np.testing.assert_array_equal(vector, [1.0, 2.0, 3.0])
    vector, why = parse_embedding(np.array([0.5, -1.0], np.float32), normalize=False)
    assert why is None and vector.tolist() == [0.5, -1.0]


@pytest.mark.parametrize(
    "value, why",
    [
        (None, deadletter.NO_EMBEDDING),
        ("abc", deadletter.NOT_NUMERIC),
        (["a", "b"], deadletter.NOT_NUMERIC),
        ([1.0, [2.0]], deadletter.NOT_NUMERIC),  # ragged
        ([[1.0, 2.0]], deadletter.BAD_SHAPE),
        ([], deadletter.BAD_SHAPE),
        (3.0, deadletter.BAD_SHAPE),  # a scalar is not a vector
        ([1.0, np.inf], deadletter.NON_FINITE),
        ([np.nan, 1.0], deadletter.NON_FINITE),
        ([0.0, 0.0], deadletter.ZERO_NORM),
    ],
)
def test_parse_embedding_reasons(value, why):
    assert parse_embedding(value, normalize=True) == (None, why)


def test_zero_vectors_are_usable_without_normalization():
    vector, why = parse_embedding([0.0, 0.0], normalize=False)
    assert why is None and vector.tolist() == [0.0, 0.0]


def test_parse_embedding_reads_float32_little_endian_bytes():
    packed = np.array([0.5, -2.0, 3.25], dtype="<f4").tobytes()
    for value in (packed, bytearray(packed), memoryview(packed)):
        vector, why = parse_embedding(value, normalize=True)
        assert why is None and vector.dtype == np.float64
        np.testing.assert_array_equal(vector, [0.5, -2.0, 3.25])
    assert parse_embedding(np.array([1.0], ">f4").tobytes(), True)[0][0] != 1.0  # big-endian bytes are not re-ordered
    assert parse_embedding(packed[:-1], True) == (None, deadletter.BAD_SHAPE)  # not a whole number of float32s
    assert parse_embedding(b"", True) == (None, deadletter.BAD_SHAPE)
    assert parse_embedding(np.array([np.nan], "<f4").tobytes(), True) == (None, deadletter.NON_FINITE)
    assert parse_embedding(np.zeros(2, "<f4").tobytes(), True) == (None, deadletter.ZERO_NORM)


def test_parse_embedding_never_returns_dim_mismatch():
    for value in ([1.0], [1.0] * 1000, np.ones(3, "<f4").tobytes()):
        assert parse_embedding(value, True)[1] is None


# --- unit_vectors, widths ------------------------------------------------------------------


def test_unit_vectors_normalize_usable_rows_and_zero_the_others():
    values = [[3, 4], [0, 0], None, [1, 2, 3], np.array([0.0, 2.0], "<f4").tobytes(), "x", [np.nan, 1.0], np.array([-5.0, 0.0])]
    out, reasons = unit_vectors(values, 2)
    assert out.dtype == np.float32 and out.shape == (8, 2)
    assert reasons == [None, deadletter.ZERO_NORM, deadletter.NO_EMBEDDING, deadletter.DIM_MISMATCH, None,
                       deadletter.NOT_NUMERIC, deadletter.NON_FINITE, None]
    np.testing.assert_allclose(out, [[0.6, 0.8], [0, 0], [0, 0], [0, 0], [0, 1], [0, 0], [0, 0], [-1, 0]], rtol=1e-7)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_unit_vectors_of_tiny_or_huge_finite_values_are_unit_rows_or_unusable():
    out, reasons = unit_vectors([[1e-200, 0.0], [1e200, 1e200]], 2)
    for row, reason in zip(out, reasons):
        usable_unit = reason is None and np.isfinite(row).all() and abs(np.linalg.norm(row) - 1.0) < 1e-6
        assert usable_unit or (reason is not None and not row.any())


def test_unit_rows_are_exact_where_the_squared_norm_would_underflow_or_overflow():
    rows = np.array([[3.0, 4.0], [0.0, 0.0], [1e-320, 0.0], [1e-160, 1e-160], [1e200, -1e200]])
    expected = np.array([[0.6, 0.8], [0.0, 0.0], [1.0, 0.0], [2**-0.5, 2**-0.5], [2**-0.5, -(2**-0.5)]])
    assert np.allclose(unit_rows(rows), expected, rtol=1e-15, atol=0)
    assert np.array_equal(rows[2], [1e-320, 0.0])  # a copy: the input is left alone
    assert unit_rows(np.zeros((0, 3))).shape == (0, 3)


def test_unit_vectors_of_nothing():
    out, reasons = unit_vectors([], 5)
    assert out.shape == (0, 5) and reasons == []


def test_mode_width_is_the_most_frequent_ties_to_the_smaller():
    assert mode_width({256: 3, 128: 5, 64: 1}) == 128
    assert mode_width({256: 4, 128: 4, 512: 4}) == 128
    assert mode_width({7: 1}) == 7
    assert mode_width({}) is None


def test_width_of_a_usable_value_else_none():
    assert width_of([1.0, 2.0, 3.0]) == 3
    assert width_of(np.ones(4, "<f4").tobytes()) == 4
    assert width_of([0.0, 0.0]) is None  # unusable: zero norm
    assert width_of(None) is None and width_of("abc") is None
