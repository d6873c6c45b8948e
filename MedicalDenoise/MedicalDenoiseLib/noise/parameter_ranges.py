"""Distributions that training draws noise parameters from: uniform, log-uniform, a choice, a per-axis tuple,
or "sometimes" (a drawn value with some probability, a fixed one otherwise).

Each is a small frozen object with ``draw(rng)`` and a one-line ``describe()`` for the documentation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

__all__ = ["ParameterRange", "Uniform", "LogUniform", "Choice", "PerAxis", "Sometimes", "draw_parameters",
           "range_from_spec"]


class ParameterRange:
    """Base class: a distribution over one parameter's values."""

    def draw(self, rng: np.random.Generator) -> Any:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


def _check_bounds(name: str, low: float, high: float, positive: bool = False) -> None:
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise ValueError(f"{name} needs finite low <= high, got ({low}, {high})")
    if positive and low <= 0:
        raise ValueError(f"{name} needs low > 0, got {low}")


@dataclass(frozen=True)
class Uniform(ParameterRange):
    """A float drawn uniformly in ``[low, high]``."""

    low: float
    high: float

    def __post_init__(self) -> None:
        _check_bounds("Uniform", self.low, self.high)

    def draw(self, rng: np.random.Generator) -> float:
        return float(rng.uniform(self.low, self.high))

    def describe(self) -> str:
        return f"uniform {self.low:g}–{self.high:g}"


@dataclass(frozen=True)
class LogUniform(ParameterRange):
    """A float whose logarithm is uniform in ``[log low, log high]``: each factor of 10 drawn equally often,
    so that low noise levels are seen as often as high ones."""

    low: float
    high: float

    def __post_init__(self) -> None:
        _check_bounds("LogUniform", self.low, self.high, positive=True)

    def draw(self, rng: np.random.Generator) -> float:
        return float(np.exp(rng.uniform(np.log(self.low), np.log(self.high))))

    def describe(self) -> str:
        return f"log-uniform {self.low:g}–{self.high:g}"


@dataclass(frozen=True)
class Choice(ParameterRange):
    """One of ``options``, each equally likely (repeat an option to weight it)."""

    options: tuple

    def __post_init__(self) -> None:
        if not self.options:
            raise ValueError("Choice needs at least one option, got ()")
        object.__setattr__(self, "options", tuple(self.options))

    def draw(self, rng: np.random.Generator) -> Any:
        return self.options[int(rng.integers(len(self.options)))]

    def describe(self) -> str:
        return "one of " + ", ".join(str(o) for o in dict.fromkeys(self.options))


@dataclass(frozen=True)
class PerAxis(ParameterRange):
    """A tuple drawn element by element, e.g. an acquired k-space fraction per axis ``(z, y, x)``."""

    ranges: tuple[ParameterRange, ...]

    def draw(self, rng: np.random.Generator) -> tuple:
        return tuple(r.draw(rng) for r in self.ranges)

    def describe(self) -> str:
        return "(" + "; ".join(r.describe() for r in self.ranges) + ")"


@dataclass(frozen=True)
class Sometimes(ParameterRange):
    """With ``probability``, a value drawn from ``drawn``; otherwise ``otherwise``."""

    probability: float
    drawn: ParameterRange
    otherwise: Any

    def __post_init__(self) -> None:
        if not 0 <= self.probability <= 1:
            raise ValueError(f"Sometimes probability must be in [0, 1], got {self.probability}")

    def draw(self, rng: np.random.Generator) -> Any:
        return self.drawn.draw(rng) if rng.random() < self.probability else self.otherwise

    def describe(self) -> str:
        return f"{self.otherwise} or, with probability {self.probability:g}, {self.drawn.describe()}"


def draw_parameters(ranges: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """One value per parameter, in the mapping's order (so a seed always gives the same draw).

    Values that are not a :class:`ParameterRange` are fixed and passed through unchanged.
    """
    return {name: spec.draw(rng) if isinstance(spec, ParameterRange) else spec for name, spec in ranges.items()}


def _is_pair(spec: Any) -> bool:
    return isinstance(spec, (list, tuple)) and len(spec) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in spec)


def range_from_spec(spec: Any) -> Any:
    """A range from its plain (YAML) spelling, for training configs that widen or narrow a kind's ranges.

    - a number, string or boolean: that value, fixed;
    - ``[low, high]``: uniform;
    - ``{"log_uniform": [low, high]}``: log-uniform;
    - ``{"choice": [a, b, ...]}``: one of the options;
    - a list of per-axis specs, e.g. ``[[0.6, 1], [0.3, 1], [0.3, 1]]``: drawn axis by axis.

    Raises:
        ValueError: for any other spelling, naming the valid ones.
    """
    if isinstance(spec, (int, float, str, bool)):
        return spec
    if _is_pair(spec):
        return Uniform(float(spec[0]), float(spec[1]))
    if isinstance(spec, dict) and len(spec) == 1:
        (kind, value), = spec.items()
        if kind == "log_uniform" and _is_pair(value):
            return LogUniform(float(value[0]), float(value[1]))
        if kind == "choice" and isinstance(value, (list, tuple)):
            return Choice(tuple(value))
    if isinstance(spec, (list, tuple)) and spec and all(isinstance(s, (list, tuple, dict)) for s in spec):
        return PerAxis(tuple(range_from_spec(s) for s in spec))
    raise ValueError("a range is a value, [low, high], {log_uniform: [low, high]}, {choice: [...]} or a list of "
                     f"per-axis ranges, got {spec!r}")
