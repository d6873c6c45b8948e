"""The Python packages the Slicer module needs: which are missing or too old, and installing them without
ever touching the packages Slicer itself ships.

Qt-free: the module passes Slicer's own installers in (:class:`Installers`), so the choices made here
(versions, pins, light-the-torch or pip) are tested with fakes.
"""
from __future__ import annotations

import importlib.metadata
import os
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

try:
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import InvalidVersion
except ImportError:  # Slicer always has pip, which carries its own copy of packaging
    from pip._vendor.packaging.requirements import InvalidRequirement, Requirement
    from pip._vendor.packaging.utils import canonicalize_name
    from pip._vendor.packaging.version import InvalidVersion

__all__ = ["SLICER_PACKAGES", "Unmet", "Installers", "read_requirements", "installed_version",
           "unmet_requirements", "slicer_pins", "confirmation_text", "install", "ensure_requirements"]

# Slicer's own packages: never installed, upgraded or downgraded; every install is constrained to their
# current versions, so that nothing pulls in another numpy under Slicer.
SLICER_PACKAGES = ("numpy", "scipy", "SimpleITK", "vtk")
_PROTECTED = {canonicalize_name(name) for name in SLICER_PACKAGES}
_IMPORT_NAMES = {"scikit-image": "skimage"}  # distribution -> import name where they differ

VersionLookup = Callable[[str], "str | None"]


def installed_version(distribution: str) -> str | None:
    """The installed version of ``distribution``, or None when it is not installed."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class Unmet:
    """A requirement that is not installed (``installed`` None) or installed at a version outside its range."""

    requirement: Requirement
    installed: str | None

    def __str__(self) -> str:
        return f"{self.requirement} (installed: {self.installed})" if self.installed else str(self.requirement)


@dataclass
class Installers:
    """How this Slicer installs packages. The module fills it in with Slicer's functions.

    Attributes:
        pip_install: ``slicer.util.pip_install``: takes the pip arguments as a list.
        pip_ensure: ``slicer.packaging.pip_ensure`` (Slicer 5.12 and later), or None.
        run_python_module: runs ``python -m MODULE ARGS`` in Slicer's Python, or None.
        has_pytorch_utils: the PyTorch extension is installed; torch then comes through light-the-torch,
            which picks the CUDA build matching the GPU driver (as PyTorchUtils does, without torchvision).
    """

    pip_install: Callable[[list], object]
    pip_ensure: Callable[..., object] | None = None
    run_python_module: Callable[[str, list], object] | None = None
    has_pytorch_utils: bool = False


def read_requirements(path: str | os.PathLike) -> list[Requirement]:
    """The requirements in a requirements.txt file (comments, blank lines and pip options skipped).

    Raises:
        ValueError: a line is not a requirement, or names a package Slicer ships.
    """
    requirements = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            raise ValueError(f"{path}: line {number} must be a requirement like 'torch>=2.1', got {line!r}") from None
        if canonicalize_name(requirement.name) in _PROTECTED:
            raise ValueError(f"{path}: line {number} must not name {requirement.name}: Slicer ships it and it is "
                             f"never reinstalled (Slicer's own packages: {', '.join(SLICER_PACKAGES)})")
        requirements.append(requirement)
    return requirements


def unmet_requirements(requirements: Sequence[Requirement],
                       version_of: VersionLookup = installed_version) -> list[Unmet]:
    """The requirements not installed, or installed at a version their specifier excludes.

    Versions are compared, not imports tried: a torch 1.x left by another extension does not meet
    ``torch>=2.1`` although it imports.
    """
    unmet = []
    for requirement in requirements:
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        version = version_of(requirement.name)
        if version is None or not _satisfies(requirement, version):
            unmet.append(Unmet(requirement, version))
    return unmet


def _satisfies(requirement: Requirement, version: str) -> bool:
    try:
        return requirement.specifier.contains(version, prereleases=True)
    except InvalidVersion:
        return False  # an unreadable version cannot be shown to be in range: reinstall


def slicer_pins(version_of: VersionLookup = installed_version) -> list[str]:
    """``name==version`` for each of Slicer's own packages that is installed."""
    return [f"{name}=={version}" for name in SLICER_PACKAGES if (version := version_of(name))]


def confirmation_text(unmet: Sequence[Unmet]) -> str:
    """The question asked once before installing, listing every package."""
    loaded = [u.requirement.name for u in unmet if u.installed and _import_name(u.requirement.name) in sys.modules]
    restart = (f"\n\n{', '.join(loaded)} is already loaded in an older version: restart Slicer after installing."
               if loaded else "")
    return ("Medical Denoise needs these Python packages, which are missing or too old:\n\n    "
            + "\n    ".join(str(u) for u in unmet)
            + "\n\nInstall them now? This downloads from the internet and can take several minutes (PyTorch is "
            f"large). Slicer's own {', '.join(SLICER_PACKAGES)} are left untouched.{restart}")


def install(unmet: Sequence[Unmet], installers: Installers, version_of: VersionLookup = installed_version) -> None:
    """Installs the unmet requirements, constrained to Slicer's own package versions.

    torch goes through light-the-torch when the PyTorch extension is installed, everything else (and
    torch otherwise) through ``pip_ensure`` when this Slicer has it, else ``pip_install``.
    """
    requirements = [u.requirement for u in unmet]
    torch = [r for r in requirements if canonicalize_name(r.name) == "torch"]
    rest = [r for r in requirements if canonicalize_name(r.name) != "torch"]
    with _constraints_file(slicer_pins(version_of)) as constraints:
        if torch and installers.has_pytorch_utils and installers.run_python_module is not None:
            if version_of("light-the-torch") is None:
                installers.pip_install(["light-the-torch>=0.5", "-c", constraints])
            installers.run_python_module("light_the_torch", ["install", *map(str, torch), "-c", constraints])
        else:
            rest = torch + rest
        if not rest:
            return
        if installers.pip_ensure is not None:
            installers.pip_ensure(rest, constraints=constraints, prompt_install=False, requester="Medical Denoise")
        else:
            installers.pip_install([*map(str, rest), "-c", constraints])


def ensure_requirements(path: str | os.PathLike, installers: Installers, confirm: Callable[[str], bool],
                        version_of: VersionLookup = installed_version) -> bool:
    """Installs what ``path`` lists and is unmet, after one ``confirm(question)``.

    Returns:
        True when every requirement is met (at once, or after installing), False when the user declined.

    Raises:
        RuntimeError: some requirement is still unmet after installing.
    """
    requirements = read_requirements(path)
    unmet = unmet_requirements(requirements, version_of)
    if not unmet:
        return True
    if not confirm(confirmation_text(unmet)):
        return False
    install(unmet, installers, version_of)
    still = unmet_requirements(requirements, version_of)
    if still:
        raise RuntimeError("still missing or too old after installing: " + ", ".join(str(u) for u in still)
                           + "; restarting Slicer may help")
    return True


def _import_name(distribution: str) -> str:
    return _IMPORT_NAMES.get(distribution, distribution.replace("-", "_"))


@contextmanager
def _constraints_file(pins: Sequence[str]) -> Iterator[str]:
    """A temporary pip constraints file holding ``pins``, removed afterwards."""
    handle, path = tempfile.mkstemp(prefix="MedicalDenoise-constraints-", suffix=".txt")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            f.writelines(f"{pin}\n" for pin in pins)
        yield path
    finally:
        os.remove(path)
