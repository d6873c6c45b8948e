"""Checks of config values that raise :class:`~training.errors.ConfigError` naming the key, the rule and the
value (``optim.lr must be in (0, 1], got 0``). Used by the config dataclasses' ``__post_init__``."""
from __future__ import annotations

import math
from typing import Any

from .errors import ConfigError

__all__ = ["set_field", "check_ints", "check_number", "check_span", "check_choice"]


def set_field(obj: Any, name: str, value: Any) -> None:
    """Sets a field of a frozen dataclass (from its own ``__post_init__``)."""
    object.__setattr__(obj, name, value)


def check_ints(key: str, value: Any, length: int | None = None, minimum: int = 1) -> tuple[int, ...]:
    """``value`` (an int or a list of ints, ``length`` of them when given, each >= ``minimum``) as a tuple."""
    values = value if isinstance(value, (list, tuple)) else [value]
    ok = all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in values)
    if not ok or (length is not None and len(values) != length) or not values:
        count = f"{length} " if length else ""
        raise ConfigError(f"{key} must be {count}integer(s) >= {minimum}, got {value!r}")
    return tuple(values)


def check_number(key: str, value: Any, low: float | None = None, high: float | None = None, open_low: bool = False) -> float:
    """``value`` as a float in ``[low, high]`` (``(low, high]`` with ``open_low``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, got {value!r}")
    too_low = low is not None and (value <= low if open_low else value < low)
    if too_low or (high is not None and value > high):
        bound = f"{'(' if open_low else '['}{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
        raise ConfigError(f"{key} must be in {bound}, got {value!r}")
    return float(value)


def check_span(key: str, value: Any, low: float, open_low: bool = True) -> tuple[float, float]:
    """``value`` as ``(low, high)`` with both above ``low`` and low <= high."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ConfigError(f"{key} must be [low, high], got {value!r}")
    lo, hi = (check_number(key, v, low, open_low=open_low) for v in value)
    if lo > hi:
        raise ConfigError(f"{key} must have low <= high, got {list(value)}")
    return lo, hi


def check_choice(key: str, value: Any, choices: tuple[str, ...]) -> str:
    """``value`` when it is one of ``choices``."""
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}, got {value!r}")
    return value
