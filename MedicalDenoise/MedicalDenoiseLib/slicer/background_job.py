"""A denoising run in a child process, polled from a GUI timer.

The child is the ``medical-denoise`` command line with ``--progress slicer``. Running it as a separate
process keeps the GUI responsive, lets Cancel stop it at once, and means a crash or out-of-memory kill in
the child cannot take the user's scene with it. Nothing here imports Qt: a timer calls :meth:`poll`.
"""
from __future__ import annotations

import queue
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Sequence

__all__ = ["BackgroundJob", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"]

RUNNING, SUCCEEDED, FAILED, CANCELLED = "running", "succeeded", "failed", "cancelled"

_PROGRESS = re.compile(r"<filter-progress>([0-9.eE+-]+)</filter-progress>")
_DONE = re.compile(r" on (\S+)\s*$")


class BackgroundJob:
    """Starts ``command`` and follows its output.

    Attributes:
        progress: fraction done, 0..1, from the child's ``<filter-progress>`` lines.
        error: the child's last ``error:`` line (or its exit status) once it failed.
        deviceUsed: the device the child reported ("cpu", "cuda", ...).
        outputPath, residualPath: where the child writes its result (read by the caller on success).
        workDir: a temporary folder owned by the job, removed by :meth:`cleanup`.
    """

    def __init__(self, command: Sequence[str], outputPath: Path, workDir: Path, env: dict | None = None) -> None:
        self.command = list(command)
        self.outputPath = Path(outputPath)
        self.workDir = Path(workDir)
        self.progress = 0.0
        self.error = ""
        self.deviceUsed = ""
        self.messages: list[str] = []
        self._state = RUNNING
        self._started = time.monotonic()
        self._finished: float | None = None
        self._lines: queue.Queue[tuple[str, str]] = queue.Queue()
        self._process = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            text=True, encoding="utf-8", errors="replace", bufsize=1, env=env,
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
    def elapsedSeconds(self) -> float:
        return (self._finished or time.monotonic()) - self._started

    def _drain(self) -> None:
        while True:
            try:
                name, line = self._lines.get_nowait()
            except queue.Empty:
                return
            match = _PROGRESS.search(line)
            if match:
                self.progress = max(self.progress, min(1.0, float(match.group(1))))
            elif name == "err" and "error: " in line:
                self.error = line.split("error: ", 1)[1]
            elif name == "err" and "note: " in line:
                self.messages.append(line.split("note: ", 1)[1])
            elif name == "out" and _DONE.search(line):
                self.deviceUsed = _DONE.search(line).group(1)

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
            self.error = self.error or f"the denoising process ended with exit status {code}"
        return self._state

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
        """Stops the child: SIGTERM (it exits cleanly, writing nothing), then SIGKILL after ``grace`` s."""
        if self._state != RUNNING:
            return
        self._process.terminate()
        try:
            self._process.wait(grace)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._drain()
        self._state = CANCELLED
        self._finished = time.monotonic()

    def cleanup(self) -> None:
        """Removes the job's temporary folder (input copy and result)."""
        if self._state == RUNNING:
            self.cancel()
        shutil.rmtree(self.workDir, ignore_errors=True)
