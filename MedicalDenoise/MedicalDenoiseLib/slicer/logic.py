"""The Slicer module's logic on MRML alone: no Qt, so it runs and is tested with only ``slicer-core``.

It takes MRML nodes and plain values and returns nodes; it raises ``ValueError``/``RuntimeError`` with a
clear message and never opens a dialog. Every failure leaves the scene exactly as it was: results are
computed first and nodes are created or changed only once they are ready. This is the one library
module that imports ``slicer``. torch is imported only by the methods that run a network or list models
and devices, so creating the logic (when the module opens) stays fast.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import tempfile
import urllib.parse
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import slicer
from slicer.util import arrayFromVolume, updateVolumeFromArray

from .adapted_models import AdaptedModel, AdaptedModels
from .background_job import BackgroundJob, findPythonSlicer
from .comparison_view import showSideBySide
from ..estimation.noise_estimation import estimate_noise_sigma
from ..io.reading import read_volume
from ..io.volume import Geometry, Volume
from ..io.writing import cast_to_dtype, write_volume

if TYPE_CHECKING:
    from ..inference.denoiser import Denoiser

__all__ = ["MedicalDenoiseLogic", "BackgroundRequest", "volumeFromNode", "HANDOFF_SUFFIX", "ADAPTED_FILE",
           "TOKEN_FILE"]

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
_LIBRARY_PARENT = str(Path(__file__).resolve().parents[2])
# Files handed to and from the child process: uncompressed NIfTI, since compressing a file that is read
# once, a moment later, on the same disk only costs time (for a server, the child sends its own NRRD).
HANDOFF_SUFFIX = ".nii"
ADAPTED_FILE = "adapted.safetensors"  # in the job's folder: where a --adapt run writes the model it kept
TOKEN_FILE = "server-token"  # in the job's folder, readable by its owner only


@dataclass(frozen=True)
class BackgroundRequest:
    """What a background job was started for: node IDs (nodes may be removed while it runs) and options."""

    inputID: str
    outputID: str | None
    createResidual: bool
    modelName: str | None  # for the new node's name; None for the default model
    server: str | None = None  # the server it runs on; None: this computer
    adaptMinutes: float | None = None  # the budget for fitting the model to the scan first; None: not adapted


def _fileStem(name: str) -> str:
    """A file name stem for a node name: letters, digits, dot, dash and underscore only."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:80]
    return stem if stem and stem != "output" else "input"


def _writePrivateFile(path: Path, text: str) -> Path:
    """Writes ``text`` to a new file that only its owner may read or write (0600, never wider, not even briefly)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


def volumeFromNode(node) -> Volume:
    """A copy of a scalar volume node's voxels with its geometry in ITK's LPS convention."""
    if node is None or not node.IsA("vtkMRMLScalarVolumeNode") or node.GetImageData() is None:
        raise ValueError("input must be a scalar volume node with image data")
    if node.GetImageData().GetNumberOfScalarComponents() != 1:
        raise ValueError(f"{node.GetName()}: has {node.GetImageData().GetNumberOfScalarComponents()} components per "
                         "voxel (colour or vector volume); only scalar volumes can be denoised")
    if node.GetParentTransformNode() is not None and not node.GetParentTransformNode().IsLinear():
        raise ValueError(f"{node.GetName()}: is under a non-linear transform; harden or remove it first")
    directions = np.zeros((3, 3))
    matrix = [[0.0] * 3 for _ in range(3)]
    node.GetIJKToRASDirections(matrix)
    directions[:] = matrix
    geometry = Geometry(
        spacing=tuple(float(s) for s in node.GetSpacing()),
        origin=tuple(float(v) for v in _RAS_TO_LPS @ np.array(node.GetOrigin())),
        direction=tuple(float(v) for v in (_RAS_TO_LPS @ directions).ravel()),
    )
    return Volume(np.array(arrayFromVolume(node), copy=True), geometry, source=node.GetName())


class MedicalDenoiseLogic:
    """Denoising on MRML nodes, synchronously or in a child process, and the comparison view."""

    def __init__(self, scene=None) -> None:
        self.scene = scene if scene is not None else getattr(slicer, "mrmlScene", None)
        self._denoisers: dict[tuple[str, str], Denoiser] = {}
        self._jobs: weakref.WeakSet[BackgroundJob] = weakref.WeakSet()
        self._noise: dict[tuple, float | None] = {}
        self._voxelHashes: dict[str, tuple[int, str]] = {}
        app = getattr(slicer, "app", None)
        self.adaptedModels = AdaptedModels(getattr(app, "temporaryPath", None) or None)
        if self.scene is not None:
            # A job's input goes away with the scene: stop the child (and all it started) at once.
            self.scene.AddObserver(self.scene.StartCloseEvent, lambda caller, event: self.stopBackgroundJobs())

    # --- choices for the panel ---------------------------------------------------------------------------

    def availableModels(self) -> list[tuple[str, str]]:
        """(name, summary) of the shipped models, the default first (imports torch)."""
        from ..models.registry import default_model_name, list_models

        default = default_model_name()
        entries = sorted(list_models(), key=lambda e: e.name != default)
        return [(e.name, e.summary) for e in entries]

    def deviceDescriptions(self) -> list[str]:
        """One line per usable device, the CPU last (imports torch and queries CUDA)."""
        from ..inference.devices import describe_devices

        return describe_devices()

    @staticmethod
    def deviceLabels(descriptions: list[str]) -> dict[str, str]:
        """Labels for the device choices auto, cuda and cpu, from :meth:`deviceDescriptions`."""
        cuda = [d for d in descriptions if d.startswith("cuda")]
        return {"auto": f"auto: {descriptions[0]}", "cuda": cuda[0] if cuda else "cuda (not available)",
                "cpu": next((d for d in descriptions if d.startswith("cpu")), "cpu")}

    def estimateNoise(self, inputVolume) -> float:
        """Noise SD of the volume in its own units, as the Auto strength would use."""
        return estimate_noise_sigma(volumeFromNode(inputVolume).array)

    def noiseEstimate(self, inputVolume) -> float | None:
        """:meth:`estimateNoise`, computed again only when the voxels change; None when it cannot be had."""
        key = (inputVolume.GetID(), inputVolume.GetImageData().GetMTime())
        if key not in self._noise:
            try:
                estimate = self.estimateNoise(inputVolume)
            except ValueError as error:  # e.g. a constant or single-voxel volume
                logging.getLogger(__name__).warning(f"Medical Denoise: no noise estimate: {error}")
                estimate = None
            self._noise = {key: estimate}  # only the latest volume is kept
        return self._noise[key]

    # --- synchronous run -----------------------------------------------------------------------------------

    def process(self, inputVolume, outputVolume=None, model: str | None = None, device: str = "auto",
                strength: str | float = "auto", modality: str = "auto",
                progress: Callable[[float], None] | None = None, cancel: Callable[[], bool] | None = None,
                residualVolume=None, grain: str = "auto", acceptOtherSeries: bool = False):
        """Denoises ``inputVolume`` in this process and returns the output node.

        Args:
            inputVolume: a scalar volume node; never modified.
            outputVolume: a node to fill (not the input), or None for a new node named
                "<input> denoised (<model>)".
            model: registry name or model file path; None for the default.
            device, strength, modality, grain: as for the command line.
            progress: called with the fraction done; cancel: polled between tiles.
            residualVolume: a node to fill with ``input − output`` (float32), or None.
            acceptOtherSeries: use an adapted model on a series other than the one it was fitted to.

        Raises:
            ValueError: bad input, output, model or parameters; an adapted model fitted to another series
                (unless ``acceptOtherSeries``). RuntimeError: the run failed.
            Cancelled: when ``cancel()`` returned True. In every case the scene is unchanged.
        """
        from ..inference.strength import parse_strength

        self._checkNodes(inputVolume, outputVolume, residualVolume)
        parse_strength(strength)
        self._checkAdaptedModel(model, inputVolume, acceptOtherSeries)
        from ..inference.normalization import guess_modality

        volume = volumeFromNode(inputVolume)
        chosen = guess_modality(volume.array, volume.modality if modality == "auto" else modality)
        denoiser = self._denoiser(model, device, chosen)
        result = denoiser.denoise(volume, strength=strength, modality=modality, progress=progress, cancel=cancel,
                                  grain=grain)
        self.lastGrain = result.describe()
        return self._storeResult(inputVolume, volume, result.volume.array, denoiser.name, outputVolume, residualVolume)

    def _denoiser(self, model: str | None, device: str, modality: str | None = None) -> Denoiser:
        """The cached Denoiser of ``model``; without one, the registry's default for ``modality``."""
        from ..inference.denoiser import Denoiser
        from ..models.registry import default_model_name

        model = model or default_model_name(modality)
        key = (model, device)
        if key not in self._denoisers:
            self._denoisers[key] = Denoiser(model, device=device)
        return self._denoisers[key]

    def _checkNodes(self, inputVolume, outputVolume, residualVolume) -> None:
        if inputVolume is None:
            raise ValueError("no input volume selected")
        for node, role in ((outputVolume, "output"), (residualVolume, "residual")):
            if node is not None and node is inputVolume:
                raise ValueError(f"the {role} volume must not be the input volume ({inputVolume.GetName()})")
        if outputVolume is not None and outputVolume is residualVolume:
            raise ValueError("the output and residual volumes must be different nodes")

    # --- background run ------------------------------------------------------------------------------------

    def startBackground(self, inputVolume, model: str | None = None, device: str = "auto",
                        strength: str | float = "auto", modality: str = "auto",
                        pythonExecutable: str | None = None, outputVolume=None,
                        createResidual: bool = False, grain: str = "auto", server: str | None = None,
                        token: str | None = None, adaptMinutes: float | None = None,
                        acceptOtherSeries: bool = False) -> BackgroundJob:
        """Writes the input to a temporary file and starts the command line on it in a child process.

        ``pythonExecutable`` defaults to Slicer's ``PythonSlicer`` inside Slicer (RuntimeError when it
        cannot be found) and to this interpreter elsewhere. The job is cancelled when the scene closes.
        ``outputVolume`` and ``createResidual`` are remembered (as ``job.request``) for
        :meth:`loadBackgroundResult`.

        ``server`` (``http://host:port``): the child sends the volume to a ``medical-denoise serve`` server,
        which runs it on its own device with one of its shipped models (``device`` is not used). ``token``
        is written to a file in the job's folder that only its owner can read, never onto the command line
        or into the scene. ``adaptMinutes``: first fit the model to this scan within that many minutes (on
        this computer, so not with a server); an adapted model the child kept is added to
        :attr:`adaptedModels` when the result is loaded. ``acceptOtherSeries``: see :meth:`process`.

        Raises:
            ValueError: bad nodes, options, server address, or an adapted model fitted to another series.
        """
        from ..inference.strength import parse_strength

        from ..inference.grain import parse_grain

        self._checkNodes(inputVolume, outputVolume, None)
        parse_strength(strength)
        parse_grain(grain)
        if adaptMinutes is not None and not 0 < adaptMinutes <= 24 * 60:
            raise ValueError(f"adapting takes a budget above 0 and at most 1440 minutes, not {adaptMinutes:g}")
        if server is not None:
            server = self._checkServer(server, model, adaptMinutes)
            token = self._checkToken(token)
        self._checkAdaptedModel(model, inputVolume, acceptOtherSeries)
        python = pythonExecutable or (findPythonSlicer() if hasattr(slicer, "app") else sys.executable)
        work = Path(tempfile.mkdtemp(prefix="MedicalDenoise-"))  # readable by its owner only
        # Named after the volume: the child's messages and an adapted model's card then name the series.
        source = work / f"{_fileStem(inputVolume.GetName())}{HANDOFF_SUFFIX}"
        target = work / f"output{HANDOFF_SUFFIX}"
        command = [python, "-m", "MedicalDenoiseLib.cli.main", "denoise", str(source), str(target)]
        command += ["--server", server] if server else ["--device", device]
        command += ["--strength", str(strength), "--modality", modality, "--grain", str(grain), "--progress", "slicer",
                    "--exit-with-parent", str(os.getpid())]
        if model:
            command += ["--model", model]
        if adaptMinutes is not None:
            command += ["--adapt", f"{adaptMinutes:g}", "--save-adapted", str(work / ADAPTED_FILE)]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_LIBRARY_PARENT, env.get("PYTHONPATH")) if p)
        env["PYTHONIOENCODING"] = "utf-8"  # the job reads the child's output as UTF-8 whatever the locale
        try:
            if server and token:
                command += ["--token-file", str(_writePrivateFile(work / TOKEN_FILE, token))]
            write_volume(volumeFromNode(inputVolume), source)
            job = BackgroundJob(command, target, work, env=env)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        job.request = BackgroundRequest(inputVolume.GetID(), outputVolume.GetID() if outputVolume else None,
                                        createResidual, Path(model).stem if model else None, server, adaptMinutes)
        self._jobs.add(job)
        return job

    @staticmethod
    def _checkServer(server: str, model: str | None, adaptMinutes: float | None) -> str:
        server = server.strip()
        address = urllib.parse.urlsplit(server)
        if address.scheme not in ("http", "https") or not address.hostname:
            raise ValueError(f"server address {server!r}: give it as http://host:port, e.g. http://gpu-server:8765")
        if adaptMinutes is not None:
            raise ValueError("adapting to the scan runs on this computer: it cannot be combined with a server")
        if model and (Path(model).suffix == ".safetensors" or os.path.isfile(model)):
            raise ValueError(f"a server runs its own shipped models, by name; the model file {Path(model).name} stays "
                             "on this computer: choose a shipped model, or a device of this computer")
        return server

    @staticmethod
    def _checkToken(token: str | None) -> str:
        token = (token or "").strip()
        if any(c.isspace() for c in token):
            raise ValueError("the server token must be a single word (no spaces or line breaks); set it again")
        return token

    def _checkAdaptedModel(self, model: str | None, inputVolume, acceptOtherSeries: bool) -> None:
        if not acceptOtherSeries:
            warning = self.adaptedModelWarning(model, inputVolume)
            if warning:
                raise ValueError(warning)

    # --- adapted models ------------------------------------------------------------------------------------

    def adaptedModelWarning(self, model: str | None, inputVolume) -> str | None:
        """Why ``model`` should not denoise ``inputVolume``: it was adapted to another series (other voxels).
        None for shipped models, other model files, and an adapted model on the series it was fitted to."""
        if inputVolume is None or inputVolume.GetImageData() is None or self.adaptedModels.describe(model) is None:
            return None
        return self.adaptedModels.warning(model, inputVolume.GetName(), self.voxelsSha256(inputVolume))

    def voxelsSha256(self, inputVolume) -> str:
        """The hash an adapted model's card keeps of its series' voxels, for this node; computed again only
        when the voxels change."""
        from ..adaptation.fitted_series import voxels_sha256

        mtime = inputVolume.GetImageData().GetMTime()
        known = self._voxelHashes.get(inputVolume.GetID())
        if known is None or known[0] != mtime:
            known = (mtime, voxels_sha256(arrayFromVolume(inputVolume)))
            self._voxelHashes[inputVolume.GetID()] = known
        return known[1]

    def _keepAdaptedModel(self, job: BackgroundJob, inputVolume) -> AdaptedModel | None:
        """Adds the model a ``--adapt`` job kept to this session's adapted models (before its folder goes)."""
        written = job.workDir / ADAPTED_FILE
        if not written.is_file():  # not adapted, or adapting did not help
            return None
        job.adaptedModel = self.adaptedModels.add(written, inputVolume.GetID(), inputVolume.GetName())
        return job.adaptedModel

    def stopBackgroundJobs(self, removeFiles: bool = False) -> None:
        """Cancels every running job this logic started (scene close, application exit)."""
        for job in list(self._jobs):
            if removeFiles:
                job.cleanup()
            else:
                job.cancel()

    def finishBackground(self, job: BackgroundJob, inputVolume, outputVolume=None, residualVolume=None,
                         modelName: str | None = None):
        """Loads a succeeded job's result into the scene (as :meth:`process` would) and cleans up."""
        try:
            if job.poll() != "succeeded":
                raise RuntimeError(job.error or f"denoising {job.poll()}")
            self._checkNodes(inputVolume, outputVolume, residualVolume)
            volume = volumeFromNode(inputVolume)
            denoised = read_volume(job.outputPath).array
            if denoised.shape != volume.array.shape:
                raise RuntimeError(f"result has shape {denoised.shape}, input {volume.array.shape}")
            if modelName is None:  # the command line chose the default for the image's modality
                from ..inference.normalization import guess_modality
                from ..models.registry import default_model_name

                modelName = default_model_name(guess_modality(volume.array, volume.modality))
            if (job.workDir / ADAPTED_FILE).is_file():
                modelName += "-adapted"
            outputVolume = self._storeResult(inputVolume, volume, denoised, modelName, outputVolume, residualVolume)
            try:
                self._keepAdaptedModel(job, inputVolume)
            except Exception as error:  # the result stands; only the model for later runs is lost
                logging.getLogger(__name__).warning(f"Medical Denoise: the adapted model was not kept: {error}")
                job.messages.append(f"the adapted model could not be kept: {error}")
            return outputVolume
        finally:
            job.cleanup()

    def loadBackgroundResult(self, job: BackgroundJob):
        """What the Denoise button does when a job succeeded: loads the result into the nodes the job was
        started for (a new residual node when asked), shows the comparison, and returns the output node.

        Raises:
            RuntimeError: the job did not succeed, or its input or output node was removed meanwhile.
            In every case the scene is as it was and the job's files are removed.
        """
        request, scene = job.request, self.scene
        inputVolume = scene.GetNodeByID(request.inputID)
        outputVolume = scene.GetNodeByID(request.outputID) if request.outputID else None
        if inputVolume is None or (request.outputID and outputVolume is None):
            job.cleanup()
            raise RuntimeError("the input or output volume was removed while denoising; nothing was changed")
        residualVolume = None
        if request.createResidual:
            residualName = scene.GenerateUniqueName(f"{inputVolume.GetName()} residual")
            residualVolume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", residualName)
        try:
            outputVolume = self.finishBackground(job, inputVolume, outputVolume, residualVolume, request.modelName)
        except Exception:
            if residualVolume is not None:
                scene.RemoveNode(residualVolume)
            raise
        self.showComparison(inputVolume, outputVolume)
        return outputVolume

    # --- results into the scene ----------------------------------------------------------------------------

    def _storeResult(self, inputVolume, volume: Volume, denoised: np.ndarray, modelName: str,
                     outputVolume, residualVolume):
        scene = inputVolume.GetScene() or self.scene
        output = cast_to_dtype(denoised, volume.array.dtype)
        residual = (volume.array.astype(np.float32) - denoised.astype(np.float32)) if residualVolume is not None else None
        created = outputVolume is None
        if created:
            outputVolume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", f"{inputVolume.GetName()} denoised ({modelName})")
        try:
            for node, array in ((outputVolume, output), (residualVolume, residual)):
                if node is None:
                    continue
                node.CopyOrientation(inputVolume)
                node.SetAndObserveTransformNodeID(inputVolume.GetTransformNodeID())
                updateVolumeFromArray(node, array)
            self._copyDisplay(inputVolume, outputVolume)
            if residualVolume is not None and residualVolume.GetDisplayNode() is None:
                residualVolume.CreateDefaultDisplayNodes()
            self._placeBesideInput(scene, inputVolume, [n for n in (outputVolume, residualVolume) if n is not None])
        except Exception:
            if created:
                scene.RemoveNode(outputVolume)
            raise
        return outputVolume

    @staticmethod
    def _copyDisplay(inputVolume, outputVolume) -> None:
        if outputVolume.GetDisplayNode() is None:
            outputVolume.CreateDefaultDisplayNodes()
        source, target = inputVolume.GetDisplayNode(), outputVolume.GetDisplayNode()
        if source is None or target is None:
            return
        target.SetAutoWindowLevel(False)
        target.SetWindowLevel(source.GetWindow(), source.GetLevel())
        if source.GetColorNodeID():
            target.SetAndObserveColorNodeID(source.GetColorNodeID())

    @staticmethod
    def _placeBesideInput(scene, inputVolume, nodes) -> None:
        """Puts the new nodes in the input's subject-hierarchy folder (its study, for DICOM data)."""
        hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
        if hierarchy is None:
            return
        inputItem = hierarchy.GetItemByDataNode(inputVolume)
        parent = hierarchy.GetItemParent(inputItem) if inputItem else hierarchy.GetSceneItemID()
        for node in nodes:
            # In Slicer the subject-hierarchy plugins give every new node an item; on bare MRML we make it.
            item = hierarchy.GetItemByDataNode(node)
            if item:
                hierarchy.SetItemParent(item, parent)
            else:
                hierarchy.CreateItem(parent, node)

    # --- comparison view -----------------------------------------------------------------------------------

    def showComparison(self, inputVolume, outputVolume) -> None:
        """Side-by-side layout, Red = input and Yellow = output, linked, hot-linked and fitted to the input.

        Works on MRML alone, so also without a main window.
        """
        showSideBySide(inputVolume.GetScene() or self.scene, inputVolume, outputVolume)
