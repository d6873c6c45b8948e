"""Medical Denoise: the Slicer module (widgets, parameter node, self-test).

Thin by design: denoising, dependency installation and the comparison view live in ``MedicalDenoiseLib.slicer``
(Qt-free, tested outside Slicer). The library is imported only inside functions and torch only when first
needed, so the module loads before its Python dependencies are installed and opens without a freeze.
"""
import importlib
import importlib.util
import logging
import os
import sys
import unittest
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode
from slicer.parameterNodeWrapper import Choice, Maximum, Minimum, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

# Slicer puts the module folder on sys.path; make sure, so that the bundled library is importable.
_MODULE_DIR = os.path.dirname(os.path.abspath(__file__))
if _MODULE_DIR not in sys.path:
    sys.path.insert(0, _MODULE_DIR)

_REQUIREMENTS = os.path.join(_MODULE_DIR, "Resources", "requirements.txt")
_LOAD_MODEL_FILE = "__load_model_file__"
_SERVER = "server"
_DEVICES = ["auto", "cuda", "cpu", _SERVER]  # the device combo's items, in this order
# The token is a secret: it stays in this computer's settings and never enters the scene or the parameter node.
_TOKEN_SETTING = "MedicalDenoise/ServerToken"
_SERVER_URL_SETTING = "MedicalDenoise/ServerUrl"  # the last address used, offered again in a new scene
_SERVER_TIP = "Send the volume to a medical-denoise server (e.g. a GPU machine) and get the result back"
_SERVER_OFF_WHILE_ADAPTING = "Not while Adapt to this scan is on: adapting runs on this computer"
_ADAPT_OFF_ON_SERVER = "Not with the Server... device: adapting runs on this computer, not on the server"
_STRENGTHS = {"auto": "Auto (estimated noise)", "mild": "Mild", "standard": "Standard", "strong": "Strong",
              "value": "Noise SD:"}
_GRAINS = {"auto": "Auto (measured)", "1": "Whole image", "2": "2×2 sub-grids", "3": "3×3 sub-grids",
           "4": "4×4 sub-grids"}


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
<b>Server...</b> (device) sends the volume to a medical-denoise server; its token is kept in Slicer's settings
(Token...), never in the scene. <b>Adapt to this scan</b> first fits the model to the input within the given
minutes; a model that does better is added to the model list for this session, for that series only.
<p><b>Research use only, not for diagnosis.</b> Outside the trained noise range, on unusual modalities or
on already-filtered images the model may leave artefacts or remove real detail: compare with the input
(shown side by side) and inspect the residual volume.</p>
"""
        self.parent.acknowledgementText = """
Built on 3D Slicer, PyTorch, SimpleITK, scikit-image and the SlicerPyTorch extension; the module follows
Slicer's scripted module template (J.-C. Fillion-Robin, Kitware; A. Lasso, PerkLab; S. Pieper, Isomics).
"""


def ensureDependencies():
    """Installs missing or too old Python packages after one confirmation; True when all are met.

    Called at the first Denoise click, never on module load. What to install and how is decided in
    MedicalDenoiseLib.slicer.dependencies; this passes it Slicer's installers.
    """
    from MedicalDenoiseLib.slicer import dependencies
    from MedicalDenoiseLib.slicer.background_job import findPythonSlicer
    packaging = importlib.import_module("slicer.packaging") if importlib.util.find_spec("slicer.packaging") else None
    installers = dependencies.Installers(
        pip_install=slicer.util.pip_install, pip_ensure=getattr(packaging, "pip_ensure", None),  # 5.12 and later
        run_python_module=lambda module, args: slicer.util.logProcessOutput(
            slicer.util.launchConsoleProcess([findPythonSlicer(), "-m", module, *args])),
        has_pytorch_utils=importlib.util.find_spec("PyTorchUtils") is not None)
    title = "Medical Denoise: install dependencies"
    with slicer.util.tryWithErrorDisplay("Installing the Python dependencies failed."):
        return dependencies.ensure_requirements(
            _REQUIREMENTS, installers, lambda question: slicer.util.confirmOkCancelDisplay(question, windowTitle=title))
    return False


@parameterNodeWrapper
class MedicalDenoiseParameterNode:
    """The panel's state, saved with the scene.

    model: registry name or .safetensors path ("" = the default model); strengthValue is used when
    strengthMode is "value" (noise SD in image units); outputVolume None creates a new volume; serverUrl
    is used when device is "server"; adaptMinutes when adaptToScan (never with a server).
    """
    inputVolume: vtkMRMLScalarVolumeNode
    outputVolume: vtkMRMLScalarVolumeNode
    model: str = ""
    device: Annotated[str, Choice(_DEVICES)] = "auto"
    strengthMode: Annotated[str, Choice(list(_STRENGTHS))] = "auto"
    strengthValue: Annotated[float, Minimum(0.0)] = 0.0
    grain: Annotated[str, Choice(list(_GRAINS))] = "auto"
    createResidual: bool = False
    serverUrl: str = ""  # with device "server"; the token is not here (see _TOKEN_SETTING)
    adaptToScan: bool = False
    adaptMinutes: Annotated[int, Minimum(1), Maximum(120)] = 3


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
        self.logic = None
        self._parameterNode = None
        self._binding = None
        self._job = None
        self._deviceDescriptions = None  # known once torch is loaded (after the module is shown)
        self._shippedModels = None
        self._adaptedWarning = ""  # the warning the status line shows, to clear it once it no longer holds

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        from MedicalDenoiseLib.slicer.logic import MedicalDenoiseLogic  # numpy/scipy/SimpleITK only, no torch
        from MedicalDenoiseLib.slicer.parameter_binding import ParameterNodeBinding
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedicalDenoise.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self._binding = ParameterNodeBinding(uiWidget.findChildren(qt.QWidget))
        self.logic = MedicalDenoiseLogic(slicer.mrmlScene)  # it cancels running jobs when the scene closes
        self.parameterLogic = MedicalDenoiseParameterLogic()
        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(200)
        self._pollTimer.connect("timeout()", self.onPollTimer)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        slicer.app.connect("aboutToQuit()", self.cleanup)  # never leave a denoising process behind
        # The model list is dynamic (registry + files), so it is synchronised by hand rather than bound.
        self.ui.modelSelector.connect("activated(int)", self.onModelActivated)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.serverTokenButton.connect("clicked(bool)", self.onServerTokenButton)
        self.ui.saveAdaptedModelButton.connect("clicked(bool)", self.onSaveAdaptedModelButton)
        self._adaptToolTip = self.ui.adaptCheckBox.toolTip  # the .ui's, shown again once Server... is left
        self._populateModelSelector()
        self._updateServerToken()
        self.initializeParameterNode()

    def cleanup(self):
        slicer.app.disconnect("aboutToQuit()", self.cleanup)
        self._pollTimer.stop()
        self.logic.stopBackgroundJobs(removeFiles=True)  # Slicer quits or the module is reloaded
        self.logic.adaptedModels.removeFiles()
        self._binding.unbind()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()
        if self._deviceDescriptions is None:
            # torch takes seconds to import and CUDA to answer: let the panel appear first.
            qt.QTimer.singleShot(300, self._loadChoices)

    def onSceneStartClose(self, caller, event):
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
        if not self._parameterNode.serverUrl:
            self._parameterNode.serverUrl = qt.QSettings().value(_SERVER_URL_SETTING, "") or ""

    def setParameterNode(self, inputParameterNode):
        """Binds the panel to a parameter node once; entering the module again binds nothing new."""
        if not self._binding.bind(inputParameterNode):
            return
        if self._parameterNode:
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
            self._labelChoices()
            self.onParameterNodeModified()

    def _loadChoices(self):
        """Fills in the shipped models and the devices, once torch is installed (it is imported here)."""
        if self._deviceDescriptions is not None or importlib.util.find_spec("torch") is None:
            return
        try:
            with slicer.util.WaitCursor():
                self._deviceDescriptions = self.logic.deviceDescriptions()
                self._shippedModels = self.logic.availableModels()
                self._populateModelSelector(self._shippedModels)
        except Exception as error:  # a broken torch install: denoising reports it when run
            logging.warning(f"Medical Denoise: models and devices not available yet: {error}")
        self._labelChoices()

    def onParameterNodeModified(self, caller=None, event=None):
        p = self._parameterNode
        if p is None:
            return
        running = self._job is not None
        self.ui.applyButton.enabled = running or bool(p.inputVolume)
        self.ui.applyButton.toolTip = "Stop denoising" if running else (
            "Denoise the input volume into a new volume" if p.inputVolume else "Select an input volume")
        self.ui.strengthValueSpinBox.enabled = p.strengthMode == "value"
        # Server and Adapt exclude each other: adapting trains the network here, a server has its own.
        server, adapting = p.device == _SERVER, p.adaptToScan and p.device != _SERVER
        self.ui.serverLabel.visible = self.ui.serverWidget.visible = server
        self.ui.adaptCheckBox.enabled = not running and not server
        self.ui.adaptCheckBox.toolTip = _ADAPT_OFF_ON_SERVER if server else self._adaptToolTip
        self.ui.adaptMinutesSpinBox.enabled = not running and adapting
        self._enableServerChoice(not adapting)
        self._selectModel(p.model)
        self._updateNoiseEstimate()
        self._updateAdaptedModel()

    def _populateModelSelector(self, models=None):
        """``models``: (name, summary) of the shipped models; None before torch is loaded (the default only)."""
        combo = self.ui.modelSelector
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        for index, (name, summary) in enumerate(models or [("default model", "")]):
            combo.addItem(name, name if models else "")
            combo.setItemData(index, summary or "The shipped models are listed once PyTorch is installed",
                              qt.Qt.ToolTipRole)
        for adapted in self.logic.adaptedModels:  # this session's, for the series each was fitted to
            combo.addItem(adapted.label, str(adapted.path))
            combo.setItemData(combo.count - 1, f"Adapted in this session to {adapted.fittedTo}; for that series only",
                              qt.Qt.ToolTipRole)
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
        for index, choice in enumerate(list(_GRAINS)[:self.ui.grainSelector.count]):
            self.ui.grainSelector.setItemText(index, _GRAINS[choice])
        if _DEVICES.index(_SERVER) < self.ui.deviceSelector.count:
            self.ui.deviceSelector.setItemText(_DEVICES.index(_SERVER), "Server...")
        descriptions = self._deviceDescriptions
        if not descriptions:
            return
        labels = self.logic.deviceLabels(descriptions)
        for index, choice in enumerate(_DEVICES[:self.ui.deviceSelector.count]):
            if choice != _SERVER:
                self.ui.deviceSelector.setItemText(index, labels[choice])
        self.ui.deviceSelector.toolTip = ("Devices on this machine:\n" + "\n".join(descriptions) +
                                          "\nServer...: a medical-denoise server's device")

    def _enableServerChoice(self, enabled):
        """Greys out the Server... device while Adapt to this scan is on, saying why."""
        combo, index = self.ui.deviceSelector, _DEVICES.index(_SERVER)
        if index >= combo.count:
            return
        item = combo.model().item(index)  # the combo's QStandardItemModel
        if item is not None:
            item.setEnabled(enabled)
        combo.setItemData(index, _SERVER_TIP if enabled else _SERVER_OFF_WHILE_ADAPTING, qt.Qt.ToolTipRole)

    def _updateServerToken(self):
        hasToken = bool(qt.QSettings().value(_TOKEN_SETTING, ""))
        self.ui.serverTokenButton.text = "Token... (set)" if hasToken else "Token..."
        self.ui.serverTokenButton.toolTip = (
            ("A token is set. " if hasToken else "No token set (a server on this computer may need none). ") +
            "The server's access token is kept in Slicer's settings on this computer, never in the scene.")

    def onServerTokenButton(self):
        dialog = qt.QInputDialog(slicer.util.mainWindow())
        dialog.setWindowTitle("Medical Denoise: server token")
        dialog.setLabelText("Access token of the medical-denoise server (kept in Slicer's settings on this "
                            "computer, never in the scene). Leave empty to remove it.")
        dialog.setTextEchoMode(qt.QLineEdit.Password)
        if not dialog.exec_():
            return
        token = dialog.textValue().strip()
        settings = qt.QSettings()
        if token:
            settings.setValue(_TOKEN_SETTING, token)
        else:
            settings.remove(_TOKEN_SETTING)
        self._updateServerToken()

    def _updateAdaptedModel(self):
        """Says which series the chosen adapted model was fitted to, and warns when the input is another one."""
        p, adaptedModels = self._parameterNode, self.logic.adaptedModels
        adapted = adaptedModels.get(p.model)
        self.ui.saveAdaptedModelButton.enabled = self._job is None and len(adaptedModels) > 0
        warning = ""
        if adapted is None:
            self.ui.adaptedModelLabel.text = ""
        else:
            self.ui.adaptedModelLabel.text = f"Adapted model, fitted to {adapted.fittedTo}."
            if p.inputVolume is not None and p.inputVolume.GetImageData() is not None:
                with slicer.util.WaitCursor():
                    warning = self.logic.adaptedModelWarning(p.model, p.inputVolume) or ""
        if warning:
            self.ui.adaptedModelLabel.text = f"Adapted model, fitted to {adapted.fittedTo}: not to this input."
            self.ui.statusLabel.text = f"Warning: {warning}"
        elif self._adaptedWarning and self.ui.statusLabel.text == f"Warning: {self._adaptedWarning}":
            self.ui.statusLabel.text = ""
        self._adaptedWarning = warning

    def onSaveAdaptedModelButton(self):
        adaptedModels = self.logic.adaptedModels
        adapted = adaptedModels.get(self._parameterNode.model) or list(adaptedModels)[-1]
        target = qt.QFileDialog.getSaveFileName(slicer.util.mainWindow(), f"Save {adapted.label}",
                                                f"{adapted.name}.safetensors", "Denoising models (*.safetensors)")
        if not target:
            return
        with slicer.util.tryWithErrorDisplay("Saving the adapted model failed."):
            saved = adaptedModels.save(str(adapted.path), target)
            self.ui.statusLabel.text = (f"Saved {adapted.label} to {saved}; it is for the series it was fitted to, "
                                        f"{adapted.fittedTo}.")

    def _updateNoiseEstimate(self):
        volume = self._parameterNode.inputVolume
        if volume is None or volume.GetImageData() is None:
            self.ui.noiseEstimateLabel.text = ""
            return
        with slicer.util.WaitCursor():
            sigma = self.logic.noiseEstimate(volume)
        usedBy = " (used by Auto)" if self._parameterNode.strengthMode == "auto" else ""
        self.ui.noiseEstimateLabel.text = ("Noise estimate: not available for this volume." if sigma is None
                                           else f"Estimated noise SD: {sigma:.4g}{usedBy}")

    def _setRunning(self, running):
        self.ui.applyButton.text = "Cancel" if running else "Denoise"
        for section in (self.ui.inputsCollapsibleButton, self.ui.parametersCollapsibleButton,
                        self.ui.outputsCollapsibleButton, self.ui.adaptCheckBox, self.ui.adaptMinutesSpinBox):
            section.enabled = not running
        if not running:
            self._pollTimer.stop()
        self.onParameterNodeModified()

    def onApplyButton(self):
        if self._job is not None:
            self.ui.statusLabel.text = "Cancelling..."
            self._job.cancel()
            self.onPollTimer()
            return
        p = self._parameterNode
        strength = p.strengthValue if p.strengthMode == "value" else p.strengthMode
        if p.strengthMode == "value" and strength <= 0:
            slicer.util.errorDisplay("Noise SD must be the noise standard deviation in image units, above 0.")
            return
        server = p.serverUrl.strip() if p.device == _SERVER else None
        adaptMinutes = p.adaptMinutes if p.adaptToScan and not server else None
        if not ensureDependencies():
            return
        self._loadChoices()
        warning = ""
        with slicer.util.tryWithErrorDisplay("Failed to start denoising.", waitCursor=True):
            warning = self.logic.adaptedModelWarning(p.model or None, p.inputVolume) or ""
        if warning:  # an adapted model is never used on another series without the user saying so
            self.ui.statusLabel.text = f"Warning: {warning}"
            if not slicer.util.confirmOkCancelDisplay(f"{warning}\n\nDenoise with it anyway?",
                                                      windowTitle="Medical Denoise"):
                return
        token = (qt.QSettings().value(_TOKEN_SETTING, "") or "") if server else None
        with slicer.util.tryWithErrorDisplay("Failed to start denoising.", waitCursor=True):
            # The command line in PythonSlicer; a clear error for a missing PythonSlicer, output == input, a bad
            # server address. What goes wrong on the server comes back as the job's error.
            self._job = self.logic.startBackground(p.inputVolume, model=p.model or None,
                                                   device="auto" if server else p.device, strength=strength,
                                                   outputVolume=p.outputVolume, createResidual=p.createResidual,
                                                   grain=p.grain, server=server, token=token,
                                                   adaptMinutes=adaptMinutes, acceptOtherSeries=bool(warning))
        if self._job is None:
            return
        if server:
            qt.QSettings().setValue(_SERVER_URL_SETTING, server)
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
            request = job.request
            doing = ("Adapting to this scan, then denoising" if request.adaptMinutes else
                     f"Denoising on {request.server}" if request.server else "Denoising")
            self.ui.statusLabel.text = f"{doing}... {100 * job.progress:.0f} % ({job.elapsedSeconds:.0f} s)"
            return
        self._job = None
        try:
            if state == "succeeded":
                outputVolume = self.logic.loadBackgroundResult(job)
                self.ui.progressBar.value = 100
                where = job.deviceUsed or "the chosen device"
                if job.request.server:
                    where = f"{where} at {job.request.server}"
                grain = f" ({job.grainUsed})" if job.grainUsed else ""
                adapted = f" {job.adaptationUsed[:1].upper()}{job.adaptationUsed[1:]}." if job.adaptationUsed else ""
                if job.adaptedModel is not None:
                    self._populateModelSelector(self._shippedModels)
                    adapted += (f" The model list now holds {job.adaptedModel.label!r}, fitted to "
                                f"{job.adaptedModel.fittedTo}, for this session (Save adapted model... keeps it).")
                self.ui.statusLabel.text = (f"Done in {job.elapsedSeconds:.1f} s on {where}: {outputVolume.GetName()!r}."
                                            f"{grain}{adapted}")
            elif state == "failed":
                # The command line's one-line reason, as it is; in Slicer the token is set with Token..., not a file.
                hint = ("\n(Set the server's token with Token... beside its address.)"
                        if job.request.server and "(401)" in job.error else "")
                raise RuntimeError(job.error + hint)
            else:
                self.ui.statusLabel.text = f"Cancelled after {job.elapsedSeconds:.1f} s; nothing was changed."
        except Exception as error:
            logging.exception("Medical Denoise: denoising failed")
            self.ui.statusLabel.text = f"Failed: {error}"
            slicer.util.errorDisplay(f"Denoising failed:\n{error}", windowTitle="Medical Denoise")
        finally:
            job.cleanup()
            self._setRunning(False)


class MedicalDenoiseTest(ScriptedLoadableModuleTest):
    """Runs in Slicer (Reload and Test, and ctest). Tests that denoise skip where PyTorch is not installed."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        for name in sorted(n for n in dir(self) if n.startswith("test_")):
            self.setUp()
            try:
                getattr(self, name)()
            except unittest.SkipTest as reason:
                self.delayDisplay(f"{name} skipped: {reason}")
        self.delayDisplay("Medical Denoise tests passed")

    def _requireTorch(self):
        if importlib.util.find_spec("torch") is None:
            self.skipTest("PyTorch is not installed")

    def _makeVolume(self):
        """An int16 phantom with noise on an oblique, anisotropic grid with a non-zero origin."""
        import numpy as np
        k, j, i = np.meshgrid(*(np.linspace(-1, 1, n) for n in (13, 22, 19)), indexing="ij")
        image = 40 * i + np.where(i ** 2 + j ** 2 + k ** 2 < 0.4, 300, 0)
        image += np.random.default_rng(0).normal(0, 25, i.shape)
        transform = vtk.vtkTransform()  # rotated about two axes, anisotropic voxels
        transform.RotateZ(25)
        transform.RotateX(-40)
        transform.Scale(0.7, 0.9, 2.5)
        ijkToRAS = slicer.util.arrayFromVTKMatrix(transform.GetMatrix())
        ijkToRAS[:3, 3] = [-101.25, 33.5, 7.125]
        return slicer.util.addVolumeFromArray(image.astype(np.int16), ijkToRAS, "MedicalDenoiseTestInput")

    def _assertSameGrid(self, a, b):
        from MedicalDenoiseLib.slicer.logic import volumeFromNode
        a, b = volumeFromNode(a), volumeFromNode(b)
        self.assertEqual((a.geometry, a.array.shape), (b.geometry, b.array.shape))

    def test_ParameterNodeDefaults(self):
        p = MedicalDenoiseParameterLogic().getParameterNode()
        self.assertEqual((p.device, p.strengthMode, p.model, p.createResidual, p.outputVolume),
                         ("auto", "auto", "", False, None))

    def test_BackgroundRun(self):
        """The Denoise button's path: the command line in PythonSlicer, the result loaded back; then Cancel."""
        self._requireTorch()
        import numpy as np
        from MedicalDenoiseLib.slicer.logic import MedicalDenoiseLogic
        logic = MedicalDenoiseLogic()
        inputVolume = self._makeVolume()
        outputVolume = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "chosen output")
        job = logic.startBackground(inputVolume, device="cpu", strength="mild", outputVolume=outputVolume,
                                    createResidual=True)
        self.assertEqual(job.wait(timeout=600), "succeeded", job.error)
        self.assertEqual(logic.loadBackgroundResult(job).GetID(), outputVolume.GetID())
        self.assertFalse(job.workDir.exists())
        residualVolume = slicer.util.getNode("MedicalDenoiseTestInput residual*")
        for volume in (outputVolume, residualVolume):
            self._assertSameGrid(inputVolume, volume)
        inputArray, outputArray, residual = (slicer.util.arrayFromVolume(v).astype(np.float32)
                                             for v in (inputVolume, outputVolume, residualVolume))
        self.assertLess(np.abs(inputArray - outputArray - residual).max(), 1.0)
        composites = {n.GetLayoutName(): n for n in slicer.util.getNodesByClass("vtkMRMLSliceCompositeNode")}
        for viewName, volume in (("Red", inputVolume), ("Yellow", outputVolume)):
            self.assertEqual(composites[viewName].GetBackgroundVolumeID(), volume.GetID())
            self.assertTrue(composites[viewName].GetLinkedControl() and composites[viewName].GetHotLinkedControl())
        nodeCount = slicer.mrmlScene.GetNumberOfNodes()
        job = logic.startBackground(inputVolume, device="cpu")
        job.cancel()
        self.assertEqual(job.poll(), "cancelled")
        job.cleanup()
        self.assertFalse(job.workDir.exists())
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodeCount)

    def test_ServerTokenStaysOutOfTheScene(self):
        """A server run: the token goes to a file only its owner can read, not onto the command line or into the
        scene; the file goes with the job."""
        self._requireTorch()
        import stat
        from MedicalDenoiseLib.slicer.logic import TOKEN_FILE, MedicalDenoiseLogic
        token = "medical-denoise-self-test-token"
        job = MedicalDenoiseLogic().startBackground(self._makeVolume(), server="http://127.0.0.1:9", token=token)
        try:
            tokenFile = job.workDir / TOKEN_FILE
            self.assertEqual(tokenFile.read_text(encoding="utf-8"), token)
            if os.name == "posix":
                self.assertEqual(stat.S_IMODE(tokenFile.stat().st_mode), 0o600)
            self.assertEqual(job.command[job.command.index("--token-file") + 1], str(tokenFile))
            self.assertNotIn(token, " ".join(job.command))
            slicer.mrmlScene.SetSaveToXMLString(1)
            slicer.mrmlScene.Commit()
            self.assertNotIn(token, slicer.mrmlScene.GetSceneXMLString())
        finally:
            slicer.mrmlScene.SetSaveToXMLString(0)
            job.cleanup()
        self.assertFalse(job.workDir.exists())
