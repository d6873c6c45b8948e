"""``medical-denoise serve`` under load, and what a round trip costs beyond the denoise itself.

Starts a real server (a child process on a free loopback port, its default queue), then:

- **load**: ``--clients`` clients at once, each uploading a small volume, polling its job and downloading the
  result. Every client ends with one outcome, counted by status: downloaded (the result read back on the
  input's grid and pixel type), refused with 503 (queue full: the client may retry later), or anything else,
  listed as it came. *Lost* counts accepted jobs that did not end with a download; the work folder must be
  empty afterwards.
- **round trip**: one ``--size``³ volume, a NRRD file as users have them, denoised with the command line as a
  user runs it: ``medical-denoise denoise IN OUT`` on this machine, and ``medical-denoise denoise IN OUT
  --server URL`` through the server (warm: the load part loaded its model), both through the command line's
  ``main`` in this process (a new process adds the same start-up to both; it is measured once, apart); the two
  alternate ``--repeats`` times, and each output is compared with the local one. *Overhead* is what the trip
  through the server costs beyond the denoise: the ``--server`` run's time beyond the server's own denoise (its
  summary line), less what the local run spends beyond its denoise other than loading the model (reading IN,
  writing OUT, which both runs do). The bare HTTP round trip of the same upload (what the client sends: an
  uncompressed NRRD) is measured too, without the command line around it.

The server's peak resident memory is ``VmHWM`` of its process (Linux ``/proc``).

Usage:
    python benchmarks/server_load.py --out docs/benchmarks.md
    python benchmarks/server_load.py --clients 4 --load-size 24 --size 48 --repeats 1   # a quick look
"""
from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import torch

from _common import command_line, ensure_library_importable, library_env, machine_line, publish, utc_now
from speed_memory import phantom

ensure_library_importable()
from MedicalDenoiseLib.cli.main import main as cli_main  # noqa: E402
from MedicalDenoiseLib.inference.denoiser import Denoiser  # noqa: E402
from MedicalDenoiseLib.io.reading import read_volume  # noqa: E402
from MedicalDenoiseLib.io.volume import Geometry, Volume  # noqa: E402
from MedicalDenoiseLib.io.writing import write_volume  # noqa: E402
from MedicalDenoiseLib.models.registry import default_model_name  # noqa: E402
from MedicalDenoiseLib.server.client import encode_nrrd  # noqa: E402

MIB = 2**20
_POLL_S = 0.1


class Server:
    """``medical-denoise serve`` in a child process, its output in a log file."""

    def __init__(self, folder: Path, device: str, queue: int) -> None:
        self.work_dir = folder / "work"
        self.log = folder / "server.log"
        env = library_env()
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "MedicalDenoiseLib.cli.main", "serve", "--port", "0", "--device", device,
                 "--work-dir", str(self.work_dir), "--queue", str(queue)],
                stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 300
        while True:
            found = re.search(r"serving on http://([\d.]+):(\d+)", self.log.read_text(errors="replace"))
            if found:
                self.host, self.port = found.group(1), int(found.group(2))
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start:\n{self.log.read_text(errors='replace')}")
            time.sleep(0.1)

    def call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=3600)
        try:
            connection.request(method, path, body=body)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def peak_rss_mib(self) -> float | None:
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return None

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def round_trip(server: Server, data: bytes, params: dict) -> tuple[str, float, dict | None, bytes | None]:
    """Upload, poll, download: ``(outcome, seconds, final job JSON, result bytes)``."""
    started = time.perf_counter()
    status, body = server.call("POST", "/jobs?" + urlencode(params), data)
    if status != 202:
        return f"refused {status}", time.perf_counter() - started, None, None
    job_id = json.loads(body)["id"]
    while True:
        status, body = server.call("GET", f"/jobs/{job_id}")
        job = json.loads(body)
        if status != 200 or job["state"] not in ("queued", "running"):
            break
        time.sleep(_POLL_S)
    if job.get("state") != "succeeded":
        return f"job {job.get('state', status)}", time.perf_counter() - started, job, None
    status, result = server.call("GET", f"/jobs/{job_id}/result")
    outcome = "downloaded" if status == 200 else f"download {status}"
    return outcome, time.perf_counter() - started, job, result if status == 200 else None


def _volume(size: int, seed: int) -> Volume:
    geometry = Geometry((0.8, 0.8, 1.5), (-100.0, 20.0, 5.0), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    return Volume(phantom((size, size, size), "float32", seed=seed), geometry)


def _file_bytes(volume: Volume, folder: Path, name: str) -> bytes:
    path = folder / name
    write_volume(volume, path)
    data = path.read_bytes()
    path.unlink()
    return data


def load(server: Server, clients: int, size: int, model: str, folder: Path) -> dict:
    volume = _volume(size, seed=1)
    data = _file_bytes(volume, folder, "load.nrrd")
    outcomes: list[tuple[str, float]] = [("not run", 0.0)] * clients
    problems: list[str] = []
    start = threading.Barrier(clients)

    def client(index: int) -> None:
        start.wait()  # all at once
        try:
            outcome, seconds, _, result = round_trip(server, data, {"format": "nrrd", "model": model})
            if result is not None:
                (folder / f"result{index}.nrrd").write_bytes(result)
                back = read_volume(folder / f"result{index}.nrrd")
                if back.array.shape != volume.array.shape or back.array.dtype != volume.array.dtype \
                        or back.geometry != volume.geometry:
                    outcome = "downloaded, wrong grid"
            outcomes[index] = (outcome, seconds)
        except Exception as exc:  # noqa: BLE001 - every client reports, whatever happened to it
            outcomes[index] = (f"error {type(exc).__name__}", 0.0)
            problems.append(f"client {index}: {exc}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    deadline = time.monotonic() + 30
    while any(server.work_dir.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)  # removal after a download runs once the response has gone out
    counts = Counter(outcome for outcome, _ in outcomes)
    accepted = sum(n for outcome, n in counts.items() if not outcome.startswith(("refused", "error")))
    seconds = [s for outcome, s in outcomes if outcome == "downloaded"]
    return {"counts": counts, "accepted": accepted, "lost": accepted - counts["downloaded"], "wall": wall,
            "seconds": seconds, "left": sorted(p.name for p in server.work_dir.iterdir()), "problems": problems,
            "upload_mib": len(data) / MIB}


def _cli_run(arguments: list[str]) -> tuple[float, float, str]:
    """The command line's ``main`` with ``arguments``, in this process (its imports already done, as they are
    alike for every run): ``(wall seconds, its denoise seconds, its summary line)``."""
    printed = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(printed):
        code = cli_main(arguments)
    wall = time.perf_counter() - started
    if code != 0:
        raise RuntimeError(f"medical-denoise {' '.join(arguments)} exited with {code}")
    summary = printed.getvalue().strip().splitlines()[-1]
    return wall, float(re.search(r"([\d.]+) s on ", summary).group(1)), summary


def _start_up_s() -> float:
    """Seconds for ``medical-denoise --version`` in a new process: the command's start-up (its imports)."""
    env = library_env()
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "MedicalDenoiseLib.cli.main", "--version"], capture_output=True, env=env,
                   check=True)
    return time.perf_counter() - started


def overhead(server: Server, size: int, model: str, device: str, folder: Path, repeats: int) -> dict:
    """The command line's local run and its run through the server, of one volume, alternated ``repeats`` times so
    that a busy spell of the machine does not land on one side only; then the bare HTTP round trip. Both command
    lines run through ``main`` in this process: a new process would add the same start-up to both, and its
    spread on a busy machine would drown the difference (the start-up is measured once, apart)."""
    volume = _volume(size, seed=2)
    source = folder / "big.nrrd"
    write_volume(volume, source)  # as write_volume writes a .nrrd: gzip-compressed
    started = time.perf_counter()
    Denoiser(model, device=device)
    model_load = time.perf_counter() - started
    url = f"http://{server.host}:{server.port}"
    local_out, server_out = folder / "local.nrrd", folder / "served.nrrd"
    runs = {key: [] for key in ("local", "local_denoise", "cli", "cli_denoise", "http", "http_denoise")}
    identical = True
    for _ in range(repeats):
        wall, denoise_s, _ = _cli_run(["denoise", str(source), str(local_out), "--model", model, "--device", device,
                                       "--progress", "none", "--overwrite"])
        runs["local"].append(wall)
        runs["local_denoise"].append(denoise_s)
        wall, denoise_s, summary = _cli_run(["denoise", str(source), str(server_out), "--server", url, "--model", model,
                                             "--progress", "none", "--overwrite"])
        runs["cli"].append(wall)
        runs["cli_denoise"].append(denoise_s)
        here, there = read_volume(local_out), read_volume(server_out)
        identical &= (np.array_equal(here.array, there.array) and here.array.dtype == there.array.dtype
                      and here.geometry == there.geometry == volume.geometry)
    raw = encode_nrrd(volume.array, volume.geometry)
    for _ in range(repeats):
        outcome, trip_s, job, result = round_trip(server, raw, {"format": "nrrd", "model": model})
        if result is None:
            raise RuntimeError(f"the {size}³ job did not come back: {outcome} {job}")
        runs["http"].append(trip_s)
        runs["http_denoise"].append(float(re.search(r"([\d.]+) s on ", job["summary"]).group(1)))
    return {**runs, "model_load": model_load, "start_up": _start_up_s(), "input_mib": source.stat().st_size / MIB, "upload_mib": len(raw) / MIB,
            "summary": summary, "identical": identical,
            "local_command": f"medical-denoise denoise IN.nrrd OUT.nrrd --model {model} --device {device}",
            "server_command": f"medical-denoise denoise IN.nrrd OUT.nrrd --server {url.rsplit(':', 1)[0]}:PORT --model {model}"}


def _runs(values: list[float]) -> str:
    best = min(values)
    return " | ".join(f"**{v:.1f}**" if v == best else f"{v:.1f}" for v in values)


def section(args, loaded: dict, trip: dict, peak: float | None, model: str, device: str) -> str:
    counts = loaded["counts"]
    rows = "\n".join(f"| {outcome} | {n} |" for outcome, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    seconds = loaded["seconds"]
    spread = (f"{min(seconds):.1f} / {statistics.median(seconds):.1f} / {max(seconds):.1f}" if seconds else "–")
    peak_text = f"{peak:.0f} MiB" if peak is not None else "not measured (no /proc)"
    size = args.size
    local_fixed = [w - d - trip["model_load"] for w, d in zip(trip["local"], trip["local_denoise"])]
    cli_beyond = [w - d for w, d in zip(trip["cli"], trip["cli_denoise"])]
    beyond = [c - f for c, f in zip(cli_beyond, local_fixed)]
    http_beyond = [t - d for t, d in zip(trip["http"], trip["http_denoise"])]
    return f"""## Server: {args.clients} concurrent clients and the round-trip overhead

- Machine: {machine_line(torch.__version__, f"{torch.get_num_threads()} torch threads")}
- Model: `{model}` on {device}; server: `medical-denoise serve --port 0 --device {device} --queue {args.queue}`, everything else its default (one worker, torch's default threads, as the command-line runs)
- Date: {utc_now()}
- Command: `{command_line()}`

**Load.** {args.clients} clients start at the same instant; each uploads a {args.load_size}³ float32 NRRD
({loaded['upload_mib']:.2f} MiB), polls every {_POLL_S:g} s and downloads the result. No client retries.

| outcome | clients |
|---|---|
{rows}

- Accepted jobs not downloaded (lost): **{loaded['lost']}**; work folder afterwards: {'empty' if not loaded['left'] else ', '.join(loaded['left'])}
- Round trip of the downloaded jobs, min / median / max: {spread} s; all clients done in {loaded['wall']:.1f} s
- Server peak resident memory (VmHWM, whole process, after both parts): {peak_text}

*refused 503*: the queue was full when the upload arrived (one job runs, {args.queue} wait, and uploads still
arriving hold a place); the answer says so and carries `Retry-After`. *downloaded*: the result was read back on
the input's grid and pixel type.

**Round trip.** One {size}³ float32 volume in a NRRD file ({trip['input_mib']:.1f} MiB, gzip-compressed, as
`write_volume` writes a `.nrrd`), default options; the command line run locally and through the server, alternated
{len(trip['local'])} times (the fastest of each in bold). Both go through the command line's `main` in the benchmark's
process, so neither pays the command's start-up, which a new process adds alike to both
(`medical-denoise --version` takes {trip['start_up']:.1f} s here):

- local: `{trip['local_command']}`
- through the server: `{trip['server_command']}` (it reads IN here, sends an uncompressed NRRD of
  {trip['upload_mib']:.1f} MiB, polls, downloads the same and writes OUT here with the same writer)

| {size}³ | {' | '.join(f'run {i + 1} s' for i in range(len(trip['local'])))} |
|---|{'---|' * len(trip['local'])}
| local run, wall | {_runs(trip['local'])} |
| its denoise (its summary line) | {_runs(trip['local_denoise'])} |
| local run beyond its denoise, less loading the model ({trip['model_load']:.1f} s) | {_runs(local_fixed)} |
| `--server` run, wall | {_runs(trip['cli'])} |
| the server's denoise (its summary line) | {_runs(trip['cli_denoise'])} |
| `--server` run beyond the server's denoise | {_runs(cli_beyond)} |
| **round trip beyond the denoise** (the row above less the local run's) | {_runs(beyond)} |
| bare HTTP round trip (upload, poll, download) − the server's denoise | {_runs(http_beyond)} |

Overhead: **{min(beyond):.1f}–{max(beyond):.1f} s beyond the denoise**: what a `--server` run takes beyond the
server's own denoise, less what the local run takes beyond its own denoise apart from loading the model (reading IN
and writing OUT, which both runs do; the server keeps its model loaded, so loading it is counted against the
server here, not for it). What remains is sending the voxels (the client sends an uncompressed NRRD whatever the
input's format, so neither side compresses), the server checking the upload by its header and size and reading it
once in the worker, writing the result uncompressed and sending it back, and the wait for the next poll.
The bare HTTP round trip of the same upload, without the command line around it:
{min(http_beyond):.1f}–{max(http_beyond):.1f} s beyond the server's denoise.
Outputs of the two runs identical (voxels, pixel type, geometry): {'yes' if trip['identical'] else '**no**'}.
Server summary: `{trip['summary'].split(': ', 1)[-1]}`.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--load-size", type=int, default=64, help="edge of each load client's volume (default 64)")
    parser.add_argument("--size", type=int, default=256, help="edge of the round-trip volume (default 256)")
    parser.add_argument("--model", help="registry name (default: the registry's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=2, help="round trips of the large volume (default 2)")
    parser.add_argument("--queue", type=int, default=8, help="the server's --queue (default: its default, 8)")
    parser.add_argument("--out", type=Path, help="markdown file whose `server_load` section is (re)written")
    args = parser.parse_args(argv)
    model = args.model or default_model_name()
    folder = Path(tempfile.mkdtemp(prefix="server-load-"))
    server = Server(folder, args.device, args.queue)
    try:
        loaded = load(server, args.clients, args.load_size, model, folder)
        for problem in loaded["problems"]:
            print(problem, file=sys.stderr)
        trip = overhead(server, args.size, model, args.device, folder, args.repeats)
        peak = server.peak_rss_mib()
    finally:
        code = server.stop()
        log = server.log.read_text(errors="replace")
        shutil.rmtree(folder, ignore_errors=True)
    if code != 0:
        print(log, file=sys.stderr)
        raise RuntimeError(f"the server exited with {code}")
    publish(section(args, loaded, trip, peak, model, args.device), args.out, "server_load")
    return 0 if loaded["lost"] == 0 and not loaded["left"] else 1


if __name__ == "__main__":
    sys.exit(main())
