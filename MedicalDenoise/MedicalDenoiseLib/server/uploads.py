"""An upload streamed to disk within a size limit, and the checks that its bytes are what its format says.

The body is never held in memory: it goes to the server's own file in pieces of at most ``_FLUSH_BYTES``,
and the file stops growing at the limit. Content is checked before any image reader sees it, because
SimpleITK picks a reader by content when the extension's reader declines: a NRRD header saying
``data file: /etc/shadow`` would otherwise make the server read (and return, denoised) a file of its own.
"""
from __future__ import annotations

import asyncio
import gzip
import os
import struct
import zlib
from pathlib import Path
from typing import AsyncIterator

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..io.reading import read_volume
from .options import one_line

__all__ = ["UploadTooLarge", "UploadRefused", "discard_oversized", "save_upload", "check_upload", "nrrd_is_raw"]

_FLUSH_BYTES = 4 << 20
# After refusing an upload for its size, read (and drop) up to this much more of it before answering, so a
# client still sending gets the 413 rather than a reset connection; past it the connection is simply closed.
_DRAIN_BYTES = 64 << 20
_NRRD_HEADER_BYTES = 1 << 16
# Voxel data may be this many times the upload limit (a compressed file expands): a header claiming more
# is refused before anything is allocated.
_EXPANSION = 16


class UploadTooLarge(Exception):
    """The body is larger than the server accepts."""


class UploadRefused(Exception):
    """The body is not a volume the server can denoise; the message is for the client."""


async def discard_oversized(chunks: AsyncIterator[bytes], declared: int, limit: int) -> None:
    """Drops a body whose Content-Length is past ``limit`` (none of it is stored), when it is not far past."""
    if declared - limit <= _DRAIN_BYTES:
        await _drain(chunks)


async def save_upload(chunks: AsyncIterator[bytes], target: Path, limit: int) -> int:
    """Writes the request body to the new file ``target`` and returns its size.

    Counts what arrives rather than trusting Content-Length: a chunked body has none, and a client may lie.

    Args:
        chunks: the body as it arrives.
        target: a file that must not exist yet; removed again on any error.
        limit: the most bytes accepted; the file never grows past it.

    Raises:
        UploadTooLarge: past ``limit``.
        UploadRefused: an empty body.
        OSError: the disk is full or the folder is not writable.
    """
    received = 0
    too_large = False
    try:
        with open(target, "xb") as handle:
            pending = bytearray()
            async for chunk in chunks:
                received += len(chunk)
                if received > limit:
                    too_large = True
                    break
                pending += chunk
                if len(pending) >= _FLUSH_BYTES:
                    # Disk writes run off the event loop: other clients are answered meanwhile.
                    await asyncio.to_thread(handle.write, pending)
                    pending = bytearray()
            if not too_large:
                await asyncio.to_thread(handle.write, pending)
        if too_large:
            raise UploadTooLarge
        if received == 0:
            raise UploadRefused("the upload is empty; send the volume file's bytes as the request body")
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    finally:
        if too_large:
            await _drain(chunks)
    return received


async def _drain(chunks: AsyncIterator[bytes]) -> None:
    dropped = 0
    async for chunk in chunks:
        dropped += len(chunk)
        if dropped > _DRAIN_BYTES:
            return


def check_upload(path: Path, fmt: str, limit: int) -> None:
    """Checks that ``path`` is a readable scalar 2D/3D volume in format ``fmt``, by reading it whole unless it is
    an uncompressed NRRD whose header and size already say so.

    Run in a worker thread: it may parse the whole file. The volume is dropped again, so that a waiting job
    holds no voxels in memory; the worker reads the file once more when the job runs. An uncompressed NRRD
    (what ``denoise --server`` sends) holding exactly the bytes its header promises has nothing more to check
    in its voxels, so it is read only once, by the worker.

    Raises:
        UploadRefused: with a message naming the problem (never the server's file path).
    """
    try:
        _check_content(path, fmt)
        _check_size(path, limit * _EXPANSION)
        if not (fmt == "nrrd" and _raw_nrrd_complete(path)):
            read_volume(path)
    except InputError as exc:
        raise UploadRefused(client_message(str(exc), path, fmt)) from None
    except MemoryError:
        raise UploadRefused("the volume is too large to read on this server") from None


def client_message(text: str, path: Path, fmt: str) -> str:
    """A library message about the server's file ``path``, naming the upload instead, on one line."""
    return one_line(text.replace(str(path), f"upload.{fmt}"))


def _check_content(path: Path, fmt: str) -> None:
    if fmt == "nrrd":
        _check_nrrd(path)
    elif fmt == "nii.gz":
        _check_nifti_gz(path)
    else:  # the options allow no other format
        raise UploadRefused(f"format {fmt!r} is not accepted")


def _check_nrrd(path: Path) -> None:
    """A NRRD file with its data inline: no field may point the reader at another file."""
    with open(path, "rb") as handle:
        head = handle.read(_NRRD_HEADER_BYTES)
    if not head.startswith(b"NRRD000"):
        raise UploadRefused("the upload is not a NRRD file (it must start with 'NRRD000'); format=nrrd expects one")
    end = min((i for i in (head.find(b"\n\n"), head.find(b"\r\n\r\n")) if i >= 0), default=-1)
    if end < 0 and len(head) == _NRRD_HEADER_BYTES:
        raise UploadRefused(f"the NRRD header is longer than {_NRRD_HEADER_BYTES} bytes")
    header = head if end < 0 else head[:end]
    for line in header.splitlines()[1:]:
        key = line.split(b":", 1)[0].strip().lower().replace(b" ", b"")
        if key == b"datafile":
            raise UploadRefused("the NRRD header names a separate data file; send a NRRD with its data inline (.nrrd)")


def nrrd_is_raw(path: Path) -> bool:
    """Whether the NRRD file ``path`` holds its voxels uncompressed (``encoding: raw``): its result is then
    written uncompressed too, sparing both sides the compression."""
    found = _nrrd_fields(path)
    return found is not None and found[0].get(b"encoding") == b"raw"


def _nrrd_fields(path: Path) -> tuple[dict[bytes, bytes], int] | None:
    """A NRRD header's fields (lower-case names without spaces) and where its data start; None when the header
    does not end with an empty line (LF only) within ``_NRRD_HEADER_BYTES``."""
    with open(path, "rb") as handle:
        head = handle.read(_NRRD_HEADER_BYTES)
    end = head.find(b"\n\n")
    if end < 0 or b"\r" in head[:end]:
        return None
    fields = {}
    for line in head[:end].split(b"\n")[1:]:
        if line.startswith(b"#") or b":=" in line:  # comments, key/value pairs
            continue
        key, _, value = line.partition(b":")
        fields[key.strip().lower().replace(b" ", b"")] = value.strip().lower()
    return fields, end + 2


def _raw_nrrd_complete(path: Path) -> bool:
    """Whether ``path`` is an uncompressed NRRD of one scalar 2D/3D image holding exactly the bytes its header
    promises: reading it whole would then find nothing more. Anything else (compressed, skipped bytes, several
    components, a size that does not add up) is left to the full read."""
    found = _nrrd_fields(path)
    if found is None:
        return False
    fields, data_start = found
    if fields.get(b"encoding") != b"raw" or b"byteskip" in fields or b"lineskip" in fields or b"datafile" in fields:
        return False
    reader = sitk.ImageFileReader()
    reader.SetFileName(os.fspath(path))
    try:
        reader.ReadImageInformation()
        if reader.GetNumberOfComponents() != 1 or reader.GetDimension() not in (2, 3) \
                or reader.GetPixelID() in (sitk.sitkComplexFloat32, sitk.sitkComplexFloat64):
            return False
        itemsize = sitk.Image([1] * reader.GetDimension(), reader.GetPixelID()).GetSizeOfPixelComponent()
    except (RuntimeError, TypeError, ValueError):
        return False
    voxels = int(np.prod(reader.GetSize(), dtype=np.int64))
    return voxels > 0 and path.stat().st_size == data_start + voxels * itemsize


def _check_nifti_gz(path: Path) -> None:
    """A gzip-compressed single-file NIfTI-1 or NIfTI-2 ('n+1' / 'n+2'), not a header naming an image file."""
    try:
        with gzip.open(path, "rb") as handle:
            header = handle.read(540)
    except (OSError, EOFError, zlib.error):
        raise UploadRefused("the upload is not gzip-compressed; format=nii.gz expects a .nii.gz file") from None
    for order in "<>":
        if len(header) >= 348 and struct.unpack(order + "i", header[:4])[0] == 348 and header[344:348] == b"n+1\x00":
            return
        if len(header) >= 540 and struct.unpack(order + "i", header[:4])[0] == 540 and header[4:8] == b"n+2\x00":
            return
    raise UploadRefused("the upload is not a single-file NIfTI image (.nii.gz); format=nii.gz expects one")


def _check_size(path: Path, most_bytes: int) -> None:
    """Refuses a header that claims more voxel data than the server will hold, before reading any."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(os.fspath(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return  # read_volume reports it, in its own words
    voxels = float(np.prod(reader.GetSize(), dtype=np.float64)) * reader.GetNumberOfComponents()
    try:
        itemsize = sitk.Image([1] * reader.GetDimension(), reader.GetPixelID()).GetSizeOfPixelComponent()
    except (RuntimeError, TypeError, ValueError):  # a pixel type or dimension SimpleITK cannot build
        itemsize = 8
    if voxels * itemsize > most_bytes:
        size = "x".join(map(str, reader.GetSize()))
        raise UploadRefused(f"the volume ({size} voxels) is larger than this server accepts")
