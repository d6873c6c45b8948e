"""The training loop as one object: :class:`Trainer` sets a run up, takes steps, validates, writes checkpoints
and a summary, and stops cleanly on request.

    summary = Trainer(options, ctx).run()

``run()`` calls :meth:`~Trainer.setup` once, then for each batch :meth:`~Trainer.step`, a shared stop decision,
:meth:`~Trainer.report` (progress, a log row, :meth:`~Trainer.validate` when due) and :meth:`~Trainer.checkpoint`
when due, and finally :meth:`~Trainer.finish`.

Stopping (Ctrl-C, SIGTERM from a scheduler or torchrun, ``--stop-at``, ``--time-limit``) happens between
steps: the checkpoint is written at the step reached and ``--resume`` continues from there exactly. Under
torchrun the decision is shared every step, so all processes stop at the same step. Every collective
(``ctx.gather``, ``ctx.any_true``) is called by every process in the same order; only rank 0 validates, logs
and writes files.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from MedicalDenoiseLib.io.atomic import write_text_atomically
from MedicalDenoiseLib.models.model_files import tensors_sha256
from MedicalDenoiseLib.models.networks import NetworkConfig, build_network

from .batches import Batch, BatchMaker, BatchStream
from .checkpoint import BEST, CHECKPOINT, capture_rng, restore_rng, save_checkpoint
from .conditioning import run_conditioning
from .config import config_to_dict
from .distributed import DistributedContext
from .errors import NonFiniteLossError, RunFolderError
from .init_model import initial_network
from .modes import Runtime, batch_source, build_mode
from .patches import check_patch_size
from .run_log import RunLog
from .run_setup import RunOptions, configure_torch, load_data, resolve_run, write_config
from .stop_request import StopRequest
from .validation import Validator

__all__ = ["Trainer", "train"]

SUMMARY = "summary.json"


def _improves(values: dict[str, float], best: dict[str, Any], name: str, higher_better: bool) -> bool:
    if name not in best:
        return True
    return values[name] > best[name] if higher_better else values[name] < best[name]


def _amp_dtype(enabled: bool, device: torch.device) -> torch.dtype | None:
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@dataclass
class _Window:
    """The steps since the last log row: a row holds the mean of each loss and the throughput over them."""

    started: float
    steps: int = 0
    patches: int = 0
    voxels: int = 0
    sums: dict[str, float] = field(default_factory=dict)

    def add(self, losses: dict[str, float], patches: int, voxels: int) -> None:
        self.steps += 1
        self.patches += patches
        self.voxels += voxels
        for key, value in losses.items():
            self.sums[key] = self.sums.get(key, 0.0) + value

    def seconds(self) -> float:
        return max(time.perf_counter() - self.started, 1e-9)


class Trainer:
    """One training run, or the continuation of one, in this process.

    Args:
        options: the command line's choices: config, folders, ``--resume``, stop conditions, progress.
        ctx: this process's place among torchrun's processes (a plain run is rank 0 of 1).

    After :meth:`setup`: ``config``, ``data``, ``mode`` (the step, holding the network and optimisers),
    ``validator`` (rank 0 with validation volumes, else None), ``log`` (rank 0, else None), ``rng`` (this
    process's batch generator) and ``steps_done``.
    """

    def __init__(self, options: RunOptions, ctx: DistributedContext) -> None:
        self.options = options
        self.ctx = ctx
        self.out = options.out
        self.steps_done = 0
        self.last_checkpoint: int | None = None  # the step of the last checkpoint written, for error messages
        self.metrics: dict[str, Any] = {"last": {}, "best": {}}
        self.running: dict[str, float] = {}  # exponential moving averages of the losses, for the progress bar
        self.elapsed_before = 0.0  # seconds spent by the invocations this one resumes

    def say(self, text: str) -> None:
        """A line for the user, printed by rank 0 only."""
        if self.ctx.is_main:
            print(text, flush=True)

    # -- before the first step -------------------------------------------------------------------------------

    def setup(self) -> None:
        """Config, network, data, batches, validation, mode and log; a resumed run's state put back.

        The order keeps the random streams of a resumed run identical to an uninterrupted one: torch is
        seeded before the network is built and the saved random states are restored after the mode.
        """
        ctx = self.ctx
        self.config, state, self.data_dir = resolve_run(self.options, self.say)
        self._check_same_run(state)
        self.threads = configure_torch(self.config, ctx.device, ctx.local_world_size)
        network = self._network(state)
        self.conditioning = self._conditioning()
        multiples = self._patch_multiples()
        self.data = load_data(self.config, self.data_dir, state["split"] if state else None, self.say)
        self.maker = BatchMaker(batch_source(self.config), self.data.train, self.config, multiples, self.conditioning)
        if self.maker.sampler.skipped:
            skipped = self.maker.sampler.skipped
            self.say(f"note: data.patch_size {list(self.config.data.patch_size)} does not fit in-plane in "
                     f"{len(skipped)} volume(s), left out of training: {', '.join(skipped[:5])}")
        self.validator = self._validator(multiples)
        if ctx.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            write_config(self.config, self.out)
        self.runtime = Runtime(ctx.device, _amp_dtype(self.config.run.amp, ctx.device))
        network.to(ctx.device)
        self.mode = build_mode(self.config, network, self.runtime, ctx.wrap, self._guard)
        self.rng = np.random.default_rng([self.config.seed, ctx.rank])
        if state is not None:
            self._resume(state)
        self.last_rng = self.rng.bit_generator.state  # the state after the last batch used, for checkpoints
        self.log = self._open_log(resumed=state is not None)
        self._announce()
        self.started = time.perf_counter()
        self.window = _Window(self.started)

    def _check_same_run(self, state: dict[str, Any] | None) -> None:
        found = self.ctx.gather(state["step"] if state else None)
        if len(set(found)) > 1:
            raise RunFolderError(f"--out {self.out}: the processes found different runs there (steps {found}); with "
                                 "several nodes --out must be a folder they all share")

    def _network(self, state: dict[str, Any] | None) -> nn.Module:
        """The saved network of a resumed run, else the initial one (random or ``init``)."""
        if state is not None:
            self.network_config = NetworkConfig.from_dict(state["network_config"])
            self.init_info = state.get("init_info", {})
            network = build_network(self.network_config)
            network.load_state_dict(state["network"], strict=True)
            return network
        network, self.network_config, self.init_info = initial_network(self.config)
        if self.init_info:
            self.say(f"fine-tuning {self.init_info['init_name']} ({self.network_config.architecture}, "
                     f"sha256 {self.init_info['init_sha256'][:12]}…)")
        return network

    def _conditioning(self) -> str | None:
        """The level the network is told (:func:`~training.conditioning.run_conditioning`)."""
        return run_conditioning(self.network_config.noise_level_input, self.init_info.get("init_conditioning"),
                                self.config.data.sublattice)

    def _patch_multiples(self) -> tuple[int, int, int]:
        """What each patch extent must be a multiple of (z, y, x); checks ``data.patch_size`` against it."""
        mz, my, mx = self.network_config.size_multiples
        neighbours = batch_source(self.config) == "self-supervised"
        multiples = (mz, 2 * my, 2 * mx) if neighbours else (mz, my, mx)
        why = "network.size_multiple" + (", doubled in-plane for neighbour sub-sampling" if neighbours else "")
        check_patch_size(self.config.data.patch_size, multiples, why)
        return multiples

    def _validator(self, multiples: tuple[int, int, int]) -> Validator | None:
        if not (self.ctx.is_main and self.data.validation):
            return None
        validator = Validator(self.data.validation, batch_source(self.config), self.config, multiples, self.conditioning)
        if validator.empty:
            self.say(f"note: the validation volumes are smaller than the network's size multiple "
                     f"({self.network_config.size_multiple}): no validation")
            return None
        return validator

    def _resume(self, state: dict[str, Any]) -> None:
        """Optimisers, random states, metrics and clock of the checkpoint ``state``."""
        self.mode.load_state_dict(state["mode"])
        rank_states = state["rng"]
        if len(rank_states) == self.ctx.world_size:
            restore_rng(rank_states[self.ctx.rank], self.rng)
        else:
            self.say(f"note: the run was saved with {len(rank_states)} process(es), resumed with {self.ctx.world_size}: "
                     "patches from here on differ from an uninterrupted run")
            self.rng = np.random.default_rng([self.config.seed, self.ctx.rank, state["step"]])
        self.steps_done = self.last_checkpoint = state["step"]
        self.metrics, self.running, self.elapsed_before = state["metrics"], state["running"], state["elapsed"]
        self.say(f"resumed at step {state['step']} of {self.config.max_steps}")

    def _open_log(self, resumed: bool) -> RunLog | None:
        if not self.ctx.is_main:
            return None
        columns = ["time_s", "lr", *self.mode.loss_names, "patches_per_s", "mvoxels_per_s"]
        if self.validator is not None:
            columns += self.validator.metric_names(self.config.validation.sigmas)
        return RunLog(self.out, columns, self.steps_done, self.config.max_steps, resumed, self.options.progress)

    def _announce(self) -> None:
        config, ctx, amp = self.config, self.ctx, self.runtime.amp_dtype
        precision = f", {str(amp).replace('torch.', '')}" if amp else ""
        self.say(f"{config.mode} training of a {self.network_config.architecture} on {ctx.device} ({ctx.world_size} "
                 f"process(es), {self.threads} thread(s) each{precision}), steps {self.steps_done} → {config.max_steps}, "
                 f"batch {config.data.batch_size} × {list(config.data.patch_size)}")

    def _prefetch(self) -> int:
        prefetch = self.config.run.prefetch
        return prefetch if prefetch >= 0 else (2 if self.ctx.device.type == "cuda" else 0)

    # -- the loop ----------------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Sets up, trains to ``max_steps`` or a stop request, and returns the summary (see :meth:`finish`)."""
        self.setup()
        config = self.config
        stream = BatchStream(self.maker, self.rng, self._prefetch())
        reason = "finished" if self.steps_done < config.max_steps else "nothing to do"
        try:
            with StopRequest(self.say) as stop_request:
                while self.steps_done < config.max_steps:
                    self.step(stream.next())
                    stop = self._stop_reason(stop_request)
                    final = stop is not None or self.steps_done == config.max_steps
                    self.report(final)
                    if final or self.steps_done % config.run.checkpoint_every == 0:
                        self.checkpoint()
                    if stop is not None:
                        reason = stop
                        break
        finally:
            stream.close()
            if self.log is not None:
                self.log.close()
        return self.finish(reason)

    def step(self, batch: Batch) -> dict[str, float]:
        """One optimisation step on ``batch``; returns its losses."""
        losses = self.mode.train_step(batch)
        self.steps_done += 1
        self.last_rng = batch.rng_state
        for key, value in losses.items():
            self.running[key] = value if key not in self.running else 0.95 * self.running[key] + 0.05 * value
        world = self.ctx.world_size
        self.window.add(losses, len(batch.noisy) * world, batch.voxels * world)
        return losses

    def _stop_reason(self, stop_request: StopRequest) -> str | None:
        """Why the run stops after this step, or None (a collective: any process's reason stops them all)."""
        limit = self.options.time_limit
        out_of_time = limit is not None and time.perf_counter() - self.started > 60 * limit
        asked = stop_request.requested or out_of_time or self.steps_done == self.options.stop_at
        if not self.ctx.any_true(asked):
            return None
        return "interrupted" if stop_request.requested else ("time limit" if out_of_time else "stop-at")

    def _guard(self, loss: torch.Tensor, what: str) -> None:
        """Stops every process when ``loss`` is not finite in any of them (called before each backward pass)."""
        if not self.ctx.any_true(not bool(torch.isfinite(loss).item())):
            return
        last = self.last_checkpoint
        kept = f"the checkpoint at step {last} is intact" if last is not None else "no checkpoint was written"
        raise NonFiniteLossError(
            f"step {self.steps_done + 1}: {what} is {loss.item()} (not finite) in at least one process; stopping; "
            f"{kept}; lower optim.lr (now {self.config.optim.lr:g}) or check the data, then --resume")

    def _elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started

    # -- what rank 0 reports -----------------------------------------------------------------------------------

    def report(self, final: bool) -> None:
        """Moves the progress bar; writes a log row every ``run.log_every`` steps, at the end, and with each
        validation (every ``validation.every`` steps and at ``max_steps``)."""
        if self.log is None:
            return
        step, config, window = self.steps_done, self.config, self.window
        seconds = window.seconds()
        self.log.advance(1, {"loss": f"{self.running['loss']:.4g}", "lr": f"{self.mode.optimisation.lr:.2e}",
                             "patch/s": f"{window.patches / seconds:.1f}"})
        every = config.validation.every
        validate = self.validator is not None and (step == config.max_steps or (every and step % every == 0))
        if not (step % config.run.log_every == 0 or final or validate):
            return
        row: dict[str, Any] = {"time_s": round(self._elapsed(), 1), "lr": self.mode.optimisation.lr,
                               **{k: v / window.steps for k, v in window.sums.items()},
                               "patches_per_s": window.patches / seconds,
                               "mvoxels_per_s": window.voxels / seconds / 1e6}
        if validate:
            row.update(self.validate())
        self.log.row(step, row)
        self.window = _Window(time.perf_counter())

    def validate(self) -> dict[str, float]:
        """Scores the held-out volumes and writes ``best.pt`` when the score improves (rank 0 only)."""
        assert self.validator is not None
        values = self.validator(self.mode.denoiser, self.runtime)
        self.metrics["last"] = {"step": self.steps_done, **values}
        if _improves(values, self.metrics["best"], *self.validator.best_metric):
            self.metrics["best"] = {"step": self.steps_done, **values}
            save_checkpoint(self.out / BEST, {**self._described(), "network": self.mode.denoiser.state_dict()})
        return values

    def _described(self) -> dict[str, Any]:
        """What export needs besides the weights: config, network, data, hardware, metrics."""
        volumes = self.data.train + self.data.validation
        return {"step": self.steps_done, "config": config_to_dict(self.config),
                "network_config": self.network_config.to_dict(), "split": self.data.split,
                "init_info": self.init_info, "metrics": self.metrics,
                "modalities": {v.name: v.modality for v in volumes},
                "noise_levels": {v.name: v.noise_level for v in volumes},
                "world_size": self.ctx.world_size, "device": self.ctx.device.type}

    def checkpoint(self) -> None:
        """Writes ``checkpoint.pt`` at the step reached: everything ``--resume`` needs to continue exactly.

        A collective: every process hands rank 0 its random state, which rank 0 saves with the rest.
        """
        rng_states = self.ctx.gather(capture_rng(self.last_rng))
        if self.ctx.is_main:
            save_checkpoint(self.out / CHECKPOINT, {
                **self._described(), "network": self.mode.denoiser.state_dict(), "mode": self.mode.state_dict(),
                "rng": rng_states, "data_dir": str(Path(self.data_dir).resolve()), "running": self.running,
                "elapsed": self._elapsed(),
            })
        self.last_checkpoint = self.steps_done

    # -- after the last step -----------------------------------------------------------------------------------

    def finish(self, reason: str) -> dict[str, Any]:
        """The run's summary, also written to ``summary.json``, and a closing line saying what to do next.

        Args:
            reason: "finished", "nothing to do", "interrupted", "time limit" or "stop-at".
        """
        digests = self.ctx.gather(tensors_sha256(self.mode.denoiser.state_dict()))
        summary = {
            "step": self.steps_done, "max_steps": self.config.max_steps, "stopped": reason, "mode": self.config.mode,
            "seconds": round(self._elapsed(), 1), "world_size": self.ctx.world_size,
            "weights_sha256": digests, "metrics": self.metrics, "device": str(self.ctx.device),
        }
        if self.ctx.is_main:
            if len(set(digests)) > 1:
                self.say("warning: the processes ended with different weights; the checkpoint holds rank 0's")
            write_text_atomically(self.out / SUMMARY, json.dumps(summary, indent=2))
            self._closing_message(reason, summary)
        return summary

    def _closing_message(self, reason: str, summary: dict[str, Any]) -> None:
        step = self.steps_done
        if reason == "finished":
            best, name = self.metrics.get("best", {}), self.validator.best_metric[0] if self.validator else ""
            shown = f"; best {name} {best[name]:.4g} at step {best['step']}" if name in best else ""
            self.say(f"done: step {step} in {summary['seconds']:.0f} s{shown}; export with: "
                     f"python -m training.export {self.out} --out MODEL.safetensors")
        elif reason == "nothing to do":
            self.say(f"the run is already at step {step} of {self.config.max_steps}; raise --max-steps to train further")
        else:
            self.say(f"stopped ({reason}) at step {step}; checkpoint written; continue with --resume")


def train(options: RunOptions, ctx: DistributedContext) -> dict[str, Any]:
    """Runs (or continues) one training run; returns its summary (also written to ``summary.json``).

    Raises:
        TrainingError and the library's MedicalDenoiseError subclasses for anything the user can fix.
    """
    return Trainer(options, ctx).run()
