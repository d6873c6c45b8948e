"""training/: two CPU processes under torchrun (gloo) train one model with DistributedDataParallel."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from training.batches import BatchMaker
from training.config import load_config
from training.modes import batch_source
from training.run_setup import load_data
from training_support import make_volumes, write_config

REPO = Path(__file__).resolve().parent.parent


def _state_after_batches(config_file: Path, mode: str, data: Path, rank: int, count: int) -> dict:
    """The state of rank ``rank``'s batch generator after it made ``count`` batches, made here in one process."""
    config = load_config(config_file).with_overrides(mode=mode)
    volumes = load_data(config, data, None, lambda text: None).train
    m = config.network.size_multiple
    maker = BatchMaker(batch_source(config), volumes, config, (m, m, m))
    rng = np.random.default_rng([config.seed, rank])
    for _ in range(count):
        maker(rng)
    return rng.bit_generator.state


def _run(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, encoding="utf-8", errors="replace",
                          timeout=300)


def _gloo_teardown_abort(result: subprocess.CompletedProcess) -> bool:
    """The run finished (rank 0 printed its last line) and a process then aborted in C++ at exit."""
    return "done: step" in result.stdout and "terminate called without an active exception" in result.stderr


@pytest.mark.parametrize("mode", ["synthetic", "gan"])
def test_torchrun_two_processes_finish_with_identical_weights(tmp_path, mode):
    data = make_volumes(tmp_path / "data")
    run = tmp_path / "run"
    config = write_config(tmp_path)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "training.train", "--config", str(config), "--data", str(data),
               "--mode", mode, "--max-steps", "4", "--out", str(run), "--progress", "log"]
    result = _run(command)
    if result.returncode != 0 and _gloo_teardown_abort(result):
        # gloo can abort a process at exit after the run has finished and every rank has passed the final barrier
        # ("terminate called without an active exception"; seen once in four full test runs on 2 loaded cores, never in
        # six runs of this test alone). That is
        # torch's teardown, not training: run again from scratch, once, and hold the retry to every assertion.
        shutil.rmtree(run)
        result = _run(command)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "(2 process(es), 1 thread(s) each)" in result.stdout
    summary = json.loads((run / "summary.json").read_text())
    # Gathered from both ranks after their last step: both finished, and DDP kept their weights equal.
    assert summary["world_size"] == 2 and summary["step"] == 4 and summary["stopped"] == "finished"
    assert len(summary["weights_sha256"]) == 2 and len(set(summary["weights_sha256"])) == 1
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["step"] == 4 and state["world_size"] == 2 and len(state["rng"]) == 2
    # Each rank drew its own 4 batches from a generator seeded with (seed, rank), and nothing else drew from it:
    # the checkpoint holds exactly the states those batches leave, so --resume goes on with the next ones.
    expected = [_state_after_batches(config, mode, data, rank, 4) for rank in (0, 1)]
    assert [saved["numpy"] for saved in state["rng"]] == expected
    assert expected[0] != expected[1]
