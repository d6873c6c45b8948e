"""The demo's clean sample: the MNI152 T1 template that ships inside the nilearn wheel (no download)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import InputError

__all__ = ["mni152_t1_path"]

_MNI_T1 = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"


def mni152_t1_path() -> Path:
    """Path of the 1 mm MNI152 T1 template (197×233×189) inside the installed nilearn package.

    Found without importing nilearn, which is slow to import and not needed for anything else here.

    Raises:
        InputError: when nilearn is not installed.
    """
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the demo sample (MNI152 T1) ships with nilearn: pip install nilearn")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / _MNI_T1
    if not path.is_file():
        raise InputError(f"{path}: the MNI152 T1 template is missing from the nilearn installation")
    return path
