"""Loading the scripts in benchmarks/ (not a package) as modules, for their tests."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load_script(name: str):
    """``benchmarks/<name>.py`` as the module ``benchmark_<name>``."""
    sys.path.insert(0, str(BENCHMARKS))  # the scripts import their sibling _common
    try:
        spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))
