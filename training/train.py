"""Fine-tune or train a denoiser on your own volumes.

    python -m training.train --config training/configs/autoencoder.yaml --data DIR \\
        --mode synthetic|paired|self-supervised|gan --max-steps N --out RUN_DIR [--init MODEL] [--resume]

Flags override the config file. Several GPUs or nodes: ``torchrun --nproc_per_node=N -m training.train ...``.
Ctrl-C stops after the current step with a checkpoint; ``--resume`` continues exactly. Export the result
with ``python -m training.export RUN_DIR --out MODEL.safetensors``. See training/README.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from MedicalDenoiseLib.errors import MedicalDenoiseError

from .config import MODES, load_config
from .distributed import init_distributed
from .run_log import PROGRESS_MODES
from .run_setup import RunOptions
from .trainer import train

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--config", type=Path, help="YAML config (default: built-in defaults; see training/configs/)")
    p.add_argument("--data", type=Path, help="folder of volumes (paired: with noisy/ and clean/ sub-folders)")
    p.add_argument("--out", type=Path, required=True, help="run folder: checkpoints, logs, config")
    p.add_argument("--mode", help=f"one of {', '.join(MODES)} (overrides the config)")
    p.add_argument("--max-steps", type=int, help="optimisation steps; the learning-rate schedule ends here")
    p.add_argument("--init", help="shipped model name or model file to fine-tune from")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--seed", type=int, help="random seed (overrides the config)")
    p.add_argument("--name", help="the exported model's name (overrides the config)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="overrides run.device")
    p.add_argument("--stop-at", type=int, metavar="STEP", help="checkpoint and stop at this step (resume later)")
    p.add_argument("--time-limit", type=float, metavar="MINUTES", help="checkpoint and stop after this long")
    p.add_argument("--progress", default="auto", choices=PROGRESS_MODES, help="bar, log lines, none (default: auto)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _options(args: argparse.Namespace) -> RunOptions:
    config = load_config(args.config)
    overrides = {k: v for k, v in (("mode", args.mode), ("max_steps", args.max_steps), ("init", args.init),
                                   ("seed", args.seed), ("name", args.name)) if v is not None}
    config = config.with_overrides(**overrides)
    if args.device:
        config = config.with_overrides(run=type(config.run)(**{**config.run.__dict__, "device": args.device}))
    return RunOptions(config=config, out=args.out, data=args.data, resume=args.resume, overrides=overrides,
                      config_given=args.config is not None, stop_at=args.stop_at, time_limit=args.time_limit,
                      progress=args.progress)


def main(argv: list[str] | None = None) -> int:
    """Runs the command; returns the exit code (0 done or stopped as asked, 1 error, 130 interrupted)."""
    for stream in (sys.stdout, sys.stderr):
        # Messages hold ×, → or …: never crash on a terminal or pipe that cannot show them.
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args = build_parser().parse_args(argv)
    ctx = None
    # Called in-process (tests, notebooks): leave torch's global settings as they were found.
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        options = _options(args)
        ctx = init_distributed(options.config.run.device)
        summary = train(options, ctx)
        return 130 if summary["stopped"] == "interrupted" else 0
    except KeyboardInterrupt:
        print("training: aborted; the last checkpoint written is intact", file=sys.stderr)
        return 130
    except MedicalDenoiseError as exc:  # TrainingError, InputError, ModelFileError, DeviceError ...
        if args.debug:
            raise
        prefix = f"[rank {ctx.rank}] " if ctx is not None and ctx.enabled else ""
        print(f"training: error: {prefix}{exc}", file=sys.stderr)
        return 1
    except (MemoryError, torch.cuda.OutOfMemoryError):
        if args.debug:
            raise
        print("training: error: out of memory; lower data.batch_size or data.patch_size", file=sys.stderr)
        return 1
    finally:
        if ctx is not None:
            ctx.shutdown()
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


if __name__ == "__main__":
    sys.exit(main())
