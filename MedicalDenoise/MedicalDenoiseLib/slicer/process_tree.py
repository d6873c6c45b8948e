"""Starting a child process so that it can be stopped with everything it started, on every platform.

Slicer's ``PythonSlicer`` is a launcher: it starts the real interpreter as its own child and forwards no
signal, so stopping only the launcher would leave the denoising running. On POSIX the child gets a session
(and process group) of its own and the whole group is signalled; on Windows ``taskkill /T`` ends the tree.
Windows children are also started without a console window (``PythonSlicer.exe`` is a console program).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["CREATE_NO_WINDOW", "is_windows", "popen_options", "stop_process_tree"]

_KILL_WAIT = 5.0  # seconds; a killed process that outlives this is stuck in the kernel (e.g. a hung driver)

# subprocess.CREATE_NO_WINDOW exists only on Windows; the value is Windows' own.
CREATE_NO_WINDOW = getattr(subprocess, "CREATE_NO_WINDOW", 0x08000000)


def is_windows() -> bool:
    return sys.platform == "win32"


def popen_options() -> dict:
    """Keyword arguments for ``subprocess.Popen`` that make the child's whole tree stoppable."""
    if is_windows():
        return {"creationflags": CREATE_NO_WINDOW}
    return {"start_new_session": True}  # the child leads a new process group, whose id is its pid


def stop_process_tree(process: subprocess.Popen, grace: float) -> None:
    """Stops ``process`` and every process it started, and reaps ``process``.

    POSIX: SIGTERM to the group (the command line then exits cleanly, writing nothing), SIGKILL to what is
    left after ``grace`` seconds. Windows: ``taskkill /T /F``, which has no gentle form for console-less
    processes.
    """
    if is_windows():
        subprocess.run(["taskkill", "/T", "/F", "/PID", str(process.pid)], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, creationflags=CREATE_NO_WINDOW, check=False)
        process.wait()
        return
    group = process.pid
    _signal_group(group, signal.SIGTERM)
    if not _wait_until_gone(process, group, grace):
        _signal_group(group, signal.SIGKILL)
        _wait_until_gone(process, group, _KILL_WAIT)  # SIGKILL is delivered at once, acted on a moment later
    process.wait()


def _wait_until_gone(process: subprocess.Popen, group: int, seconds: float) -> bool:
    """Waits up to ``seconds`` for every member of ``group`` to end; True when they have."""
    deadline = time.monotonic() + seconds
    while True:
        process.poll()  # reap the launcher; the group id stays reserved while any member lives
        if not _group_has_live_members(group):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def _signal_group(group: int, signum: int) -> None:
    try:
        os.killpg(group, signum)
    except (ProcessLookupError, PermissionError):
        pass  # already gone (PermissionError: macOS for a group of zombies)


def _group_has_live_members(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    # Exited members stay in the group as zombies until their new parent reaps them, which some init
    # processes never do: count only members still running.
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == group and fields[0] not in ("Z", "X"):
            return True
    return False
