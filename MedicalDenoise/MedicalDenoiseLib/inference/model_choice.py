"""Which shipped model denoises a volume when none was asked for: the registry's default for its modality."""
from __future__ import annotations

from ..io.volume import Volume
from ..models.registry import default_model_name
from .normalization import guess_modality

__all__ = ["default_model_for"]


def default_model_for(volume: Volume, modality: str = "auto") -> tuple[str, str]:
    """The default model's name for ``volume`` and why, e.g. ``("autoencoder-v2", "the default for MR")``.

    ``modality``: "auto" (the file's tag, else recognised from the intensities) or the modality to use.
    """
    chosen = guess_modality(volume.array, volume.modality if modality == "auto" else modality)
    return default_model_name(chosen), f"the default for {chosen.upper()}"
