"""Which series an adapted model was fitted to, so that it is never used on another one without saying so.

The card keeps the input's file name and a hash of its voxels (no header, no tags, no patient data).
"""
from __future__ import annotations

import hashlib

import numpy as np

from ..models.model_files import ModelCard

__all__ = ["voxels_sha256", "fitted_to", "other_series_note"]


def voxels_sha256(array: np.ndarray) -> str:
    """sha256 of the voxel values as float32 in C order, with the shape (the same voxels, the same hash)."""
    values = np.ascontiguousarray(array, dtype=np.float32)
    digest = hashlib.sha256(str(values.shape).encode())
    digest.update(values.tobytes())
    return digest.hexdigest()


def fitted_to(card: ModelCard) -> tuple[str, str] | None:
    """``(file name, voxels sha256)`` of the series an adapted model was fitted to; None for other models."""
    adaptation = card.training.get("adaptation") if isinstance(card.training, dict) else None
    if not isinstance(adaptation, dict) or "input_voxels_sha256" not in adaptation:
        return None
    return str(adaptation.get("input", "")), str(adaptation["input_voxels_sha256"])


def other_series_note(card: ModelCard, array: np.ndarray) -> str | None:
    """A note when ``card`` is an adapted model fitted to a series other than ``array``; else None."""
    fitted = fitted_to(card)
    if fitted is None or fitted[1] == voxels_sha256(array):
        return None
    return (f"model {card.name} was fitted to another series ({fitted[0]}); on this one it is a generic model at "
            "best: adapt it to this scan for a fitted one")
