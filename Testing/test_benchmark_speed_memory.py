"""``benchmarks/speed_memory.py`` end to end on tiny sizes with the tiny model: the table a reader trusts."""
from __future__ import annotations

import argparse

import pytest

from benchmark_support import load_script


@pytest.fixture(scope="module")
def speed_memory():
    return load_script("speed_memory")


def test_sizes_parse_to_numpy_order_and_bad_ones_are_refused(speed_memory):
    assert speed_memory.parse_size("64") == ((64, 64, 64), "float32")
    assert speed_memory.parse_size("30x20x10:int16") == ((10, 20, 30), "int16")
    assert speed_memory.parse_size("820x616") == ((616, 820), "float32")
    for bad in ("4", "10x10x10:uint8", "axb", "10x10x10x10"):
        with pytest.raises(argparse.ArgumentTypeError):
            speed_memory.parse_size(bad)


def test_table_measures_volumes_2d_images_and_the_command_line(speed_memory, tmp_path, tiny_model_file):
    out = tmp_path / "bench.md"
    code = speed_memory.main(["--sizes", "24", "40x36", "--cli", "--threads", "1", "--model", str(tiny_model_file),
                              "--out", str(out)])
    assert code == 0
    text = out.read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in text.splitlines() if line.startswith("| ") and "float32" in line.split("|")[1]}
    assert set(rows) == {"24×24×24 float32", "40×36 (2D) float32"}
    for cells in rows.values():
        _, load_s, denoise_s, per_mvoxel, cli_s = (float(c) for c in cells[:5])
        # Seconds are printed with two decimals, so on a fast machine the tiny model's load (under 5 ms) and
        # even its denoise can print 0.00; the per-Mvoxel column has three decimals of a larger number.
        assert per_mvoxel > 0 and denoise_s >= 0 and load_s >= 0
        assert cli_s > denoise_s  # the command also starts Python, loads the model and writes the file
    assert rows["40×36 (2D) float32"][0] == f"{40 * 36 / 1e6:.2f}"
    assert "tiny-test" in text and "Command:" in text
