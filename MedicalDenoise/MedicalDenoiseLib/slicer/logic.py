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
import shutil
import sys
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import slicer
from slicer.util import arrayFromVolume, updateVolumeFromArray

from .background_job import BackgroundJob, findPythonSlicer
from .comparison_view import showSideBySide
from ..estimation.noise_estimation import estimate_noise_sigma
from ..io.reading import read_volume
from ..io.volume import Geometry, Volume
from ..io.writing import cast_to_dtype, write_volume

if TYPE_CHECKING:
    from ..inference.denoiser import Denoiser

__all__ = ["MedicalDenoiseLogic", "BackgroundRequest", "volumeFromNode", "HANDOFF_SUFFIX"]

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
_LIBRARY_PARENT = str(Path(__file__).resolve().parents[2])
# Files handed to and from the child process: uncompressed NIfTI, since compressing a file that is read
# once, a moment later, on the same disk only costs time.
HANDOFF_SUFFIX = ".nii"


@dataclass(frozen=True)
class BackgroundRequest:
    """What a background job was started for: node IDs (nodes may be removed while it runs) and options."""

    inputID: str
    outputID: str | None
    createResidual: bool
    modelName: str | None  # for the new node's name; None for the default model


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
                residualVolume=None, grain: str = "auto"):
        """Denoises ``inputVolume`` in this process and returns the output node.

        Args:
            inputVolume: a scalar volume node; never modified.
            outputVolume: a node to fill (not the input), or None for a new node named
                "<input> denoised (<model>)".
            model: registry name or model file path; None for the default.
            device, strength, modality, grain: as for the command line.
            progress: called with the fraction done; cancel: polled between tiles.
            residualVolume: a node to fill with ``input − output`` (float32), or None.

        Raises:
            ValueError: bad input, output, model or parameters. RuntimeError: the run failed.
            Cancelled: when ``cancel()`` returned True. In every case the scene is unchanged.
        """
        from ..inference.strength import parse_strength

        self._checkNodes(inputVolume, outputVolume, residualVolume)
        parse_strength(strength)
        from ..inference.normalization import guess_modality

        volume = volumeFromNode(inputVolume)
        chosen = guess_modality(volume.array, volume.modality if modality == "auto" else modality)
        denoiser = self._denoiser(model, device, chosen)
        result = denoiser.denoise(volume, strength=strength, modality=modality, progress=progress, cancel=cancel,
                                  grain=grain)
        self.lastGrain = result.grain.describe()
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
                        createResidual: bool = False, grain: str = "auto") -> BackgroundJob:
        """Writes the input to a temporary file and starts the command line on it in a child process.

        ``pythonExecutable`` defaults to Slicer's ``PythonSlicer`` inside Slicer (RuntimeError when it
        cannot be found) and to this interpreter elsewhere. The job is cancelled when the scene closes.
        ``outputVolume`` and ``createResidual`` are remembered (as ``job.request``) for
        :meth:`loadBackgroundResult`.
        """
        from ..inference.strength import parse_strength

        from ..inference.grain import parse_grain

        self._checkNodes(inputVolume, outputVolume, None)
        parse_strength(strength)
        parse_grain(grain)
        python = pythonExecutable or (findPythonSlicer() if hasattr(slicer, "app") else sys.executable)
        work = Path(tempfile.mkdtemp(prefix="MedicalDenoise-"))
        source, target = work / f"input{HANDOFF_SUFFIX}", work / f"output{HANDOFF_SUFFIX}"
        command = [python, "-m", "MedicalDenoiseLib.cli.main", "denoise",
                   str(source), str(target), "--device", device, "--strength", str(strength),
                   "--modality", modality, "--grain", str(grain), "--progress", "slicer", "--exit-with-parent", str(os.getpid())]
        if model:
            command += ["--model", model]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_LIBRARY_PARENT, env.get("PYTHONPATH")) if p)
        env["PYTHONIOENCODING"] = "utf-8"  # the job reads the child's output as UTF-8 whatever the locale
        try:
            write_volume(volumeFromNode(inputVolume), source)
            job = BackgroundJob(command, target, work, env=env)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        job.request = BackgroundRequest(inputVolume.GetID(), outputVolume.GetID() if outputVolume else None,
                                        createResidual, Path(model).stem if model else None)
        self._jobs.add(job)
        return job

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
            return self._storeResult(inputVolume, volume, denoised, modelName, outputVolume, residualVolume)
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
