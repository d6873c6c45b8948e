"""``benchmarks/server_load.py`` end to end on tiny volumes with the tiny model: the section a reader trusts."""
from __future__ import annotations

import re

from benchmark_support import load_script
from server_support import tiny_registry


def test_every_client_is_accounted_for_and_nothing_is_lost(tmp_path, tiny_model_file, monkeypatch):
    monkeypatch.setenv("MEDICAL_DENOISE_RESOURCES", str(tiny_registry(tmp_path / "resources", tiny_model_file)))
    server_load = load_script("server_load")
    out = tmp_path / "bench.md"
    code = server_load.main(["--clients", "5", "--load-size", "16", "--size", "24", "--queue", "2", "--repeats", "1",
                             "--out", str(out)])
    text = out.read_text(encoding="utf-8")
    assert code == 0, text
    assert "<!-- server_load:start -->" in text and "## Server: 5 concurrent clients" in text
    counts = {outcome: int(n) for outcome, n in re.findall(r"^\| (downloaded|refused 503|[^|]+?) \| (\d+) \|$", text, re.M)}
    assert sum(counts.values()) == 5 and counts.get("downloaded", 0) >= 1, counts
    assert set(counts) <= {"downloaded", "refused 503"}, counts
    assert "(lost): **0**; work folder afterwards: empty" in text
    # The round trip through the command line's client, against a local run of the same command.
    assert re.search(r"Overhead: \*\*(-?[\d.]+)–(-?[\d.]+) s beyond the denoise\*\*", text), text
    assert "Outputs of the two runs identical (voxels, pixel type, geometry): yes" in text
    assert "--server http://127.0.0.1:PORT" in text and "model tiny-test" in text
