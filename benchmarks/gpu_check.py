"""The checks that need a CUDA GPU, in one run of under 8 minutes; writes the `gpu_check` section of the docs.

1. **Mixed precision**: the same volume denoised on the GPU (float16 autocast) and on the CPU (float32): the
   largest difference and the PSNR between the two, against the stated tolerance (max |Δ| ≤ 1 % of the data range,
   PSNR ≥ 45 dB).
2. **Out of memory, for real**: most of the GPU's memory is taken, then a 256³ volume is denoised: the run must
   finish (smaller tiles, or the CPU) and say what it did.
3. **End to end through the command line**: a 256³ MR and a 512 × 512 × 300 CT, `medical-denoise denoise IN OUT
   --device cuda`, wall time (read and write included), against the same on the CPU for 256³.
4. **Server round trip on the GPU**: `medical-denoise serve --device cuda` and the command-line client
   `--server URL` on the 256³ MR: wall time against the local GPU run; the outputs must be equal.
5. **Training**: 200 steps of `python -m training.train` on the GPU (synthetic noise on generated volumes).
6. **Adapting**: `denoise --adapt 1` on a 256 × 256 × 150 MR acquired in k-space, on the GPU.

Usage: ``python benchmarks/gpu_check.py [--out docs/benchmarks.md]`` (exits 2 without a CUDA device).
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import command_line, ensure_library_importable, machine_line, publish, utc_now

ensure_library_importable()
from MedicalDenoiseLib.inference.denoiser import Denoiser  # noqa: E402
from MedicalDenoiseLib.io.reading import read_volume  # noqa: E402
from MedicalDenoiseLib.io.volume import Geometry, Volume  # noqa: E402
from MedicalDenoiseLib.io.writing import write_volume  # noqa: E402
from MedicalDenoiseLib.noise import noise_kind  # noqa: E402

MODEL = "autoencoder-v2"
CLI = str(Path(sys.executable).with_name("medical-denoise"))
MAX_DIFFERENCE = 0.01  # of the data range
MIN_PSNR = 45.0


def _phantom(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in shape], indexing="ij", sparse=True)
    image = 0.2 + 0.5 * (x**2 + y**2 + 0.6 * z**2 < 0.6) + 0.15 * np.sin(7 * x) * np.cos(5 * y) * np.cos(3 * z)
    return image.astype(np.float32) + np.random.default_rng(seed).normal(0, 0.04, shape).astype(np.float32)


def _volume(array: np.ndarray, modality: str) -> Volume:
    return Volume(array, Geometry((0.9, 0.9, 1.2), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel())), modality=modality)


def _run(command: list[str], **kwargs) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])} … exited {done.returncode}: {done.stderr.strip()[-400:]}")
    return seconds, done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


def mixed_precision() -> list[str]:
    volume = _volume(_phantom((96, 160, 160)), "mr")
    on_cpu = Denoiser(MODEL, device="cpu").denoise(volume).volume.array
    on_gpu = Denoiser(MODEL, device="cuda").denoise(volume).volume.array
    data_range = float(np.percentile(volume.array, 99.5) - np.percentile(volume.array, 0.5))
    largest = float(np.abs(on_gpu - on_cpu).max()) / data_range
    mse = float(np.mean((on_gpu - on_cpu) ** 2))
    agreement = 10 * np.log10(data_range**2 / mse) if mse > 0 else float("inf")
    verdict = "within" if largest <= MAX_DIFFERENCE and agreement >= MIN_PSNR else "OUTSIDE"
    return [f"- Mixed precision (96 × 160 × 160 MR): GPU float16 against CPU float32: max |Δ| {largest:.2%} of the range, "
            f"PSNR between them {agreement:.1f} dB — {verdict} the tolerance (≤ {MAX_DIFFERENCE:.0%}, ≥ {MIN_PSNR:g} dB)."]


def out_of_memory() -> list[str]:
    denoiser = Denoiser(MODEL, device="cuda")
    free, _ = torch.cuda.mem_get_info()
    hog = torch.empty(int(free - 300 * 2**20), dtype=torch.uint8, device="cuda")  # leave ~300 MiB
    try:
        result = denoiser.denoise(_volume(_phantom((256, 256, 256)), "mr"))
    finally:
        del hog
        torch.cuda.empty_cache()
    said = "; ".join(result.messages) or "no fallback was needed"
    return [f"- Out of memory (all but ~300 MiB of the GPU taken, 256³): finished on {result.device} in "
            f"{result.seconds:.1f} s; it said: {said}."]


def end_to_end(folder: Path) -> tuple[list[str], Path]:
    mr = folder / "mr256.nrrd"
    write_volume(_volume(_phantom((256, 256, 256)), "mr"), mr)
    ct = folder / "ct512.nrrd"
    hu = np.rint(_phantom((300, 512, 512), seed=1) * 1500 - 1000).astype(np.int16)
    write_volume(_volume(hu, "ct"), ct)
    lines = []
    for source, device in ((mr, "cuda"), (mr, "cpu"), (ct, "cuda")):
        seconds, said = _run([CLI, "denoise", str(source), str(folder / f"{device}-{source.name}"), "--device", device])
        lines.append(f"- `medical-denoise denoise {source.name} OUT --device {device}`: {seconds:.1f} s end to end ({said.split(': ', 1)[-1]})")
    return lines, mr


def server_round_trip(folder: Path, mr: Path) -> list[str]:
    log = open(folder / "server.log", "w")
    server = subprocess.Popen([CLI, "serve", "--port", "0", "--device", "cuda", "--work-dir", str(folder / "work")],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = None
        for _ in range(120):
            found = re.search(r"serving on (http://[\w.\[\]:]+:\d+)", (folder / "server.log").read_text(errors="replace"))
            if found:
                url = found.group(1)
                break
            time.sleep(0.5)
        if url is None:
            return ["- Server round trip: the server did not start: " + (folder / "server.log").read_text()[-300:]]
        _run([CLI, "denoise", str(mr), str(folder / "warm.nrrd"), "--server", url])  # the server loads its model
        seconds, _ = _run([CLI, "denoise", str(mr), str(folder / "served.nrrd"), "--server", url])
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()
    local, _ = _run([CLI, "denoise", str(mr), str(folder / "local.nrrd"), "--device", "cuda"])
    same = np.array_equal(read_volume(folder / "served.nrrd").array, read_volume(folder / "local.nrrd").array)
    return [f"- Server round trip on the GPU (256³ MR, loopback, through `--server`): {seconds:.1f} s against "
            f"{local:.1f} s for the local GPU run; outputs {'equal' if same else 'DIFFERENT'}."]


def training_steps(folder: Path) -> list[str]:
    data = folder / "train-data"
    data.mkdir()
    for index in range(3):
        clean = _phantom((64, 96, 96), seed=10 + index)
        write_volume(_volume(clean, "mr"), data / f"v{index}.nrrd")
    seconds, _ = _run([sys.executable, "-m", "training.train", "--data", str(data), "--out", str(folder / "run"),
                       "--mode", "synthetic", "--max-steps", "200", "--device", "cuda", "--progress", "none"],
                      cwd=Path(__file__).resolve().parents[1])
    return [f"- Training: 200 steps of `python -m training.train --mode synthetic --device cuda` in {seconds:.1f} s "
            "(start-up and checkpoints included)."]


def adapting(folder: Path) -> list[str]:
    clean = _phantom((150, 256, 256), seed=3)
    noisy = noise_kind("mr-kspace").fixed(sigma=0.04, acquired=(0.8, 0.65, 0.65), acquisition="3d", coils=1).simulate(
        clean, np.random.default_rng(0)).noisy
    source = folder / "kspace.nrrd"
    write_volume(_volume(noisy.astype(np.float32), "mr"), source)
    seconds, said = _run([CLI, "denoise", str(source), str(folder / "adapted.nrrd"), "--adapt", "1", "--device", "cuda"])
    return [f"- `denoise --adapt 1 --device cuda` on 256 × 256 × 150: {seconds:.1f} s end to end; "
            f"it said: {said.split('; ')[-1]}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="markdown file whose `gpu_check` section is (re)written")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; nothing to check", file=sys.stderr)
        return 2
    started = time.perf_counter()
    lines: list[str] = []
    checks = [("mixed precision", mixed_precision), ("out of memory", out_of_memory)]
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        for name, check in checks:
            print(f"gpu_check: {name}", file=sys.stderr, flush=True)
            lines += _guarded(name, check)
        print("gpu_check: end to end", file=sys.stderr, flush=True)
        found = _guarded("end to end", lambda: end_to_end(folder))
        if isinstance(found, tuple):
            more, mr = found
            lines += more
            lines += _guarded("server round trip", lambda: server_round_trip(folder, mr))
        else:
            lines += found
        for name, check in (("training", training_steps), ("adapting", adapting)):
            print(f"gpu_check: {name}", file=sys.stderr, flush=True)
            lines += _guarded(name, lambda c=check: c(folder))
    section = "\n".join(["## GPU check", "",
                         f"`{command_line()}` ({(time.perf_counter() - started) / 60:.1f} min, {utc_now()}; "
                         f"{torch.cuda.get_device_name(0)}; {machine_line(torch.__version__)}).", "", *lines, ""])
    publish(section, args.out, "gpu_check")
    return 0


def _guarded(name: str, check):
    """A check's lines; a failing check is reported as a line, and the others still run."""
    try:
        return check()
    except Exception as error:  # noqa: BLE001 - one failing check must not lose the others' figures
        return [f"- {name}: FAILED: {type(error).__name__}: {str(error)[:300]}"]


if __name__ == "__main__":
    sys.exit(main())
