"""Writing files so that a reader never sees half of one: write beside the target, then rename onto it.

A rename within one folder is atomic on POSIX and Windows, so the target is either the old file, the new
one, or absent; an interrupted write leaves at most a hidden temporary, removed on the way out.
"""
from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_file", "temporary_folder_beside", "write_text_atomically"]


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside ``path`` to write; it replaces ``path`` when the block ends.

    The temporary keeps ``path``'s last suffix, so writers that choose the format by extension (SimpleITK)
    still do. If the block raises, the temporary is removed and ``path`` is untouched.
    """
    path = Path(path)
    temporary = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}{path.suffix}"
    try:
        yield temporary
        with open(temporary, "rb+") as handle:  # flush to disk before the rename makes it visible
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` as UTF-8 to ``path`` through :func:`atomic_file`."""
    with atomic_file(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def temporary_folder_beside(path: str | os.PathLike) -> Path:
    """A new hidden folder beside ``path``: on the same file system, so moving out of it is atomic.

    Not ``tempfile.mkdtemp``: its 0700 mode would stay on a folder that is renamed into place.
    """
    path = Path(path)
    temporary = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:12]}"
    temporary.mkdir()
    return temporary
