"""The one thread that owns the device: it runs the queued jobs one at a time, each model loaded once."""
from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import Cancelled, MedicalDenoiseError
from ..inference.denoiser import Denoiser, DenoiseResult
from ..inference.model_choice import default_model_for
from ..io.reading import read_volume
from ..io.volume import Volume
from ..io.writing import cast_to_dtype, write_volume
from .jobs import CANCELLED, FAILED, SUCCEEDED, Job, JobStore
from .options import JobOptions, one_line
from .settings import ServerSettings
from .uploads import nrrd_is_raw

__all__ = ["Worker", "summary_line"]

log = logging.getLogger(__name__)


class Worker:
    """Takes jobs from ``store`` and denoises them on ``settings.device``.

    Denoisers are made on first use and kept per model name: a model is read, checked and moved to the
    device once, not per job. Only this thread touches them, so none is ever used by two jobs at once.
    """

    def __init__(self, store: JobStore, settings: ServerSettings) -> None:
        self.store = store
        self.settings = settings
        self._denoisers: dict[str, Denoiser] = {}
        self._thread = threading.Thread(target=self._loop, name="medical-denoise-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            job = self.store.next_job()
            if job is None:
                return
            self._run(job)

    def _run(self, job: Job) -> None:
        log.info("job %s: running (%s)", job.id, _describe(job.options))
        try:
            raw = job.options.format == "nrrd" and nrrd_is_raw(job.upload)
            volume = read_volume(job.upload)
            denoiser, chosen = self._denoiser_for(volume, job.options)
            result = denoiser.denoise(volume, strength=job.options.strength, modality=job.options.modality,
                                      progress=lambda fraction: self.store.set_progress(job, fraction),
                                      cancel=job.cancel_requested.is_set, grain=job.options.grain or "auto")
            if job.cancel_requested.is_set():
                raise Cancelled("cancelled after denoising")
            if raw:
                _write_raw_nrrd(result.volume, job.result, reference=volume)
            else:
                write_volume(result.volume, job.result, reference=volume)
            for message in result.messages:
                log.info("job %s: note: %s", job.id, message)
            state = self.store.finish(job, SUCCEEDED, summary=summary_line(result, chosen, denoiser.name))
        except Cancelled:
            state = self.store.finish(job, CANCELLED)
        except MemoryError:
            state = self.store.finish(job, FAILED, "out of memory on the server; try a smaller volume")
        except MedicalDenoiseError as exc:
            state = self.store.finish(job, FAILED, self._client_message(str(exc), job))
        except Exception:  # noqa: BLE001 - the worker must survive whatever one job does
            log.exception("job %s: failed", job.id)
            state = self.store.finish(job, FAILED, "internal error while denoising; the server log has the details")
        log.info("job %s: %s%s", job.id, state, f": {job.summary or job.error}" if job.summary or job.error else "")

    def _denoiser_for(self, volume: Volume, options: JobOptions) -> tuple[Denoiser, str]:
        """The Denoiser for a job and a note naming its model and why, as the command line words it."""
        if options.model:
            name, why = options.model, "chosen in the request"
        else:
            name, why = default_model_for(volume, options.modality)
        if name not in self._denoisers:
            log.info("loading model %s on %s", name, self.settings.device)
            self._denoisers[name] = Denoiser(name, device=self.settings.device, tile_size=self.settings.tile)
        return self._denoisers[name], f"{name} ({why})"

    def _client_message(self, text: str, job: Job) -> str:
        """A library message that names the server's files, naming the upload and result instead."""
        for path, shown in ((job.upload, "upload"), (job.result, "result")):
            text = text.replace(str(path), f"{shown}.{job.options.format}")
        return one_line(text)


def summary_line(result: DenoiseResult, chosen: str, model_name: str) -> str:
    """What the command line prints after a file, without the file names."""
    if result.network not in ("none", model_name):
        chosen += f", slice by slice through its planar twin {result.network}"
    return (f"{result.modality}, model {chosen}, noise SD {result.estimated_sigma:.4g} estimated, "
            f"{result.used_sigma:.4g} used, {result.seconds:.1f} s on {result.device}; {result.describe()}")


def _write_raw_nrrd(volume: Volume, path: Path, reference: Volume) -> None:
    """``volume`` as an uncompressed NRRD in ``reference``'s pixel type, as ``write_volume`` casts it.

    For an upload sent uncompressed (what ``denoise --server`` sends): compressing the result would cost
    seconds for a 256³ volume and the client would only decompress it again. The file is the server's own,
    served only once its job has succeeded, so it needs none of ``write_volume``'s renaming into place.
    """
    image = sitk.GetImageFromArray(np.ascontiguousarray(cast_to_dtype(volume.array, reference.array.dtype)),
                                   isVector=False)
    image.SetSpacing(volume.geometry.spacing)
    image.SetOrigin(volume.geometry.origin)
    image.SetDirection(volume.geometry.direction)
    sitk.WriteImage(image, str(path), False)


def _describe(options: JobOptions) -> str:
    grain = "auto" if options.grain is None else ",".join(map(str, options.grain))
    return (f"format {options.format}, model {options.model or 'default'}, strength {options.strength}, "
            f"modality {options.modality}, grain {grain}")
