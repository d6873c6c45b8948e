"""Progress reporting for the command line: a terminal bar, Slicer's XML lines, or nothing."""
from __future__ import annotations

import sys
from typing import Callable

__all__ = ["PROGRESS_MODES", "make_progress"]

PROGRESS_MODES = ("auto", "bar", "slicer", "none")


class _SlicerProgress:
    """Slicer's CLI protocol: ``<filter-progress>F</filter-progress>`` on stdout, flushed at once."""

    def __init__(self, label: str) -> None:
        print(f"<filter-start><filter-name>{label}</filter-name></filter-start>", flush=True)
        self._last = -1.0

    def __call__(self, fraction: float) -> None:
        if fraction - self._last >= 0.01 or fraction >= 1.0:
            self._last = fraction
            print(f"<filter-progress>{fraction:.4f}</filter-progress>", flush=True)

    def close(self) -> None:
        print("<filter-end><filter-name>denoise</filter-name></filter-end>", flush=True)


class _BarProgress:
    def __init__(self, label: str) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=1000, desc=label, unit="‰", file=sys.stderr, leave=False,
                         bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}")

    def __call__(self, fraction: float) -> None:
        self._bar.update(int(fraction * 1000) - self._bar.n)

    def close(self) -> None:
        self._bar.close()


class _NoProgress:
    def __call__(self, fraction: float) -> None:
        pass

    def close(self) -> None:
        pass


def make_progress(mode: str, label: str) -> Callable[[float], None]:
    """A callable taking the fraction done, with a ``close()`` method."""
    if mode == "auto":
        mode = "bar" if sys.stderr.isatty() else "none"
    if mode == "slicer":
        return _SlicerProgress(label)
    if mode == "bar":
        return _BarProgress(label)
    return _NoProgress()
