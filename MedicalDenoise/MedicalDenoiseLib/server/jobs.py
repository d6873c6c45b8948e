"""Jobs, their states, the bounded queue, and the expiry of what nobody fetched.

A job's files are the server's own: ``<uuid hex>.upload<suffix>`` and ``<uuid hex>.result<suffix>`` in the work
folder. The upload is removed as soon as the job ends; the result when it has been downloaded, when the job
is deleted, or ``result_ttl_s`` after the job ended. Failed and cancelled jobs keep no file at all, and
their record too is forgotten after ``result_ttl_s``.
"""
from __future__ import annotations

import logging
import re
import shutil
import threading
import time
import uuid
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from .options import JobOptions

__all__ = ["QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", "FINISHED", "Job", "JobStore", "QueueFull",
           "JOB_ID"]

log = logging.getLogger(__name__)

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
FINISHED = frozenset({SUCCEEDED, FAILED, CANCELLED})
JOB_ID = re.compile(r"[0-9a-f]{32}")
# What the server writes into its work folder (write_volume's own temporary folders included): at start,
# leftovers of a server that was killed are removed, and nothing else in the folder is touched.
_OWN_FILE = re.compile(r"\.?[0-9a-f]{32}\.(upload|result)\.(nrrd|nii\.gz)(\.tmp-[0-9a-f]{12})?")


class QueueFull(Exception):
    """Every place in the queue is taken."""


@dataclass(eq=False)
class Job:
    """One upload and what became of it; changed only under the store's lock."""

    id: str
    options: JobOptions
    upload: Path
    result: Path
    state: str = QUEUED
    progress: float = 0.0
    error: str = ""
    summary: str = ""
    ended_at: float | None = None
    downloading: bool = False
    cancel_requested: threading.Event = field(default_factory=threading.Event)

    def as_json(self) -> dict:
        return {"id": self.id, "state": self.state, "progress": round(self.progress, 4), "error": self.error,
                "summary": self.summary}


class JobStore:
    """Every job the server knows, the queue of those waiting, and a thread that expires old results.

    Args:
        work_dir: the folder for the jobs' files.
        queue_size: how many jobs may wait (the running one not counted); uploads still arriving hold a place.
        result_ttl_s: seconds a finished job is kept for its client.
        clock: seconds, monotonic (tests may pass their own).
    """

    def __init__(self, work_dir: Path, queue_size: int, result_ttl_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.work_dir = Path(work_dir)
        self.queue_size = queue_size
        self.result_ttl_s = result_ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._jobs: dict[str, Job] = {}
        self._queue: deque[Job] = deque()
        self._reserved = 0
        self._closed = False
        self._stop_expiry = threading.Event()
        self._expiry = threading.Thread(target=self._expire_loop, name="medical-denoise-expiry", daemon=True)

    # -- life ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        removed = [p for p in self.work_dir.iterdir() if _OWN_FILE.fullmatch(p.name)]
        for path in removed:
            _remove(path)
        if removed:
            log.info("removed %d files left in %s by an earlier server", len(removed), self.work_dir)
        self._expiry.start()

    def close(self) -> None:
        """Stops taking jobs: waiting ones are cancelled, the running one is asked to stop."""
        with self._changed:
            self._closed = True
            while self._queue:
                self._end(self._queue.popleft(), CANCELLED)
            for job in self._jobs.values():
                job.cancel_requested.set()
            self._changed.notify_all()
        self._stop_expiry.set()
        if self._expiry.is_alive():
            self._expiry.join()

    def remove_all(self) -> None:
        """Removes every job's files and forgets every job (once the worker has stopped)."""
        with self._lock:
            for job in self._jobs.values():
                _remove(job.upload)
                _remove(job.result)
            self._jobs.clear()

    # -- submitting ---------------------------------------------------------------------------------------

    def new_files(self, options: JobOptions) -> tuple[str, Path, Path]:
        """A new job id and its upload and result paths, named by the server alone."""
        job_id = uuid.uuid4().hex
        return (job_id, self.work_dir / f"{job_id}.upload{options.suffix}",
                self.work_dir / f"{job_id}.result{options.suffix}")

    @contextmanager
    def reservation(self) -> Iterator[None]:
        """Holds a place in the queue while an upload arrives, so a full queue refuses before the body is read.

        Raises:
            QueueFull: no place is left (or the server is stopping).
        """
        with self._lock:
            if self._closed or len(self._queue) + self._reserved >= self.queue_size:
                raise QueueFull
            self._reserved += 1
        try:
            yield
        finally:
            with self._lock:
                self._reserved -= 1

    def submit(self, job: Job) -> None:
        """Queues ``job``; call inside its :meth:`reservation`."""
        with self._changed:
            if self._closed:
                raise QueueFull
            self._jobs[job.id] = job
            self._queue.append(job)
            self._changed.notify_all()

    # -- what clients see ---------------------------------------------------------------------------------

    def snapshot(self, job_id: str) -> dict | None:
        """The job's JSON, or None for an unknown (or downloaded) job."""
        with self._lock:
            job = self._visible(job_id)
            return job.as_json() if job else None

    def waiting(self) -> int:
        with self._lock:
            return len(self._queue)

    def cancel(self, job_id: str) -> dict | None:
        """Deletes a job: a waiting one is cancelled at once, a running one is asked to stop, a finished one is
        forgotten with its result. Returns its JSON, or None for an unknown job."""
        with self._lock:
            job = self._visible(job_id)
            if job is None:
                return None
            if job.state == QUEUED:
                self._queue.remove(job)
                self._end(job, CANCELLED)
            elif job.state == RUNNING:
                job.cancel_requested.set()  # the worker's cancel callback sees it before the next tile
            else:
                self._forget(job)
            return job.as_json()

    def claim_result(self, job_id: str) -> tuple[str | None, Job | None]:
        """For a download: ``(state, job)``; the job only when it succeeded, and no one else can then claim or
        delete it. ``(None, None)`` for an unknown job."""
        with self._lock:
            job = self._visible(job_id)
            if job is None:
                return None, None
            if job.state != SUCCEEDED:
                return job.state, None
            job.downloading = True
            job.ended_at = self._clock()  # a download that never completes still expires
            return job.state, job

    def forget(self, job_id: str) -> None:
        """Removes a job and its files (after its result was sent)."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                self._forget(job)

    # -- the worker's side --------------------------------------------------------------------------------

    def next_job(self) -> Job | None:
        """Blocks until a job waits, marks it running and returns it; None once the store is closed."""
        with self._changed:
            while not self._queue and not self._closed:
                self._changed.wait()
            if self._closed:
                return None
            job = self._queue.popleft()
            job.state = RUNNING
            return job

    def set_progress(self, job: Job, fraction: float) -> None:
        with self._lock:
            job.progress = min(max(float(fraction), 0.0), 1.0)

    def finish(self, job: Job, state: str, error: str = "", summary: str = "") -> str:
        """Ends a running job and returns its final state: a job whose client deleted it while it ran ends
        cancelled, even when the work was done."""
        with self._lock:
            if state == SUCCEEDED and job.cancel_requested.is_set():
                state = CANCELLED
            job.error, job.summary = error, summary if state == SUCCEEDED else ""
            if state == SUCCEEDED:
                job.progress = 1.0
            self._end(job, state)
            return state

    # -- inside -------------------------------------------------------------------------------------------

    def _visible(self, job_id: str) -> Job | None:
        job = self._jobs.get(job_id)
        return None if job is None or job.downloading else job

    def _end(self, job: Job, state: str) -> None:
        job.state = state
        job.ended_at = self._clock()
        _remove(job.upload)
        if state != SUCCEEDED or self._jobs.get(job.id) is not job:
            _remove(job.result)

    def _forget(self, job: Job) -> None:
        self._jobs.pop(job.id, None)
        _remove(job.upload)
        _remove(job.result)

    def _expire_loop(self) -> None:
        interval = min(max(self.result_ttl_s / 4, 0.1), 10.0)
        while not self._stop_expiry.wait(interval):
            self.expire()

    def expire(self) -> None:
        """Forgets finished jobs older than ``result_ttl_s``, with their results."""
        now = self._clock()
        with self._lock:
            old = [job for job in self._jobs.values()
                   if job.state in FINISHED and job.ended_at is not None and now - job.ended_at > self.result_ttl_s]
            for job in old:
                self._forget(job)
        for job in old:
            log.info("job %s: %s, expired after %g s", job.id, job.state, self.result_ttl_s)


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except IsADirectoryError:  # a temporary folder of write_volume's, left by a killed server
        shutil.rmtree(path, ignore_errors=True)
    except OSError as err:
        log.warning("cannot remove %s: %s", path, err)
