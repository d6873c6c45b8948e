"""A denoising run in a child process, polled from a GUI timer.

The child is the ``medical-denoise`` command line with ``--progress slicer``. Running it as a separate
process keeps the GUI responsive, lets Cancel stop it at once, and means a crash or out-of-memory kill in
the child cannot take the user's scene with it. Nothing here imports Qt: a timer calls :meth:`poll`.
"""
from __future__ import annotations

import logging
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

from .process_tree import popen_options, stop_process_tree

__all__ = ["BackgroundJob", "findPythonSlicer", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"]

RUNNING, SUCCEEDED, FAILED, CANCELLED = "running", "succeeded", "failed", "cancelled"

_LOG = logging.getLogger(__name__)
_PROGRESS = re.compile(r"<filter-progress>([0-9.eE+-]+)</filter-progress>")
_DONE = re.compile(r" on ([^\s;]+)(?:; (.*?))?\s*$")  # "... on cpu; grain ≈ 2 voxels in-plane: ..."
# The command line's own messages ("medical-denoise denoise: error: ..." is argparse's).
_CLI_MESSAGE = re.compile(r"^medical-denoise(?: \w+)?: (error|note): (.*)$")
# The line a Python traceback ends with: "ModuleNotFoundError: ...", "torch.OutOfMemoryError: ...".
_EXCEPTION = re.compile(r"^(?:[A-Za-z_][\w]*\.)*[A-Za-z_]\w*(?:Error|Exception)(?::|$)")


def findPythonSlicer(searchPath: str | None = None) -> str:
    """The path of Slicer's ``PythonSlicer``: on ``searchPath`` (default PATH) or beside the running Python.

    Raises:
        RuntimeError: when it is in neither place.
    """
    beside = os.path.dirname(sys.executable)
    found = shutil.which("PythonSlicer", path=searchPath) or shutil.which("PythonSlicer", path=beside)
    if not found:
        raise RuntimeError(f"PythonSlicer not found on PATH or in {beside}: denoising runs in Slicer's own "
                           "Python launcher, which every Slicer installation has in its bin folder")
    return found


class BackgroundJob:
    """Starts ``command`` and follows its output.

    Attributes:
        progress: fraction done, 0..1, from the child's ``<filter-progress>`` lines.
        error: why the child failed, once it did: its ``error:`` message, else the last meaningful line
            it wrote to stderr (an exception from a traceback), with its exit status.
        stderr: every line the child wrote to stderr (each is also logged).
        deviceUsed: the device the child reported ("cpu", "cuda", ...).
        grainUsed: what the child said of the noise grain, the sub-grids it denoised on and the refinement.
        adaptationUsed: under ``--adapt``, what the child said of fitting the model to the scan.
        summary: the child's summary line, as printed.
        outputPath: where the child writes its result (read by the caller on success).
        workDir: a temporary folder owned by the job, removed by :meth:`cleanup`.
        request: what the caller started the job for (MedicalDenoiseLogic keeps its nodes' IDs here).
        adaptedModel: what the caller kept of an adapted model the job wrote (set by MedicalDenoiseLogic).
    """

    def __init__(self, command: Sequence[str], outputPath: Path, workDir: Path, env: dict | None = None) -> None:
        self.command = list(command)
        self.outputPath = Path(outputPath)
        self.workDir = Path(workDir)
        self.progress = 0.0
        self.error = ""
        self.deviceUsed = ""
        self.grainUsed = ""
        self.adaptationUsed = ""
        self.summary = ""
        self.messages: list[str] = []
        self.stderr: list[str] = []
        self.request = None
        self.adaptedModel = None
        self._state = RUNNING
        self._started = time.monotonic()
        self._finished: float | None = None
        self._lines: queue.Queue[tuple[str, str]] = queue.Queue()
        self._process = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            text=True, encoding="utf-8", errors="replace", bufsize=1, env=env, **popen_options(),
        )
        self._readers = [
            threading.Thread(target=self._pump, args=(stream, name), daemon=True)
            for stream, name in ((self._process.stdout, "out"), (self._process.stderr, "err"))
        ]
        for reader in self._readers:
            reader.start()

    def _pump(self, stream, name: str) -> None:
        for line in iter(stream.readline, ""):
            self._lines.put((name, line.rstrip("\n")))
        stream.close()

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def elapsedSeconds(self) -> float:
        return (self._finished or time.monotonic()) - self._started

    def _drain(self) -> None:
        while True:
            try:
                name, line = self._lines.get_nowait()
            except queue.Empty:
                return
            if name == "err":
                self.stderr.append(line)
                _LOG.info("medical-denoise: %s", line)
            progress = _PROGRESS.search(line)
            message = _CLI_MESSAGE.match(line) if name == "err" else None
            if progress:
                self.progress = max(self.progress, min(1.0, float(progress.group(1))))
            elif message and message.group(1) == "error":
                self.error = message.group(2)
            elif message:
                self.messages.append(message.group(2))
            elif name == "out" and _DONE.search(line):
                self.summary = line
                self.deviceUsed, rest = _DONE.search(line).group(1, 2)
                self.grainUsed = rest or ""
                if "--adapt" in self.command and "; " in self.grainUsed:
                    # Under --adapt the line ends "; <grain>; <adaptation>" (the grain's own text may hold "; ").
                    self.grainUsed, self.adaptationUsed = self.grainUsed.rsplit("; ", 1)

    def poll(self) -> str:
        """Reads what the child printed and returns the state: running, succeeded, failed or cancelled."""
        self._drain()
        if self._state != RUNNING:
            return self._state
        code = self._process.poll()
        if code is None:
            return RUNNING
        self._finish_reading()
        self._finished = time.monotonic()
        if code == 0 and self.outputPath.exists():
            self._state = SUCCEEDED
        else:
            self._state = FAILED
            self.error = self.error or self._failure(code)
        return self._state

    def _failure(self, code: int) -> str:
        """Why the child ended with ``code`` when it printed no ``error:`` line."""
        if code < 0:
            hint = " (out of memory?)" if -code == getattr(signal, "SIGKILL", 9) else ""
            return f"the denoising process was killed by signal {-code}{hint}"
        lines = [line.strip() for line in self.stderr if line.strip()]
        exceptions = [line for line in lines if _EXCEPTION.match(line)]
        reason = exceptions[-1] if exceptions else (lines[-1] if lines else "")
        return f"the denoising process ended with exit status {code}" + (f": {reason}" if reason else "")

    def _finish_reading(self) -> None:
        # The readers end when the child's pipes close; let them hand over the last lines.
        for reader in self._readers:
            reader.join(timeout=2.0)
        self._drain()

    def wait(self, timeout: float | None = None, interval: float = 0.05) -> str:
        """Polls until the job ends (for scripts and tests; a GUI uses a timer instead)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() == RUNNING:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"denoising did not finish within {timeout} s")
            time.sleep(interval)
        return self._state

    def cancel(self, grace: float = 0.8) -> None:
        """Stops the child and everything it started (see :func:`process_tree.stop_process_tree`)."""
        if self._state != RUNNING:
            return
        stop_process_tree(self._process, grace)
        self._drain()
        self._state = CANCELLED
        self._finished = time.monotonic()

    def cleanup(self) -> None:
        """Removes the job's temporary folder (input copy and result)."""
        if self._state == RUNNING:
            self.cancel()
        shutil.rmtree(self.workDir, ignore_errors=True)
