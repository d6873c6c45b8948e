"""The models adapted to a scan during this Slicer session, and the series each was fitted to.

A ``--adapt`` run writes its adapted model into the job's folder, which goes when the job ends; the logic
copies it here, into a folder of its own that lasts as long as the session. An adapted model is for the
series it was fitted to: :meth:`AdaptedModels.warning` says so whenever it is about to be used on other
voxels, so that it is never used on another series without the user knowing. The fitted series is known by
the voxels' hash its card keeps (``adaptation.fitted_series``), so the same series loaded again counts as the
same one, and an edited volume as another one.

No Qt and no ``slicer`` here (the logic passes node IDs, names and hashes); torch is imported only to read a
model file's card.
"""
from __future__ import annotations

import shutil
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path

__all__ = ["AdaptedModel", "AdaptedModels"]


@dataclass(frozen=True)
class AdaptedModel:
    """One adapted model file and what it was fitted to.

    Attributes:
        path: the model file (for a model of this session, its copy in the session folder).
        name: the card's model name ("autoencoder-v2-adapted").
        fittedFile: the file name the card says it was fitted to.
        voxelsSha256: the card's hash of the voxels it was fitted to.
        inputID, inputName: the volume node it was fitted to in this session; None and the file's stem for a
            model file adapted elsewhere.
    """

    path: Path
    name: str
    fittedFile: str
    voxelsSha256: str
    inputID: str | None
    inputName: str

    @property
    def label(self) -> str:
        """How the model selector shows it."""
        return f"{self.name} (fitted to {self.inputName})"

    @property
    def fittedTo(self) -> str:
        """The series, in words: the volume's name and the file name the card keeps."""
        if self.inputID is None:
            return self.fittedFile
        return f"'{self.inputName}' ({self.fittedFile})"


class AdaptedModels:
    """This session's adapted models, in the order they were made.

    Args:
        parent: where the session folder is made (default: the system's temporary folder); the folder is
            made at the first model and removed by :meth:`removeFiles` or when the session ends.
    """

    def __init__(self, parent: str | None = None) -> None:
        self._parent = parent
        self._folder: Path | None = None
        self._models: dict[str, AdaptedModel] = {}
        self._cards: dict[tuple[str, int], AdaptedModel | None] = {}  # model files read, by path and mtime

    def __iter__(self):
        return iter(list(self._models.values()))

    def __len__(self) -> int:
        return len(self._models)

    def get(self, model: str | None) -> AdaptedModel | None:
        """The adapted model of this session at path ``model``, else None."""
        return self._models.get(str(model)) if model else None

    def add(self, file: str | Path, inputID: str, inputName: str) -> AdaptedModel:
        """Copies the adapted model ``file`` into the session folder and returns what it was fitted to.

        Raises:
            ValueError: ``file`` is not an adapted model (its card names no fitted series).
        """
        from ..adaptation.fitted_series import fitted_to
        from ..models.model_files import load_model

        card = load_model(file).card  # refuses a damaged file before it is offered
        fitted = fitted_to(card)
        if fitted is None:
            raise ValueError(f"{file}: not an adapted model (its card names no series it was fitted to)")
        if self._folder is None or not self._folder.is_dir():
            self._folder = Path(tempfile.mkdtemp(prefix="MedicalDenoise-adapted-", dir=self._parent))
            # Should the logic never be told to clean up, the folder still goes with the session.
            weakref.finalize(self, shutil.rmtree, str(self._folder), True)
        target = self._folder / f"{card.name}-{len(self._models) + 1}.safetensors"
        shutil.copyfile(file, target)
        model = AdaptedModel(target, card.name, fitted[0], fitted[1], inputID, inputName)
        self._models[str(target)] = model
        return model

    def describe(self, model: str | None) -> AdaptedModel | None:
        """The adapted model at ``model``: one of this session's, or a model file whose card says it was
        adapted (read once); None for shipped models and other model files."""
        if not model:
            return None
        if str(model) in self._models:
            return self._models[str(model)]
        path = Path(model)
        if path.suffix != ".safetensors" or not path.is_file():
            return None
        key = (str(path.resolve()), path.stat().st_mtime_ns)
        if key not in self._cards:
            from ..adaptation.fitted_series import fitted_to
            from ..models.model_files import load_model

            try:
                card = load_model(path).card
            except ValueError:  # a damaged file: denoising with it reports that itself
                card = None
            fitted = fitted_to(card) if card is not None else None
            self._cards[key] = None if fitted is None else AdaptedModel(
                path, card.name, fitted[0], fitted[1], None, Path(fitted[0]).name)
        return self._cards[key]

    def warning(self, model: str | None, inputName: str, voxelsSha256: str) -> str | None:
        """Why ``model`` should not be used on the volume ``inputName`` with these voxels; None when it is
        not an adapted model or was fitted to these very voxels."""
        adapted = self.describe(model)
        if adapted is None or adapted.voxelsSha256 == voxelsSha256:
            return None
        return (f"{adapted.name} was fitted to another series, {adapted.fittedTo}, not to '{inputName}': on this "
                "one it is a generic model at best. Adapt to this scan for a model fitted to it.")

    def save(self, model: str, target: str | Path) -> Path:
        """Copies this session's adapted model ``model`` to ``target`` (a .safetensors file)."""
        adapted = self.get(model)
        if adapted is None:
            raise ValueError("the chosen model is not an adapted model of this session")
        target = Path(target)
        if target.suffix != ".safetensors":
            target = target.with_name(target.name + ".safetensors")
        if target.resolve() == adapted.path.resolve():
            raise ValueError(f"{target}: is the session copy itself; choose another file")
        shutil.copyfile(adapted.path, target)
        return target

    def removeFiles(self) -> None:
        """Removes the session folder and forgets its models (Slicer quits or the module is reloaded)."""
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
        self._folder = None
        self._models.clear()
