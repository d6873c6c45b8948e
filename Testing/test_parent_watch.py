"""The command line stops, writing nothing, once the program that started it (3D Slicer) has ended."""
from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from MedicalDenoiseLib.cli.main import main as cli_main
from MedicalDenoiseLib.cli.parent_watch import exit_with_parent, process_alive
from MedicalDenoiseLib.errors import Cancelled
from MedicalDenoiseLib.io.volume import Volume
from MedicalDenoiseLib.io.writing import write_volume
from conftest import oblique_geometry, phantom


def _ended_process() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: the pid names no process any more
    return child.pid


def test_process_alive_tells_a_running_process_from_an_ended_one():
    assert process_alive(_ended_process()) is False
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert process_alive(sleeper.pid) is True
    finally:
        sleeper.kill()
        sleeper.wait()
    assert process_alive(sleeper.pid) is False


def test_the_main_thread_is_interrupted_when_the_watched_process_ends():
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    exit_with_parent(sleeper.pid, interval=0.05)
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        sleeper.kill()
        sleeper.wait()
        while time.monotonic() - started < 10:
            time.sleep(0.01)
    assert time.monotonic() - started < 10


def test_an_already_ended_parent_stops_the_run_before_anything_is_written(tmp_path, tiny_model_file, capsys):
    source, target = tmp_path / "in.nrrd", tmp_path / "out.nrrd"
    write_volume(Volume(phantom() * 400, oblique_geometry()), source)
    code = cli_main(["denoise", str(source), str(target), "--model", str(tiny_model_file),
                     "--exit-with-parent", str(_ended_process())])
    assert code == 130 and "cancelled; nothing was written" in capsys.readouterr().err
    assert not target.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["in.nrrd"]


def test_a_live_parent_lets_the_run_finish(tmp_path, tiny_model_file):
    source, target = tmp_path / "in.nrrd", tmp_path / "out.nrrd"
    write_volume(Volume(phantom() * 400, oblique_geometry()), source)
    code = cli_main(["denoise", str(source), str(target), "--model", str(tiny_model_file),
                     "--exit-with-parent", str(__import__("os").getpid())])
    assert code == 0 and target.exists()


def test_exit_with_parent_refuses_an_ended_process():
    with pytest.raises(Cancelled, match="has ended"):
        exit_with_parent(_ended_process())


PARENT = """
import subprocess, sys
log = open(sys.argv[4], "w")  # a file, not a pipe: a pipe to a killed reader would end the child by itself
child = subprocess.Popen([sys.executable, "-m", "MedicalDenoiseLib.cli.main", "denoise", sys.argv[1], sys.argv[2],
                          "--model", sys.argv[3], "--tile", "32", "--flips", "--progress", "slicer",
                          "--exit-with-parent", str(__import__("os").getpid())], stdout=log, stderr=log)
print(child.pid, flush=True)
__import__("time").sleep(120)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="kills with SIGKILL")
def test_killing_the_program_that_started_a_run_stops_the_run(tmp_path, tiny_model_file):
    """The scenario: Slicer is killed mid-run. The run must stop by itself, and write nothing."""
    source, target, log = tmp_path / "in.nrrd", tmp_path / "out.nrrd", tmp_path / "run.log"
    rng = np.random.default_rng(0)
    write_volume(Volume((rng.random((160, 160, 160)) * 400).astype(np.float32), oblique_geometry()), source)
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(source), str(target), str(tiny_model_file), str(log)],
                              stdout=subprocess.PIPE, text=True)
    child_pid = int(parent.stdout.readline())
    deadline = time.monotonic() + 60
    while "filter-progress" not in log.read_text(encoding="utf-8", errors="replace") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "filter-progress" in log.read_text(encoding="utf-8", errors="replace"), log.read_text(encoding="utf-8", errors="replace")
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 20
    while process_alive(child_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not process_alive(child_pid), "the run went on after the program that started it was killed"
    assert "cancelled; nothing was written" in log.read_text(encoding="utf-8", errors="replace")
    assert not target.exists()
