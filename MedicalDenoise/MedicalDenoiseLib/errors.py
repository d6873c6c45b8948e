"""Errors a user can cause, each carrying a one-line message that names the file, the problem and what is
supported. The command line prints them without a traceback; the Slicer module shows them in a dialog."""
from __future__ import annotations

__all__ = ["MedicalDenoiseError", "InputError", "OutputError", "ModelFileError", "DeviceError", "Cancelled"]


class MedicalDenoiseError(ValueError):
    """Base class of the errors meant for the user, not for a traceback."""


class InputError(MedicalDenoiseError):
    """An input image that cannot be read or is not a scalar 2D/3D image."""


class OutputError(MedicalDenoiseError):
    """An output path that cannot be written."""


class ModelFileError(MedicalDenoiseError):
    """A model file that is missing, corrupt, tampered with or does not match its description."""


class DeviceError(MedicalDenoiseError):
    """A compute device that was asked for but is not available."""


class Cancelled(RuntimeError):
    """Raised inside a run when the user asked it to stop."""
