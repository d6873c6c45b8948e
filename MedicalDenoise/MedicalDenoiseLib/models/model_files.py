"""Model files: safetensors weights with a JSON description in the header. Loading never unpickles.

A model file holds everything needed to use it: the network config, how intensities were normalised in
training, the noise it was trained for, the data it saw and the quality measured. A sha256 of the tensors
is stored beside them, so a damaged or edited file is refused even when it is not in the registry.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from ..errors import ModelFileError
from ..io.atomic import atomic_file
from .networks import NetworkConfig, build_network

__all__ = ["ModelCard", "LoadedModel", "save_model", "load_model", "file_sha256", "tensors_sha256", "FORMAT"]

FORMAT = "medical-denoise-model/1"


@dataclass
class ModelCard:
    """What a model is, what it was trained on and how well it does.

    Attributes:
        name: short identifier, e.g. "autoencoder-v1".
        description: one sentence for a model list.
        network: the network's config.
        noise_kinds: noise models seen in training, e.g. ["gaussian", "rician", "ct"].
        noise_range: (low, high) noise SD in normalised units seen in training.
        modalities: modalities of the training data.
        training_data: the files or data sets trained on.
        training: free-form training facts (steps, patch size, loss, time).
        metrics: measured quality, e.g. {"mni152_t1 gaussian 5%": {"psnr": 35.1, "ssim": 0.96}}.
        intended_use: who should use it for what, and its limits.
        conditioning: what a conditioned network's level channel holds: "noise-sd" (the full noise SD) or
            "fine-scale-sd" (the high-pass estimate that models made before the full-SD estimate were trained
            on; a card without the field is one of those). Ignored by blind networks.
    """

    name: str
    description: str
    network: NetworkConfig
    noise_kinds: list[str] = field(default_factory=list)
    noise_range: tuple[float, float] = (0.0, 0.0)
    modalities: list[str] = field(default_factory=list)
    training_data: list[str] = field(default_factory=list)
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    intended_use: str = "Research use only; not for diagnosis."
    conditioning: str = "fine-scale-sd"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["network"] = self.network.to_dict()
        data["noise_range"] = list(self.noise_range)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelCard":
        data = dict(data)
        data["network"] = NetworkConfig.from_dict(data["network"])
        data["noise_range"] = tuple(data.get("noise_range", (0.0, 0.0)))
        return cls(**data)


@dataclass
class LoadedModel:
    """A network ready for inference (eval mode, on the CPU) and its card.

    ``planar`` is the model's planar twin, if it ships one: the network 2D images run through; ``sublattice``
    its sub-lattice twin, the network that runs on sub-lattices of scanner grain (see ``twins.py``).
    """

    network: nn.Module
    card: ModelCard
    path: Path
    sha256: str
    planar: "LoadedModel | None" = None
    sublattice: "LoadedModel | None" = None


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """Digest of named tensors (names, shapes and bytes), independent of the file that holds them."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_model(path: str | os.PathLike, network: nn.Module, card: ModelCard) -> str:
    """Writes ``network``'s weights and ``card`` atomically; returns the file's sha256."""
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    metadata = {
        "format": FORMAT,
        "card": json.dumps(card.to_dict(), sort_keys=True),
        "weights_sha256": tensors_sha256(tensors),
    }
    with atomic_file(path) as temporary:
        save_file(tensors, str(temporary), metadata=metadata)
    return file_sha256(path)


def load_model(path: str | os.PathLike, expected_sha256: str | None = None) -> LoadedModel:
    """Loads a model file, refusing anything that is not exactly what it says it is.

    Args:
        path: the .safetensors file.
        expected_sha256: the registry's checksum of the whole file, when known.

    Raises:
        ModelFileError: missing, empty, corrupt, checksum mismatch, unknown format, or weights that do not
            fit the network the file describes.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    if path.stat().st_size == 0:
        raise ModelFileError(f"{path}: model file is empty")
    sha = file_sha256(path)
    if expected_sha256 is not None and sha != expected_sha256:
        raise ModelFileError(
            f"{path}: checksum mismatch (sha256 {sha[:12]}…, registry expects {expected_sha256[:12]}…); "
            "the file is damaged or was modified — restore it from the release"
        )
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelFileError(f"{path}: not a readable safetensors model file ({reason})") from None
    if metadata.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a MedicalDenoise model (format {metadata.get('format')!r}, expected {FORMAT!r})")
    if tensors_sha256(tensors) != metadata.get("weights_sha256"):
        raise ModelFileError(f"{path}: weights do not match their stored checksum; the file was modified or damaged")
    try:
        card = ModelCard.from_dict(json.loads(metadata["card"]))
        network = build_network(card.network)
        network.load_state_dict(tensors, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0]
        raise ModelFileError(f"{path}: weights do not fit the network the file describes ({reason})") from None
    network.eval()
    return LoadedModel(network=network, card=card, path=path, sha256=sha)
