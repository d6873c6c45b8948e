"""``medical-denoise denoise IN OUT --server URL``: the command line's client against a real server (a child process
on a free loopback port, the tiny model), its output against a local run of the same command.

Every test leaves the server answering /health with an empty work folder.
"""
from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import assert_refused_in_one_line, oblique_geometry, phantom
from MedicalDenoiseLib.cli.main import main
from MedicalDenoiseLib.io.reading import read_volume
from MedicalDenoiseLib.io.volume import Geometry, Volume
from MedicalDenoiseLib.io.writing import write_volume
from MedicalDenoiseLib.server import client as client_module
from MedicalDenoiseLib.server.client import decode_nrrd, encode_nrrd
from MedicalDenoiseLib.slicer.background_job import _DONE
from server_support import FINISHED, TILE, TOKEN, Server, ct_int16, mr_float32, tiny_registry

PREFIX = "medical-denoise: error: "


@pytest.fixture(scope="module")
def resources(tmp_path_factory, tiny_model_file):
    return tiny_registry(tmp_path_factory.mktemp("resources"), tiny_model_file)


@pytest.fixture(scope="module")
def server(tmp_path_factory, resources):
    """A token, one place in the queue, small tiles (so that a 64³ job runs long enough to be interrupted)."""
    started = Server(tmp_path_factory.mktemp("server"), resources, "--queue", "1", "--tile", str(TILE), token=TOKEN)
    yield started
    started.stop()


@pytest.fixture(scope="module")
def token_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("client") / "token"
    path.write_text(TOKEN + "\n", encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def registry_and_a_clean_server(request, monkeypatch, resources):
    """The local runs see the server's registry (``tiny-test``); after each test the server still answers and its
    work folder is empty."""
    monkeypatch.setenv("MEDICAL_DENOISE_RESOURCES", str(resources))
    yield
    if "server" in request.fixturenames:
        shared = request.getfixturevalue("server")
        assert shared.request("GET", "/health").json() == {"status": "ok"}
        assert shared.wait_until_work_dir_empty() == []



def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _remote(server: Server, token_file: Path, *options: str) -> list[str]:
    return ["--server", server.url, "--token-file", str(token_file), *options]


def _assert_same_output(remote: Path, local: Path, source: Path) -> None:
    got, want, original = read_volume(remote), read_volume(local), read_volume(source)
    assert got.array.dtype == want.array.dtype == original.array.dtype
    assert np.array_equal(got.array, want.array)
    assert not np.array_equal(got.array, original.array)  # it did denoise
    assert got.geometry == want.geometry
    np.testing.assert_allclose(got.geometry.direction, original.geometry.direction, atol=1e-6)
    np.testing.assert_allclose(got.geometry.origin, original.geometry.origin, atol=1e-4)


def _summary(out: str) -> str:
    lines = [line for line in out.splitlines() if " -> " in line]
    assert len(lines) == 1, out
    return lines[0]


# -- the round trip -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt, make, options", [
    ("nrrd", ct_int16, ["--model", "tiny-test", "--modality", "ct", "--strength", "25"]),
    ("nii.gz", ct_int16, ["--strength", "strong", "--grain", "1"]),
    ("nrrd", mr_float32, ["--strength", "mild", "--grain", "2"]),
    ("nii.gz", mr_float32, []),  # every option left to its default, the model too
])
def test_output_equals_a_local_run_with_the_same_options(capsys, server, token_file, tmp_path, fmt, make, options):
    source = tmp_path / f"input.{fmt}"
    write_volume(make(), source)
    local, remote = tmp_path / f"local.{fmt}", tmp_path / f"remote.{fmt}"
    code, out, err = _run(capsys, "denoise", source, local, "--device", "cpu", "--tile", TILE, "--progress", "none",
                          *options)
    assert code == 0, err
    code, out, err = _run(capsys, "denoise", source, remote, *_remote(server, token_file, "--progress", "slicer"),
                          *options)
    assert code == 0, err
    _assert_same_output(remote, local, source)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([source.name, local.name, remote.name])
    # Slicer's protocol: progress lines from the job's progress, then the summary its BackgroundJob parses.
    assert out.startswith(f"<filter-start><filter-name>{source.name}</filter-name></filter-start>")
    progress = [float(v) for v in re.findall(r"<filter-progress>([\d.]+)</filter-progress>", out)]
    assert progress and progress[-1] == 1.0 and progress == sorted(progress), out
    summary = _summary(out)
    assert summary.startswith(f"{source} -> {remote}: ") and ", model tiny-test (" in summary
    device, grain = _DONE.search(summary).group(1, 2)
    assert device == "cpu" and grain and "denoised" in grain, summary


def test_dicom_series_in_and_out(capsys, server, token_file, tmp_path, ct_volume):
    series = tmp_path / "series"
    write_volume(ct_volume, series)  # a DICOM series, Modality CT
    local, remote = tmp_path / "local", tmp_path / "remote"
    assert _run(capsys, "denoise", series, local, "--device", "cpu", "--tile", TILE)[0] == 0
    code, out, err = _run(capsys, "denoise", series, remote, *_remote(server, token_file))
    assert code == 0, err
    assert len(list(remote.iterdir())) == 19  # one file per slice
    got, want = read_volume(remote), read_volume(local)
    assert got.array.dtype == want.array.dtype == np.int16 and np.array_equal(got.array, want.array)
    assert got.modality == "ct" and ", model tiny-test (the default for CT)" in _summary(out)


def test_a_folder_of_inputs_is_sent_file_by_file_past_any_proxy(capsys, server, token_file, tmp_path, monkeypatch):
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_volume(mr_float32(), inputs / "a.nrrd")
    write_volume(ct_int16(), inputs / "b.nii.gz")
    with monkeypatch.context() as env:
        # A proxy that answers nothing: a server on this machine is reached directly all the same.
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
            env.setenv(name, "http://127.0.0.1:9")
        for name in ("NO_PROXY", "no_proxy"):
            env.delenv(name, raising=False)
        code, out, err = _run(capsys, "denoise", inputs, tmp_path / "out", *_remote(server, token_file))
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.nrrd", "b.nii.gz"]
    assert len([line for line in out.splitlines() if " -> " in line]) == 2


# -- refusals, each one line and nothing written ----------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_wrong_or_missing_token_is_one_line_naming_401(capsys, server, tmp_path):
    source = tmp_path / "in.nrrd"
    write_volume(mr_float32(), source)
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-token\n")
    code, out, err = _run(capsys, "denoise", source, tmp_path / "out.nrrd", "--server", server.url, "--token-file", wrong)
    assert_refused_in_one_line(code, err, PREFIX, "token refused by the server (401)")
    assert TOKEN not in err and "not-the-token" not in err + out
    code, _, err = _run(capsys, "denoise", source, tmp_path / "out.nrrd", "--server", server.url)
    assert_refused_in_one_line(code, err, PREFIX, "401", "--token-file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nrrd", "wrong"]


def test_an_unreachable_server_is_one_line(capsys, tmp_path, token_file):
    source = tmp_path / "in.nrrd"
    write_volume(mr_float32(), source)
    url = f"http://127.0.0.1:{_free_port()}"
    code, _, err = _run(capsys, "denoise", source, tmp_path / "out.nrrd", "--server", url, "--token-file", token_file)
    assert_refused_in_one_line(code, err, PREFIX, f"server unreachable at {url}")
    code, _, err = _run(capsys, "denoise", source, tmp_path / "out.nrrd", "--server", "gpu-box:8765")
    assert_refused_in_one_line(code, err, PREFIX, "http://HOST:PORT")
    assert [p.name for p in tmp_path.iterdir()] == ["in.nrrd"]


@pytest.mark.parametrize("option, needle", [(["--adapt"], "--adapt"), (["--adapt", "--save-adapted", "m.safetensors"],
                                                                        "--adapt"),
                                            (["--flips"], "--flips"), (["--tile", "64"], "--tile"),
                                            (["--model", "no-such-model"], "no such model")])
def test_what_only_a_local_run_can_do_is_refused(capsys, server, token_file, tmp_path, option, needle):
    source = tmp_path / "in.nrrd"
    write_volume(mr_float32(), source)
    code, _, err = _run(capsys, "denoise", source, tmp_path / "out.nrrd", *_remote(server, token_file), *option)
    assert_refused_in_one_line(code, err, PREFIX, needle)
    assert [p.name for p in tmp_path.iterdir()] == ["in.nrrd"]


def test_a_job_the_server_fails_is_one_line_naming_the_input(capsys, server, token_file, tmp_path):
    source = tmp_path / "nan.nrrd"
    write_volume(Volume(np.full((8, 9, 10), np.nan, np.float32), oblique_geometry()), source)
    code, _, err = _run(capsys, "denoise", source, tmp_path / "out.nrrd", *_remote(server, token_file))
    assert_refused_in_one_line(code, err, PREFIX, "job failed", f"{source}: every voxel is NaN")
    assert [p.name for p in tmp_path.iterdir()] == ["nan.nrrd"]


def _slow_volume() -> Volume:
    return Volume(np.random.default_rng(5).normal(100, 10, (64, 64, 64)).astype(np.float32), oblique_geometry())


def test_a_full_queue_is_tried_again_then_refused_in_one_line(capsys, server, token_file, tmp_path, monkeypatch):
    slow, small = tmp_path / "slow.nrrd", tmp_path / "small.nrrd"
    write_volume(_slow_volume(), slow)
    write_volume(mr_float32(), small)
    running = server.submit(slow.read_bytes(), format="nrrd").json()["id"]
    server.wait(running, until=("running",) + FINISHED)
    waiting = server.submit(small.read_bytes(), format="nrrd").json()["id"]  # the one place in the queue
    waits: list[str] = []
    monkeypatch.setattr(client_module, "RETRIES", 2)
    try:
        monkeypatch.setattr(client_module, "_retry_after", lambda value: waits.append(value) or 0.01)
        code, _, err = _run(capsys, "denoise", small, tmp_path / "out.nrrd", *_remote(server, token_file))
        lines = err.strip().splitlines()
        assert code == 1 and len(lines) == 3 and waits == ["10", "10"], err
        assert all("queue is full; trying again" in line for line in lines[:2])
        assert lines[-1] == f"{PREFIX}{small}: the server's queue stayed full after 3 tries; try again later"
        assert not (tmp_path / "out.nrrd").exists()

        def free_the_queue(value):  # the first wait frees the queue: the next try is accepted
            for job_id in (waiting, running):
                server.request("DELETE", f"/jobs/{job_id}")
            return 0.01

        monkeypatch.setattr(client_module, "_retry_after", free_the_queue)
        code, out, err = _run(capsys, "denoise", small, tmp_path / "out.nrrd", *_remote(server, token_file))
        assert code == 0 and "queue is full; trying again in 0.01 s (1 of 2)" in err and " -> " in out, err
    finally:
        for job_id in (waiting, running):
            server.request("DELETE", f"/jobs/{job_id}")  # cancelled, or forgotten once it has ended
    assert read_volume(tmp_path / "out.nrrd").array.shape == (19, 26, 23)


# -- interrupting ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupting_the_client_cancels_the_job_and_writes_nothing(server, token_file, tmp_path, signum):
    source = tmp_path / "slow.nrrd"
    write_volume(_slow_volume(), source)
    output = tmp_path / "out"  # a DICOM series: the output most worth never seeing half-written
    client = subprocess.Popen([sys.executable, "-m", "MedicalDenoiseLib.cli.main", "denoise", str(source), str(output),
                               *_remote(server, token_file), "--progress", "slicer"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        job_id = None
        deadline = time.monotonic() + 120
        while job_id is None and time.monotonic() < deadline and client.poll() is None:
            uploads = [p.name for p in server.work_dir.glob("*.upload.nrrd")]
            if uploads:
                job_id = uploads[0].split(".")[0]
                if server.request("GET", f"/jobs/{job_id}").json().get("state") != "running":
                    job_id = None
            time.sleep(0.05)
        assert job_id is not None, client.communicate(timeout=60)
        client.send_signal(signum)
        out, err = client.communicate(timeout=60)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    assert client.returncode == 130, err
    assert err.strip().splitlines()[-1] == "medical-denoise: cancelled; nothing was written", err
    assert "<filter-end>" in out and " -> " not in out
    assert server.wait(job_id)["state"] == "cancelled"
    assert server.wait_until_work_dir_empty() == []
    assert [p.name for p in tmp_path.iterdir()] == ["slow.nrrd"]


# -- NRRD both ways ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["int16", "uint8", "float32", "float64", ">i2", "bool"])
def test_what_is_sent_reads_back_as_simpleitks_own_nrrd_does(tmp_path, dtype):
    array = (phantom((5, 6, 7)) * 200).astype(dtype)
    flat = Geometry((0.5, 2.0), (3.0, -4.0), (0.0, 1.0, 1.0, 0.0))
    for voxels, geometry in ((array, oblique_geometry()), (array[0], flat)):
        (tmp_path / "sent.nrrd").write_bytes(encode_nrrd(voxels, geometry))
        write_volume(Volume(voxels.astype("=u1" if dtype == "bool" else voxels.dtype.newbyteorder("=")), geometry),
                     tmp_path / "written.nrrd")
        back, written = read_volume(tmp_path / "sent.nrrd"), read_volume(tmp_path / "written.nrrd")
        assert np.array_equal(back.array, voxels) and back.array.dtype == written.array.dtype
        assert back.geometry == written.geometry  # the same numbers as SimpleITK writes
        np.testing.assert_allclose(back.geometry.spacing, geometry.spacing, rtol=1e-15)


@pytest.mark.parametrize("compressed", [False, True])
def test_results_are_decoded_raw_or_gzip_and_nothing_else(tmp_path, compressed):
    array = (phantom((5, 6, 7)) * 200).astype(np.int16)
    image = sitk.GetImageFromArray(array)
    sitk.WriteImage(image, str(tmp_path / "r.nrrd"), compressed)
    assert np.array_equal(decode_nrrd((tmp_path / "r.nrrd").read_bytes()), array)
    for bad, needle in [(b"not a nrrd", "not a NRRD"),
                        (b"NRRD0004\ntype: short\nsizes: 2 2\ndata file: /etc/hostname\n\n", "separate data file"),
                        (b"NRRD0004\ntype: short\nsizes: 4 4\nencoding: raw\n\n" + bytes(10), "cut short"),
                        (b"NRRD0004\ntype: short\nsizes: 2 2\nencoding: gzip\n\n" + b"xx", "gzip"),
                        (b"NRRD0004\ntype: short\nsizes: 2 2\nencoding: ascii\n\n1 2 3 4", "ascii")]:
        with pytest.raises(client_module.ServerError, match=needle):
            decode_nrrd(bad)
