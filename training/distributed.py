"""Several processes with DistributedDataParallel, as ``torchrun`` starts them (one per GPU, or CPU
processes with the gloo backend); a single process when started plainly.

Every process loads the data and draws its own patches (its generator seeded with the seed and its rank);
gradients are averaged by DDP, so the weights stay identical everywhere. Rank 0 validates, logs and writes
checkpoints; the other ranks hand it their random states so a resumed run continues exactly.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from MedicalDenoiseLib.errors import DeviceError

__all__ = ["DistributedContext", "init_distributed"]


@dataclass
class DistributedContext:
    """This process's place in the run.

    Attributes:
        rank, world_size, local_rank, local_world_size: as torchrun sets them (0, 1, 0, 1 when plain).
        device: the device this process trains on.
    """

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` in DistributedDataParallel when there are several processes."""
        if not self.enabled:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=ids)

    def any_true(self, flag: bool) -> bool:
        """True when ``flag`` is true in any process (a collective: every process must call it)."""
        if not self.enabled:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj``, in rank order (a collective)."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def shutdown(self) -> None:
        if self.enabled and dist.is_initialized():
            # Every rank reaches this point before the group goes: a rank that tears gloo down while
            # another still talks to it aborts ("terminate called without an active exception").
            dist.barrier()
            dist.destroy_process_group()


def _pick_device(choice: str, local_rank: int) -> torch.device:
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceError("run.device is 'cuda' but no CUDA device is available; use --device cpu or auto")
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise DeviceError(f"process {local_rank} on this node needs a GPU but only {count} are visible; "
                          f"lower --nproc_per_node to {count}")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def init_distributed(device_choice: str = "auto") -> DistributedContext:
    """Joins the process group torchrun set up (env:// rendezvous), or runs alone.

    The backend is NCCL on CUDA and gloo on the CPU.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
    device = _pick_device(device_choice, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30), **kwargs)
    return DistributedContext(rank, world_size, local_rank, local_world_size, device)
