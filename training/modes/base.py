"""What every training mode shares: where tensors go, mixed precision, and the step interface."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..batches import Batch
from ..optimisation import Optimisation

__all__ = ["Runtime", "Mode", "unwrap", "per_sample_mean"]


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the module itself)."""
    return getattr(module, "module", module)


def per_sample_mean(values: torch.Tensor) -> torch.Tensor:
    """``(B, ...)`` → ``(B,)`` mean over everything but the batch axis."""
    return values.flatten(1).mean(dim=1)


@dataclass(frozen=True)
class Runtime:
    """Where a step runs.

    Attributes:
        device: the compute device.
        amp_dtype: autocast dtype on CUDA (bfloat16 or float16), None for full precision.
    """

    device: torch.device
    amp_dtype: torch.dtype | None = None

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.amp_dtype or torch.bfloat16, enabled=self.amp_dtype is not None)

    def tensor(self, array: np.ndarray, channel: bool = False) -> torch.Tensor:
        """The array as a tensor on the device (same dtype); ``channel``: (B, ...) → (B, 1, ...)."""
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if channel:
            tensor = tensor.unsqueeze(1)
        return tensor.to(self.device, non_blocking=True)


class Mode:
    """A training mode: one optimisation step of the denoiser (and any helper network) per batch.

    Args:
        network: the denoiser (wrapped in DistributedDataParallel under torchrun).
        optimisation: the denoiser's optimiser, schedule and scaler.
        runtime: device and precision.
    """

    #: keys of the dict :meth:`train_step` returns; the first is the headline loss.
    loss_names: tuple[str, ...] = ("loss",)

    def __init__(self, network: nn.Module, optimisation: Optimisation, runtime: Runtime) -> None:
        self.network = network
        self.optimisation = optimisation
        self.runtime = runtime

    @property
    def denoiser(self) -> nn.Module:
        """The bare denoiser, for validation and export."""
        return unwrap(self.network)

    def inputs(self, image: np.ndarray, levels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The network's arguments ``(x, sigma)`` for ``(B, D, H, W)`` images and their ``(B,)`` noise levels."""
        rt = self.runtime
        return rt.tensor(image, channel=True), rt.tensor(levels)

    def train_step(self, batch: Batch) -> dict[str, float]:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {"optimisation": self.optimisation.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimisation.load_state_dict(state["optimisation"])
