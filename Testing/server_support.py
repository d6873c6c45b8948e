"""A real ``medical-denoise serve`` for tests: a child process on a free loopback port, with the tiny model as
its only registry entry. Shared by the server's tests and its client's."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import requests

from conftest import oblique_geometry, phantom

from MedicalDenoiseLib.io.volume import Volume
from MedicalDenoiseLib.models.model_files import file_sha256

__all__ = ["TOKEN", "TILE", "MAX_UPLOAD_MB", "TIMEOUT", "FINISHED", "tiny_registry", "Server"]

TOKEN = "s3cret-token-for-tests-0123456789"
TILE = 32  # small tiles: a 64³ volume takes many tiles, so a job runs long enough to be cancelled
MAX_UPLOAD_MB = 2

TIMEOUT = 120  # seconds any one request may take on a loaded machine (never a measurement)
FINISHED = ("succeeded", "failed", "cancelled")


def tiny_registry(folder: Path, model_file: Path) -> Path:
    """A Resources folder whose registry holds the tiny test model as ``tiny-test`` (the default for everything)."""
    (folder / "Models").mkdir(parents=True)
    target = folder / "Models" / "tiny-test.safetensors"
    target.write_bytes(model_file.read_bytes())
    registry = {"default": "tiny-test",
                "models": [{"name": "tiny-test", "file": "Models/tiny-test.safetensors", "sha256": file_sha256(target),
                            "summary": "untrained, for tests"}]}
    (folder / "Models.json").write_text(json.dumps(registry), encoding="utf-8")
    return folder


class Server:
    """``medical-denoise serve`` started in a child process; ``url`` once it has said where it listens."""

    def __init__(self, root: Path, resources: Path, *args: str, token: str | None = None) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.work_dir = root / "work"
        self.log = root / "server.log"
        command = [sys.executable, "-m", "MedicalDenoiseLib.cli.main", "serve", "--port", "0", "--device", "cpu",
                   "--work-dir", str(self.work_dir), *args]
        if token is not None:
            token_file = root / "token"
            token_file.write_text(token + "\n", encoding="utf-8")
            command += ["--token-file", str(token_file)]
        # Two torch threads, as in this test process, so the server's arithmetic is the local run's.
        env = {**os.environ, "MEDICAL_DENOISE_RESOURCES": str(resources), "OMP_NUM_THREADS": "2"}
        with open(self.log, "wb") as log:  # a file, not a pipe: a full pipe would stall the server
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.url = self._wait_for_address()
        self.session = requests.Session()
        if token is not None:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def _wait_for_address(self) -> str:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            found = re.search(r"serving on (http://127\.0\.0\.1:\d+)", self.log.read_text(errors="replace"))
            if found:
                return found.group(1)
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log.read_text('utf-8', 'replace')}")
            time.sleep(0.1)
        raise RuntimeError(f"the server did not start:\n{self.log.read_text('utf-8', 'replace')}")

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        return self.session.request(method, self.url + path, timeout=TIMEOUT, **kwargs)

    def submit(self, data: bytes, **params) -> requests.Response:
        return self.request("POST", "/jobs", params=params, data=data)

    def wait(self, job_id: str, until=FINISHED) -> dict:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            job = self.request("GET", f"/jobs/{job_id}").json()
            if job["state"] in until:
                return job
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} never reached {until}: {job}")

    def work_files(self) -> list[str]:
        return sorted(p.name for p in self.work_dir.iterdir())

    def wait_until_work_dir_empty(self) -> list[str]:
        """The work folder's files once it is empty, or what is still there after a generous wait (removal
        after a download runs once the response has gone out)."""
        deadline = time.monotonic() + 30
        while self.work_files() and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.work_files()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.session.close()
        return self.process.returncode


def ct_int16() -> Volume:
    """An int16 CT phantom in HU on an oblique, anisotropic, offset grid."""
    hu = phantom(low=-1000, high=1200) + np.random.default_rng(1).normal(0, 30, (19, 26, 23))
    return Volume(np.rint(hu).astype(np.int16), oblique_geometry())


def mr_float32() -> Volume:
    """A float32 MR phantom on the same grid."""
    array = phantom() * 500 + np.random.default_rng(0).normal(0, 25, (19, 26, 23))
    return Volume(array.astype(np.float32), oblique_geometry())
