"""The child process behind the Denoise button: stopping its whole process tree, reporting why it crashed,
no console window on Windows, finding PythonSlicer.

Slicer's PythonSlicer is a launcher that starts the real interpreter as its child and forwards no signal;
:func:`write_python_slicer_standin` writes a script that behaves the same way, so these tests (and
test_slicer_logic.py) exercise what cancelling does to the real process tree.
"""
from __future__ import annotations

import io
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from MedicalDenoiseLib.slicer import background_job, process_tree
from MedicalDenoiseLib.slicer.background_job import BackgroundJob, findPythonSlicer

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX process groups; Windows is tested with fakes")

_STANDIN = '''#!{python}
"""Stands in for Slicer's PythonSlicer: starts the interpreter as its child, waits, forwards no signal."""
import os, subprocess, sys, time

def wait_for(path):
    while path and not os.path.exists(path):
        time.sleep(0.02)

wait_for(os.environ.get("STANDIN_LAUNCHER_GATE"))
command = [sys.executable, *sys.argv[1:]]
gate = os.environ.get("STANDIN_CHILD_GATE")
if gate:  # the child holds until the gate opens, then becomes the real command (same pid)
    hold = ("import os, sys, time\\nwhile not os.path.exists(%r): time.sleep(0.02)\\n"
            "os.execv(sys.executable, [sys.executable] + sys.argv[1:])" % gate)
    command = [sys.executable, "-c", hold, *sys.argv[1:]]
child = subprocess.Popen(command)
pid_file = os.environ.get("STANDIN_CHILD_PID")
if pid_file:
    with open(pid_file + ".part", "w") as f:
        f.write(str(child.pid))
    os.replace(pid_file + ".part", pid_file)
sys.exit(child.wait())
'''


def write_python_slicer_standin(folder: Path) -> Path:
    """An executable named PythonSlicer in ``folder`` that behaves like Slicer's launcher (see _STANDIN).

    Environment: STANDIN_LAUNCHER_GATE / STANDIN_CHILD_GATE: files whose creation lets the launcher start
    its child / the child run the command; STANDIN_CHILD_PID: where the launcher writes its child's pid.
    """
    path = Path(folder) / "PythonSlicer"
    path.write_text(_STANDIN.format(python=sys.executable), encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def wait_for_file(path: Path, timeout: float = 60.0) -> str:
    """The text of ``path`` once it exists (a readiness wait, not a timing check)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} was never written"
        time.sleep(0.02)
    return path.read_text()


def is_running(pid: int) -> bool:
    """True while ``pid`` runs; an exited process waiting to be reaped (a zombie) counts as gone."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (macOS): ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def kill_if_running(pid: int) -> None:
    """Leaves nothing behind when a test fails half-way."""
    if is_running(pid):
        os.kill(pid, signal.SIGKILL)


def _looping_grandchild_job(tmp_path: Path, ignore_sigterm: bool) -> tuple[BackgroundJob, int]:
    """A job whose command is the launcher stand-in running a loop that writes its pid, and that pid."""
    launcher = write_python_slicer_standin(tmp_path)
    pid_file = tmp_path / "grandchild.pid"
    loop = textwrap.dedent(f"""
        import os, signal, time
        if {ignore_sigterm}:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        open({str(pid_file)!r} + ".part", "w").write(str(os.getpid()))
        os.replace({str(pid_file)!r} + ".part", {str(pid_file)!r})
        for _ in range(3000):  # at most a minute, should a failing test leave it behind
            time.sleep(0.02)
    """)
    job = BackgroundJob([str(launcher), "-c", loop], tmp_path / "out.nii", tmp_path / "work")
    return job, int(wait_for_file(pid_file))


@posix_only
@pytest.mark.parametrize("ignore_sigterm", [False, True], ids=["exits-on-sigterm", "ignores-sigterm"])
def test_cancel_stops_the_grandchild_the_launcher_started(tmp_path, ignore_sigterm):
    job, grandchild = _looping_grandchild_job(tmp_path, ignore_sigterm)
    try:
        assert is_running(grandchild)
        job.cancel(grace=0.3)
        assert job.poll() == "cancelled"
        assert not is_running(grandchild), "the launcher was stopped but the denoising process kept running"
        assert not is_running(job.pid)
    finally:
        kill_if_running(grandchild)


@posix_only
def test_cleanup_of_a_running_job_stops_its_tree_and_removes_its_folder(tmp_path):
    job, grandchild = _looping_grandchild_job(tmp_path, ignore_sigterm=False)
    job.workDir.mkdir()
    try:
        job.cleanup()
        assert not is_running(grandchild) and not job.workDir.exists()
    finally:
        kill_if_running(grandchild)


def _failed_job(tmp_path: Path, code: str) -> BackgroundJob:
    job = BackgroundJob([sys.executable, "-c", code], tmp_path / "out.nii", tmp_path / "work")
    assert job.wait(timeout=60) == "failed"
    return job


def test_a_crash_reports_the_exception_not_only_the_exit_status(tmp_path, caplog):
    caplog.set_level("INFO", logger=background_job.__name__)
    job = _failed_job(tmp_path, "import sys\nprint('loading the model', file=sys.stderr)\n"
                                "import medical_denoise_no_such_module")
    assert "ModuleNotFoundError: No module named 'medical_denoise_no_such_module'" in job.error
    assert "exit status 1" in job.error
    assert "Traceback (most recent call last):" in job.stderr and "loading the model" in job.stderr
    logged = [r.getMessage() for r in caplog.records if r.name == background_job.__name__]
    assert len(logged) == len(job.stderr) and any("loading the model" in m for m in logged)


def test_a_cuda_error_is_reported_by_its_exception_line_not_the_advice_after_it(tmp_path):
    job = _failed_job(tmp_path, "raise RuntimeError('CUDA error: out of memory\\nCUDA kernel errors might be "
                                "asynchronously reported\\nFor debugging consider passing CUDA_LAUNCH_BLOCKING=1.')")
    assert "RuntimeError: CUDA error: out of memory" in job.error


def test_the_command_lines_own_error_message_wins(tmp_path):
    job = _failed_job(tmp_path, "import sys\nprint('medical-denoise: error: x.nii: no such file', file=sys.stderr)\n"
                                "sys.exit(1)")
    assert job.error == "x.nii: no such file"


@posix_only
def test_a_child_killed_by_a_signal_says_so(tmp_path):
    job = _failed_job(tmp_path, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    assert job.error == "the denoising process was killed by signal 9 (out of memory?)"


class _FakePopen:
    """Records how the child would be started; the child 'exits' at once having printed nothing."""

    calls: list[dict] = []

    def __init__(self, command, **kwargs):
        _FakePopen.calls.append(kwargs)
        self.pid, self.stdout, self.stderr = 4242, io.StringIO(""), io.StringIO("")

    def poll(self):
        return 0

    def wait(self, timeout=None):
        return 0


def test_on_windows_the_child_gets_no_console_window(tmp_path, monkeypatch):
    monkeypatch.setattr(process_tree, "is_windows", lambda: True)
    monkeypatch.setattr(subprocess, "Popen", _FakePopen)
    _FakePopen.calls.clear()
    BackgroundJob(["PythonSlicer.exe", "-m", "MedicalDenoiseLib.cli.main"], tmp_path / "out.nii", tmp_path)
    (kwargs,) = _FakePopen.calls
    assert kwargs.get("creationflags", 0) & process_tree.CREATE_NO_WINDOW == 0x08000000
    assert "start_new_session" not in kwargs  # POSIX only


def test_on_posix_the_child_leads_its_own_process_group(monkeypatch):
    monkeypatch.setattr(process_tree, "is_windows", lambda: False)
    assert process_tree.popen_options() == {"start_new_session": True}


def test_on_windows_cancel_ends_the_whole_tree_with_taskkill(monkeypatch):
    monkeypatch.setattr(process_tree, "is_windows", lambda: True)
    runs = []
    monkeypatch.setattr(subprocess, "run", lambda command, **kwargs: runs.append((command, kwargs)))
    process_tree.stop_process_tree(_FakePopen([]), grace=0.1)
    ((command, kwargs),) = runs
    assert command == ["taskkill", "/T", "/F", "/PID", "4242"]
    assert kwargs["creationflags"] == process_tree.CREATE_NO_WINDOW


@posix_only
def test_python_slicer_is_found_on_the_path_or_beside_the_interpreter(tmp_path, monkeypatch):
    standin = write_python_slicer_standin(tmp_path)
    assert findPythonSlicer(searchPath=str(tmp_path)) == str(standin)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python-real"))
    assert findPythonSlicer(searchPath=str(tmp_path / "empty")) == str(standin)


def test_a_missing_python_slicer_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "SlicerApp-real"))
    with pytest.raises(RuntimeError, match=r"PythonSlicer not found on PATH or in .*bin"):
        findPythonSlicer(searchPath=str(tmp_path))


def _finished_job(tmp_path: Path, code: str, *options: str) -> BackgroundJob:
    """A child that runs ``code``; ``options`` stand for the command line's own (they change what is parsed)."""
    (tmp_path / "out.nii").write_bytes(b"")
    job = BackgroundJob([sys.executable, "-c", code, *options], tmp_path / "out.nii", tmp_path / "work")
    job.wait(timeout=60)
    return job


_GRAIN = ("grain ≈ 3 voxels in-plane (neighbour correlation 0.61): denoised on 2×2 sub-grids in-plane (wider "
          "sub-grids would cost anatomy; --grain sets them)")
_ADAPTED = "adapted to this scan: 120 steps of 0.70 s, held-back loss -1.20% (± 0.30%)"


@pytest.mark.parametrize("adaptation", [_ADAPTED, "adapting did not help (12 steps of 0.70 s, held-back loss +0.10% "
                                                   "(± 0.40%)): the shipped model is used"])
def test_the_summary_of_an_adapt_run_gives_the_grain_and_the_adaptation_apart(tmp_path, adaptation):
    line = f"CT.nii -> output.nii: mr, model m (chosen with --model), noise SD 2 estimated, 2 used, 1.0 s on cuda; " \
           f"{_GRAIN}; {adaptation}"
    job = _finished_job(tmp_path, f"print({line!r})", "--adapt", "3")
    assert job.poll() == "succeeded"
    assert (job.deviceUsed, job.grainUsed, job.adaptationUsed) == ("cuda", _GRAIN, adaptation)
    assert job.summary == line


def test_without_adapt_the_whole_rest_of_the_summary_is_the_grain(tmp_path):
    job = _finished_job(tmp_path, f"print('a -> b: mr, model m, 1.0 s on cpu; {_GRAIN}')")
    assert (job.deviceUsed, job.grainUsed, job.adaptationUsed) == ("cpu", _GRAIN, "")


@pytest.mark.parametrize("message", [
    "http://gpu-server:8765: cannot reach the server (connection refused); is `medical-denoise serve` running there?",
    "http://gpu-server:8765: the server refused the token (401); set the token the server was started with",
    "CT.nrrd: the server's job failed: CT.nrrd: every voxel is NaN",
])
def test_a_server_error_is_shown_as_the_command_line_wrote_it(tmp_path, message):
    job = _failed_job(tmp_path, f"import sys\nprint('medical-denoise: error: ' + {message!r}, file=sys.stderr)\n"
                                "sys.exit(1)")
    assert job.error == message
