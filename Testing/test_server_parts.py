"""The server's parts without a server: token, loopback, options, the job store's states and the bounded upload."""
from __future__ import annotations

import asyncio
import gzip

import pytest

from MedicalDenoiseLib.server.auth import token_matches
from MedicalDenoiseLib.server.jobs import CANCELLED, FAILED, RUNNING, SUCCEEDED, Job, JobStore, QueueFull
from MedicalDenoiseLib.server.options import JobOptions, OptionError, parse_options
from MedicalDenoiseLib.server.settings import is_loopback
from MedicalDenoiseLib.server.uploads import UploadTooLarge, _raw_nrrd_complete, nrrd_is_raw, save_upload


def test_token_must_be_a_bearer_token_equal_to_the_servers():
    assert token_matches("Bearer abc", "abc") and token_matches("bearer  abc ", "abc")
    for header in (None, "", "abc", "Basic abc", "Bearer ab", "Bearer abcd", "Bearer", "Bearer ÄBC"):
        assert not token_matches(header, "abc"), header
    assert token_matches(None, None)  # a server without a token lets every request in


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.8.9.1", True), ("::1", True), ("[::1]", True),
                                            ("localhost", True), ("0.0.0.0", False), ("::", False),
                                            ("10.0.0.5", False), ("gpu-box.local", False)])
def test_only_loopback_addresses_count_as_this_machine(host, loopback):
    assert is_loopback(host) is loopback


def test_options_mean_what_the_command_lines_do():
    options = parse_options([("format", "nii.gz"), ("model", "m"), ("strength", "25"), ("modality", "CT"),
                             ("grain", "1,2,2")], ["m"])
    assert options == JobOptions("nii.gz", "m", 25.0, "ct", (1, 2, 2)) and options.suffix == ".nii.gz"
    assert parse_options([("format", "nrrd"), ("model", ""), ("grain", "auto")], ["m"]) == JobOptions("nrrd")
    for items, needle in [([], "format"), ([("format", "nrrd"), ("format", "nrrd")], "twice"),
                          ([("format", "nrrd"), ("name", "x")], "unknown option"),
                          ([("format", "nrrd"), ("model", "/tmp/m.safetensors")], "unknown model"),
                          ([("format", "nrrd"), ("strength", "-1")], "strength"),
                          ([("format", "nrrd"), ("grain", "9")], "grain"),
                          ([("format", "nrrd"), ("strength", "x" * 5000)], "strength")]:
        with pytest.raises(OptionError, match=needle) as raised:
            parse_options(items, ["m"])
        assert len(str(raised.value)) <= 300 and "\n" not in str(raised.value)


class _Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def _job(store: JobStore) -> Job:
    job_id, upload, result = store.new_files(JobOptions("nrrd"))
    upload.write_bytes(b"u")
    return Job(job_id, JobOptions("nrrd"), upload, result)


def test_store_bounds_the_queue_and_removes_files_as_jobs_end(tmp_path):
    clock = _Clock()
    store = JobStore(tmp_path, queue_size=2, result_ttl_s=10, clock=clock)
    jobs = []
    for _ in range(2):
        with store.reservation():
            jobs.append(_job(store))
            store.submit(jobs[-1])
    with pytest.raises(QueueFull), store.reservation():
        pass
    first = store.next_job()
    assert first is jobs[0] and first.state == RUNNING and store.waiting() == 1
    assert store.cancel(jobs[1].id)["state"] == CANCELLED and not jobs[1].upload.exists()
    first.result.write_bytes(b"r")
    assert store.finish(first, SUCCEEDED, summary="done") == SUCCEEDED
    assert not first.upload.exists() and first.result.exists()
    state, claimed = store.claim_result(first.id)
    assert state == SUCCEEDED and claimed is first and store.snapshot(first.id) is None  # fetched once
    store.forget(first.id)
    assert list(tmp_path.iterdir()) == []


def test_a_job_deleted_while_it_runs_ends_cancelled_even_when_its_work_was_done(tmp_path):
    store = JobStore(tmp_path, queue_size=1, result_ttl_s=10)
    with store.reservation():
        store.submit(_job(store))
    job = store.next_job()
    assert store.cancel(job.id)["state"] == RUNNING and job.cancel_requested.is_set()
    job.result.write_bytes(b"r")
    assert store.finish(job, SUCCEEDED, summary="done") == CANCELLED
    assert list(tmp_path.iterdir()) == [] and store.snapshot(job.id)["summary"] == ""


def test_finished_jobs_expire_with_their_files_and_leftovers_of_a_killed_server_are_removed(tmp_path):
    mine = tmp_path / f"{'c' * 32}.result.nii.gz"
    mine.write_bytes(b"old")
    temporary = tmp_path / f".{'d' * 32}.result.nrrd.tmp-0123456789ab"
    temporary.mkdir()
    theirs = tmp_path / "notes.txt"
    theirs.write_text("not the server's")
    clock = _Clock()
    store = JobStore(tmp_path, queue_size=2, result_ttl_s=10, clock=clock)
    store.start()
    try:
        assert sorted(tmp_path.iterdir()) == [theirs]
        for state in (SUCCEEDED, FAILED):
            with store.reservation():
                store.submit(_job(store))
            job = store.next_job()
            job.result.write_bytes(b"r")
            store.finish(job, state)
        clock.now = 10.5
        store.expire()
        assert sorted(tmp_path.iterdir()) == [theirs]
    finally:
        store.close()


def _chunks(*pieces: bytes):
    async def generate():
        for piece in pieces:
            yield piece
    return generate()


def test_an_upload_stops_growing_at_the_limit_and_leaves_no_file(tmp_path):
    target = tmp_path / "u.nrrd"
    assert asyncio.run(save_upload(_chunks(b"a" * 600, b"b" * 400), target, limit=1000)) == 1000
    assert target.read_bytes() == b"a" * 600 + b"b" * 400
    with pytest.raises(UploadTooLarge):
        asyncio.run(save_upload(_chunks(b"a" * 600, b"b" * 401), tmp_path / "v.nrrd", limit=1000))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u.nrrd"]


def _raw_nrrd(*fields: str, sizes: str = "4 4 4", data: bytes | None = None) -> bytes:
    lines = ["NRRD0004", "type: float", f"dimension: {len(sizes.split())}", f"sizes: {sizes}", "endian: little",
             *fields]
    return ("\n".join(lines) + "\n\n").encode() + (bytes(4 * 64) if data is None else data)


def test_only_a_whole_uncompressed_scalar_nrrd_skips_the_full_read(tmp_path):
    path = tmp_path / "u.nrrd"
    cases = [
        (_raw_nrrd("encoding: raw"), True),
        (_raw_nrrd("encoding: raw", "# a comment", "key:=value"), True),
        (_raw_nrrd("encoding: raw", data=bytes(4 * 64 - 1)), False),  # cut short
        (_raw_nrrd("encoding: raw", data=bytes(4 * 64 + 1)), False),  # more than promised
        (_raw_nrrd("encoding: raw", "byte skip: 4"), False),
        (_raw_nrrd("encoding: gzip", data=gzip.compress(bytes(4 * 64))), False),
        (_raw_nrrd("encoding: raw", sizes="4 4 4 2", data=bytes(4 * 128)), False),  # 4D: the full read refuses it
        (_raw_nrrd("encoding: raw").replace(b"\n", b"\r\n"), False),
        (b"NRRD0004\ntype: float\n", False),
    ]
    for data, skips in cases:
        path.write_bytes(data)
        assert _raw_nrrd_complete(path) is skips, data[:120]
        assert nrrd_is_raw(path) is (b"encoding: raw\n" in data)
