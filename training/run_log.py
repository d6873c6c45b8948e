"""What a run reports: a CSV log, TensorBoard scalars, and a progress bar (or plain lines) with loss and
throughput. Only rank 0 logs. A resumed run drops rows past its checkpoint (the interrupted run wrote them
after the state it continues from) and tells TensorBoard to purge them too."""
from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any

__all__ = ["RunLog", "PROGRESS_MODES"]

PROGRESS_MODES = ("auto", "bar", "log", "none")


def _fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


class RunLog:
    """CSV + TensorBoard + progress for one run.

    Args:
        folder: the run folder (``log.csv`` and ``tensorboard/`` go there).
        columns: CSV columns after ``step``.
        step: the step the run starts at.
        total: the last step.
        resumed: whether the run continues an earlier one.
        progress: "bar" (tqdm), "log" (a line per row), "none", or "auto" (a bar on a terminal, else lines).
    """

    def __init__(
        self, folder: Path, columns: list[str], step: int, total: int, resumed: bool, progress: str = "auto"
    ) -> None:
        self.columns = ["step", *columns]
        self.path = folder / "log.csv"
        kept: list[dict[str, str]] = []
        if resumed and self.path.exists():
            with open(self.path, newline="", encoding="utf-8") as handle:
                kept = [r for r in csv.DictReader(handle) if r.get("step", "").isdigit() and int(r["step"]) <= step]
        self._file = open(self.path, "w", newline="", encoding="utf-8")
        self._csv = csv.DictWriter(self._file, self.columns, restval="", extrasaction="ignore")
        self._csv.writeheader()
        self._csv.writerows(kept)
        self._file.flush()
        self._tensorboard = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tensorboard = SummaryWriter(str(folder / "tensorboard"), purge_step=step if resumed else None)
        except ImportError:
            self.message("note: TensorBoard logs are off (pip install tensorboard); the CSV log is written")
        if progress == "auto":
            progress = "bar" if sys.stderr.isatty() else "log"
        self.progress = progress
        self._bar = None
        if progress == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=step, unit="step", dynamic_ncols=True, file=sys.stderr)

    def message(self, text: str) -> None:
        """A line for the user that does not break the progress bar."""
        if getattr(self, "_bar", None) is not None:
            self._bar.write(text, file=sys.stdout)
        else:
            print(text, flush=True)

    def advance(self, steps: int, postfix: dict[str, Any]) -> None:
        """Moves the bar by ``steps`` and shows ``postfix`` (loss, throughput)."""
        if self._bar is not None:
            self._bar.update(steps)
            self._bar.set_postfix({k: _fmt(v) for k, v in postfix.items()}, refresh=False)

    def row(self, step: int, values: dict[str, Any]) -> None:
        """One CSV row (missing columns left empty), the same scalars to TensorBoard, a line in "log" mode."""
        self._csv.writerow({"step": step, **{k: _fmt(v) for k, v in values.items()}})
        self._file.flush()
        if self._tensorboard is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    group, _, name = key.partition("_") if key.startswith("val_") else ("train", "", key)
                    self._tensorboard.add_scalar(f"{group}/{name}", value, step)
            self._tensorboard.flush()
        if self.progress == "log":
            shown = " ".join(f"{k}={_fmt(v)}" for k, v in values.items())
            print(f"step {step}: {shown}", flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._tensorboard is not None:
            self._tensorboard.close()
        self._file.close()
