"""Shared by the benchmark scripts: machine description, the exact command, and marker-delimited sections.

Each script owns one section of a markdown file (``<!-- NAME:start -->`` … ``<!-- NAME:end -->``) and
replaces only that, so the speed and quality scripts can write into the same ``docs/benchmarks.md``.
"""
from __future__ import annotations

import os
import platform
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path


__all__ = ["LIBRARY_PARENT", "library_env", "publish", "ensure_library_importable", "cpu_model", "machine_line", "command_line", "utc_now", "write_section",
           "default_data_dir", "HELD_OUT_FILES"]

_REPO = Path(__file__).resolve().parent.parent
LIBRARY_PARENT = _REPO / "MedicalDenoise"  # the folder that holds the MedicalDenoiseLib package

# Real volumes of ../shared/data that no shipped model was trained on (see each model card's training data):
# the quality benchmark's real clean references and the held-out rows of the reference-free benchmark.
HELD_OUT_FILES = ("mr_brain_t1gd_brain2_pyradiomics.nrrd", "ct_abdomen_3mm_totalseg.nii.gz",
                  # the manifest's rows after the spine phantom: no shipped model was trained on them either
                  "us_prostate_trus_phantom_plus.mha", "us_curvilinear_ultrasonix_plus.mha", "us_curvilinear_bk_plus.mha",
                  "mr_chest_tfl3d_seg3d.nii.gz", "mr_head_t1fl2d_decubitus.nii.gz", "mr_phantom_t1mprage_xa30i.nii.gz",
                  "mr_phantom_t1tse_philips_csdl.nii.gz", "ct_abdomen_thin3sl_dcmqi.nii.gz")


def default_data_dir() -> Path | None:
    """``../shared/data`` beside the checkout (where the project's real volumes live), or None if absent."""
    folder = _REPO.parent / "shared" / "data"
    return folder if folder.is_dir() else None


def ensure_library_importable() -> None:
    """Lets ``python benchmarks/x.py`` run from a plain checkout, without ``pip install -e .``."""
    try:
        import MedicalDenoiseLib  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(LIBRARY_PARENT))


def library_env(**extra: str) -> dict[str, str]:
    """This process's environment for a child ``python -m MedicalDenoiseLib…`` run from a plain checkout, plus
    ``extra`` variables."""
    path = os.pathsep.join(filter(None, [str(LIBRARY_PARENT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **extra}


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else whatever ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_line(torch_version: str | None = None, extra: str = "") -> str:
    """One line: CPU, cores, RAM, OS, Python, torch (when given) and anything extra."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    parts = [f"{cpu_model()}, {cores} cores available"]
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        parts.append(f"{pages * page_size / 2**30:.0f} GiB RAM")
    except (ValueError, OSError, AttributeError):
        pass
    parts.append(f"{platform.system()} {platform.release()}")
    parts.append(f"Python {platform.python_version()}")
    if torch_version:
        parts.append(f"torch {torch_version}")
    if extra:
        parts.append(extra)
    return "; ".join(parts)


def command_line() -> str:
    """The command that is running, quoted so it can be pasted back into a shell."""
    return "python " + shlex.join(sys.argv)


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def write_section(path: Path, name: str, body: str, title: str = "# Benchmarks") -> None:
    """Replace the ``name`` section of ``path`` with ``body``, appending it (or creating the file) if absent.

    Raises:
        ValueError: the file has a start marker without an end marker (or the reverse), which a hand edit
            would cause; replacing blindly could eat the rest of the file.
    """
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else f"{title}\n"
    has_start, has_end = start in text, end in text
    if has_start != has_end:
        raise ValueError(f"{path}: found only one of {start!r} / {end!r}; fix the file by hand first")
    if has_start:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    ensure_library_importable()
    from MedicalDenoiseLib.io.atomic import write_text_atomically

    write_text_atomically(path, text)  # a reader never sees half a file


def publish(section: str, out: Path | None, name: str) -> None:
    """Prints ``section`` and, with ``out``, writes it as the section ``name`` of that markdown file."""
    print(section)
    if out:
        write_section(out, name, section)
        print(f"wrote the {name} section of {out}", file=sys.stderr)
