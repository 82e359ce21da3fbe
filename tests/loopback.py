"""A test server on loopback: an ASGI app under uvicorn in a background thread, on a
free port, started and stopped the same way by every fake the tests run (the fake
upstream, the agent CLIs' recording server)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Self

import uvicorn


class LoopbackServer:
    """Subclasses define ``_app`` (ASGI) and may set ``host``, ``backlog``, ``thread_name``
    and ``uvicorn_options``."""

    host = "127.0.0.1"
    backlog = 128
    thread_name = "loopback-server"
    uvicorn_options: dict[str, Any] = {}

    def __init__(self) -> None:
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self.port = 0

    async def _app(self, scope: dict, receive: Any, send: Any) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        sock.listen(self.backlog)
        self._sock = sock
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app, lifespan="off", interface="asgi3", log_level="warning",
            access_log=False, **{"timeout_graceful_shutdown": 2, **self.uvicorn_options},
        )  # fmt: skip
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True,
            name=self.thread_name,
        )  # fmt: skip
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{type(self).__name__} did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._sock is not None:
            self._sock.close()
        self._server = self._thread = self._sock = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
