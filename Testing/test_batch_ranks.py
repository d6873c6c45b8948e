"""A folder denoised by several processes under torchrun (gloo, on the CPU): each input by exactly one process,
the same bytes as one process writes, --resume, outputs that appear only when complete, one summary."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import oblique_geometry, phantom
from MedicalDenoiseLib.cli.main import main
from MedicalDenoiseLib.io import writing
from MedicalDenoiseLib.io.reading import read_volume
from MedicalDenoiseLib.io.volume import Volume

SCRIPT = Path(sys.executable).with_name("medical-denoise")
NAMES = ["series", "v0.nrrd", "v1.nrrd", "v2.nrrd", "v3.nrrd", "v4.nrrd", "v5.nrrd"]  # sorted, as the ranks see them


def _noisy(seed: int, shape=(6, 16, 16)) -> np.ndarray:
    return (phantom(shape, seed=seed) * 500 + np.random.default_rng(seed).normal(0, 25, shape)).astype(np.float32)


def _make_inputs(folder: Path, count: int = 6, series: bool = True) -> Path:
    folder.mkdir()
    for i in range(count):
        writing.write_volume(Volume(_noisy(i), oblique_geometry()), folder / f"v{i}.nrrd")
    if series:
        hu = np.rint(phantom((5, 16, 16), seed=9, low=-1000, high=1000)).astype(np.int16)
        writing.write_volume(Volume(hu, oblique_geometry(), modality="ct"), folder / "series")
    return folder


def _torchrun(nproc: int, workdir: Path, *argv) -> tuple[int, str, dict[int, tuple[str, str]]]:
    """Runs ``medical-denoise ARGV`` in ``nproc`` processes: exit code, torchrun's stderr, each rank's (stdout, stderr)."""
    logs = workdir / f"logs-{uuid.uuid4().hex[:8]}"
    command = ["--no-python", str(SCRIPT)] if SCRIPT.exists() else ["-m", "MedicalDenoiseLib.cli.main"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
         "--log-dir", str(logs), "--redirects", "3", *command, *map(str, argv), "--progress", "none"],
        cwd=workdir, env=env, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=300)
    per_rank = {int(d.name): ((d / "stdout.log").read_text("utf-8", "replace"), (d / "stderr.log").read_text("utf-8", "replace"))
                for d in logs.glob("*/attempt_0/*")}
    assert sorted(per_rank) == list(range(nproc)), result.stderr[-3000:]
    return result.returncode, result.stderr, per_rank


def _denoised(stdout: str) -> list[str]:
    """The inputs a rank reports denoising, by name (one line each: 'IN -> OUT: ..., model ...')."""
    return [Path(line.split(" -> ")[0]).name for line in stdout.splitlines() if " -> " in line and ", model " in line]


def _files(folder: Path) -> dict[str, Path]:
    return {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*")) if p.is_file()}


def _assert_same_outputs(out: Path, reference: Path) -> None:
    assert sorted(p.name for p in out.iterdir()) == NAMES  # nothing else, no hidden temporaries
    for name in NAMES[1:]:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    # A DICOM series gets new UIDs on every run: compare what it holds.
    got, want = read_volume(out / "series"), read_volume(reference / "series")
    assert np.array_equal(got.array, want.array) and got.geometry == want.geometry


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return _make_inputs(tmp_path_factory.mktemp("batch") / "inputs")


@pytest.fixture(scope="module")
def reference(inputs, tiny_model_file):
    """The outputs of one plain process, with one thread like each torchrun process."""
    out = inputs.parent / "reference"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["denoise", str(inputs), str(out), "--model", str(tiny_model_file), "--progress", "none"]) == 0
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="module")
def three_ranks(inputs, tiny_model_file):
    out = inputs.parent / "out"
    return (out, *_torchrun(3, inputs.parent, "denoise", inputs, out, "--model", tiny_model_file))


def test_seven_inputs_on_three_ranks_each_once_and_as_one_process_writes_them(three_ranks, reference):
    out, code, err, logs = three_ranks
    assert code == 0, err[-3000:] + logs[0][1]
    # Rank r takes every third input of the sorted list from the r-th on, and each is denoised exactly once.
    for rank in range(3):
        assert _denoised(logs[rank][0]) == NAMES[rank::3], logs[rank]
    assert sorted(sum((_denoised(logs[rank][0]) for rank in range(3)), [])) == NAMES
    _assert_same_outputs(out, reference)
    assert "medical-denoise: 7 inputs over 3 processes: 7 denoised, 0 failed" in logs[0][1]
    assert not any("inputs over" in logs[rank][1] for rank in (1, 2))


def test_resume_writes_only_the_missing_output(three_ranks, reference, inputs, tiny_model_file, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(three_ranks[0], out)
    (out / "v3.nrrd").unlink()
    stale = out / ".v3.nrrd.tmp-0123456789ab"  # what a process killed while writing v3.nrrd leaves
    stale.mkdir()
    (stale / "v3.nrrd").write_bytes(b"NRRD0004\npartial")
    before = {name: (p.stat().st_ino, p.stat().st_mtime_ns) for name, p in _files(out).items() if ".tmp-" not in name}

    # Without --resume the rerun is refused, naming the way to keep what is there.
    assert main(["denoise", str(inputs), str(out), "--model", str(tiny_model_file)]) == 1
    err = capsys.readouterr().err
    assert "already exists" in err and "--resume" in err

    code, err, logs = _torchrun(3, tmp_path, "denoise", inputs, out, "--model", tiny_model_file, "--resume")
    assert code == 0, err[-3000:] + logs[0][1]
    assert sum((_denoised(logs[rank][0]) for rank in range(3)), []) == ["v3.nrrd"]
    assert sum(log[0].count("exists, skipped (--resume)") for log in logs.values()) == 6
    assert ("7 inputs over 3 processes: 1 denoised, 6 skipped (output exists, --resume), 0 failed"
            in logs[0][1])
    after = {name: (p.stat().st_ino, p.stat().st_mtime_ns) for name, p in _files(out).items()}
    assert {name: after[name] for name in before} == before  # the six complete outputs were left alone
    assert not stale.exists()
    _assert_same_outputs(out, reference)


def test_fewer_inputs_than_ranks(tmp_path, tiny_model_file):
    inputs = _make_inputs(tmp_path / "inputs", count=2, series=False)
    out = tmp_path / "out"  # made by whichever rank comes first
    code, err, logs = _torchrun(3, tmp_path, "denoise", inputs, out, "--model", tiny_model_file)
    assert code == 0, err[-3000:] + logs[0][1]
    assert [_denoised(logs[rank][0]) for rank in range(3)] == [["v0.nrrd"], ["v1.nrrd"], []]
    assert sorted(p.name for p in out.iterdir()) == ["v0.nrrd", "v1.nrrd"]
    assert "2 inputs over 3 processes: 2 denoised, 0 failed" in logs[0][1]


def test_a_corrupt_input_fails_every_rank_and_is_counted(tmp_path, tiny_model_file):
    inputs = _make_inputs(tmp_path / "inputs", count=2, series=False)
    (inputs / "v0b.nrrd").write_bytes(b"not an image")  # sorted: v0, v0b, v1; rank 1 gets the corrupt one
    out = tmp_path / "out"
    code, err, logs = _torchrun(2, tmp_path, "denoise", inputs, out, "--model", tiny_model_file)
    assert code != 0
    exit_codes = {int(rank): int(value) for rank, value in re.findall(r"rank\s*:\s*(\d+).*\n\s*exitcode\s*:\s*(-?\d+)", err)}
    assert exit_codes == {0: 1, 1: 1}, err[-3000:]
    assert "v0b.nrrd: cannot be read" in logs[1][1]
    assert "3 inputs over 2 processes: 2 denoised, 1 failed" in logs[0][1]
    assert sorted(p.name for p in out.iterdir()) == ["v0.nrrd", "v1.nrrd"]


def test_a_write_that_fails_midway_leaves_nothing_under_the_final_name(tmp_path, tiny_model_file, capsys,
                                                                       monkeypatch):
    inputs = _make_inputs(tmp_path / "inputs", count=2)
    out = tmp_path / "out"
    seen = []
    real_image, real_series = sitk.WriteImage, writing.write_dicom_series

    def failing_image(image, path, *rest):
        real_image(image, path, *rest)
        seen.append(Path(path))
        assert not (out / Path(path).name).exists()  # written elsewhere first
        if Path(path).name == "v1.nrrd":
            Path(path).write_bytes(Path(path).read_bytes()[:100])
            raise RuntimeError("No space left on device")

    def failing_series(array, geometry, folder, **kwargs):
        real_series(array, geometry, folder, **kwargs)
        seen.append(Path(folder))
        assert not (out / "series").exists()
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writing.sitk, "WriteImage", failing_image)
    monkeypatch.setattr(writing, "write_dicom_series", failing_series)
    assert main(["denoise", str(inputs), str(out), "--model", str(tiny_model_file), "--progress", "none"]) == 1
    assert "2 of 3 inputs failed" in capsys.readouterr().err
    assert len(seen) == 3
    assert os.listdir(out) == ["v0.nrrd"]  # no partial v1.nrrd or series, no temporaries left

    monkeypatch.undo()
    assert main(["denoise", str(inputs), str(out), "--model", str(tiny_model_file), "--resume"]) == 0
    captured = capsys.readouterr()
    assert "3 inputs over 1 process: 2 denoised, 1 skipped (output exists, --resume), 0 failed" in captured.err
    assert sorted(os.listdir(out)) == ["series", "v0.nrrd", "v1.nrrd"]
