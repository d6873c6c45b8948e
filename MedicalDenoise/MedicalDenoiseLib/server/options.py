"""A job's options, from the query string, meaning exactly what the same ``denoise`` options mean.

Only registry names are accepted as models and only the fixed formats below: nothing a client sends is
ever used as a file name or path.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from ..inference.grain import parse_grain
from ..inference.normalization import MODALITIES
from ..inference.strength import parse_strength

__all__ = ["FORMATS", "JobOptions", "OptionError", "parse_options", "one_line"]

# Upload format -> the suffix the server gives its own files. Both are single files: an upload can never
# name another file for the reader to open.
FORMATS = {"nrrd": ".nrrd", "nii.gz": ".nii.gz"}
_NAMES = ("format", "model", "strength", "modality", "grain")


class OptionError(ValueError):
    """A query option that is missing, unknown or invalid; the message is for the client."""


@dataclass(frozen=True)
class JobOptions:
    """What one job was asked for.

    Attributes:
        format: a key of ``FORMATS``; the upload's and the result's format.
        model: a registry name, or None for the default of the image's modality.
        strength: as ``parse_strength`` returns it.
        modality: "auto", "ct", "mr" or "us".
        grain: the ``(z, y, x)`` strides, or None for auto.
    """

    format: str
    model: str | None = None
    strength: str | float = "auto"
    modality: str = "auto"
    grain: tuple[int, int, int] | None = None

    @property
    def suffix(self) -> str:
        return FORMATS[self.format]


def one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line, at most ``limit`` characters: what a client is shown."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _shown(value: str) -> str:
    """A client's value, quoted and cut short, for an error message."""
    return repr(value if len(value) <= 40 else value[:37] + "...")


def parse_options(items: Iterable[tuple[str, str]], models: Sequence[str]) -> JobOptions:
    """The options in the query's ``(name, value)`` pairs; an empty value means the default.

    Raises:
        OptionError: an unknown or repeated name, a missing format, or a value the command line would refuse.
    """
    given: dict[str, str] = {}
    for name, value in items:
        if name not in _NAMES:
            raise OptionError(f"unknown option {_shown(name)}; the options are {', '.join(_NAMES)}")
        if name in given:
            raise OptionError(f"option {name} given twice")
        given[name] = value.strip()
    fmt = given.get("format", "")
    if fmt not in FORMATS:
        what = f"got {_shown(fmt)}" if fmt else "it is missing"
        raise OptionError(f"format must be one of {', '.join(FORMATS)} (the upload's file format); {what}")
    model = given.get("model") or None
    if model is not None and model not in models:
        raise OptionError(f"unknown model {_shown(model)}; available: {', '.join(models)}")
    modality = (given.get("modality") or "auto").lower()
    if modality not in ("auto", *MODALITIES):
        raise OptionError(f"modality must be one of auto, {', '.join(MODALITIES)}; got {_shown(modality)}")
    try:
        strength = parse_strength(given.get("strength") or "auto")
        grain = parse_grain(given.get("grain") or "auto")
    except ValueError as exc:
        raise OptionError(one_line(str(exc))) from None
    return JobOptions(fmt, model, strength, modality, grain)
