"""Stopping the work when the program that started it is gone.

3D Slicer runs the command line through its ``PythonSlicer`` launcher. Cancel, closing the scene and
quitting stop the whole process tree, but a Slicer that crashes or is killed stops nothing: the launcher
waits on, and the denoising would run to the end on a CPU or GPU nobody is watching. Given the pid of the
program to follow, a watcher thread interrupts the main thread once it has ended: the same clean stop as
Ctrl-C or Slicer's Cancel (nothing is written).
"""
from __future__ import annotations

import _thread
import os
import signal
import sys
import threading
import time

from ..errors import Cancelled

__all__ = ["process_alive", "exit_with_parent"]


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` is running (a zombie that was not reaped yet counts as running on POSIX)."""
    if pid <= 0:
        return False
    if sys.platform == "win32":
        return _windows_process_alive(pid)
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _windows_process_alive(pid: int) -> bool:
    # os.kill(pid, 0) would terminate the process on Windows: ask the kernel instead.
    import ctypes

    synchronize, query_limited, wait_timeout = 0x00100000, 0x1000, 0x102
    kernel32 = ctypes.windll.kernel32
    handle = kernel32.OpenProcess(synchronize | query_limited, False, pid)
    if not handle:
        return ctypes.get_last_error() == 5  # access denied: it exists
    try:
        return kernel32.WaitForSingleObject(handle, 0) == wait_timeout
    finally:
        kernel32.CloseHandle(handle)


def exit_with_parent(pid: int, interval: float = 0.5) -> threading.Thread:
    """Starts a daemon thread that interrupts the main thread once process ``pid`` has ended.

    Call it from the main thread: if SIGINT is ignored there, Python's default handler is installed, since
    the interruption is delivered as a simulated SIGINT.

    Raises:
        Cancelled: ``pid`` has already ended.
    """
    if not process_alive(pid):
        raise Cancelled(f"process {pid}, which started this run, has ended")
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) in (
            signal.SIG_IGN, signal.SIG_DFL, None):
        # A process started in the background (``cmd &``, some launchers) ignores SIGINT, and then
        # ``interrupt_main`` does nothing: give the main thread Python's own handler back.
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def watch() -> None:
        while process_alive(pid):
            time.sleep(interval)
        _thread.interrupt_main()

    thread = threading.Thread(target=watch, name=f"exit-with-parent-{pid}", daemon=True)
    thread.start()
    return thread
