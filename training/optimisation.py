"""One network's optimiser, learning-rate schedule, loss scaler and gradient clipping, stepped as one."""
from __future__ import annotations

import math
from typing import Callable, Iterable

import torch

from .config import OptimConfig

__all__ = ["Optimisation", "lr_factor"]


def lr_factor(step: int, warmup_steps: int, max_steps: int, min_ratio: float) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine decay from 1 to ``min_ratio`` at ``max_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, max_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class Optimisation:
    """AdamW + warm-up/cosine schedule + (CUDA float16) loss scaling + gradient-norm clipping.

    Args:
        parameters: what to optimise.
        lr: peak learning rate.
        config: warm-up, decay, weight decay and clipping.
        max_steps: where the schedule ends.
        scale_loss: use a ``GradScaler`` (CUDA with float16 autocast).
        guard: called with ``(loss, what)`` before every backward pass; raises to stop a run whose loss is
            not finite (it is collective under torchrun, so every process stops together).
    """

    def __init__(
        self,
        parameters: Iterable[torch.nn.Parameter],
        lr: float,
        config: OptimConfig,
        max_steps: int,
        scale_loss: bool = False,
        guard: Callable[[torch.Tensor, str], None] | None = None,
    ) -> None:
        self.parameters = [p for p in parameters if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.parameters, lr=lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, config.warmup_steps, max_steps, config.min_lr_ratio)
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=scale_loss)
        self.grad_clip = config.grad_clip
        self.guard = guard

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def step(self, loss: torch.Tensor, what: str = "loss") -> None:
        """Back-propagates ``loss`` and takes one optimiser and schedule step."""
        if self.guard is not None:
            self.guard(loss, what)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.parameters, self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
