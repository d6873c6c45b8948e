"""``medical-denoise serve``: denoise over HTTP, for clients on machines without a GPU.

Loopback only unless a token is given: any other address without ``--token-file`` is refused before
anything listens. The routes are in ``server/app.py``; FastAPI and uvicorn (the ``server`` extra) are
imported only when the server starts.
"""
from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path

from ..errors import MedicalDenoiseError
from ..inference.devices import DEVICE_CHOICES, resolve_device
from ..models.registry import list_models
from ..server.settings import ServerSettings, check_exposure, read_token

__all__ = ["add_parser", "run"]

_MIN_TILE = 32


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve denoising over HTTP (one job at a time on this machine's device)",
                       description="Serve denoising over HTTP: clients upload a volume, poll its job and download "
                                   "the result on the input's exact grid and pixel type.")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only; any other needs --token-file)")
    p.add_argument("--port", type=int, default=8765, help="port (default: 8765; 0 picks a free one)")
    p.add_argument("--token-file", type=Path,
                   help="file holding the token clients must send as 'Authorization: Bearer <token>'")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="where the network runs (default: auto)")
    p.add_argument("--max-upload-mb", type=float, default=2048, help="largest upload accepted, in MiB (default: 2048)")
    p.add_argument("--work-dir", type=Path,
                   help="folder for uploads and results (default: a new temporary folder, removed on exit)")
    p.add_argument("--queue", type=int, default=8, help="jobs that may wait behind the running one (default: 8)")
    p.add_argument("--result-ttl-s", type=float, default=600,
                   help="seconds a finished job's result is kept when nobody fetches it (default: 600)")
    p.add_argument("--tile", type=int, default=None, help="largest tile edge in voxels (default: 160 on CPU, 192 on GPU)")
    p.set_defaults(run=run)


def _check_numbers(args) -> None:
    if not 0 <= args.port <= 65535:
        raise MedicalDenoiseError(f"--port must be 0-65535, got {args.port}")
    if not args.max_upload_mb > 0:
        raise MedicalDenoiseError(f"--max-upload-mb must be > 0, got {args.max_upload_mb:g}")
    if args.queue < 1:
        raise MedicalDenoiseError(f"--queue must be >= 1, got {args.queue}")
    if not args.result_ttl_s > 0:
        raise MedicalDenoiseError(f"--result-ttl-s must be > 0, got {args.result_ttl_s:g}")
    if args.tile is not None and args.tile < _MIN_TILE:
        raise MedicalDenoiseError(f"--tile must be >= {_MIN_TILE}, got {args.tile}")


def _work_dir(path: Path | None) -> tuple[Path, bool]:
    """The work folder, and whether it is a temporary one (removed on exit; a folder the user named is
    left in place, emptied of the server's files)."""
    if path is None:
        return Path(tempfile.mkdtemp(prefix="medical-denoise-serve-")), True
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.NamedTemporaryFile(dir=path).close()  # writable?
    except OSError as err:
        raise MedicalDenoiseError(f"{path}: cannot be used as the work folder ({err.strerror or err})") from None
    return path.resolve(), False


def run(args) -> int:
    token = read_token(args.token_file) if args.token_file is not None else None
    check_exposure(args.host, token)
    _check_numbers(args)
    if importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None:
        raise MedicalDenoiseError("the server needs FastAPI and uvicorn: pip install 'medical-denoise[server]'")
    from ..server.runner import bind, serve

    device = str(resolve_device(args.device))
    models = tuple(entry.name for entry in list_models())
    work_dir, temporary = _work_dir(args.work_dir)
    try:
        sock = bind(args.host, args.port)
    except OSError as err:
        if temporary:
            shutil.rmtree(work_dir, ignore_errors=True)
        raise MedicalDenoiseError(f"cannot listen on {args.host}:{args.port} ({err.strerror or err})") from None
    settings = ServerSettings(host=args.host, port=sock.getsockname()[1], token=token, device=device,
                              max_upload_bytes=int(args.max_upload_mb * 2**20), work_dir=work_dir,
                              queue_size=args.queue, result_ttl_s=args.result_ttl_s, tile=args.tile, models=models)
    try:
        serve(settings, sock, announce=lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        pass  # SIGINT / SIGTERM: uvicorn has already shut down cleanly
    finally:
        sock.close()
        if temporary:
            shutil.rmtree(work_dir, ignore_errors=True)
    print("medical-denoise: server stopped", file=sys.stderr)
    return 0
