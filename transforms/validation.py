"""Argument checks shared by the method configs: each raises ValueError quoting the value and the allowed range."""

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
