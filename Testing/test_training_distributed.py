"""training/: two CPU processes under torchrun (gloo) train one model with DistributedDataParallel."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from training_support import make_volumes, write_config

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("mode", ["synthetic", "gan"])
def test_torchrun_two_processes_finish_with_identical_weights(tmp_path, mode):
    data = make_volumes(tmp_path / "data")
    run = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "training.train", "--config", str(write_config(tmp_path)), "--data", str(data),
               "--mode", mode, "--max-steps", "4", "--out", str(run), "--progress", "log"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, encoding="utf-8", errors="replace",
                            timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "(2 process(es), 1 thread(s) each)" in result.stdout
    summary = json.loads((run / "summary.json").read_text())
    # Gathered from both ranks after their last step: both finished, and DDP kept their weights equal.
    assert summary["world_size"] == 2 and summary["step"] == 4 and summary["stopped"] == "finished"
    assert len(summary["weights_sha256"]) == 2 and len(set(summary["weights_sha256"])) == 1
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["step"] == 4 and state["world_size"] == 2 and len(state["rng"]) == 2
    assert not torch.equal(state["rng"][0]["torch"], torch.empty(0, dtype=torch.uint8))
    assert state["rng"][0]["numpy"] != state["rng"][1]["numpy"]  # each rank draws its own patches
