"""Local ports for `make run`: fixed defaults a bookmark can rely on, 0 for any free one."""

from __future__ import annotations

import socket

from ml_common.errors import MLProdError

API_PORT = 8000  # the usual port of a Python web API (uvicorn's own default)
CLIENT_PORT = 8080  # the usual second web port


class PortTaken(MLProdError):
    code = "port_taken"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def claim_port(port: int, what: str, variable: str) -> int:
    """`port` when nothing listens on it (0: any free port), else PortTaken in words."""
    if port == 0:
        return free_port()
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            raise PortTaken(
                f"port {port} for {what} is taken by another program ({exc.strerror}): stop it, "
                f"or choose another port, e.g. `{variable}={port + 1} make run` (0: any free port)"
            ) from exc
    return port
