"""What the server was started with, and the checks that must pass before it listens."""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import MedicalDenoiseError

__all__ = ["ServerSettings", "is_loopback", "read_token", "check_exposure"]


@dataclass(frozen=True)
class ServerSettings:
    """The server's configuration.

    Attributes:
        host, port: where it listens.
        token: the bearer token every request but ``/health`` must carry; None on loopback without one.
        device: the resolved torch device the worker runs on (``cpu``, ``cuda``, ``cuda:1``, ``mps``).
        max_upload_bytes: the largest upload accepted.
        work_dir: the folder that holds uploads and results, and nothing else of the server's.
        queue_size: how many jobs may wait behind the running one.
        result_ttl_s: seconds a finished job (and its result) is kept when nobody fetches it.
        tile: the largest tile edge in voxels (None: the Denoiser's default for the device).
        models: the registry names a job may ask for.
    """

    host: str
    port: int
    token: str | None
    device: str
    max_upload_bytes: int
    work_dir: Path
    queue_size: int
    result_ttl_s: float
    tile: int | None
    models: tuple[str, ...]

    @property
    def max_upload_mb(self) -> float:
        return self.max_upload_bytes / 2**20


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1); any other name or address is not."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything, so it counts as exposed


def read_token(path: str | os.PathLike) -> str:
    """The token in ``path``, surrounding whitespace removed.

    Raises:
        MedicalDenoiseError: the file is missing, unreadable or empty.
    """
    p = Path(path)
    try:
        token = p.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else type(err).__name__
        raise MedicalDenoiseError(f"{p}: cannot read the token file ({reason})") from None
    if not token or any(c.isspace() for c in token):
        raise MedicalDenoiseError(f"{p}: the token file must hold one token on one line, without spaces")
    return token


def check_exposure(host: str, token: str | None) -> None:
    """Refuses to listen beyond this machine without a token: anyone on the network could use the device.

    Raises:
        MedicalDenoiseError: a non-loopback host without a token.
    """
    if token is None and not is_loopback(host):
        raise MedicalDenoiseError(f"--host {host} listens beyond this machine; give --token-file so that only "
                                  "clients holding the token can use it (or serve on 127.0.0.1)")
