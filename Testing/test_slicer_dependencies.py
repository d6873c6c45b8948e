"""Installing the module's Python packages inside Slicer, with Slicer's installers replaced by fakes.

What stays unverified here: that Slicer's real ``pip_install`` / ``pip_ensure`` and light-the-torch accept
these arguments (checked against their sources, not run).
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from packaging.utils import canonicalize_name

from conftest import oblique_geometry
from MedicalDenoiseLib.io.volume import Volume
from MedicalDenoiseLib.io.writing import write_volume
from MedicalDenoiseLib.slicer import dependencies
from MedicalDenoiseLib.slicer.dependencies import Installers, Unmet

REQUIREMENTS = Path(__file__).resolve().parent.parent / "MedicalDenoise" / "Resources" / "requirements.txt"
SLICER_VERSIONS = {"numpy": "1.26.4", "scipy": "1.13.1", "SimpleITK": "2.4.0", "vtk": "9.4.2"}


def versions(**installed):
    """A fake installed_version: Slicer's own packages plus ``installed`` (name=version, '-' for _)."""
    table = {**SLICER_VERSIONS, **{k.replace("_", "-"): v for k, v in installed.items()}}
    return lambda name: table.get(name)


class FakeSlicer:
    """Records every install call and the constraints file's content at the time of the call."""

    def __init__(self, pip_ensure: bool = False, pytorch_utils: bool = False):
        self.calls: list[tuple] = []
        self.installers = Installers(pip_install=self.pip_install, run_python_module=self.run_python_module,
                                     pip_ensure=self.pip_ensure if pip_ensure else None,
                                     has_pytorch_utils=pytorch_utils)

    @staticmethod
    def _constraints(args) -> str:
        return Path(args[args.index("-c") + 1]).read_text() if "-c" in args else ""

    def pip_install(self, args):
        self.calls.append(("pip_install", list(args), self._constraints(args)))

    def run_python_module(self, module, args):
        self.calls.append((module, list(args), self._constraints(args)))

    def pip_ensure(self, requirements, constraints, **options):
        self.calls.append(("pip_ensure", [str(r) for r in requirements], Path(constraints).read_text(), options))


def _unmet(*lines, **installed):
    return dependencies.unmet_requirements([dependencies.Requirement(line) for line in lines], versions(**installed))


def test_a_torch_too_old_for_the_requirement_is_unmet_although_it_imports():
    (unmet,) = _unmet("torch>=2.1", torch="1.13.1")
    assert (unmet.installed, str(unmet)) == ("1.13.1", "torch>=2.1 (installed: 1.13.1)")
    assert _unmet("torch>=2.1", torch="2.4.1+cu121") == []
    assert _unmet("safetensors>=0.4") == [Unmet(dependencies.Requirement("safetensors>=0.4"), None)]
    assert [str(u) for u in _unmet("tqdm>=4.60", tqdm="not-a-version")] == ["tqdm>=4.60 (installed: not-a-version)"]


def test_the_shipped_requirements_read_and_never_name_slicers_packages():
    names = [r.name for r in dependencies.read_requirements(REQUIREMENTS)]
    assert "torch" in names and "torchvision" not in names
    assert not {n.lower() for n in names} & {n.lower() for n in dependencies.SLICER_PACKAGES}


@pytest.mark.parametrize("line", ["scipy>=1.9", "SimpleITK", "numpy<2"])
def test_a_requirements_file_naming_slicers_own_package_is_refused(tmp_path, line):
    path = tmp_path / "requirements.txt"
    path.write_text(f"# comment\ntorch>=2.1\n{line}  # pinned\n")
    with pytest.raises(ValueError, match=rf"line 3 must not name {line.split('<')[0].split('>')[0]}: Slicer ships it"):
        dependencies.read_requirements(path)


def test_a_line_that_is_not_a_requirement_is_refused(tmp_path):
    path = tmp_path / "requirements.txt"
    path.write_text("torch >= = 2\n")
    with pytest.raises(ValueError, match=r"line 1 must be a requirement like 'torch>=2.1', got 'torch >= = 2'"):
        dependencies.read_requirements(path)


def test_pins_hold_every_slicer_package_that_is_installed():
    assert dependencies.slicer_pins(versions()) == ["numpy==1.26.4", "scipy==1.13.1", "SimpleITK==2.4.0", "vtk==9.4.2"]
    assert dependencies.slicer_pins(lambda name: {"numpy": "2.0.1"}.get(name)) == ["numpy==2.0.1"]


def test_with_the_pytorch_extension_torch_comes_through_light_the_torch_without_torchvision():
    fake = FakeSlicer(pytorch_utils=True)
    dependencies.install(_unmet("torch>=2.1", "safetensors>=0.4", torch="1.13.1"), fake.installers, versions())
    assert [c[:2] for c in fake.calls] == [
        ("pip_install", ["light-the-torch>=0.5", "-c", fake.calls[0][1][-1]]),
        ("light_the_torch", ["install", "torch>=2.1", "-c", fake.calls[1][1][-1]]),
        ("pip_install", ["safetensors>=0.4", "-c", fake.calls[2][1][-1]]),
    ]
    assert not any("torchvision" in arg for call in fake.calls for arg in call[1])
    for call in fake.calls:
        assert call[2].split() == ["numpy==1.26.4", "scipy==1.13.1", "SimpleITK==2.4.0", "vtk==9.4.2"]


def test_light_the_torch_already_there_is_not_installed_again():
    fake = FakeSlicer(pytorch_utils=True)
    dependencies.install(_unmet("torch>=2.1"), fake.installers, versions(light_the_torch="0.7.5"))
    assert [c[0] for c in fake.calls] == ["light_the_torch"]


def test_without_the_pytorch_extension_torch_goes_through_pip_ensure_when_slicer_has_it():
    fake = FakeSlicer(pip_ensure=True)
    dependencies.install(_unmet("torch>=2.1", "tqdm>=4.60"), fake.installers, versions())
    ((name, requirements, constraints, options),) = fake.calls
    assert (name, requirements) == ("pip_ensure", ["torch>=2.1", "tqdm>=4.60"])
    assert "scipy==1.13.1" in constraints.split() and options["prompt_install"] is False


def test_older_slicers_install_with_pip_install_and_the_constraints():
    fake = FakeSlicer()
    dependencies.install(_unmet("torch>=2.1"), fake.installers, versions())
    ((name, args, constraints),) = fake.calls
    assert (name, args[:2]) == ("pip_install", ["torch>=2.1", "-c"])
    assert not Path(args[2]).exists(), "the constraints file is left behind"


def _requirements_file(tmp_path) -> Path:
    path = tmp_path / "requirements.txt"
    path.write_text("torch>=2.1\nsafetensors>=0.4\n")
    return path


def test_ensure_asks_once_listing_everything_and_installs_only_after_yes(tmp_path):
    fake, questions = FakeSlicer(), []
    answer = dependencies.ensure_requirements(_requirements_file(tmp_path), fake.installers,
                                              lambda q: questions.append(q) or False, versions(torch="1.13.1"))
    assert answer is False and fake.calls == []
    (question,) = questions
    assert "torch>=2.1 (installed: 1.13.1)" in question and "safetensors>=0.4" in question
    assert "numpy, scipy, SimpleITK, vtk are left untouched" in question


def test_ensure_asks_nothing_when_all_is_met(tmp_path):
    asked = []
    met = versions(torch="2.5.0", safetensors="0.4.5")
    assert dependencies.ensure_requirements(_requirements_file(tmp_path), FakeSlicer().installers, asked.append, met)
    assert asked == []


def test_ensure_reports_what_is_still_unmet_after_installing(tmp_path):
    with pytest.raises(RuntimeError, match=r"still missing or too old after installing: torch>=2.1 \(installed: 1.13.1\), "
                                           r"safetensors>=0.4; restarting Slicer may help"):
        dependencies.ensure_requirements(_requirements_file(tmp_path), FakeSlicer().installers, lambda q: True,
                                         versions(torch="1.13.1"))


_RECORD_IMPORTS = """
import builtins, json, os, sys
seen = set()
real_import = builtins.__import__

def recording_import(name, globals=None, locals=None, fromlist=(), level=0):
    if level == 0 and (globals or {}).get("__name__", "").startswith("MedicalDenoiseLib"):
        seen.add(name.split(".")[0])
    return real_import(name, globals, locals, fromlist, level)

builtins.__import__ = recording_import
from MedicalDenoiseLib.cli.main import main
code = main(sys.argv[1:])
with open(os.environ["IMPORTS_FILE"], "w") as f:
    json.dump(sorted(seen), f)
sys.exit(code)
"""


def test_requirements_list_exactly_what_the_denoise_command_imports(tmp_path, tiny_model_file):
    # Inside Slicer the child runs `medical-denoise denoise --progress slicer`: record every module the
    # library's own code imports on that path (lazily imported ones included) and compare.
    source, imports_file = tmp_path / "input.nii", tmp_path / "imports.json"
    write_volume(Volume(np.random.default_rng(0).normal(100, 10, (9, 12, 11)).astype(np.int16), oblique_geometry()),
                 source)
    run = subprocess.run([sys.executable, "-c", _RECORD_IMPORTS, "denoise", str(source), str(tmp_path / "out.nii"),
                          "--model", str(tiny_model_file), "--device", "cpu", "--progress", "slicer"],
                         env={**os.environ, "IMPORTS_FILE": str(imports_file)}, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    imported = set(json.loads(imports_file.read_text())) - set(sys.stdlib_module_names)
    distributions = importlib.metadata.packages_distributions()
    needed = {canonicalize_name(d) for module in imported for d in distributions.get(module, [module])}
    needed -= {canonicalize_name(name) for name in dependencies.SLICER_PACKAGES}
    listed = {canonicalize_name(r.name) for r in dependencies.read_requirements(REQUIREMENTS)}
    assert not needed - listed, f"requirements.txt lacks {sorted(needed - listed)}, which denoising imports"
    assert not listed - needed, f"requirements.txt lists {sorted(listed - needed)}, which denoising never imports"
