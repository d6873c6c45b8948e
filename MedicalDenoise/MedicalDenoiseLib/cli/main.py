"""Entry point: ``medical-denoise {denoise,demo,models,evaluate,serve}``.

Errors a user can cause end with one line on stderr and exit code 1, never a traceback (``--debug``
shows it); an interrupted run exits with 130 and leaves no output behind.
"""
from __future__ import annotations

import argparse
import signal
import sys

from .. import __version__
from ..errors import Cancelled, MedicalDenoiseError
from . import adapt_command, demo_command, denoise_command, evaluate_command, models_command, serve_command

__all__ = ["main", "build_parser"]

_COMMANDS = (denoise_command, adapt_command, demo_command, models_command, evaluate_command, serve_command)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medical-denoise",
        description="Deep-learning denoising of CT, MR and ultrasound volumes; geometry is kept exactly.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in _COMMANDS:
        command.add_parser(sub)
    return parser


def _terminate(signum, frame):  # noqa: ARG001 - signal handler signature
    # Turn SIGTERM (Slicer's Cancel, a batch scheduler) into the same clean stop as Ctrl-C.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):
        # Names and messages may hold σ, ³ or …: never crash on a terminal that cannot show them.
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(args.run(args) or 0)
    except (KeyboardInterrupt, Cancelled):
        print("medical-denoise: cancelled; nothing was written", file=sys.stderr)
        return 130
    except (MedicalDenoiseError, ValueError) as exc:
        # ValueError carries our parameter checks ("overlap must be in [0, 1), got 1.5").
        if args.debug:
            raise
        print(f"medical-denoise: error: {exc}", file=sys.stderr)
        return 1
    except MemoryError:
        if args.debug:
            raise
        print("medical-denoise: error: out of memory; try a smaller --tile or free memory", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
