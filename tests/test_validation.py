"""Tests for transforms/validation.py: the argument checks every config uses, and their messages."""

import math
import re

import numpy as np
import pytest

from winnow.transforms.validation import check_bool, check_choice, check_int, check_number, is_int, is_number


def test_is_int_and_is_number_refuse_bools():
    assert is_int(3) and not is_int(True) and not is_int(3.0) and not is_int(np.int64(3))
    assert is_number(3) and is_number(2.5) and is_number(np.int32(1)) and is_number(np.float32(0.5))
    assert not is_number(True) and not is_number("1") and not is_number(None)


def test_check_int_docstring_example_and_bounds():
    with pytest.raises(ValueError, match=re.escape("k=0; expected an int >= 1")):
        check_int("k", 0, 1)
    with pytest.raises(ValueError, match=re.escape("n=11; expected an int in [0, 10]")):
        check_int("n", 11, 0, 10)
    check_int("n", 0, 0, 10)  # both bounds are inclusive
    check_int("n", 10, 0, 10)
    check_int("n", 10**30, 0)  # no upper bound


@pytest.mark.parametrize("value", [True, 2.0, "2", np.int64(2), None])
def test_check_int_refuses_non_ints_quoting_them(value):
    with pytest.raises(ValueError, match=re.escape(f"x={value!r}; expected an int >= 0")):
        check_int("x", value, 0)


def test_check_int_allow_none():
    check_int("dim", None, 1, allow_none=True)
    with pytest.raises(ValueError, match=re.escape("dim=0; expected None or an int >= 1")):
        check_int("dim", 0, 1, allow_none=True)


def test_check_number_docstring_example_and_intervals():
    with pytest.raises(ValueError, match=re.escape("threshold=1.0; expected a number in (0, 1)")):
        check_number("threshold", 1.0, 0, 1, open_low=True, open_high=True)
    with pytest.raises(ValueError, match=re.escape("threshold=0; expected a number in (0, 1)")):
        check_number("threshold", 0, 0, 1, open_low=True, open_high=True)
    assert check_number("d", 0, 0.0, 1.0) == 0.0 and isinstance(check_number("d", 1, 0.0, 1.0), float)
    assert check_number("w", np.float32(0.5)) == 0.5
    with pytest.raises(ValueError, match=re.escape("d=1.5; expected a number in [0, 1]")):
        check_number("d", 1.5, 0.0, 1.0)
    with pytest.raises(ValueError, match=re.escape("t=0.0; expected a number in (0, inf]")):
        check_number("t", 0.0, 0.0, open_low=True)


@pytest.mark.parametrize("value", [math.nan, True, "0.5", None, [0.5]])
def test_check_number_refuses_nan_bools_and_non_numbers(value):
    with pytest.raises(ValueError, match=re.escape(f"w={value!r}; expected a number in [-inf, inf]")):
        check_number("w", value)


def test_check_choice_and_check_bool():
    check_choice("mode", "fast", ("fast", "sha256"))
    with pytest.raises(ValueError, match=re.escape("mode='md5'; expected one of fast, sha256")):
        check_choice("mode", "md5", ("fast", "sha256"))
    check_bool("verify", False)
    with pytest.raises(TypeError, match=re.escape("verify=1; expected a bool")):
        check_bool("verify", 1)
