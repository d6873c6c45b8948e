"""training/: every bad input ends with one clear line and a non-zero exit code, never a traceback."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from training_support import assert_refused, make_pairs, make_volumes, run_train, write_config

REPO = Path(__file__).resolve().parent.parent


def test_unknown_mode_in_a_real_process(tmp_path):
    data = make_volumes(tmp_path / "data", 1)
    result = subprocess.run([sys.executable, "-m", "training.train", "--data", str(data), "--out", str(tmp_path / "r"),
                             "--mode", "noise2void"], cwd=REPO, capture_output=True, text=True, encoding="utf-8",
                            errors="replace", timeout=120)
    assert_refused(result.returncode, result.stderr,
                   "mode must be one of synthetic, paired, self-supervised, gan, got 'noise2void'")


@pytest.mark.parametrize("case, needles", [
    ("missing", ["--data", "no such folder"]),
    ("empty", ["holds no volumes", "supported:"]),
    ("not-images", ["holds no volumes"]),
    ("unmatched", ["unmatched pairs", "1 in clean/ without a partner: case9.nrrd", "matched by name without extension"]),
    ("no-pairs", ["paired data needs sub-folders noisy/ and clean/", "missing: noisy/, clean/"]),
    ("patch-too-large", ["data.patch_size [32, 32, 32] (z, y, x) is larger than every training volume", "[20, 24, 24]"]),
    ("patch-not-multiple", ["data.patch_size must be multiples of [2, 4, 4]", "got [16, 18, 16]"]),
    ("bad-config-key", ["unknown key(s) batchsize"]),
    ("no-data-flag", ["--data is required"]),
    ("unknown-init", ["unknown model 'no-such-model'"]),
])
def test_bad_inputs_end_with_one_clear_line(capsys, tmp_path, case, needles):
    data = tmp_path / "data"
    mode, config = "synthetic", {}
    if case == "empty":
        data.mkdir()
    elif case == "not-images":
        data.mkdir()
        (data / "readme.txt").write_text("no volumes here")
    elif case in ("unmatched", "no-pairs"):
        mode = "paired"
        make_pairs(data, 2) if case == "unmatched" else make_volumes(data, 1)
        if case == "unmatched":
            make_volumes(data / "clean", 1, first_seed=9)
    elif case != "missing":
        make_volumes(data, 2)
    if case == "patch-too-large":
        config = {"data": {"patch_size": [32, 32, 32]}}
    if case == "patch-not-multiple":
        mode, config = "self-supervised", {"data": {"patch_size": [16, 18, 16]}}
    if case == "bad-config-key":
        config = {"data": {"batchsize": 2}}
    argv = ["--config", write_config(tmp_path, **config), "--mode", mode, "--max-steps", 2, "--out", tmp_path / "run"]
    if case != "no-data-flag":
        argv += ["--data", data]
    if case == "unknown-init":
        argv += ["--init", "no-such-model"]
    code, _, err = run_train(capsys, *argv)
    assert_refused(code, err, *needles)


def test_a_run_folder_is_never_overwritten_and_resume_keeps_its_mode(capsys, tmp_path):
    data = make_volumes(tmp_path / "data", 2)
    argv = ["--config", write_config(tmp_path), "--data", data, "--max-steps", 2, "--out", tmp_path / "run"]
    assert run_train(capsys, *argv)[0] == 0
    code, _, err = run_train(capsys, *argv)
    assert_refused(code, err, "already holds a run (step 2)", "pass --resume")
    code, _, err = run_train(capsys, "--resume", "--out", tmp_path / "run", "--mode", "gan")
    assert_refused(code, err, "--mode gan differs from the resumed run's mode 'synthetic'")


def test_a_non_finite_loss_stops_with_a_message(capsys, tmp_path, monkeypatch):
    import training.modes.supervised as supervised

    monkeypatch.setattr(supervised, "per_sample_mean", lambda values: values.flatten(1).mean(1) * torch.nan)
    data = make_volumes(tmp_path / "data", 2)
    code, _, err = run_train(capsys, "--config", write_config(tmp_path), "--data", data, "--max-steps", 3,
                             "--out", tmp_path / "run")
    assert_refused(code, err, "step 1: loss is nan (not finite)", "lower optim.lr")
