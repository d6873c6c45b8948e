"""Stopping a run between steps: the first Ctrl-C or SIGTERM asks for a stop, a second Ctrl-C aborts at once."""
from __future__ import annotations

import signal
import threading
from typing import Any, Callable

__all__ = ["StopRequest"]


class StopRequest:
    """Turns the first Ctrl-C / SIGTERM into "stop after this step"; a second Ctrl-C aborts at once.

    Use it as a context manager around the training loop and read :attr:`requested` after each step. The
    previous handlers come back on exit. Outside the main thread (where Python forbids signal handlers)
    it only ever reports False.

    Args:
        say: prints a line for the user (rank 0's printer under torchrun).
    """

    def __init__(self, say: Callable[[str], None]) -> None:
        self.requested = False
        self._say = say
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:  # noqa: ARG002 - signal handler signature
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self._say("stopping after this step and writing a checkpoint (Ctrl-C again aborts without one)")

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
