"""The training loop: batches → mode step → logs, validation, checkpoints; stops cleanly on request.

Stopping (Ctrl-C, SIGTERM from a scheduler or torchrun, ``--stop-at``, ``--time-limit``) happens between
steps: the checkpoint is written at the step reached and ``--resume`` continues from there exactly. Under
torchrun the decision is shared every step, so all processes stop at the same step.
"""
from __future__ import annotations

import hashlib
import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from MedicalDenoiseLib.models.networks import NetworkConfig, build_network

from .batches import BatchMaker, BatchStream
from .checkpoint import BEST, CHECKPOINT, capture_rng, restore_rng, save_checkpoint
from .config import config_to_dict
from .distributed import DistributedContext
from .errors import NonFiniteLossError, RunFolderError
from .init_model import initial_network
from .modes import Runtime, batch_source, build_mode
from .patches import check_patch_size
from .run_log import RunLog
from .run_setup import RunOptions, configure_torch, load_data, resolve_run, write_config
from .validation import Validator

__all__ = ["train"]


class _StopRequest:
    """Turns the first Ctrl-C / SIGTERM into "stop after this step"; a second Ctrl-C aborts at once."""

    def __init__(self, say) -> None:
        self.requested = False
        self._say = say
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:  # noqa: ARG002 - signal handler signature
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self._say("stopping after this step and writing a checkpoint (Ctrl-C again aborts without one)")

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _weights_digest(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _improves(values: dict[str, float], best: dict[str, Any], name: str, higher_better: bool) -> bool:
    if name not in best:
        return True
    return values[name] > best[name] if higher_better else values[name] < best[name]


def _amp_dtype(enabled: bool, device: torch.device) -> torch.dtype | None:
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def train(options: RunOptions, ctx: DistributedContext) -> dict[str, Any]:
    """Runs (or continues) one training run; returns its summary (also written to ``summary.json``).

    Raises:
        TrainingError and the library's MedicalDenoiseError subclasses for anything the user can fix.
    """
    def say(text: str) -> None:
        if ctx.is_main:
            print(text, flush=True)

    config, state, data_dir = resolve_run(options, say)
    out = options.out
    found = ctx.gather(state["step"] if state else None)
    if len(set(found)) > 1:
        raise RunFolderError(f"--out {out}: the processes found different runs there (steps {found}); with several "
                             "nodes --out must be a folder they all share")
    threads = configure_torch(config, ctx.device, ctx.local_world_size)
    if state is not None:
        network_config = NetworkConfig.from_dict(state["network_config"])
        network, init_info = build_network(network_config), state.get("init_info", {})
        network.load_state_dict(state["network"], strict=True)
    else:
        network, network_config, init_info = initial_network(config)
        if init_info:
            say(f"fine-tuning {init_info['init_name']} ({network_config.architecture}, "
                f"sha256 {init_info['init_sha256'][:12]}…)")
    m = network_config.size_multiple
    source = batch_source(config)
    multiples = (m, 2 * m, 2 * m) if source == "self-supervised" else (m, m, m)
    why = "network.size_multiple" + (", doubled in-plane for neighbour sub-sampling" if source == "self-supervised" else "")
    check_patch_size(config.data.patch_size, multiples, why)
    data = load_data(config, data_dir, state["split"] if state else None, say)
    maker = BatchMaker(source, data.train, config, multiples)
    if maker.sampler.skipped:
        say(f"note: data.patch_size {list(config.data.patch_size)} does not fit in-plane in {len(maker.sampler.skipped)} "
            f"volume(s), left out of training: {', '.join(maker.sampler.skipped[:5])}")
    validator = Validator(data.validation, source, config, multiples) if ctx.is_main and data.validation else None
    if validator is not None and validator.empty:
        say(f"note: the validation volumes are smaller than the network's size multiple ({m}): no validation")
        validator = None
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_config(config, out)

    runtime = Runtime(ctx.device, _amp_dtype(config.run.amp, ctx.device))
    network.to(ctx.device)
    progress_step = {"step": state["step"] if state else 0, "checkpoint": state["step"] if state else None}

    def guard(loss: torch.Tensor, what: str) -> None:
        bad = ctx.any_true(not bool(torch.isfinite(loss).item()))
        if bad:
            last = progress_step["checkpoint"]
            kept = f"the checkpoint at step {last} is intact" if last is not None else "no checkpoint was written"
            raise NonFiniteLossError(
                f"step {progress_step['step'] + 1}: {what} is {loss.item()} (not finite) in at least one process; "
                f"stopping; {kept}; lower optim.lr (now {config.optim.lr:g}) or check the data, then --resume")

    mode = build_mode(config, network, runtime, ctx.wrap, guard)
    rng = np.random.default_rng([config.seed, ctx.rank])
    metrics: dict[str, Any] = {"last": {}, "best": {}}
    running: dict[str, float] = {}
    elapsed_before = 0.0
    if state is not None:
        mode.load_state_dict(state["mode"])
        rank_states = state["rng"]
        if len(rank_states) == ctx.world_size:
            restore_rng(rank_states[ctx.rank], rng)
        else:
            say(f"note: the run was saved with {len(rank_states)} process(es), resumed with {ctx.world_size}: "
                "patches from here on differ from an uninterrupted run")
            rng = np.random.default_rng([config.seed, ctx.rank, state["step"]])
        metrics, running, elapsed_before = state["metrics"], state["running"], state["elapsed"]
        say(f"resumed at step {state['step']} of {config.max_steps}")

    prefetch = config.run.prefetch if config.run.prefetch >= 0 else (2 if ctx.device.type == "cuda" else 0)
    step = state["step"] if state else 0
    last_rng = rng.bit_generator.state
    best_name = validator.best_metric[0] if validator else ""
    columns = ["time_s", "lr", *mode.loss_names, "patches_per_s", "mvoxels_per_s"]
    columns += validator.metric_names(config.validation.sigmas) if validator else []
    log = RunLog(out, columns, step, config.max_steps, state is not None, options.progress) if ctx.is_main else None
    say(f"{config.mode} training of a {network_config.architecture} on {ctx.device} ({ctx.world_size} process(es), "
        f"{threads} thread(s) each{', ' + str(runtime.amp_dtype).replace('torch.', '') if runtime.amp_dtype else ''}), "
        f"steps {step} → {config.max_steps}, batch {config.data.batch_size} × {list(config.data.patch_size)}")

    def described(at: int) -> dict[str, Any]:
        """What export needs besides the weights: config, network, data, hardware, metrics."""
        volumes = data.train + data.validation
        return {"step": at, "config": config_to_dict(config), "network_config": network_config.to_dict(),
                "split": data.split, "init_info": init_info, "metrics": metrics,
                "modalities": {v.name: v.modality for v in volumes},
                "noise_levels": {v.name: v.noise_level for v in volumes},
                "world_size": ctx.world_size, "device": ctx.device.type}

    def checkpoint(at: int) -> None:
        rng_states = ctx.gather(capture_rng(last_rng))
        if ctx.is_main:
            save_checkpoint(out / CHECKPOINT, {
                **described(at), "network": mode.denoiser.state_dict(), "mode": mode.state_dict(), "rng": rng_states,
                "data_dir": str(Path(data_dir).resolve()), "running": running,
                "elapsed": elapsed_before + time.perf_counter() - started,
            })
        progress_step["checkpoint"] = at

    started = time.perf_counter()
    window = {"t": started, "steps": 0, "patches": 0, "voxels": 0}
    sums: dict[str, float] = {}  # losses summed since the last log row: rows hold the mean over their steps
    stream = BatchStream(maker, rng, prefetch)
    reason = "finished" if step < config.max_steps else "nothing to do"
    try:
        with _StopRequest(say) as stop_request:
            while step < config.max_steps:
                batch = stream.next()
                losses = mode.train_step(batch)
                step += 1
                progress_step["step"] = step
                last_rng = batch.rng_state
                for key, value in losses.items():
                    running[key] = value if key not in running else 0.95 * running[key] + 0.05 * value
                    sums[key] = sums.get(key, 0.0) + value
                window["steps"] += 1
                window["patches"] += len(batch.noisy) * ctx.world_size
                window["voxels"] += batch.voxels * ctx.world_size
                out_of_time = options.time_limit is not None and time.perf_counter() - started > 60 * options.time_limit
                stop = ctx.any_true(stop_request.requested or out_of_time or step == options.stop_at)
                if stop:
                    reason = "interrupted" if stop_request.requested else ("time limit" if out_of_time else "stop-at")
                seconds = max(time.perf_counter() - window["t"], 1e-9)
                if log is not None:
                    log.advance(1, {"loss": f"{running['loss']:.4g}", "lr": f"{mode.optimisation.lr:.2e}",
                                    "patch/s": f"{window['patches'] / seconds:.1f}"})
                final = step == config.max_steps or stop
                validate = validator is not None and (step == config.max_steps or (
                    config.validation.every and step % config.validation.every == 0))
                if log is not None and (step % config.run.log_every == 0 or final or validate):
                    row: dict[str, Any] = {"time_s": round(elapsed_before + time.perf_counter() - started, 1),
                                           "lr": mode.optimisation.lr,
                                           **{k: v / window["steps"] for k, v in sums.items()},
                                           "patches_per_s": window["patches"] / seconds,
                                           "mvoxels_per_s": window["voxels"] / seconds / 1e6}
                    if validate:
                        values = validator(mode.denoiser, runtime)
                        metrics["last"] = {"step": step, **values}
                        if _improves(values, metrics["best"], *validator.best_metric):
                            metrics["best"] = {"step": step, **values}
                            save_checkpoint(out / BEST, {**described(step), "network": mode.denoiser.state_dict()})
                        row.update(values)
                    log.row(step, row)
                    window.update(t=time.perf_counter(), steps=0, patches=0, voxels=0)
                    sums.clear()
                if step % config.run.checkpoint_every == 0 or final:
                    checkpoint(step)
                if stop:
                    break
    finally:
        stream.close()
        if log is not None:
            log.close()

    digests = ctx.gather(_weights_digest(mode.denoiser))
    summary = {
        "step": step, "max_steps": config.max_steps, "stopped": reason, "mode": config.mode,
        "seconds": round(elapsed_before + time.perf_counter() - started, 1), "world_size": ctx.world_size,
        "weights_sha256": digests, "metrics": metrics, "device": str(ctx.device),
    }
    if ctx.is_main:
        if len(set(digests)) > 1:
            say("warning: the processes ended with different weights; the checkpoint holds rank 0's")
        tmp = out / ".summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2), encoding="utf-8")
        tmp.replace(out / "summary.json")
        if reason == "finished":
            best = metrics.get("best", {})
            shown = f"; best {best_name} {best[best_name]:.4g} at step {best['step']}" if best_name in best else ""
            say(f"done: step {step} in {summary['seconds']:.0f} s{shown}; export with: "
                f"python -m training.export {out} --out MODEL.safetensors")
        elif reason == "nothing to do":
            say(f"the run is already at step {step} of {config.max_steps}; raise --max-steps to train further")
        else:
            say(f"stopped ({reason}) at step {step}; checkpoint written; continue with --resume")
    return summary
