"""The module's logic against Slicer's real MRML (PyPI ``slicer-core``), in a scene built as Slicer builds it
at start-up: application logic, layout logic, and a slice logic per view."""
from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="needs slicer-core (installed by `make test`)")
vtk = pytest.importorskip("vtk")

from conftest import oblique_geometry, phantom  # noqa: E402
from MedicalDenoiseLib.errors import Cancelled  # noqa: E402
from MedicalDenoiseLib.io.reading import read_volume  # noqa: E402
from MedicalDenoiseLib.io.writing import write_volume  # noqa: E402
from MedicalDenoiseLib.slicer.logic import MedicalDenoiseLogic, volumeFromNode  # noqa: E402
from MedicalDenoiseLib.io.volume import Volume  # noqa: E402


@pytest.fixture
def scene():
    scene = slicer.vtkMRMLScene()
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)  # as Slicer's core application does
    app = slicer.vtkMRMLApplicationLogic()
    app.SetMRMLScene(scene)
    layout_logic = slicer.vtkMRMLLayoutLogic()
    layout_logic.SetMRMLScene(scene)
    slice_logics = vtk.vtkCollection()
    keep = [app, layout_logic]
    # The layout logic creates the views' slice nodes; each gets a slice logic and its default orientation.
    orientations = {"Red": "Axial", "Yellow": "Sagittal", "Green": "Coronal"}
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceNode")):
        node = scene.GetNthNodeByClass(i, "vtkMRMLSliceNode")
        node.SetOrientation(orientations[node.GetLayoutName()])
        logic = slicer.vtkMRMLSliceLogic()
        logic.SetMRMLScene(scene)
        logic.SetSliceNode(node)
        slice_logics.AddItem(logic)
        keep.append(logic)
    assert slice_logics.GetNumberOfItems() == 3
    app.SetSliceLogics(slice_logics)
    scene._keep_alive = keep  # the logics must outlive the test
    return scene


@pytest.fixture
def ct_file(tmp_path):
    hu = phantom((19, 26, 23), low=-1000, high=1200) + np.random.default_rng(1).normal(0, 40, (19, 26, 23))
    path = tmp_path / "ct.nrrd"
    write_volume(Volume(np.rint(hu).astype(np.int16), oblique_geometry()), path)
    return path


@pytest.fixture
def ct_node(scene, ct_file):
    """Loaded through a storage node, placed in a patient/study, with a window/level set by hand."""
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "CT")
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(ct_file))
    node.SetAndObserveStorageNodeID(storage.GetID())
    assert storage.ReadData(node)
    node.CreateDefaultDisplayNodes()
    node.GetDisplayNode().SetAutoWindowLevel(False)
    node.GetDisplayNode().SetWindowLevel(400, 40)
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    patient = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "Patient")
    study = hierarchy.CreateStudyItem(patient, "Study")
    hierarchy.CreateItem(study, node)
    return node


def _node_ids(scene):
    return sorted(scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes()))


def _ijk_to_ras(node):
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def test_node_geometry_converts_to_the_files_lps_geometry(ct_node, ct_file):
    from_node, from_file = volumeFromNode(ct_node), read_volume(ct_file)
    np.testing.assert_allclose(from_node.geometry.spacing, from_file.geometry.spacing, atol=1e-9)
    np.testing.assert_allclose(from_node.geometry.origin, from_file.geometry.origin, atol=1e-9)
    np.testing.assert_allclose(from_node.geometry.direction, from_file.geometry.direction, atol=1e-9)
    assert np.array_equal(from_node.array, from_file.array)


def test_process_creates_a_node_on_the_inputs_exact_grid(scene, ct_node, tiny_model_file):
    before = np.array(slicer.util.arrayFromVolume(ct_node), copy=True)
    logic = MedicalDenoiseLogic(scene)
    output = logic.process(ct_node, model=str(tiny_model_file), device="cpu")
    assert output.GetName() == "CT denoised (tiny-test)"
    assert np.array_equal(_ijk_to_ras(output), _ijk_to_ras(ct_node))
    assert output.GetImageData().GetDimensions() == ct_node.GetImageData().GetDimensions()
    assert output.GetImageData().GetScalarType() == ct_node.GetImageData().GetScalarType()
    result = slicer.util.arrayFromVolume(output)
    assert result.dtype == np.int16 and result.min() < -500 and result.max() > 500
    assert np.array_equal(slicer.util.arrayFromVolume(ct_node), before)
    display = output.GetDisplayNode()
    assert (display.GetWindow(), display.GetLevel(), display.GetAutoWindowLevel()) == (400, 40, False)
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    study = hierarchy.GetItemParent(hierarchy.GetItemByDataNode(ct_node))
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(output)) == study
    assert hierarchy.GetItemName(study) == "Study"


def test_default_model_reduces_noise_and_fills_the_residual(scene, ct_node):
    logic = MedicalDenoiseLogic(scene)
    residual = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "residual")
    output = logic.process(ct_node, device="cpu", residualVolume=residual)
    noisy = slicer.util.arrayFromVolume(ct_node).astype(np.float32)
    denoised = slicer.util.arrayFromVolume(output).astype(np.float32)
    clean = phantom((19, 26, 23), low=-1000, high=1200)  # what ct_file added 40 HU noise to
    assert np.mean((denoised - clean) ** 2) < 0.6 * np.mean((noisy - clean) ** 2)
    np.testing.assert_allclose(slicer.util.arrayFromVolume(residual), noisy - denoised, atol=0.51)
    assert np.array_equal(_ijk_to_ras(residual), _ijk_to_ras(ct_node))


def test_show_comparison_sets_side_by_side_linked_views(scene, ct_node, tiny_model_file):
    logic = MedicalDenoiseLogic(scene)
    output = logic.process(ct_node, model=str(tiny_model_file), device="cpu")
    logic.showComparison(ct_node, output)
    layout = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    assert layout.GetViewArrangement() == slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView
    composites = {}
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        node = scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
        composites[node.GetLayoutName()] = node
    assert composites["Red"].GetBackgroundVolumeID() == ct_node.GetID()
    assert composites["Yellow"].GetBackgroundVolumeID() == output.GetID()
    for name in ("Red", "Yellow"):
        assert composites[name].GetLinkedControl() and composites[name].GetHotLinkedControl()
    slices = {scene.GetNthNodeByClass(i, "vtkMRMLSliceNode").GetLayoutName(): scene.GetNthNodeByClass(i, "vtkMRMLSliceNode")
              for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceNode"))}
    assert slices["Yellow"].GetOrientation() == slices["Red"].GetOrientation() == "Axial"
    assert slices["Yellow"].GetSliceOffset() == pytest.approx(slices["Red"].GetSliceOffset())


def test_failed_and_cancelled_runs_leave_the_scene_unchanged(scene, ct_node, tiny_model_file, tmp_path):
    logic = MedicalDenoiseLogic(scene)
    ids = _node_ids(scene)
    with pytest.raises(ValueError, match="model file not found"):
        logic.process(ct_node, model=str(tmp_path / "missing.safetensors"), device="cpu")
    assert _node_ids(scene) == ids
    with pytest.raises(Cancelled):
        logic.process(ct_node, model=str(tiny_model_file), device="cpu", cancel=lambda: True)
    assert _node_ids(scene) == ids
    with pytest.raises(ValueError, match="must not be the input"):
        logic.process(ct_node, outputVolume=ct_node, model=str(tiny_model_file))
    with pytest.raises(ValueError, match="strength must be"):
        logic.process(ct_node, model=str(tiny_model_file), strength="max")
    assert _node_ids(scene) == ids


def test_background_run_gives_the_same_result_as_in_process(scene, ct_node, tiny_model_file):
    logic = MedicalDenoiseLogic(scene)
    job = logic.startBackground(ct_node, model=str(tiny_model_file), device="cpu")
    assert job.wait(timeout=120) == "succeeded", job.error
    assert job.progress == 1.0 and job.deviceUsed == "cpu"
    background = logic.finishBackground(job, ct_node, modelName="tiny-test")
    assert not job.workDir.exists()
    in_process = logic.process(ct_node, model=str(tiny_model_file), device="cpu")
    assert np.array_equal(slicer.util.arrayFromVolume(background), slicer.util.arrayFromVolume(in_process))
    assert np.array_equal(_ijk_to_ras(background), _ijk_to_ras(ct_node))


def test_background_failure_and_cancel_report_and_leave_the_scene_alone(scene, ct_node, tiny_model_file, tmp_path):
    logic = MedicalDenoiseLogic(scene)
    ids = _node_ids(scene)
    job = logic.startBackground(ct_node, model=str(tmp_path / "missing.safetensors"), device="cpu")
    assert job.wait(timeout=120) == "failed"
    assert "model file not found" in job.error
    with pytest.raises(RuntimeError, match="model file not found"):
        logic.finishBackground(job, ct_node)
    assert _node_ids(scene) == ids and not job.workDir.exists()

    job = logic.startBackground(ct_node, model=str(tiny_model_file), device="cpu")
    import time

    started = time.monotonic()
    job.cancel()
    assert time.monotonic() - started < 1.5
    assert job.poll() == "cancelled"
    job.cleanup()
    assert _node_ids(scene) == ids and not job.workDir.exists()
