"""Errors a researcher can cause when training: a bad config, an unusable data folder, a run folder in the way,
a loss that diverged. Each is one line that names the parameter, the rule and the value; ``training.train``
and ``training.export`` print them without a traceback."""
from __future__ import annotations

from MedicalDenoiseLib.errors import MedicalDenoiseError

__all__ = ["TrainingError", "ConfigError", "DataError", "RunFolderError", "NonFiniteLossError"]


class TrainingError(MedicalDenoiseError):
    """Base class of the training errors meant for the user, not for a traceback."""


class ConfigError(TrainingError):
    """A config file or command-line value that breaks a rule."""


class DataError(TrainingError):
    """A data folder that is missing, empty, unmatched or holds nothing a patch fits in."""


class RunFolderError(TrainingError):
    """A run folder that holds another run, or no checkpoint to resume or export."""


class NonFiniteLossError(TrainingError):
    """The loss became NaN or infinite; the run stops rather than writing broken weights."""
