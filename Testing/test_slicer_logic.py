"""The module's logic against Slicer's real MRML (PyPI ``slicer-core``), in a scene built as Slicer builds it
at start-up: application logic, layout logic, and a slice logic per view."""
from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="needs slicer-core (installed by `make test`)")
vtk = pytest.importorskip("vtk")

from conftest import oblique_geometry, phantom  # noqa: E402
from test_background_job import (is_running, kill_if_running, posix_only, wait_for_file,  # noqa: E402
                                 write_python_slicer_standin)
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


def _nodes_by_view(scene, class_name: str) -> dict:
    nodes = (scene.GetNthNodeByClass(i, class_name) for i in range(scene.GetNumberOfNodesByClass(class_name)))
    return {node.GetLayoutName(): node for node in nodes}


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
    composites = _nodes_by_view(scene, "vtkMRMLSliceCompositeNode")
    assert composites["Red"].GetBackgroundVolumeID() == ct_node.GetID()
    assert composites["Yellow"].GetBackgroundVolumeID() == output.GetID()
    for name in ("Red", "Yellow"):
        assert composites[name].GetLinkedControl() and composites[name].GetHotLinkedControl()
    slices = _nodes_by_view(scene, "vtkMRMLSliceNode")
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
    job.cancel()
    assert job.poll() == "cancelled"
    job.cleanup()
    assert _node_ids(scene) == ids and not job.workDir.exists()


@pytest.fixture
def python_slicer(tmp_path, monkeypatch):
    """A PythonSlicer stand-in on PATH: a launcher that runs this interpreter as its child (see
    test_background_job.py); its STANDIN_* variables hold the child or let it run."""
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", str(folder))
    return write_python_slicer_standin(folder)


def _start_in_slicer(logic, monkeypatch, *args, **kwargs):
    """startBackground as inside Slicer, where it must find PythonSlicer itself."""
    with monkeypatch.context() as inside:
        inside.setattr(slicer, "app", object(), raising=False)
        return logic.startBackground(*args, **kwargs)


def _is_uncompressed_nifti(path, voxels: int) -> bool:
    data = path.read_bytes()
    return data[:2] != b"\x1f\x8b" and path.suffix == ".nii" and len(data) >= 352 + 2 * voxels


@posix_only
def test_the_denoise_buttons_path_through_a_python_slicer_launcher(scene, ct_node, tiny_model_file, python_slicer,
                                                                   monkeypatch):
    logic = MedicalDenoiseLogic(scene)
    chosen = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "chosen output")
    job = _start_in_slicer(logic, monkeypatch, ct_node, model=str(tiny_model_file), device="cpu",
                           outputVolume=chosen, createResidual=True)
    assert job.command[0] == str(python_slicer)
    assert job.wait(timeout=120) == "succeeded", job.error
    voxels = int(np.prod(slicer.util.arrayFromVolume(ct_node).shape))
    for handed in (job.workDir / "CT.nii", job.outputPath):  # compressing them would only cost time
        assert _is_uncompressed_nifti(handed, voxels), handed
    output = logic.loadBackgroundResult(job)
    assert output.GetID() == chosen.GetID() and not job.workDir.exists()
    residual = scene.GetFirstNodeByName("CT residual")
    noisy, denoised = (slicer.util.arrayFromVolume(v).astype(np.float32) for v in (ct_node, output))
    np.testing.assert_allclose(slicer.util.arrayFromVolume(residual), noisy - denoised, atol=0.51)
    for node in (output, residual):
        assert np.array_equal(_ijk_to_ras(node), _ijk_to_ras(ct_node))
    assert _nodes_by_view(scene, "vtkMRMLSliceCompositeNode")["Yellow"].GetBackgroundVolumeID() == output.GetID()


@posix_only
def test_start_returns_before_the_job_finishes_and_a_removed_output_changes_nothing(
        scene, ct_node, tiny_model_file, python_slicer, monkeypatch, tmp_path):
    gate = tmp_path / "gate"
    monkeypatch.setenv("STANDIN_LAUNCHER_GATE", str(gate))  # the launcher starts nothing until the gate opens
    logic = MedicalDenoiseLogic(scene)
    chosen = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "chosen output")
    job = logic.startBackground(ct_node, model=str(tiny_model_file), device="cpu", outputVolume=chosen,
                                pythonExecutable=str(python_slicer))
    assert job.poll() == "running"  # the GUI thread got control back while the work had not even started
    gate.touch()
    assert job.wait(timeout=120) == "succeeded", job.error
    scene.RemoveNode(chosen)
    ids = _node_ids(scene)
    with pytest.raises(RuntimeError, match="removed while denoising; nothing was changed"):
        logic.loadBackgroundResult(job)
    assert _node_ids(scene) == ids and not job.workDir.exists()


@posix_only
@pytest.mark.parametrize("how", ["cancel", "scene closes", "application quits"])
def test_stopping_ends_the_denoising_process_the_launcher_started(scene, ct_node, tiny_model_file, python_slicer,
                                                                  monkeypatch, tmp_path, how):
    # PythonSlicer forwards no signal: stopping only the launcher would leave the denoising running.
    pid_file = tmp_path / "child.pid"
    monkeypatch.setenv("STANDIN_CHILD_PID", str(pid_file))
    monkeypatch.setenv("STANDIN_CHILD_GATE", str(tmp_path / "never"))  # the child stays busy until stopped
    logic = MedicalDenoiseLogic(scene)
    job = _start_in_slicer(logic, monkeypatch, ct_node, model=str(tiny_model_file), device="cpu")
    child = int(wait_for_file(pid_file))
    try:
        {"cancel": job.cancel, "scene closes": lambda: scene.Clear(0),
         "application quits": lambda: logic.stopBackgroundJobs(removeFiles=True)}[how]()
        assert job.poll() == "cancelled"
        assert not is_running(child), "the launcher was stopped but the denoising process kept running"
        assert (how == "application quits") == (not job.workDir.exists())
    finally:
        kill_if_running(child)
        job.cleanup()


def test_a_missing_python_slicer_inside_slicer_is_a_clear_error_and_changes_nothing(scene, ct_node, tmp_path,
                                                                                     monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "Slicer" / "bin" / "SlicerApp-real"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    ids = _node_ids(scene)
    with pytest.raises(RuntimeError, match=r"PythonSlicer not found on PATH or in .*Slicer.bin"):
        _start_in_slicer(MedicalDenoiseLogic(scene), monkeypatch, ct_node)
    assert _node_ids(scene) == ids and not list(tmp_path.glob("MedicalDenoise-*"))


def test_creating_the_logic_does_not_import_torch():
    # The widget creates it when the module opens: importing torch there froze Slicer for seconds.
    code = ("import sys\nfrom MedicalDenoiseLib.slicer.logic import MedicalDenoiseLogic\nMedicalDenoiseLogic()\n"
            "print(sorted(m for m in ('torch', 'safetensors') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_show_comparison_fits_both_views_to_the_whole_volume(scene, ct_node, tiny_model_file):
    logic = MedicalDenoiseLogic(scene)
    output = logic.process(ct_node, model=str(tiny_model_file), device="cpu")
    logic.showComparison(ct_node, output)
    dims = ct_node.GetImageData().GetDimensions()
    corners = np.array([[*c, 1.0] for c in itertools.product(*[(-0.5, d - 0.5) for d in dims])])
    ras = corners @ _ijk_to_ras(ct_node).T
    for view in ("Red", "Yellow"):
        node = _nodes_by_view(scene, "vtkMRMLSliceNode")[view]
        matrix = node.GetXYToRAS()
        xy_to_ras = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
        xy = (ras @ np.linalg.inv(xy_to_ras).T)[:, :2]
        width, height, _ = node.GetDimensions()
        assert xy.min() > -1e-6 and (xy[:, 0] < width + 1e-6).all() and (xy[:, 1] < height + 1e-6).all(), \
            f"{view}: part of the volume is outside the view"
        extent = xy.max(axis=0) - xy.min(axis=0)
        assert max(extent[0] / width, extent[1] / height) == pytest.approx(1.0), \
            f"{view}: the volume fills {extent} of a {width} x {height} view"


# --- Server... device and Adapt to this scan ----------------------------------------------------------------

TOKEN = "s3cret-token-for-tests-0123456789"


def _write_child(folder, body: str):
    """An executable that stands in for the interpreter the logic starts: it is given ``-m
    MedicalDenoiseLib.cli.main denoise ...`` and runs ``body`` (``argv`` holds what follows ``-m module``)."""
    path = folder / "child-python"
    path.write_text(f"#!{sys.executable}\nimport sys\nassert sys.argv[1:3] == ['-m', 'MedicalDenoiseLib.cli.main']\n"
                    f"argv = sys.argv[3:]\n{body}\n", encoding="utf-8")
    path.chmod(0o755)
    return path


def _scene_xml(scene) -> str:
    scene.SetSaveToXMLString(1)
    scene.Commit()
    return scene.GetSceneXMLString()


def _option(command: list, name: str) -> str:
    return command[command.index(name) + 1]


@posix_only
def test_a_server_run_gets_the_address_and_a_token_file_only_its_owner_reads(scene, ct_node, tmp_path):
    # The child reports what it was given (the token file's text, mode and place), then fails as a server does.
    report = tmp_path / "child.json"
    child = _write_child(tmp_path, f"""
import json, os, stat
token_file = argv[argv.index('--token-file') + 1]
json.dump({{"token": open(token_file).read(), "mode": stat.S_IMODE(os.stat(token_file).st_mode),
           "folder": os.path.dirname(token_file)}}, open({str(report)!r}, 'w'))
print('medical-denoise: error: http://gpu-server:8765: the server refused the token (401)', file=sys.stderr)
sys.exit(1)""")
    logic = MedicalDenoiseLogic(scene)
    ids = _node_ids(scene)
    job = logic.startBackground(ct_node, model="tiny-test", device="cuda", server=" http://gpu-server:8765 ",
                                token=f" {TOKEN}\n", pythonExecutable=str(child))
    command = job.command
    assert _option(command, "--server") == "http://gpu-server:8765" and "--device" not in command
    assert _option(command, "--model") == "tiny-test"
    source = command[command.index("denoise") + 1]
    assert source == str(job.workDir / "CT.nii") and job.outputPath == job.workDir / "output.nii"
    assert read_volume(source).array.tobytes() == slicer.util.arrayFromVolume(ct_node).tobytes()
    assert not any(TOKEN in part for part in command)
    assert job.wait(timeout=60) == "failed"
    seen = json.loads(report.read_text())
    assert seen == {"token": TOKEN, "mode": 0o600, "folder": str(job.workDir)}
    assert _option(command, "--token-file") == str(job.workDir / "server-token")
    assert oct(job.workDir.stat().st_mode & 0o777) == oct(0o700)
    assert TOKEN not in _scene_xml(scene)
    # What went wrong on the server is shown as the command line said it, and the scene is left alone.
    with pytest.raises(RuntimeError) as raised:
        logic.loadBackgroundResult(job)
    assert str(raised.value) == "http://gpu-server:8765: the server refused the token (401)"
    assert _node_ids(scene) == ids and not job.workDir.exists()


def test_a_server_run_without_a_token_passes_no_token_file(scene, ct_node, tmp_path):
    child = _write_child(tmp_path, "sys.exit(3)")
    job = MedicalDenoiseLogic(scene).startBackground(ct_node, server="http://127.0.0.1:8765", token="",
                                                      pythonExecutable=str(child))
    try:
        assert "--token-file" not in job.command and not (job.workDir / "server-token").exists()
        assert job.wait(timeout=60) == "failed" and "exit status 3" in job.error
    finally:
        job.cleanup()


@pytest.mark.parametrize("options, message", [
    ({"server": "gpu-server:8765"}, "give it as http://host:port"),
    ({"server": ""}, "give it as http://host:port"),
    ({"server": "ftp://gpu-server"}, "give it as http://host:port"),
    ({"server": "http://gpu-server:8765", "adaptMinutes": 3}, "cannot be combined with a server"),
    ({"server": "http://gpu-server:8765", "model": "MODEL_FILE"}, "model file tiny.safetensors stays on this computer"),
    ({"server": "http://gpu-server:8765", "token": "two words"}, "single word"),
    ({"adaptMinutes": 0}, "above 0"),
])
def test_server_and_adapt_options_are_checked_before_anything_is_written(scene, ct_node, tiny_model_file, tmp_path,
                                                                         monkeypatch, options, message):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    if options.get("model") == "MODEL_FILE":
        options["model"] = str(tiny_model_file)
    ids = _node_ids(scene)
    with pytest.raises(ValueError, match=re.escape(message)):
        MedicalDenoiseLogic(scene).startBackground(ct_node, **options)
    assert _node_ids(scene) == ids and not list(tmp_path.glob("MedicalDenoise-*"))


def test_adapt_passes_the_budget_and_where_to_write_the_adapted_model(scene, ct_node, tmp_path):
    child = _write_child(tmp_path, "sys.exit(3)")
    job = MedicalDenoiseLogic(scene).startBackground(ct_node, device="cpu", adaptMinutes=2.5,
                                                      pythonExecutable=str(child))
    try:
        assert _option(job.command, "--adapt") == "2.5" and _option(job.command, "--device") == "cpu"
        assert _option(job.command, "--save-adapted") == str(job.workDir / "adapted.safetensors")
        assert job.request.adaptMinutes == 2.5 and job.request.server is None
        assert "--server" not in job.command and "--token-file" not in job.command
    finally:
        job.cleanup()


# The real command line, with the adaptation's clock read as one second per reading: a fixed number of training
# steps, whatever the machine's speed, so whether adapting helps does not depend on it.
_TICKING_CHILD = """
import itertools, types
from MedicalDenoiseLib.adaptation import fine_tune
ticks = itertools.count()
fine_tune.time = types.SimpleNamespace(perf_counter=lambda: float(next(ticks)))
from MedicalDenoiseLib.cli.main import main
sys.exit(main(argv))"""


def _kspace_node(scene, name: str, seed: int = 0):
    """A 20×64×64 MR-like volume with noise acquired in k-space (the smallest that adapting takes)."""
    from MedicalDenoiseLib.noise import noise_kind

    clean = phantom((20, 64, 64), seed=seed)
    noise = noise_kind("mr-kspace").fixed(sigma=0.04, acquired=(0.8, 0.6, 0.6), acquisition="3d", coils=1)
    noisy = noise.simulate(clean, np.random.default_rng(seed)).noisy
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    slicer.util.updateVolumeFromArray(node, np.rint(noisy * 1000).astype(np.int16))
    node.SetSpacing(0.9, 0.9, 1.2)
    return node


def test_an_adapt_run_keeps_the_adapted_model_for_this_session_and_for_its_series_only(scene, tiny_model_file,
                                                                                        tmp_path):
    child = _write_child(tmp_path, _TICKING_CHILD)
    logic = MedicalDenoiseLogic(scene)
    mr = _kspace_node(scene, "MR T1 (3D)")
    job = logic.startBackground(mr, model=str(tiny_model_file), device="cpu", adaptMinutes=0.6,
                                pythonExecutable=str(child))
    assert job.wait(timeout=600) == "succeeded", job.error
    assert job.adaptationUsed.startswith("adapted to this scan: "), job.summary
    assert job.grainUsed and not job.grainUsed.endswith(job.adaptationUsed)
    output = logic.loadBackgroundResult(job)
    assert output.GetName() == "MR T1 (3D) denoised (tiny-adapted)" and not job.workDir.exists()

    (adapted,) = list(logic.adaptedModels)
    assert job.adaptedModel == adapted
    assert adapted.label == "tiny-test-adapted (fitted to MR T1 (3D))"
    assert (adapted.inputID, adapted.fittedFile) == (mr.GetID(), "MR_T1_3D.nii")
    assert adapted.fittedTo == "'MR T1 (3D)' (MR_T1_3D.nii)"
    assert adapted.path.is_file() and job.workDir not in adapted.path.parents
    assert logic.adaptedModels.get(str(adapted.path)) == adapted
    from MedicalDenoiseLib.adaptation.fitted_series import fitted_to, voxels_sha256
    from MedicalDenoiseLib.models.model_files import load_model
    assert fitted_to(load_model(adapted.path).card) == ("MR_T1_3D.nii", voxels_sha256(slicer.util.arrayFromVolume(mr)))

    # On its own series (or the same voxels loaded again) it is used as it is.
    assert logic.adaptedModelWarning(str(adapted.path), mr) is None
    again = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "MR T1 (3D) loaded again")
    slicer.util.updateVolumeFromArray(again, slicer.util.arrayFromVolume(mr).copy())
    assert logic.adaptedModelWarning(str(adapted.path), again) is None
    # On another series it is flagged, and starting it there needs the user's confirmation.
    other = _kspace_node(scene, "another MR", seed=1)
    warning = logic.adaptedModelWarning(str(adapted.path), other)
    assert warning and "fitted to another series, 'MR T1 (3D)' (MR_T1_3D.nii), not to 'another MR'" in warning
    ids = _node_ids(scene)
    with pytest.raises(ValueError, match="fitted to another series"):
        logic.startBackground(other, model=str(adapted.path), device="cpu", pythonExecutable=str(child))
    with pytest.raises(ValueError, match="fitted to another series"):
        logic.process(other, model=str(adapted.path), device="cpu")
    assert _node_ids(scene) == ids
    # An edited volume is another series too: the hash follows the voxels, not the node.
    edited = slicer.util.arrayFromVolume(mr)
    edited[0, 0, 0] += 1
    slicer.util.arrayFromVolumeModified(mr)
    assert logic.adaptedModelWarning(str(adapted.path), mr) is not None
    confirmed = logic.startBackground(other, model=str(adapted.path), device="cpu", acceptOtherSeries=True,
                                      pythonExecutable=str(child))
    confirmed.cleanup()

    # Saved where the user chooses; a saved adapted model, loaded as a model file, is still known by its card.
    saved = logic.adaptedModels.save(str(adapted.path), tmp_path / "mine")
    assert saved == tmp_path / "mine.safetensors" and saved.read_bytes() == adapted.path.read_bytes()
    assert "fitted to another series, MR_T1_3D.nii, not to 'another MR'" in logic.adaptedModelWarning(str(saved), other)
    assert logic.adaptedModelWarning(str(tiny_model_file), other) is None  # not an adapted model
    logic.adaptedModels.removeFiles()
    assert not adapted.path.exists() and list(logic.adaptedModels) == []


def test_an_adapt_run_that_did_not_help_adds_no_model(scene, tiny_model_file, tmp_path):
    # A child that denoises nothing and, as the command line does when adapting did not help, writes no model.
    child = _write_child(tmp_path, """
import shutil
shutil.copyfile(argv[1], argv[2])
print(f"{argv[1]} -> {argv[2]}: mr, model tiny-test, noise SD 22.7 estimated, 22.7 used, 0.5 s on cpu; grain white: "
      "denoised whole; adapting did not help (30 steps of 0.50 s, held-back loss +0.10% (± 0.40%)): the shipped "
      "model is used")""")
    logic = MedicalDenoiseLogic(scene)
    mr = _kspace_node(scene, "MR")
    job = logic.startBackground(mr, model=str(tiny_model_file), device="cpu", adaptMinutes=0.1,
                                pythonExecutable=str(child))
    assert job.wait(timeout=60) == "succeeded", job.error
    assert job.adaptationUsed.startswith("adapting did not help") and job.grainUsed == "grain white: denoised whole"
    output = logic.loadBackgroundResult(job)
    assert output.GetName() == "MR denoised (tiny)"
    assert job.adaptedModel is None and list(logic.adaptedModels) == []


def test_a_too_small_volume_for_adapting_fails_with_the_reason(scene, ct_node, tiny_model_file):
    logic = MedicalDenoiseLogic(scene)
    ids = _node_ids(scene)
    job = logic.startBackground(ct_node, model=str(tiny_model_file), device="cpu", adaptMinutes=0.1)
    assert job.wait(timeout=300) == "failed"
    assert "too small to adapt on" in job.error and "CT.nii" in job.error
    with pytest.raises(RuntimeError, match="too small to adapt on"):
        logic.loadBackgroundResult(job)
    assert _node_ids(scene) == ids and list(logic.adaptedModels) == []


def test_the_server_device_against_a_real_server_gives_what_a_local_run_gives(scene, ct_node, tiny_model_file,
                                                                               tmp_path, monkeypatch):
    from server_support import Server, tiny_registry  # `medical-denoise serve` in a child process, the tiny model

    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the local run computes with two threads, as the server does
    server = Server(tmp_path / "server", tiny_registry(tmp_path / "resources", tiny_model_file), token=TOKEN)
    logic = MedicalDenoiseLogic(scene)
    ids = _node_ids(scene)
    try:
        # A wrong token: the server's refusal, in one line, and the scene as it was.
        job = logic.startBackground(ct_node, model="tiny-test", server=server.url, token="not-the-token")
        assert job.wait(timeout=300) == "failed"
        assert "token refused by the server (401)" in job.error and "\n" not in job.error, job.error
        with pytest.raises(RuntimeError, match=re.escape(job.error)):
            logic.loadBackgroundResult(job)
        assert _node_ids(scene) == ids and not job.workDir.exists()

        job = logic.startBackground(ct_node, model="tiny-test", server=server.url, token=TOKEN)
        assert job.wait(timeout=300) == "succeeded", job.error
        assert job.progress == 1.0 and job.deviceUsed == "cpu" and job.request.server == server.url
        served = logic.loadBackgroundResult(job)
        assert served.GetName() == "CT denoised (tiny-test)" and not job.workDir.exists()
        assert TOKEN not in _scene_xml(scene)
        assert server.wait_until_work_dir_empty() == []

        job = logic.startBackground(ct_node, model=str(tiny_model_file), device="cpu")
        assert job.wait(timeout=300) == "succeeded", job.error
        local = logic.loadBackgroundResult(job)
        served_array, local_array = (slicer.util.arrayFromVolume(n) for n in (served, local))
        assert served_array.dtype == np.int16 and np.array_equal(served_array, local_array)
        assert not np.array_equal(served_array, slicer.util.arrayFromVolume(ct_node))  # it did denoise
        assert np.array_equal(_ijk_to_ras(served), _ijk_to_ras(ct_node))
    finally:
        server.stop()
    # The server gone: unreachable, said in one line.
    ids = _node_ids(scene)
    job = logic.startBackground(ct_node, model="tiny-test", server=server.url, token=TOKEN)
    assert job.wait(timeout=300) == "failed"
    assert f"server unreachable at {server.url}" in job.error and "\n" not in job.error, job.error
    job.cleanup()
    assert _node_ids(scene) == ids
