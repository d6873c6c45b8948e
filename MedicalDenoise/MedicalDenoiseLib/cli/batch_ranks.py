"""Which inputs of a batch this process denoises, and the one summary of a batch spread over processes.

``torchrun --nproc-per-node N --no-python medical-denoise denoise IN OUT`` starts N processes (on each of
several machines, if asked) and tells each its RANK, WORLD_SIZE and LOCAL_RANK. Each process takes every
WORLD_SIZE-th input of the sorted list, starting at its RANK, on its own GPU. Started plainly there is one
process and the command behaves as it always did.

``--resume`` skips inputs whose output already exists: outputs are written under a temporary name and
renamed into place once complete (``io/writing.py``), so an output under its final name is a whole one and a
rerun after a crash does only what is missing.
"""
from __future__ import annotations

import datetime
import os
import shutil
import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
import torch.distributed as dist

from ..errors import MedicalDenoiseError, OutputError
from ..inference.devices import device_for_local_rank

__all__ = ["BatchRanks", "output_is_complete"]

Job = tuple[Path, Path]

# A process that has done its share waits in the summary for the slowest one, which may take hours. A process
# that dies is not waited for this long: torchrun then stops the others.
_SUMMARY_TIMEOUT = datetime.timedelta(days=7)


def output_is_complete(target: Path) -> bool:
    """True when ``target`` is a finished output: a file, or a DICOM series folder holding its files.

    Both appear under their final name only once complete; an empty folder is one a user made, not an output.
    """
    return target.exists() and not (target.is_dir() and not any(target.iterdir()))


def _remove_stale_temporaries(target: Path) -> None:
    """Removes what a killed run left while writing ``target`` (``.NAME.tmp-*`` beside it; see io/atomic.py).

    Safe because exactly one process owns each target in a run.
    """
    prefix = f".{target.name}.tmp-"
    for item in target.parent.iterdir() if target.parent.is_dir() else ():
        if item.name.startswith(prefix) and item.is_dir():
            shutil.rmtree(item, ignore_errors=True)


class BatchRanks:
    """This process's place in a batch, its share of the inputs, and what it did with them."""

    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0, *, resume: bool = False) -> None:
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.resume = resume
        self.denoised = self.skipped = self.failures = 0
        self.exit_code = 0
        self._created = False

    @classmethod
    def from_environment(cls, *, resume: bool = False) -> "BatchRanks":
        """From torchrun's RANK, WORLD_SIZE and LOCAL_RANK; a single process when they are absent."""
        try:
            rank, world_size, local_rank = (int(os.environ.get(name, default)) for name, default in
                                            (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")))
        except ValueError:
            raise MedicalDenoiseError("RANK, WORLD_SIZE and LOCAL_RANK must be integers; start the processes with "
                                      "torchrun") from None
        if not 0 <= rank < world_size:
            raise MedicalDenoiseError(f"RANK {rank} is outside WORLD_SIZE {world_size}; start the processes with "
                                      "torchrun")
        return cls(rank, world_size, local_rank, resume=resume)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @contextmanager
    def checks(self, args) -> Iterator[None]:
        """Wraps the checks of the inputs, outputs, model and device, done alike by every process.

        No process writes before all have checked (else one would find another's fresh output and refuse it),
        and a refusal stops every process, printed once, by rank 0.
        """
        if self.distributed and not dist.is_initialized():
            dist.init_process_group("gloo", timeout=_SUMMARY_TIMEOUT)  # counts and messages only: CPU is enough
        error: ValueError | None = None
        try:
            if args.resume and args.overwrite:
                raise OutputError("--resume keeps existing outputs and --overwrite replaces them; give only one")
            if self.distributed:
                args.device = device_for_local_rank(args.device, self.local_rank)
                if args.device.startswith("cuda:"):
                    torch.cuda.set_device(args.device)  # nothing of this process lands on another one's GPU
            yield
        except ValueError as exc:  # MedicalDenoiseError and parameter checks, as main() reports them
            if not self.distributed:
                raise
            error = exc
        if self.distributed:
            messages: list[str | None] = [None] * self.world_size
            dist.all_gather_object(messages, None if error is None else str(error) or repr(error))
            first = next((message for message in messages if message), None)
            if first is not None:
                self._close()
                if self.rank == 0:
                    raise error if error is not None else MedicalDenoiseError(first)
                raise SystemExit(1)  # the other ranks stop quietly: rank 0 prints the one error line

    def mine(self, jobs: list[Job]) -> Iterator[tuple[int, Job]]:
        """This process's jobs with their 1-based place in the whole batch; under --resume, skips (and says so)
        those whose output is complete, and clears what a killed run left while writing the others."""
        for index in range(self.rank, len(jobs), self.world_size):
            source, target = jobs[index]
            if self.resume:
                if output_is_complete(target):
                    self.skipped += 1
                    print(f"{source} -> {target}: exists, skipped (--resume)", flush=True)
                    continue
                _remove_stale_temporaries(target)
            yield index + 1, jobs[index]

    def failed(self, error: MedicalDenoiseError, *, alone: bool) -> None:
        """Counts a failed input and reports it; a lone input in a single process fails the command."""
        if alone and not self.distributed:
            raise error
        self.failures += 1
        print(f"medical-denoise: error: {error}", file=sys.stderr, flush=True)

    @contextmanager
    def writing(self, folder: Path | None, total: int) -> Iterator[None]:
        """Makes the batch's output ``folder`` (every process may, at once) around the loop over the inputs;
        then the summary, and the folder removed again if this batch made it and nothing was written."""
        if folder is not None:
            try:
                folder.mkdir()
                self._created = True
            except FileExistsError:
                pass  # another process made it first
        try:
            yield
        except BaseException:
            if self._created and not self.distributed:  # with several, the others may still write into it
                self._remove_if_empty(folder)
            raise
        counts = torch.tensor([self.denoised, self.skipped, self.failures, int(self._created)], dtype=torch.int64)
        if self.distributed:
            dist.all_reduce(counts)  # also waits for every process to finish writing
        denoised, skipped, failures, created = (int(value) for value in counts)
        if self.rank == 0:
            if created:
                self._remove_if_empty(folder)
            if self.distributed or self.resume:
                inputs = "input" if total == 1 else "inputs"
                processes = "process" if self.world_size == 1 else "processes"
                resumed = f"{skipped} skipped (output exists, --resume), " if self.resume else ""
                print(f"medical-denoise: {total} {inputs} over {self.world_size} {processes}: {denoised} denoised, "
                      f"{resumed}{failures} failed", file=sys.stderr, flush=True)
            elif failures:
                print(f"medical-denoise: {failures} of {total} inputs failed", file=sys.stderr)
        self.exit_code = 1 if failures else 0
        self._close()

    @staticmethod
    def _remove_if_empty(folder: Path | None) -> None:
        try:
            if folder is not None and not any(folder.iterdir()):
                folder.rmdir()  # nothing was written: leave no empty output folder behind
        except OSError:
            pass  # gone already, or written into meanwhile

    def _close(self) -> None:
        if self.distributed and dist.is_initialized():
            # Every process gets here before the group goes: tearing gloo down while another still talks to it
            # aborts that process.
            dist.barrier()
            dist.destroy_process_group()
            # Nothing is left to write or cancel. torchrun stops the other processes once the first one exits
            # non-zero: this one ends with its own exit code rather than reporting that it was cancelled.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
