"""Medical Denoise: the Slicer module (widgets, parameter node, dependency install, self-test).

Thin by design: every action is delegated to ``MedicalDenoiseLib.slicer.logic.MedicalDenoiseLogic``, which
works on MRML alone and is tested outside Slicer. The library (and torch) is imported only when needed, so
the module loads even before its Python dependencies are installed.
"""
import importlib
import importlib.metadata
import importlib.util
import logging
import os
import re
import shutil
import sys
import tempfile
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode
from slicer.parameterNodeWrapper import Choice, Minimum, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

# Slicer puts the module folder on sys.path; make sure, so that the bundled library is importable.
_MODULE_DIR = os.path.dirname(os.path.abspath(__file__))
if _MODULE_DIR not in sys.path:
    sys.path.insert(0, _MODULE_DIR)

_REQUIREMENTS = os.path.join(_MODULE_DIR, "Resources", "requirements.txt")
_IMPORT_NAMES = {"scikit-image": "skimage"}  # distribution name -> import name where they differ
_PROTECTED = ("numpy", "SimpleITK", "vtk")  # Slicer's own packages: pinned, never reinstalled
_PROTECTED_LOWER = {name.lower() for name in _PROTECTED}
_LOAD_MODEL_FILE = "__load_model_file__"
_DEVICES = ["auto", "cuda", "cpu"]  # the device combo's items, in this order
_STRENGTHS = {"auto": "Auto (estimated noise)", "mild": "Mild", "standard": "Standard", "strong": "Strong",
              "value": "Noise SD:"}


class MedicalDenoise(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "Medical Denoise"
        self.parent.categories = ["Filtering.Denoising"]
        self.parent.dependencies = []
        self.parent.contributors = ["The MedicalDenoise authors"]
        self.parent.helpText = """
Deep-learning denoising of CT, MR and ultrasound volumes that keeps edges, texture and small structures.
The shipped 3D network was trained on synthetic noise added to clean volumes, at noise levels of about
0.5-15 % of the intensity range. The result is a new volume on the input's exact voxel grid (same spacing,
origin, directions and voxel type); the input is never changed. <b>Strength</b>: Auto uses the noise level
estimated from the image (shown under the input), Mild/Strong less/more, Noise SD a value in image units.
A CUDA GPU is used when present; the CPU works too, only slower. Denoising runs in a separate process,
so Slicer stays responsive and Cancel stops it. Load model file... accepts a fine-tuned .safetensors model.
<p><b>Research use only, not for diagnosis.</b> Outside the trained noise range, on unusual modalities or
on already-filtered images the model may leave artefacts or remove real detail: compare with the input
(shown side by side) and inspect the residual volume.</p>
"""
        self.parent.acknowledgementText = """
Built on 3D Slicer, PyTorch, SimpleITK, scikit-image and the SlicerPyTorch extension; the module follows
Slicer's scripted module template (J.-C. Fillion-Robin, Kitware; A. Lasso, PerkLab; S. Pieper, Isomics).
"""


def _requirementName(requirement):
    return re.match(r"[A-Za-z0-9_.\-]+", requirement).group(0)


def _missingRequirements():
    """The requirements in Resources/requirements.txt whose package cannot be imported."""
    with open(_REQUIREMENTS) as f:
        requirements = [line.split("#", 1)[0].strip() for line in f]
    importlib.invalidate_caches()
    requirements = [r for r in requirements if r and not r.startswith("-")
                    and _requirementName(r).lower() not in _PROTECTED_LOWER]
    return [r for r in requirements
            if importlib.util.find_spec(_IMPORT_NAMES.get(_requirementName(r), _requirementName(r))) is None]


def _pipInstall(requirements):
    """pip_ensure (Slicer >= 5.12) or pip_install, with numpy, SimpleITK and vtk pinned to Slicer's versions."""
    pins = []
    for name in _PROTECTED:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}\n")
        except importlib.metadata.PackageNotFoundError:
            pass
    handle, constraints = tempfile.mkstemp(prefix="MedicalDenoise-constraints-", suffix=".txt")
    with os.fdopen(handle, "w") as f:
        f.writelines(pins)
    try:
        hasPackaging = importlib.util.find_spec("slicer.packaging") is not None
        slicerPackaging = importlib.import_module("slicer.packaging") if hasPackaging else None
        if hasattr(slicerPackaging, "pip_ensure"):
            from packaging.requirements import Requirement
            slicerPackaging.pip_ensure([Requirement(r) for r in requirements], constraints=constraints,
                                       prompt_install=False, requester="Medical Denoise")
        else:
            slicer.util.pip_install(list(requirements) + ["-c", constraints])
    finally:
        os.remove(constraints)


def ensureDependencies():
    """Installs the missing Python packages after one confirmation; True when all are importable.

    Called at the first Denoise click, never on module load. torch comes through the PyTorch extension's
    PyTorchUtils when present (it picks the CUDA build for the driver), otherwise through pip.
    """
    missing = _missingRequirements()
    if not missing:
        return True
    if not slicer.util.confirmOkCancelDisplay(
            "Medical Denoise needs these Python packages, which are not installed yet:\n\n    "
            + "\n    ".join(missing) + "\n\nInstall them now? This downloads from the internet and can take "
            "several minutes (PyTorch is large). Slicer's own numpy, SimpleITK and VTK are left untouched.",
            windowTitle="Medical Denoise: install dependencies"):
        return False
    with slicer.util.tryWithErrorDisplay("Installing the Python dependencies failed.", waitCursor=True):
        torch = [r for r in missing if _requirementName(r) == "torch"]
        if torch and importlib.util.find_spec("PyTorchUtils"):
            import PyTorchUtils
            version = torch.pop()[len("torch"):].strip() or None
            torchLogic = PyTorchUtils.PyTorchUtilsLogic()
            if torchLogic.installTorch(askConfirmation=False, torchVersionRequirement=version) is None:
                raise RuntimeError("PyTorch was not installed")
        others = torch + [r for r in missing if _requirementName(r) != "torch"]
        if others:
            _pipInstall(others)
    stillMissing = _missingRequirements()
    if stillMissing:
        slicer.util.errorDisplay("These packages are still missing after the installation:\n"
                                 + "\n".join(stillMissing) + "\n\nRestarting Slicer may help.")
    return not stillMissing


@parameterNodeWrapper
class MedicalDenoiseParameterNode:
    """The panel's state, saved with the scene.

    model: registry name or .safetensors path ("" = the default model); strengthValue is used when
    strengthMode is "value" (noise SD in image units); outputVolume None creates a new volume.
    """
    inputVolume: vtkMRMLScalarVolumeNode
    outputVolume: vtkMRMLScalarVolumeNode
    model: str = ""
    device: Annotated[str, Choice(_DEVICES)] = "auto"
    strengthMode: Annotated[str, Choice(list(_STRENGTHS))] = "auto"
    strengthValue: Annotated[float, Minimum(0.0)] = 0.0
    createResidual: bool = False


class MedicalDenoiseParameterLogic(ScriptedLoadableModuleLogic):
    """Keeps the module's singleton parameter node; all processing is in MedicalDenoiseLib."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.moduleName = "MedicalDenoise"

    def getParameterNode(self):
        return MedicalDenoiseParameterNode(super().getParameterNode())


class MedicalDenoiseWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None  # MedicalDenoiseLib's logic, created once its dependencies import
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._jobInfo = None
        self._noiseKey, self._noiseEstimate = None, None
        self._deviceDescriptions = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedicalDenoise.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.parameterLogic = MedicalDenoiseParameterLogic()
        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(200)
        self._pollTimer.connect("timeout()", self.onPollTimer)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        # The model list is dynamic (registry + files), so it is synchronised by hand rather than bound.
        self.ui.modelSelector.connect("activated(int)", self.onModelActivated)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self._createLogic()
        self._populateModelSelector()
        self.initializeParameterNode()

    def cleanup(self):
        if self._job is not None:
            self._pollTimer.stop()
            self._job.cleanup()  # cancels the child first
            self._job = None
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event):
        if self._job is not None:
            self._job.cancel()  # its input is going away; the next poll reports the cancellation
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.parameterLogic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
            self._labelChoices()
            self.onParameterNodeModified()

    # --- panel state ---------------------------------------------------------------------------------------

    def _createLogic(self):
        if self.logic is None:
            try:
                from MedicalDenoiseLib.slicer.logic import MedicalDenoiseLogic
            except Exception as error:  # ImportError until installed; a broken torch install raises others
                logging.warning(f"Medical Denoise: library not importable yet ({error}); installs on first Denoise")
                return None
            self.logic = MedicalDenoiseLogic(slicer.mrmlScene)
        return self.logic

    def onParameterNodeModified(self, caller=None, event=None):
        p = self._parameterNode
        if p is None:
            return
        running = self._job is not None
        self.ui.applyButton.enabled = running or bool(p.inputVolume)
        self.ui.applyButton.toolTip = "Stop denoising" if running else (
            "Denoise the input volume into a new volume" if p.inputVolume else "Select an input volume")
        self.ui.strengthValueSpinBox.enabled = p.strengthMode == "value"
        self._selectModel(p.model)
        self._updateNoiseEstimate()

    def _populateModelSelector(self):
        combo = self.ui.modelSelector
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        models = self.logic.availableModels() if self.logic else [("default model", "")]
        for index, (name, summary) in enumerate(models):
            combo.addItem(name, name if self.logic else "")
            combo.setItemData(index, summary or "Installed with the Python dependencies", qt.Qt.ToolTipRole)
        combo.addItem("Load model file...", _LOAD_MODEL_FILE)
        combo.blockSignals(wasBlocked)
        if self._parameterNode:
            self._selectModel(self._parameterNode.model)

    def _selectModel(self, model):
        combo = self.ui.modelSelector
        index = combo.findData(model) if model else 0
        if index < 0:  # a model file chosen earlier (or saved in the scene)
            index = combo.count - 1
            combo.insertItem(index, os.path.basename(model), model)
            combo.setItemData(index, model, qt.Qt.ToolTipRole)
        wasBlocked = combo.blockSignals(True)
        combo.setCurrentIndex(index)
        combo.blockSignals(wasBlocked)

    def onModelActivated(self, index):
        model = self.ui.modelSelector.itemData(index)
        if model == _LOAD_MODEL_FILE:
            model = qt.QFileDialog.getOpenFileName(slicer.util.mainWindow(), "Load a denoising model", "",
                                                   "Denoising models (*.safetensors)")
            if not model:
                self._selectModel(self._parameterNode.model)
                return
        self._parameterNode.model = model or ""

    def _labelChoices(self):
        """Readable labels for the bound combo boxes (connectGui fills them with the Choice values, in order)."""
        for index, choice in enumerate(list(_STRENGTHS)[:self.ui.strengthSelector.count]):
            self.ui.strengthSelector.setItemText(index, _STRENGTHS[choice])
        if self.logic is None:
            return
        if self._deviceDescriptions is None:
            self._deviceDescriptions = self.logic.deviceDescriptions()
        descriptions = self._deviceDescriptions
        cuda = [d for d in descriptions if d.startswith("cuda")]
        labels = {"auto": f"auto: {descriptions[0]}", "cuda": cuda[0] if cuda else "cuda (not available)",
                  "cpu": next((d for d in descriptions if d.startswith("cpu")), "cpu")}
        for index, choice in enumerate(_DEVICES[:self.ui.deviceSelector.count]):
            self.ui.deviceSelector.setItemText(index, labels[choice])
        self.ui.deviceSelector.toolTip = "Devices on this machine:\n" + "\n".join(descriptions)

    def _updateNoiseEstimate(self):
        volume = self._parameterNode.inputVolume
        if volume is None or volume.GetImageData() is None or self.logic is None:
            self._noiseKey, self._noiseEstimate = None, None
            self.ui.noiseEstimateLabel.text = "" if self.logic or volume is None else (
                "Noise estimate: available once the dependencies are installed (first Denoise).")
            return
        key = (volume.GetID(), volume.GetImageData().GetMTime())
        if key != self._noiseKey:
            self._noiseKey, self._noiseEstimate = key, None
            slicer.app.setOverrideCursor(qt.Qt.WaitCursor)
            try:
                self._noiseEstimate = self.logic.estimateNoise(volume)
            except Exception as error:
                logging.warning(f"Medical Denoise: noise estimate failed: {error}")
            finally:
                slicer.app.restoreOverrideCursor()
        if self._noiseEstimate is None:
            self.ui.noiseEstimateLabel.text = "Noise estimate: not available for this volume."
        else:
            usedBy = " (used by Auto)" if self._parameterNode.strengthMode == "auto" else ""
            self.ui.noiseEstimateLabel.text = f"Estimated noise SD: {self._noiseEstimate:.4g}{usedBy}"

    def _setRunning(self, running):
        self.ui.applyButton.text = "Cancel" if running else "Denoise"
        for section in (self.ui.inputsCollapsibleButton, self.ui.parametersCollapsibleButton,
                        self.ui.outputsCollapsibleButton):
            section.enabled = not running
        if not running:
            self._pollTimer.stop()
        self.onParameterNodeModified()

    # --- running ---------------------------------------------------------------------------------------------

    def onApplyButton(self):
        if self._job is not None:
            self.ui.statusLabel.text = "Cancelling..."
            self._job.cancel()
            self.onPollTimer()
            return
        p = self._parameterNode
        if p.outputVolume is not None and p.outputVolume == p.inputVolume:
            slicer.util.errorDisplay("The output volume must not be the input volume: the input is never "
                                     "overwritten. Choose \"(new volume)\" or another volume as output.")
            return
        strength = p.strengthValue if p.strengthMode == "value" else p.strengthMode
        if p.strengthMode == "value" and strength <= 0:
            slicer.util.errorDisplay("Noise SD must be the noise standard deviation in image units, above 0.")
            return
        if not ensureDependencies():
            return
        if self.logic is None:
            if self._createLogic() is None:
                slicer.util.errorDisplay("The Medical Denoise library could not be imported; see the Python console.")
                return
            self._populateModelSelector()
            self._labelChoices()
            self.onParameterNodeModified()
        with slicer.util.tryWithErrorDisplay("Failed to start denoising.", waitCursor=True):
            self._job = self.logic.startBackground(p.inputVolume, model=p.model or None, device=p.device,
                                                   strength=strength, pythonExecutable=shutil.which("PythonSlicer"))
        self._jobInfo = {"inputID": p.inputVolume.GetID(), "residual": p.createResidual, "model": p.model or None,
                         "outputID": p.outputVolume.GetID() if p.outputVolume else None, "device": p.device}
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = "Starting..."
        self._setRunning(True)
        self._pollTimer.start()

    def onPollTimer(self):
        job = self._job
        if job is None:
            return
        state = job.poll()
        self.ui.progressBar.value = int(round(100 * job.progress))
        if state == "running":
            self.ui.statusLabel.text = f"Denoising... {100 * job.progress:.0f} % ({job.elapsedSeconds:.0f} s)"
            return
        self._job = None
        try:
            if state == "succeeded":
                self._finish(job)
            elif state == "failed":
                self.ui.statusLabel.text = f"Failed: {job.error}"
                slicer.util.errorDisplay(f"Denoising failed:\n{job.error}", windowTitle="Medical Denoise")
            else:
                self.ui.statusLabel.text = f"Cancelled after {job.elapsedSeconds:.1f} s; nothing was changed."
        finally:
            job.cleanup()
            self._setRunning(False)

    def _finish(self, job):
        info = self._jobInfo
        inputVolume = slicer.mrmlScene.GetNodeByID(info["inputID"])
        outputVolume = slicer.mrmlScene.GetNodeByID(info["outputID"]) if info["outputID"] else None
        if inputVolume is None or (info["outputID"] and outputVolume is None):
            self.ui.statusLabel.text = "The input or output volume was removed while denoising; nothing was changed."
            return
        residualVolume = None
        if info["residual"]:
            residualName = slicer.mrmlScene.GenerateUniqueName(f"{inputVolume.GetName()} residual")
            residualVolume = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", residualName)
        modelName = os.path.splitext(os.path.basename(info["model"]))[0] if info["model"] else None
        try:
            outputVolume = self.logic.finishBackground(job, inputVolume, outputVolume, residualVolume,
                                                       modelName=modelName)
        except Exception as error:
            if residualVolume is not None:
                slicer.mrmlScene.RemoveNode(residualVolume)
            logging.exception("Medical Denoise: loading the result failed")
            self.ui.statusLabel.text = f"Failed: {error}"
            slicer.util.errorDisplay(f"Loading the denoised volume failed:\n{error}", windowTitle="Medical Denoise")
            return
        self.logic.showComparison(inputVolume, outputVolume)
        self.ui.progressBar.value = 100
        self.ui.statusLabel.text = (f"Done in {job.elapsedSeconds:.1f} s on {job.deviceUsed or info['device']}: "
                                    f"\"{outputVolume.GetName()}\".")


class MedicalDenoiseTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_ParameterNodeDefaults()
        if importlib.util.find_spec("torch") is None:
            self.delayDisplay("PyTorch is not installed: skipping the denoising tests")
            return
        for test in (self.test_DenoiseAndCompare, self.test_ExistingOutputAndResidual, self.test_RefusesInputAsOutput):
            self.setUp()
            test()
        self.delayDisplay("Medical Denoise tests passed")

    def _makeVolume(self):
        """An int16 phantom with noise on an oblique, anisotropic grid with a non-zero origin."""
        import numpy as np
        k, j, i = np.meshgrid(*(np.linspace(-1, 1, n) for n in (13, 22, 19)), indexing="ij")
        image = 40 * i + np.where(i ** 2 + j ** 2 + k ** 2 < 0.4, 300, 0)
        image += np.random.default_rng(0).normal(0, 25, i.shape)
        a, b = np.deg2rad(25), np.deg2rad(-40)
        rotation = (np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
                    @ np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]]))
        ijkToRAS = np.eye(4)
        ijkToRAS[:3, :3] = rotation @ np.diag([0.7, 0.9, 2.5])
        ijkToRAS[:3, 3] = [-101.25, 33.5, 7.125]
        return slicer.util.addVolumeFromArray(image.astype(np.int16), ijkToRAS, "MedicalDenoiseTestInput")

    def _assertSameGrid(self, a, b):
        import numpy as np
        matrices = [vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()]
        a.GetIJKToRASMatrix(matrices[0])
        b.GetIJKToRASMatrix(matrices[1])
        np.testing.assert_allclose(*(slicer.util.arrayFromVTKMatrix(m) for m in matrices), rtol=0, atol=1e-9)
        np.testing.assert_allclose(a.GetSpacing() + a.GetOrigin(), b.GetSpacing() + b.GetOrigin(), rtol=0, atol=1e-9)
        self.assertEqual(a.GetImageData().GetDimensions(), b.GetImageData().GetDimensions())

    def test_ParameterNodeDefaults(self):
        parameters = MedicalDenoiseParameterLogic().getParameterNode()
        self.assertEqual((parameters.device, parameters.strengthMode, parameters.model), ("auto", "auto", ""))
        self.assertFalse(parameters.createResidual)
        self.assertIsNone(parameters.outputVolume)

    def test_DenoiseAndCompare(self):
        from MedicalDenoiseLib.slicer.logic import MedicalDenoiseLogic
        logic = MedicalDenoiseLogic()
        self.assertTrue(logic.availableModels())
        inputVolume = self._makeVolume()
        before = slicer.util.arrayFromVolume(inputVolume).copy()
        outputVolume = logic.process(inputVolume, device="cpu")
        self.assertNotEqual(outputVolume.GetID(), inputVolume.GetID())
        self._assertSameGrid(inputVolume, outputVolume)
        self.assertEqual(outputVolume.GetImageData().GetScalarType(), inputVolume.GetImageData().GetScalarType())
        self.assertTrue((slicer.util.arrayFromVolume(inputVolume) == before).all(), "the input was modified")
        self.assertTrue(outputVolume.GetName().startswith("MedicalDenoiseTestInput denoised"), outputVolume.GetName())
        logic.showComparison(inputVolume, outputVolume)
        layoutNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLLayoutNode")
        if layoutNode is not None:
            self.assertEqual(layoutNode.GetViewArrangement(), slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
        composites = {n.GetLayoutName(): n for n in slicer.util.getNodesByClass("vtkMRMLSliceCompositeNode")}
        for viewName, volume in (("Red", inputVolume), ("Yellow", outputVolume)):
            self.assertEqual(composites[viewName].GetBackgroundVolumeID(), volume.GetID())
            self.assertTrue(composites[viewName].GetLinkedControl())
            self.assertTrue(composites[viewName].GetHotLinkedControl())

    def test_ExistingOutputAndResidual(self):
        import numpy as np
        from MedicalDenoiseLib.slicer.logic import MedicalDenoiseLogic
        inputVolume = self._makeVolume()
        outputVolume = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "chosen output")
        residualVolume = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "residual")
        result = MedicalDenoiseLogic().process(inputVolume, outputVolume, device="cpu", strength="mild",
                                               residualVolume=residualVolume)
        self.assertEqual((result.GetID(), result.GetName()), (outputVolume.GetID(), "chosen output"))
        self._assertSameGrid(inputVolume, residualVolume)
        inputArray, outputArray = (slicer.util.arrayFromVolume(v).astype(np.float32)
                                   for v in (inputVolume, outputVolume))
        self.assertLess(np.abs(inputArray - outputArray - slicer.util.arrayFromVolume(residualVolume)).max(), 1.0)

    def test_RefusesInputAsOutput(self):
        from MedicalDenoiseLib.slicer.logic import MedicalDenoiseLogic
        inputVolume = self._makeVolume()
        nodeCount = slicer.mrmlScene.GetNumberOfNodes()
        with self.assertRaises(ValueError):
            MedicalDenoiseLogic().process(inputVolume, inputVolume, device="cpu")
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodeCount)
