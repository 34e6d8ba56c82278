"""Running the app: ``serve`` blocks in the foreground (the CLI); ``BackgroundServer`` runs
uvicorn on a thread with a free loopback port (tests, benchmarks, notebooks)."""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import threading
import time

from ..errors import ConfigError
from .app import ServeSettings, create_app
from .model import ServedModel

log = logging.getLogger("reslab.serve")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _check_host(host: str) -> None:
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        log.warning("binding %s: the server is reachable from other machines; pass --api-key "
                    "to require a key, or keep the default 127.0.0.1.", host)


def serve(path: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000,
          settings: ServeSettings | None = None, precision: str = "auto") -> None:
    """Loads ``path`` (run folder, checkpoint or export folder) and serves it until Ctrl-C.

    Args:
        path: what to serve.
        host: interface to bind; the default keeps the server on this machine.
        port: TCP port.
        settings: batching, limits, API key.
        precision: ``auto``, ``fp32``, ``bf16`` or ``int8`` for the forward pass.
    """
    import uvicorn

    if not 0 < port < 65536:
        raise ConfigError(f"--port {port} is not a TCP port; use 1..65535 (default 8000).")
    _check_host(host)
    model = ServedModel.load(path, precision, log=log.info)
    log.info("serving %s (%s) on http://%s:%d/  (API docs: /docs)", model.card.name,
             model.card.runtime, host, port)
    uvicorn.run(create_app(model, settings), host=host, port=port, log_level="warning",
                access_log=False)


class BackgroundServer:
    """uvicorn on a daemon thread at ``http://127.0.0.1:<free port>``; a context manager.

    Args:
        app: the ASGI app (``create_app(...)``).
        host: the loopback address to bind.
    """

    def __init__(self, app, host: str = "127.0.0.1", port: int | None = None):
        import uvicorn

        self.port = port or free_port(host)
        self.url = f"http://{host}:{self.port}"
        config = uvicorn.Config(app, host=host, port=self.port, log_level="warning",
                                access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True, name="reslab-serve")

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start on {self.url}")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
