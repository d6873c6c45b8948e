"""Checkpoints: everything a run needs to continue exactly, written atomically and read without unpickling.

A checkpoint is a ``torch.save`` dict of tensors and plain Python values (no numpy objects, no classes), so
it loads with ``weights_only=True``. It is written to a temporary file in the run folder, flushed to disk
and renamed over the old one: an interruption at any moment leaves the previous checkpoint intact.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from MedicalDenoiseLib.io.atomic import atomic_file

from .errors import RunFolderError

__all__ = ["FORMAT", "CHECKPOINT", "BEST", "save_checkpoint", "load_checkpoint", "capture_rng", "restore_rng"]

FORMAT = "medical-denoise-training/1"
CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Writes ``state`` to ``path`` atomically (temporary file, fsync, rename)."""
    path = Path(path)
    with atomic_file(path) as temporary:
        torch.save({"format": FORMAT, **state}, temporary)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a checkpoint onto the CPU.

    Raises:
        RunFolderError: a missing, unreadable or foreign file.
    """
    path = Path(path)
    if not path.is_file():
        raise RunFolderError(f"{path}: no checkpoint (train into this folder first)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to read means the same to the user
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RunFolderError(f"{path}: not a readable training checkpoint ({reason[:160]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise RunFolderError(f"{path}: not a MedicalDenoise training checkpoint (format {found!r}, expected {FORMAT!r})")
    return state


def capture_rng(rng_state: dict[str, Any]) -> dict[str, Any]:
    """This process's random state: the batch generator's (as given) and torch's."""
    state: dict[str, Any] = {"numpy": rng_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(state: dict[str, Any], rng: np.random.Generator) -> None:
    """Puts ``state`` (from :func:`capture_rng`) back into ``rng`` and torch."""
    rng.bit_generator.state = state["numpy"]
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
