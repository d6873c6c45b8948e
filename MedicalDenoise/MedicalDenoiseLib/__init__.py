"""MedicalDenoiseLib: deep-learning denoising of CT, MR and ultrasound volumes.

The library behind the ``medical-denoise`` command line, the 3D Slicer module and training/. It never
imports Qt.
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
