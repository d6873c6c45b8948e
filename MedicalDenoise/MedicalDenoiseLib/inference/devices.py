"""Choosing the compute device, and describing what this machine has."""
from __future__ import annotations

import torch

from ..errors import DeviceError

__all__ = ["DEVICE_CHOICES", "resolve_device", "device_for_local_rank", "describe_devices"]

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def resolve_device(choice: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; an explicit choice must be available.

    Raises:
        DeviceError: for an unknown choice or a device this machine does not have.
    """
    choice = (choice or "auto").lower()
    if choice not in DEVICE_CHOICES and not choice.startswith("cuda:"):
        raise DeviceError(f"device must be one of {', '.join(DEVICE_CHOICES)} (or cuda:N), got {choice!r}")
    if choice == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if choice.startswith("cuda"):
        if not torch.cuda.is_available():
            built = "with" if torch.version.cuda else "without"
            raise DeviceError(
                f"device {choice!r}: CUDA is not available (torch {torch.__version__} built {built} CUDA, "
                f"{torch.cuda.device_count()} GPUs visible); use --device cpu or auto"
            )
        return torch.device(choice)
    if choice == "mps" and not _mps_available():
        raise DeviceError("device 'mps': Apple Metal is not available on this machine; use --device cpu or auto")
    return torch.device(choice)


def device_for_local_rank(choice: str, local_rank: int) -> str:
    """The device choice for process ``local_rank`` of several on one machine (as torchrun numbers them).

    With ``auto`` or ``cuda`` and CUDA present each process gets its own GPU, ``cuda:LOCAL_RANK``, so they
    never share one; any other choice (the CPU, MPS, an explicit ``cuda:N``) is kept as given.

    Raises:
        DeviceError: when there are fewer GPUs on this machine than processes asking for one.
    """
    choice = (choice or "auto").lower()
    if choice not in ("auto", "cuda") or not torch.cuda.is_available():
        return choice
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise DeviceError(f"process {local_rank} on this machine needs a GPU of its own, but only {count} are "
                          f"visible; start at most {count} processes per machine (--nproc-per-node {count}) "
                          "or use --device cpu")
    return f"cuda:{local_rank}"


def describe_devices() -> list[str]:
    """One line per usable device, e.g. ``cuda:0 NVIDIA RTX 4090 (24.0 GB)``, the CPU last."""
    lines = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            lines.append(f"cuda:{i} {props.name} ({props.total_memory / 2**30:.1f} GB)")
    if _mps_available():
        lines.append("mps Apple Metal")
    threads = torch.get_num_threads()
    lines.append(f"cpu ({threads} thread{'s' if threads != 1 else ''})")
    return lines
