"""Twins: networks that stand in for a model on one kind of input.

A shipped model may carry, in its registry entry, a **planar** twin (a 2D network that 2D images run through)
and a **sub-lattice** twin (a network fine-tuned from it on the sub-lattices of images with scanner grain,
which runs wherever ``--grain`` splits an image; see :mod:`..inference.sublattice`). Each is its own model file
with its own card and sha256. What a file is fit to stand in for is read from its card: its network's
dimensions, and the sub-lattice strides of the training run that made it.
"""
from __future__ import annotations

from .model_files import ModelCard

__all__ = ["TWIN_KINDS", "twin_kind", "trained_strides"]

#: Registry keys of the twins, in the order they are loaded.
TWIN_KINDS = ("planar", "sublattice")


def trained_strides(card: ModelCard) -> tuple[int, int, int]:
    """The sub-lattice strides the model was trained on ((1, 1, 1): whole images)."""
    data = (card.training.get("config") or {}).get("data") or {}
    strides = data.get("sublattice") or (1, 1, 1)
    return tuple(int(s) for s in strides)  # type: ignore[return-value]


def twin_kind(card: ModelCard) -> str | None:
    """"planar", "sublattice", or None for a model that can only stand for itself."""
    if card.network.spatial_dims == 2:
        return "planar"
    if max(trained_strides(card)) > 1:
        return "sublattice"
    return None
