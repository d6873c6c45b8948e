"""Everything decided before the first step: the options, the config of a resumed run, the run folder, the
volumes and their split."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from MedicalDenoiseLib.io.atomic import write_text_atomically

from .checkpoint import CHECKPOINT, load_checkpoint
from .config import TrainConfig, config_from_dict, config_to_dict
from .data import find_pairs, find_volumes, split_by_volume
from .errors import ConfigError, DataError, RunFolderError
from .modes import batch_source
from .volumes import TrainingVolume, load_volume

__all__ = ["RunOptions", "PreparedData", "resolve_run", "load_data", "configure_torch", "write_config"]


@dataclass
class RunOptions:
    """One invocation of ``python -m training.train``.

    Attributes:
        config: the config file's values with the command-line flags applied.
        out: the run folder.
        data: the data folder (None on resume: the run's own).
        resume: continue the run in ``out``.
        overrides: the flags given explicitly (name → value), to check against a resumed run's config.
        config_given: whether ``--config`` was given.
        stop_at: checkpoint and stop at this step (the schedule still runs to ``max_steps``).
        time_limit: checkpoint and stop after this many minutes of this invocation.
        progress: "auto", "bar", "log" or "none".
    """

    config: TrainConfig
    out: Path
    data: Path | None = None
    resume: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)
    config_given: bool = False
    stop_at: int | None = None
    time_limit: float | None = None
    progress: str = "auto"


@dataclass
class PreparedData:
    """The loaded volumes, split by volume."""

    folder: Path
    train: list[TrainingVolume]
    validation: list[TrainingVolume]

    @property
    def split(self) -> dict[str, list[str]]:
        return {"train": [v.name for v in self.train], "validation": [v.name for v in self.validation]}


def resolve_run(options: RunOptions, say: Callable[[str], None]) -> tuple[TrainConfig, dict[str, Any] | None, Path]:
    """The config to run, the checkpoint to continue (or None) and the data folder.

    A resumed run keeps its saved config (so it continues exactly); only ``--max-steps`` may change it.

    Raises:
        RunFolderError: ``out`` holds a run and ``--resume`` was not given.
        ConfigError: a flag that contradicts the resumed run, or no ``--data``.
    """
    path = options.out / CHECKPOINT
    if not options.resume:
        if path.exists():
            step = load_checkpoint(path).get("step", "?")
            raise RunFolderError(f"--out {options.out}: already holds a run (step {step}); pass --resume to continue it "
                                 "or choose another --out")
        if options.data is None:
            raise ConfigError("--data is required (the folder of volumes to train on)")
        return options.config, None, options.data
    if not path.exists():
        say(f"note: --resume: no checkpoint in {options.out} yet; starting at step 0")
        return resolve_run(RunOptions(**{**options.__dict__, "resume": False}), say)
    state = load_checkpoint(path)
    saved = config_from_dict(state["config"])
    for key in ("mode", "seed"):
        if key in options.overrides and options.overrides[key] != getattr(saved, key):
            raise ConfigError(f"--{key} {options.overrides[key]} differs from the resumed run's {key} "
                              f"{getattr(saved, key)!r}; a resumed run keeps its config (use another --out for a new run)")
    if options.config_given or "init" in options.overrides:
        say("note: --resume continues with the run's saved config; --config and --init are not used")
    config = saved.with_overrides(max_steps=options.overrides.get("max_steps"))
    data = options.data or Path(state["data_dir"])
    return config, state, data


def load_data(
    config: TrainConfig, folder: Path, split: dict[str, list[str]] | None, say: Callable[[str], None]
) -> PreparedData:
    """Finds, splits and loads the volumes (``split`` is a resumed run's, else it is made from the config).

    Raises:
        DataError: see :func:`~training.data.find_volumes`, :func:`~training.data.find_pairs`, and a resumed
            run's volumes missing from the folder.
    """
    paired = batch_source(config) == "paired"
    sources = (find_pairs if paired else find_volumes)(folder, config.data.exclude, include=config.data.include)
    by_name = {s.name: s for s in sources}
    if split is None:
        held_out = config.validation.volumes
        train, validation = split_by_volume(list(by_name), config.validation.fraction, held_out, config.seed)
    else:
        train, validation = split["train"], split["validation"]
        missing = [n for n in train + validation if n not in by_name]
        if missing:
            raise DataError(f"--data {folder}: lacks {len(missing)} volume(s) the resumed run used: "
                            f"{', '.join(missing[:5])}")
    say(f"{len(train)} training and {len(validation)} validation volume(s) in {folder}")
    loaded = {}
    for name in train + validation:
        volume = load_volume(by_name[name], config.data)
        loaded[name] = volume
        role = "validation" if name in validation else "training"
        size = "×".join(map(str, volume.shape))
        say(f"  {name}: {size} (z×y×x), {volume.modality}, {len(volume.foreground)} foreground samples [{role}]")
    if not validation:
        say("note: no validation volumes (one volume, or validation.fraction 0): no PSNR/SSIM will be reported")
    return PreparedData(folder, [loaded[n] for n in train], [loaded[n] for n in validation])


def configure_torch(config: TrainConfig, device: torch.device, local_world_size: int) -> int:
    """Threads, seeds and determinism for this process; returns the thread count."""
    threads = config.run.threads or max(1, (os.cpu_count() or 1) // max(1, local_world_size))
    torch.set_num_threads(threads)
    torch.manual_seed(config.seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch.backends.cudnn.benchmark = True  # fastest kernels; GPU runs are not bitwise reproducible
    return threads


def write_config(config: TrainConfig, folder: Path) -> None:
    """The resolved config as ``config.yaml`` (or JSON without PyYAML), to rerun or read."""
    data = config_to_dict(config)
    try:
        import yaml

        text = yaml.safe_dump(data, sort_keys=False)
    except ImportError:
        text = json.dumps(data, indent=2)
    write_text_atomically(folder / "config.yaml", text)
