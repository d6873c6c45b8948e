"""benchmarks/gpu_check.py: on a machine without CUDA it says so and exits 2, writing nothing."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: run the check itself")
def test_gpu_check_without_cuda_exits_2_and_writes_nothing(tmp_path):
    out = tmp_path / "benchmarks.md"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2, done.stderr
    assert "no CUDA device" in done.stderr and not out.exists()
