"""Time and peak memory of denoising one volume with a model on the CPU, per volume size.

Each size runs in a fresh child process (this script with ``--one SIZE``), so its peak resident memory is
its own and not a leftover of a larger size. In the child: load the model (timed apart), warm up on 32³,
build the input, then time ``Denoiser.denoise`` alone. Peak memory is ``ru_maxrss`` of the child (the
whole process: Python, torch, model, input, output), the increase over the RSS just before denoising, and
``VmHWM`` after resetting it just before denoising (the peak of the denoising call alone).

Targets: 256³ in at most 20 s, peak RSS at most 3 × the float32 input + 1.5 GiB, and a 2D image costing
about what a volume of its pixel count costs (compare *s / Mvoxel*). With ``--cli`` each size is also run
as the user runs it: ``medical-denoise denoise`` on a file, timed from start to exit (Python and torch
start-up, model load, reading, denoising, writing).

Usage:
    python benchmarks/speed_memory.py --out docs/benchmarks.md
    python benchmarks/speed_memory.py --sizes 64 128 820x616 --cli --model /tmp/tiny.safetensors
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import command_line, ensure_library_importable, library_env, machine_line, utc_now, publish

DEFAULT_SIZES = ("64", "128", "256", "512x512x300", "512x512x300:int16", "512x512", "820x616", "82x96x64")
TIME_TARGETS_S = {(256, 256, 256): 20.0}  # (z, y, x) -> seconds; only 256³ has a time target
MEMORY_TARGET_FACTOR = 3  # × float32 input bytes
MEMORY_TARGET_EXTRA = 1.5 * 2**30  # bytes
NOISE_FRACTION = 0.05  # noise SD as a fraction of the phantom's range
MIB = 2**20


def parse_size(token: str) -> tuple[tuple[int, ...], str]:
    """``"128"`` → 128³ float32; ``"512x512x300"`` → x × y × z; ``"820x616"`` → a 2D x × y image;
    ``":int16"`` suffix → a CT in HU.

    Returns:
        ``((z, y, x) or (y, x), dtype name)``.
    """
    spec, _, dtype = token.partition(":")
    dtype = dtype or "float32"
    if dtype not in ("float32", "int16"):
        raise argparse.ArgumentTypeError(f"size dtype must be float32 or int16, got {dtype!r} in {token!r}")
    try:
        edges = [int(v) for v in spec.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be N or XxYxZ[:int16], got {token!r}") from None
    if len(edges) == 1:
        edges *= 3
    if len(edges) not in (2, 3) or min(edges) < 8:
        raise argparse.ArgumentTypeError(f"size must be N, XxY or XxYxZ with every edge >= 8, got {token!r}")
    return tuple(reversed(edges)), dtype


def _image(shape: tuple[int, ...], dtype: str, seed: int = 0):
    """The phantom of ``shape`` (2D or 3D) as a Volume on an identity grid."""
    from MedicalDenoiseLib.io.volume import Geometry, Volume

    array = phantom(shape if len(shape) == 3 else (1, *shape), dtype, seed)
    if len(shape) == 2:
        array = array[0]
    n = len(shape)
    geometry = Geometry((1.0,) * n, (0.0,) * n, tuple(np.eye(n).ravel()))
    # An int16 input is a CT as DICOM would tag it; a float32 one is untagged and goes through the guess.
    return Volume(array, geometry, modality="ct" if dtype == "int16" else None, source="x".join(map(str, shape)))


def phantom(shape: tuple[int, int, int], dtype: str, seed: int = 0) -> np.ndarray:
    """A smooth noisy phantom: a ramp plus a few soft-edged spheres, with Gaussian noise.

    float32: values in about [0, 1], noise SD 0.05 (normalised as MR). int16: the same mapped to
    -1000…+1000 HU, noise SD 100 HU (normalised as CT). Built a few slices at a time so that making the
    input never sets the process's peak memory.
    """
    rng = np.random.default_rng(seed)
    z_n, y_n, x_n = shape
    y = np.linspace(-1, 1, y_n, dtype=np.float32)[:, None]
    x = np.linspace(-1, 1, x_n, dtype=np.float32)[None, :]
    spheres = [(-0.3, 0.2, -0.2, 0.35, 0.6), (0.2, -0.3, 0.3, 0.25, 0.9), (0.0, 0.4, 0.4, 0.15, 0.1)]
    out = np.empty(shape, dtype=np.float32 if dtype == "float32" else np.int16)
    for start in range(0, z_n, 8):
        z = np.linspace(-1, 1, z_n, dtype=np.float32)[start:start + 8, None, None]
        block = np.broadcast_to(0.3 + 0.1 * x + 0.05 * y, (z.shape[0], y_n, x_n))
        for cz, cy, cx, radius, value in spheres:
            distance = np.sqrt((z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2)
            # A logistic edge about 2 % of the field wide; clipped so exp() cannot overflow far outside.
            inside = 1.0 / (1.0 + np.exp(np.clip((distance - radius) / 0.02, -40, 40)))
            block = block + inside * (value - block)
        block = block + rng.standard_normal(block.shape, dtype=np.float32) * NOISE_FRACTION
        if dtype == "int16":
            block = np.rint(-1000.0 + 2000.0 * block)
        out[start:start + 8] = block
    return out


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def _reset_peak() -> bool:
    """Resets VmHWM to the current RSS (Linux >= 4.0); False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def run_one(token: str, model: str | None, threads: int, device: str, tile: int | None) -> dict:
    """The child's job: one size, measured; returns what the parent tabulates."""
    import torch

    torch.set_num_threads(threads)
    ensure_library_importable()
    from MedicalDenoiseLib.inference.denoiser import Denoiser

    shape, dtype = parse_size(token)
    started = time.perf_counter()
    denoiser = Denoiser(model, device=device, tile_size=tile)
    load_s = time.perf_counter() - started
    # The warm-up pays one-off costs (oneDNN kernel selection, lazy imports) outside the timed call.
    denoiser.denoise(_image((32, 32, 32) if len(shape) == 3 else (32, 32), "float32", seed=1))
    volume = _image(shape, dtype)
    array = volume.array
    rss_before = _status_kib("VmRSS")
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    hwm_reset = _reset_peak()
    started = time.perf_counter()
    result = denoiser.denoise(volume)
    denoise_s = time.perf_counter() - started
    return {
        "token": token, "shape": shape, "dtype": dtype, "voxels": int(array.size),
        "load_s": load_s, "denoise_s": denoise_s, "rss_before_kib": rss_before,
        "maxrss_before_kib": maxrss_before,
        "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "hwm_kib": _status_kib("VmHWM") if hwm_reset else None,
        "torch": torch.__version__, "threads": torch.get_num_threads(), "device": result.device,
        "model": denoiser.name, "tile": denoiser.tile_size, "messages": result.messages,
    }


def _child(token: str, args: argparse.Namespace) -> dict:
    """Runs one size in a fresh interpreter and returns its JSON line (or the failure)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--one", token, "--threads", str(args.threads),
               "--device", args.device]
    if args.model:
        command += ["--model", args.model]
    if args.tile:
        command += ["--tile", str(args.tile)]
    print(f"{token}: running in a fresh process …", file=sys.stderr, flush=True)
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        # -9 is the kernel's out-of-memory killer; record it instead of stopping the other sizes.
        return {"token": token, "error": f"child exited with {done.returncode}"}
    return json.loads(lines[-1])


def _cli_seconds(token: str, args: argparse.Namespace, folder: Path) -> float | None:
    """Wall time of ``medical-denoise denoise`` on the size's phantom written to a file (None: it failed)."""
    ensure_library_importable()
    from MedicalDenoiseLib.io.writing import write_volume

    shape, dtype = parse_size(token)
    source, target = folder / "input.nrrd", folder / "output.nrrd"
    write_volume(_image(shape, dtype), source)
    command = [sys.executable, "-m", "MedicalDenoiseLib.cli.main", "denoise", str(source), str(target),
               "--device", args.device, "--progress", "none", "--overwrite"]
    command += ["--model", args.model] if args.model else []
    command += ["--tile", str(args.tile)] if args.tile else []
    env = library_env(OMP_NUM_THREADS=str(args.threads))
    started = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        print(f"{token}: the command failed: {done.stderr.strip()[-300:]}", file=sys.stderr)
        return None
    return seconds


def _name(token: str) -> str:
    shape, dtype = parse_size(token)
    return "×".join(map(str, reversed(shape))) + (" (2D)" if len(shape) == 2 else "") + f" {dtype}"


def _row(r: dict) -> str:
    shape, dtype = parse_size(r["token"])
    name = _name(r["token"])
    cli = "–" if r.get("cli_s") is None else f"{r['cli_s']:.2f}"
    if "error" in r:
        return f"| {name} | – | – | – | – | – | – | – | – | – | – | failed: {r['error']} |"
    mvox = r["voxels"] / 1e6
    peak, before = r["maxrss_kib"] * 1024, r["rss_before_kib"] * 1024
    mem_target = MEMORY_TARGET_FACTOR * 4 * r["voxels"] + MEMORY_TARGET_EXTRA
    time_target = TIME_TARGETS_S.get(tuple(shape))
    verdicts = [f"memory {'yes' if peak <= mem_target else 'NO'}"]
    if time_target is not None:
        verdicts.insert(0, f"time {'yes' if r['denoise_s'] <= time_target else 'NO'}")
    hwm = f"{r['hwm_kib'] / 1024:.0f}" if r["hwm_kib"] else "n/a"
    note = " ¹" if r["maxrss_kib"] == r["maxrss_before_kib"] else ""
    return (f"| {name} | {mvox:.2f} | {r['load_s']:.2f} | {r['denoise_s']:.2f} | {r['denoise_s'] / mvox:.3f} | {cli} | "
            f"{'≤ %.0f s' % time_target if time_target else '–'} | {before / MIB:.0f} | {peak / MIB:.0f}{note} | "
            f"{(peak - before) / MIB:.0f} | {hwm} | {mem_target / MIB:.0f} | {', '.join(verdicts)} |")


def report(results: list[dict], args: argparse.Namespace) -> str:
    """The markdown section: context, the table, and what the columns mean."""
    ok = [r for r in results if "error" not in r]
    first = ok[0] if ok else {}
    model = first.get("model", args.model or "default")
    lines = [
        f"## Speed and memory: `{model}`",
        "",
        f"- Machine: {machine_line(first.get('torch'))}",
        f"- Model: `{model}` on {first.get('device', args.device)}, {first.get('threads', args.threads)} torch "
        f"threads, tiles up to {first.get('tile', args.tile or 'default')}³, no flips",
        f"- Date: {utc_now()}",
        f"- Command: `{command_line()}`",
        "",
        "| input (x×y×z) | Mvoxels | model load s | denoise s | s / Mvoxel | CLI end to end s | time target | "
        "RSS before MiB | peak RSS MiB | increase MiB | VmHWM in denoise MiB | memory target MiB | meets target |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *[_row(r) for r in results],
        "",
        "Synthetic smooth phantom with Gaussian noise (5 % of the range); float32 inputs are normalised as MR "
        "(intensity guess), int16 inputs are tagged CT (values in HU). Each size runs in a fresh process after "
        "a 32³ warm-up. *denoise s* is the wall time of `Denoiser.denoise` alone (normalisation, noise "
        "estimate, tiled network, denormalisation); *s / Mvoxel* stays flat if time is linear in size (a 2D "
        "image should cost about what the volume of the same voxel count costs). *CLI end to end* (with "
        "`--cli`) is `medical-denoise denoise` on the same input as a file, from start to exit. "
        "*peak RSS* is `ru_maxrss` of the whole process (Python, torch, model, input and output included), "
        "*increase* is that minus the RSS just before the call, *VmHWM in denoise* is the kernel's peak RSS "
        "reset just before the call. Memory target: 3 × float32 input bytes + 1.5 GiB, against peak RSS; "
        "time target: 256³ in 20 s.",
    ]
    if any(r.get("maxrss_kib") == r.get("maxrss_before_kib") for r in ok):
        lines += ["", "¹ the process peak was reached before denoising (model load or input); see VmHWM."]
    notes = sorted({m for r in ok for m in r.get("messages", [])})
    if notes:
        lines += ["", "Messages from the denoiser: " + "; ".join(notes)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    parser = argparse.ArgumentParser(
        description="Time and peak memory of denoising synthetic volumes on the CPU, one fresh process per size.",
        epilog="Sizes: N (an N³ cube) or XxYxZ, optionally :int16 for a CT in HU (default float32). "
        "Example: --sizes 64 128 512x512x300:int16")
    parser.add_argument("--sizes", nargs="+", default=list(DEFAULT_SIZES), metavar="SIZE",
                        help=f"volumes to time (default: {' '.join(DEFAULT_SIZES)})")
    parser.add_argument("--model", help="registry name or .safetensors file (default: the default model)")
    parser.add_argument("--threads", type=int, default=cores, help=f"torch CPU threads (default: all cores, {cores})")
    parser.add_argument("--device", default="cpu", help="where the network runs (default: cpu; the targets are for the CPU)")
    parser.add_argument("--tile", type=int, default=None, help="largest tile edge (default: the library's)")
    parser.add_argument("--out", type=Path, help="markdown file whose section is (re)written")
    parser.add_argument("--section", default="speed_memory",
                        help="name of that section (default speed_memory; one per model, e.g. speed_memory_gan)")
    parser.add_argument("--cli", action="store_true", help="also time the command line end to end on each size")
    parser.add_argument("--one", metavar="SIZE", help=argparse.SUPPRESS)  # internal: the child's job
    args = parser.parse_args(argv)
    if not sys.platform.startswith("linux"):
        parser.error(f"needs Linux (/proc/self/status, ru_maxrss in KiB), got {sys.platform}")
    for token in [args.one] if args.one else args.sizes:
        try:
            parse_size(token)
        except argparse.ArgumentTypeError as error:
            parser.error(str(error))
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if args.one:
        print(json.dumps(run_one(args.one, args.model, args.threads, args.device, args.tile)))
        return 0
    results = [_child(token, args) for token in args.sizes]
    if args.cli:
        with tempfile.TemporaryDirectory() as folder:
            for result in results:
                result["cli_s"] = _cli_seconds(result["token"], args, Path(folder))
    section = report(results, args)
    publish(section, args.out, args.section)
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
