"""The Slicer module's logic on MRML alone: no Qt, so it runs and is tested with only ``slicer-core``.

It takes MRML nodes and plain values and returns nodes; it raises ``ValueError``/``RuntimeError`` with a
clear message and never opens a dialog. Every failure leaves the scene exactly as it was: results are
computed first and nodes are created or changed only once they are ready. This is the one library
module that imports ``slicer``.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import slicer
from slicer.util import arrayFromVolume, updateVolumeFromArray

from .background_job import BackgroundJob
from ..inference.denoiser import Denoiser, parse_strength
from ..inference.devices import describe_devices
from ..io.reading import read_volume
from ..io.writing import cast_to_dtype, write_volume
from ..inference.noise_estimation import estimate_noise_sigma
from ..models.registry import default_model_name, list_models
from ..io.volume import Geometry, Volume

__all__ = ["MedicalDenoiseLogic", "volumeFromNode"]

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
_LIBRARY_PARENT = str(Path(__file__).resolve().parents[2])


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

    # --- choices for the panel ---------------------------------------------------------------------------

    def availableModels(self) -> list[tuple[str, str]]:
        """(name, summary) of the shipped models, the default first."""
        default = default_model_name()
        entries = sorted(list_models(), key=lambda e: e.name != default)
        return [(e.name, e.summary) for e in entries]

    def deviceDescriptions(self) -> list[str]:
        return describe_devices()

    def estimateNoise(self, inputVolume) -> float:
        """Noise SD of the volume in its own units, as the Auto strength would use."""
        return estimate_noise_sigma(volumeFromNode(inputVolume).array)

    # --- synchronous run -----------------------------------------------------------------------------------

    def process(self, inputVolume, outputVolume=None, model: str | None = None, device: str = "auto",
                strength: str | float = "auto", modality: str = "auto",
                progress: Callable[[float], None] | None = None, cancel: Callable[[], bool] | None = None,
                residualVolume=None):
        """Denoises ``inputVolume`` in this process and returns the output node.

        Args:
            inputVolume: a scalar volume node; never modified.
            outputVolume: a node to fill (not the input), or None for a new node named
                "<input> denoised (<model>)".
            model: registry name or model file path; None for the default.
            device, strength, modality: as for the command line.
            progress: called with the fraction done; cancel: polled between tiles.
            residualVolume: a node to fill with ``input − output`` (float32), or None.

        Raises:
            ValueError: bad input, output, model or parameters. RuntimeError: the run failed.
            Cancelled: when ``cancel()`` returned True. In every case the scene is unchanged.
        """
        self._checkNodes(inputVolume, outputVolume, residualVolume)
        parse_strength(strength)
        volume = volumeFromNode(inputVolume)
        denoiser = self._denoiser(model, device)
        result = denoiser.denoise(volume, strength=strength, modality=modality, progress=progress, cancel=cancel)
        return self._storeResult(inputVolume, volume, result.volume.array, denoiser.name, outputVolume, residualVolume)

    def _denoiser(self, model: str | None, device: str) -> Denoiser:
        key = (model or default_model_name(), device)
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
                        pythonExecutable: str | None = None) -> BackgroundJob:
        """Writes the input to a temporary file and starts the command line on it in a child process."""
        self._checkNodes(inputVolume, None, None)
        parse_strength(strength)
        work = Path(tempfile.mkdtemp(prefix="MedicalDenoise-"))
        source, target = work / "input.nrrd", work / "output.nrrd"
        write_volume(volumeFromNode(inputVolume), source)
        command = [pythonExecutable or sys.executable, "-m", "MedicalDenoiseLib.cli.main", "denoise",
                   str(source), str(target), "--device", device, "--strength", str(strength),
                   "--modality", modality, "--progress", "slicer"]
        if model:
            command += ["--model", model]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_LIBRARY_PARENT, env.get("PYTHONPATH")) if p)
        env["PYTHONIOENCODING"] = "utf-8"  # the job reads the child's output as UTF-8 whatever the locale
        return BackgroundJob(command, target, work, env=env)

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
            name = modelName or default_model_name()
            return self._storeResult(inputVolume, volume, denoised, name, outputVolume, residualVolume)
        finally:
            job.cleanup()

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
        """Side-by-side layout, Red = input and Yellow = output, linked and hot-linked at the same position.

        Works on MRML alone, so also without a main window.
        """
        scene = inputVolume.GetScene() or self.scene
        layout = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
        if layout is not None:
            layout.SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
        composites = self._compositeNodes(scene)
        for name, volume in (("Red", inputVolume), ("Yellow", outputVolume)):
            composite = composites.get(name)
            if composite is None:
                composite = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
                composite.SetLayoutName(name)
                composites[name] = composite
            composite.SetBackgroundVolumeID(volume.GetID())
            composite.SetForegroundVolumeID(None)
            composite.SetLinkedControl(True)
            composite.SetHotLinkedControl(True)
        self._alignSliceViews(scene, inputVolume)

    @staticmethod
    def _compositeNodes(scene) -> dict:
        nodes = {}
        for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
            node = scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
            nodes.setdefault(node.GetLayoutName(), node)
        return nodes

    @staticmethod
    def _alignSliceViews(scene, inputVolume) -> None:
        """Gives Yellow Red's orientation and both the volume's centre, so they show the same slice."""
        sliceNodes = {}
        for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceNode")):
            node = scene.GetNthNodeByClass(i, "vtkMRMLSliceNode")
            sliceNodes.setdefault(node.GetLayoutName(), node)
        red, yellow = sliceNodes.get("Red"), sliceNodes.get("Yellow")
        if red is None or yellow is None:
            return
        bounds = [0.0] * 6
        inputVolume.GetRASBounds(bounds)
        centre = [(bounds[0] + bounds[1]) / 2, (bounds[2] + bounds[3]) / 2, (bounds[4] + bounds[5]) / 2]
        if red.GetOrientation() in ("Axial", "Sagittal", "Coronal"):
            yellow.SetOrientation(red.GetOrientation())
        else:  # Red was reformatted (common with oblique volumes): copy its plane as is
            yellow.GetSliceToRAS().DeepCopy(red.GetSliceToRAS())
        yellow.SetFieldOfView(*red.GetFieldOfView())
        for node in (red, yellow):
            node.JumpSliceByCentering(*centre)
            node.UpdateMatrices()
