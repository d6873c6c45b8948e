"""training/: an interrupted run resumed with --resume ends with exactly the uninterrupted run's weights."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from training_support import make_volumes, read_log, run_train, write_config

REPO = Path(__file__).resolve().parent.parent


def _state(run):
    return torch.load(run / "checkpoint.pt", weights_only=True)


def _same_tensors(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_tensors(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_tensors(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("mode", ["synthetic", "gan"])
def test_resume_reproduces_the_uninterrupted_run_bitwise(capsys, tmp_path, mode):
    data = make_volumes(tmp_path / "data")
    config = write_config(tmp_path)  # augmentation (TorchIO artefacts included) on, validation every 4 steps
    common = ["--config", config, "--data", data, "--mode", mode, "--max-steps", 9]
    code, _, err = run_train(capsys, *common, "--out", tmp_path / "whole")
    assert code == 0, err
    code, out, err = run_train(capsys, *common, "--out", tmp_path / "split", "--stop-at", 5)
    assert code == 0, err
    assert "stopped (stop-at) at step 5" in out and _state(tmp_path / "split")["step"] == 5
    code, out, err = run_train(capsys, "--resume", "--out", tmp_path / "split")  # its data and config are remembered
    assert code == 0, err
    assert "resumed at step 5 of 9" in out
    whole, split = _state(tmp_path / "whole"), _state(tmp_path / "split")
    assert split["step"] == whole["step"] == 9
    assert _same_tensors(whole["network"], split["network"])
    assert _same_tensors(whole["mode"], split["mode"])  # optimisers, schedules (and the discriminator)
    assert _same_tensors(whole["rng"], split["rng"])
    # The resumed log keeps the interrupted run's rows (plus one at the stop) and goes on from there.
    assert [r["step"] for r in read_log(tmp_path / "split")] == ["2", "4", "5", "6", "8", "9"]


def test_fresh_runs_with_one_seed_are_identical_and_another_seed_differs(capsys, tmp_path):
    """Also: batches prepared ahead in a thread (run.prefetch) are the very batches made in line."""
    data = make_volumes(tmp_path / "data")
    inline, ahead = write_config(tmp_path), write_config(tmp_path / "ahead", run={"prefetch": 3})
    for name, seed, config in (("a", 0, inline), ("b", 0, ahead), ("c", 1, inline)):
        code, _, err = run_train(capsys, "--config", config, "--data", data, "--max-steps", 3, "--seed", seed,
                                 "--out", tmp_path / name)
        assert code == 0, err
    a, b, c = (_state(tmp_path / n)["network"] for n in "abc")
    # The same batches in the same order: the same losses at every step and the same generator state after.
    timing = ("time_s", "patches_per_s", "mvoxels_per_s")
    logs = [[{k: v for k, v in row.items() if k not in timing} for row in read_log(tmp_path / n)] for n in "ab"]
    assert [row["step"] for row in logs[0]] == [row["step"] for row in logs[1]]
    for inline_row, ahead_row in zip(*logs):
        for key, value in inline_row.items():
            assert (value == ahead_row[key]) if value in ("", None) else float(value) == pytest.approx(
                float(ahead_row[key]), rel=1e-5), (key, inline_row, ahead_row)
    assert _state(tmp_path / "a")["rng"][0]["numpy"] == _state(tmp_path / "b")["rng"][0]["numpy"]
    # Work of the prefetch thread running beside the step (TorchIO's artefacts; the noise estimate's small
    # multithreaded linear algebra) can change the last bits of CPU float results, so losses and weights
    # agree to float precision, not bit for bit (prefetch is off on the CPU by default; it is for keeping a
    # GPU busy). The random streams, which decide every patch and every noise draw, are equal exactly.
    assert all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-6) for k in a)
    assert _same_tensors(a, _state(tmp_path / "a")["network"]) and not _same_tensors(a, c)


def test_ctrl_c_stops_after_the_step_with_a_checkpoint_and_resume_goes_on(tmp_path):
    data = make_volumes(tmp_path / "data", 2)
    config = write_config(tmp_path, validation={"fraction": 0}, run={"log_every": 1, "checkpoint_every": 1000})
    run = tmp_path / "run"
    command = [sys.executable, "-m", "training.train", "--config", str(config), "--data", str(data), "--out", str(run),
               "--max-steps", "100000", "--progress", "log"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               encoding="utf-8", errors="replace")
    deadline = time.monotonic() + 120
    for line in process.stdout:
        if line.startswith("step 3:") or time.monotonic() > deadline:
            break
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err and "stopped (interrupted) at step" in out
    step = _state(run)["step"]
    assert 3 <= step < 100000
    assert int(read_log(run)[-1]["step"]) == step
    resumed = subprocess.run([sys.executable, "-m", "training.train", "--resume", "--out", str(run), "--max-steps",
                              str(step + 2), "--progress", "none"], cwd=REPO, capture_output=True, text=True,
                             encoding="utf-8", errors="replace", timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert _state(run)["step"] == step + 2
