"""A noise model whose parameters are drawn anew on every call, for training (the random counterpart of a
fixed-parameter model, as TorchIO's ``RandomNoise`` is of its noise transform)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from .parameter_ranges import draw_parameters
from .realisation import NoiseContext, NoiseRealisation, realise

__all__ = ["RandomNoiseModel"]


@dataclass(frozen=True)
class RandomNoiseModel:
    """Draws the parameters of ``model`` from ``ranges`` on each call, then runs it.

    Attributes:
        model: the fixed-parameter model class (a dataclass), called with the drawn parameters.
        ranges: parameter name → :class:`~MedicalDenoiseLib.noise.parameter_ranges.ParameterRange`, or a plain
            value to hold that parameter fixed. Parameters not named keep the model's defaults.
        name: the noise kind, recorded in the realisation's parameters.
    """

    model: Callable[..., Any]
    ranges: Mapping[str, Any]
    name: str = ""

    def __post_init__(self) -> None:
        accepted = {f.name for f in dataclasses.fields(self.model)} if dataclasses.is_dataclass(self.model) else None
        if accepted is not None:
            unknown = sorted(set(self.ranges) - accepted)
            if unknown:
                raise ValueError(f"ranges of {self.name or self.model.__name__} name unknown parameters {unknown}; "
                                 f"valid: {', '.join(sorted(accepted))}")
        object.__setattr__(self, "ranges", dict(self.ranges))

    def draw(self, rng: np.random.Generator) -> Any:
        """A fixed-parameter model with freshly drawn parameters."""
        return self.model(**draw_parameters(self.ranges, rng))

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The noisy image (float32), with parameters drawn from ``rng`` first."""
        return self.simulate(image, rng).noisy

    def simulate(self, image: np.ndarray, rng: np.random.Generator,
                 context: NoiseContext | None = None) -> NoiseRealisation:
        """Noisy image, clean target and the parameters drawn (plus ``kind``)."""
        realisation = realise(self.draw(rng), image, rng, context)
        params = {"kind": self.name, **realisation.params}
        return dataclasses.replace(realisation, params=params)
