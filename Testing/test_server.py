"""``medical-denoise serve`` end to end: a real server in a child process on a free loopback port, the tiny model.

Every test leaves the server answering /health with an empty work folder; nothing a client names reaches the
file system.
"""
from __future__ import annotations

import gzip
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from conftest import assert_refused_in_one_line, oblique_geometry
from MedicalDenoiseLib.cli.main import main
from MedicalDenoiseLib.inference.denoiser import Denoiser
from MedicalDenoiseLib.inference.grain import parse_grain
from MedicalDenoiseLib.inference.strength import parse_strength
from MedicalDenoiseLib.io.reading import read_volume
from MedicalDenoiseLib.io.volume import Volume
from MedicalDenoiseLib.io.writing import write_volume
from server_support import FINISHED, MAX_UPLOAD_MB, TILE, TIMEOUT, TOKEN, Server, ct_int16, mr_float32, tiny_registry

# -- fixtures -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def resources(tmp_path_factory, tiny_model_file):
    return tiny_registry(tmp_path_factory.mktemp("resources"), tiny_model_file)


@pytest.fixture(scope="module")
def server(tmp_path_factory, resources):
    """The server most tests share: a token, a 2 MB upload limit, one place in the queue, small tiles."""
    started = Server(tmp_path_factory.mktemp("server"), resources, "--max-upload-mb", str(MAX_UPLOAD_MB),
                     "--queue", "1", "--tile", str(TILE), token=TOKEN)
    yield started
    started.stop()


@pytest.fixture(autouse=True)
def still_healthy_and_clean(request):
    """After every test on the shared server: it still answers, and its work folder ends empty."""
    yield
    if "server" in request.fixturenames:
        shared = request.getfixturevalue("server")
        assert shared.request("GET", "/health").json() == {"status": "ok"}
        assert shared.wait_until_work_dir_empty() == []


def _volume_bytes(tmp_path: Path, volume: Volume, fmt: str) -> tuple[Path, bytes]:
    path = tmp_path / f"input.{fmt}"
    write_volume(volume, path)
    return path, path.read_bytes()



def _assert_one_line(response: requests.Response, status: int, *needles: str) -> str:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and "Traceback" not in detail
    for needle in needles:
        assert needle in detail, (needle, detail)
    return detail


# -- the round trip -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt, make, options", [
    ("nrrd", ct_int16, {"model": "tiny-test", "modality": "ct", "strength": "25"}),
    ("nii.gz", ct_int16, {"model": "tiny-test", "strength": "strong", "grain": "1"}),
    ("nrrd", mr_float32, {"model": "tiny-test", "strength": "mild", "grain": "2"}),
    ("nii.gz", mr_float32, {}),  # every option left to its default, the model too
])
def test_round_trip_equals_a_local_denoise_on_the_same_grid_and_pixel_type(server, tmp_path, tiny_model_file, fmt,
                                                                           make, options):
    source, data = _volume_bytes(tmp_path, make(), fmt)
    submitted = server.submit(data, format=fmt, **options)
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    assert submitted.json() == {"id": job_id, "state": "queued"} and re.fullmatch(r"[0-9a-f]{32}", job_id)
    job = server.wait(job_id)
    assert job["state"] == "succeeded" and job["progress"] == 1.0 and job["error"] == "", job
    why = "chosen in the request" if "model" in options else "the default for MR"
    assert re.fullmatch(rf"\w+, model tiny-test \({why}\), noise SD [\d.e+-]+ estimated, [\d.e+-]+ used, "
                        rf"[\d.]+ s on cpu; .+", job["summary"]), job["summary"]

    result = server.request("GET", f"/jobs/{job_id}/result")
    assert result.status_code == 200
    served = tmp_path / f"served.{fmt}"
    served.write_bytes(result.content)
    # The same denoise here, through the same writer.
    original = read_volume(source)
    local = Denoiser(str(tiny_model_file), device="cpu", tile_size=TILE).denoise(
        original, strength=parse_strength(options.get("strength", "auto")), modality=options.get("modality", "auto"),
        grain=parse_grain(options.get("grain", "auto")) or "auto")
    write_volume(local.volume, tmp_path / f"local.{fmt}", reference=original)
    got, want = read_volume(served), read_volume(tmp_path / f"local.{fmt}")
    assert got.array.dtype == original.array.dtype == want.array.dtype
    assert np.array_equal(got.array, want.array)
    assert not np.array_equal(got.array, original.array)  # it did denoise
    assert (got.geometry.spacing, got.geometry.origin, got.geometry.direction) == \
        (want.geometry.spacing, want.geometry.origin, want.geometry.direction)
    if fmt == "nrrd":  # lossless geometry: the input's exactly
        assert got.geometry == original.geometry
    np.testing.assert_allclose(got.geometry.direction, oblique_geometry().direction, atol=1e-6)
    np.testing.assert_allclose(got.geometry.origin, oblique_geometry().origin, atol=1e-4)
    # Fetched once: then the job and its files are gone.
    assert server.wait_until_work_dir_empty() == []
    assert server.request("GET", f"/jobs/{job_id}").status_code == 404
    assert server.request("GET", f"/jobs/{job_id}/result").status_code == 404


def test_info_names_the_device_models_and_limits(server):
    info = server.request("GET", "/info").json()
    assert info["device"] == "cpu" and info["models"] == ["tiny-test"]
    assert info["max_upload_mb"] == MAX_UPLOAD_MB and info["queue_size"] == 1 and info["jobs_waiting"] == 0
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", info["version"])


# -- refusals -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN}x",
                                           "Bearer "])
def test_a_missing_or_wrong_token_is_refused_everywhere_but_health(server, tmp_path, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    _, data = _volume_bytes(tmp_path, mr_float32(), "nrrd")
    calls = [("GET", "/info", None), ("POST", "/jobs?format=nrrd", data), ("GET", f"/jobs/{'a' * 32}", None),
             ("DELETE", f"/jobs/{'a' * 32}", None), ("GET", f"/jobs/{'a' * 32}/result", None)]
    for method, path, body in calls:
        response = requests.request(method, server.url + path, headers=headers, data=body, timeout=TIMEOUT)
        _assert_one_line(response, 401, "token")
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert requests.get(server.url + "/health", headers=headers, timeout=TIMEOUT).json() == {"status": "ok"}
    assert server.work_files() == []  # the refused upload was never stored


def test_an_upload_past_the_limit_is_refused_whether_declared_or_streamed(server):
    too_big = bytes(MAX_UPLOAD_MB * 2**20 + 1)
    # Content-Length says so: refused before anything is stored.
    _assert_one_line(server.submit(too_big, format="nrrd"), 413, f"{MAX_UPLOAD_MB:g} MB")

    # Chunked, no Content-Length: counted as it arrives and stopped at the limit.
    def pieces():
        for start in range(0, len(too_big), 256 * 1024):
            yield too_big[start:start + 256 * 1024]

    response = server.request("POST", "/jobs", params={"format": "nrrd"}, data=pieces())
    _assert_one_line(response, 413)


def _nrrd_header(**fields) -> bytes:
    lines = ["NRRD0004", "type: float", "dimension: 3", "sizes: 4 4 4", "encoding: raw", "endian: little",
             *[f"{key.replace('_', ' ')}: {value}" for key, value in fields.items()]]
    return ("\n".join(lines) + "\n\n").encode()


def test_a_corrupt_or_empty_upload_is_refused_before_it_is_queued(server, tmp_path):
    _, good = _volume_bytes(tmp_path, mr_float32(), "nrrd")
    raw = _nrrd_header() + np.arange(64, dtype="<f4").tobytes()
    cases = [
        (b"", "nrrd", "empty"),
        (b"this is not an image", "nrrd", "not a NRRD"),
        (good[: len(good) // 2], "nrrd", "cannot be read"),  # cut short
        (raw[:-10], "nrrd", "cannot be read"),
        (os.urandom(4096), "nii.gz", "gzip"),
        (gzip.compress(os.urandom(4096)), "nii.gz", "NIfTI"),
        (gzip.compress(raw), "nii.gz", "NIfTI"),  # a NRRD dressed as .nii.gz
        (good, "nii.gz", "gzip"),
    ]
    for data, fmt, needle in cases:
        detail = _assert_one_line(server.submit(data, format=fmt), 422, needle)
        assert str(server.work_dir) not in detail  # the server's own paths are not the client's business
    whole = server.submit(raw, format="nrrd")  # the same bytes, whole, are a volume
    assert whole.status_code == 202
    assert server.wait(whole.json()["id"])["state"] == "succeeded"
    server.request("DELETE", f"/jobs/{whole.json()['id']}")


def test_hostile_names_are_refused_and_nothing_is_written_outside_the_work_folder(server, tmp_path, tiny_model_file):
    around = server.work_dir.parent
    secret = tmp_path / "secret.raw"
    secret.write_bytes(np.arange(64, dtype="<f4").tobytes())
    before = sorted(p.relative_to(around).as_posix() for p in around.rglob("*") if "work" not in p.parts)
    _, data = _volume_bytes(tmp_path, mr_float32(), "nrrd")
    hostile_options = [
        {"format": "../etc"}, {"format": "nrrd/../../x"}, {"format": "../../x.nrrd"}, {"format": ""}, {},
        {"format": "nrrd", "model": "../../x"}, {"format": "nrrd", "model": str(tiny_model_file)},
        {"format": "nrrd", "model": "no-such-model"}, {"format": "nrrd", "modality": "../x"},
        {"format": "nrrd", "strength": "../../x"}, {"format": "nrrd", "strength": "nan"},
        {"format": "nrrd", "grain": "../x"}, {"format": "nrrd", "output": "../../x"},
    ]
    for params in hostile_options:
        _assert_one_line(server.submit(data, **params), 422)
    _assert_one_line(server.submit(data, format="nrrd", model="../../x"), 422, "unknown model")
    # A NRRD header that points the reader at another file of the server's.
    for target in (str(secret), "../secret.raw", "../../../../../../etc/hostname"):
        _assert_one_line(server.submit(_nrrd_header(data_file=target), format="nrrd"), 422, "data file")
        _assert_one_line(server.submit(_nrrd_header(datafile=target), format="nrrd"), 422, "data file")
    for job_id in ("..%2F..%2Fx", "../../x", "A" * 32, "0" * 31):
        assert server.request("GET", f"/jobs/{job_id}").status_code == 404
    after = sorted(p.relative_to(around).as_posix() for p in around.rglob("*") if "work" not in p.parts)
    assert after == before and not (server.work_dir / ".." / ".." / "x").exists()


def test_a_job_the_denoiser_refuses_fails_with_one_line_and_keeps_no_file(server, tmp_path):
    _, data = _volume_bytes(tmp_path, Volume(np.full((8, 9, 10), np.nan, np.float32), oblique_geometry()), "nrrd")
    job_id = server.submit(data, format="nrrd").json()["id"]
    job = server.wait(job_id)
    assert job["state"] == "failed" and job["summary"] == ""
    assert job["error"].startswith("upload.nrrd: every voxel is NaN") and "\n" not in job["error"], job
    _assert_one_line(server.request("GET", f"/jobs/{job_id}/result"), 409, "failed")
    assert server.work_files() == []
    assert server.request("DELETE", f"/jobs/{job_id}").json()["state"] == "failed"  # forgotten
    assert server.request("GET", f"/jobs/{job_id}").status_code == 404


def test_a_full_queue_refuses_and_waiting_and_running_jobs_can_be_cancelled(server, tmp_path):
    slow = Volume(np.random.default_rng(5).normal(100, 10, (64, 64, 64)).astype(np.float32), oblique_geometry())
    _, big = _volume_bytes(tmp_path, slow, "nrrd")
    _, small = _volume_bytes(tmp_path, mr_float32(), "nrrd")
    running = server.submit(big, format="nrrd").json()["id"]
    server.wait(running, until=("running",) + FINISHED)
    waiting = server.submit(small, format="nrrd").json()["id"]
    assert server.request("GET", "/info").json()["jobs_waiting"] == 1
    full = server.submit(small, format="nrrd")
    _assert_one_line(full, 503, "queue is full")
    assert full.headers["Retry-After"]

    cancelled = server.request("DELETE", f"/jobs/{waiting}").json()
    assert cancelled == {"id": waiting, "state": "cancelled", "progress": 0.0, "error": "", "summary": ""}
    assert server.request("DELETE", f"/jobs/{running}").json()["state"] in ("running", "cancelled")
    job = server.wait(running)
    assert job["state"] == "cancelled" and job["progress"] < 1.0, job
    _assert_one_line(server.request("GET", f"/jobs/{running}/result"), 409, "cancelled")
    assert server.request("GET", f"/jobs/{waiting}").json()["state"] == "cancelled"
    # The worker goes on with the next job.
    next_job = server.submit(small, format="nrrd").json()["id"]
    assert server.wait(next_job)["state"] == "succeeded"
    assert server.request("DELETE", f"/jobs/{next_job}").json()["state"] == "succeeded"  # discarded unread


def test_unknown_jobs_and_routes_answer_404_in_json(server):
    for method, path in (("GET", f"/jobs/{'b' * 32}"), ("DELETE", f"/jobs/{'b' * 32}"),
                         ("GET", f"/jobs/{'b' * 32}/result"), ("GET", "/nowhere")):
        response = server.request(method, path)
        assert response.status_code == 404 and isinstance(response.json()["detail"], str)


# -- starting and stopping ------------------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7", "example.org"])
def test_listening_beyond_loopback_without_a_token_refuses_to_start(capsys, tmp_path, host):
    code = main(["serve", "--host", host, "--port", "0", "--work-dir", str(tmp_path / "work")])
    _, err = capsys.readouterr()
    assert_refused_in_one_line(code, err, "medical-denoise: error: ", "--token-file", host)
    assert not (tmp_path / "work").exists()


def test_an_empty_token_file_refuses_to_start(capsys, tmp_path):
    (tmp_path / "token").write_text("\n")
    code = main(["serve", "--host", "0.0.0.0", "--token-file", str(tmp_path / "token")])
    _, err = capsys.readouterr()
    assert_refused_in_one_line(code, err, "medical-denoise: error: ", "token")


def test_unfetched_results_expire_and_stopping_leaves_the_work_folder_empty(tmp_path, resources):
    local = Server(tmp_path / "expiring", resources, "--result-ttl-s", "1", "--tile", str(TILE))  # loopback, no token
    try:
        assert local.request("GET", "/info").status_code == 200  # no token configured: none needed
        _, data = _volume_bytes(tmp_path, mr_float32(), "nii.gz")
        job_id = local.submit(data, format="nii.gz").json()["id"]
        assert local.wait(job_id)["state"] == "succeeded"
        deadline = time.monotonic() + 60
        while local.request("GET", f"/jobs/{job_id}").status_code != 404 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert local.request("GET", f"/jobs/{job_id}").status_code == 404
        assert local.work_files() == []
        # Stopping with a job in hand: it is cancelled and its files removed.
        slow = Volume(np.random.default_rng(5).normal(100, 10, (64, 64, 64)).astype(np.float32), oblique_geometry())
        _, big = _volume_bytes(tmp_path, slow, "nrrd")
        assert local.submit(big, format="nrrd").status_code == 202
    finally:
        code = local.stop()
    assert code == 0, local.log.read_text('utf-8', 'replace')
    assert local.work_files() == [] and "server stopped" in local.log.read_text('utf-8', 'replace')
    assert "Traceback" not in local.log.read_text('utf-8', 'replace')
