"""Binds the listening socket and runs the app on uvicorn until SIGINT or SIGTERM."""
from __future__ import annotations

import logging
import socket
from typing import Callable

from .settings import ServerSettings

__all__ = ["bind", "serve"]


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free port; the socket tells which).

    Bound here rather than by uvicorn so that the address printed is the one really listened on.

    Raises:
        OSError: the address is taken or cannot be bound.
    """
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def serve(settings: ServerSettings, sock: socket.socket, announce: Callable[[str], None] = print) -> None:
    """Runs the server on ``sock`` until it is stopped; jobs still waiting are cancelled and every file the
    server made is removed on the way out."""
    import uvicorn

    from .app import create_app

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    logging.getLogger("MedicalDenoiseLib").setLevel(logging.INFO)
    config = uvicorn.Config(create_app(settings), log_level="info", proxy_headers=False, server_header=False,
                            timeout_graceful_shutdown=10, lifespan="on")
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    announce(f"medical-denoise: serving on http://{shown}:{port} (device {settings.device}, "
             f"{'token required' if settings.token else 'no token: this machine only'}, work folder {settings.work_dir})")
    uvicorn.Server(config).run(sockets=[sock])
