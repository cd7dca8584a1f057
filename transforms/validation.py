"""Argument checks shared by every config: each raises ValueError or TypeError quoting the value and the allowed range."""

import math

import numpy as np


def is_int(value) -> bool:
    """A Python int that is not a bool (numpy integers are refused: config values go into JSON stats)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """A real number (Python or numpy int or float) that is not a bool."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def check_int(name: str, value, low: int, high: int | None = None, allow_none: bool = False) -> None:
    """Raise ValueError unless ``value`` is an int in [low, high] (``high`` None: no upper bound), or None if allowed.

    Example: ``check_int("k", 0, 1)`` raises ``ValueError("k=0; expected an int >= 1")``.
    """
    if value is None and allow_none:
        return
    if not is_int(value) or value < low or (high is not None and value > high):
        allowed = f"an int in [{low}, {high}]" if high is not None else f"an int >= {low}"
        raise ValueError(f"{name}={value!r}; expected {'None or ' if allow_none else ''}{allowed}")


def check_number(name: str, value, low: float = -math.inf, high: float = math.inf, open_low: bool = False,
                 open_high: bool = False) -> float:
    """``value`` as a float after checking it lies in the interval; raises ValueError.

    Example: ``check_number("threshold", 1.0, 0, 1, open_low=True, open_high=True)`` raises
    ``ValueError("threshold=1.0; expected a number in (0, 1)")``.
    """
    inside = is_number(value) and not math.isnan(value)
    if inside:
        inside = (value > low if open_low else value >= low) and (value < high if open_high else value <= high)
    if not inside:
        interval = f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
        raise ValueError(f"{name}={value!r}; expected a number in {interval}")
    return float(value)


def check_choice(name: str, value, allowed) -> None:
    """Raise ValueError unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name}={value!r}; expected one of {', '.join(map(str, allowed))}")


def check_bool(name: str, value) -> None:
    """Raise TypeError unless ``value`` is a bool."""
    if not isinstance(value, bool):
        raise TypeError(f"{name}={value!r}; expected a bool")
