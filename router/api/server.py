"""Running the app under uvicorn with a graceful stop.

SIGTERM (or SIGINT) stops accepting connections and tells the service, which lets
requests and streams in flight finish for ``grace_s`` seconds; streams still running
then end with an in-band error event, their ``router`` chunk and ``[DONE]``, and are
settled and logged as a shutdown (503), not as a client disconnect. The process then
exits 0: uvicorn's own ``capture_signals`` re-raises the signal after a graceful stop
(exit 143), which reads as a crash to a supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
from collections.abc import Generator
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from router.serving.service import RouterService

DEFAULT_GRACE_S = 120.0
# Time after the grace for interrupted streams to write their last events and settle.
FLUSH_S = 5.0
# Client-side bounds (uvicorn): a connection idle between requests is closed after this.
KEEP_ALIVE_S = 5
# A client must finish sending a request's head within this (slowloris guard); the body
# has its own per-read bound (router.api.fastpath.BODY_READ_TIMEOUT_S).
HEADER_TIMEOUT_S = 10.0


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on each request's head, which uvicorn
    lacks: a connection that opens and dribbles headers is closed after
    :data:`HEADER_TIMEOUT_S`."""

    header_timeout_s = HEADER_TIMEOUT_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def on_headers_complete(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        self._head_deadline: asyncio.TimerHandle | None = self.loop.call_later(
            self.header_timeout_s, self._head_too_slow
        )

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        idle = self.cycle is None or self.cycle.response_complete
        if idle and not self.transport.is_closing():
            self.transport.close()


class GracefulServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, service: RouterService, grace_s: float) -> None:
        super().__init__(config)
        self.service = service
        self.grace_s = grace_s
        self._loop: Any = None

    async def serve(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.should_exit and self._loop is not None:
            self._loop.call_soon_threadsafe(self.service.begin_shutdown, self.grace_s)
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def uvicorn_config(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    grace_s: float = DEFAULT_GRACE_S,
    protocol: type[HttpToolsProtocol] = BoundedHttpToolsProtocol,
) -> uvicorn.Config:
    """The production server settings (tests serve the app with these too)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level.lower(),
        access_log=False,
        proxy_headers=False,  # the router is addressed directly; no X-Forwarded-* rewriting
        http=protocol,
        loop="uvloop",
        timeout_keep_alive=KEEP_ALIVE_S,
        timeout_graceful_shutdown=grace_s + FLUSH_S,
    )


def serve(
    app: Any,
    service: RouterService,
    *,
    host: str,
    port: int,
    log_level: str = "info",
    grace_s: float = DEFAULT_GRACE_S,
    reuse_port: bool = False,
) -> None:
    """``reuse_port``: bind with SO_REUSEPORT, so that several workers share the port."""
    config = uvicorn_config(app, host=host, port=port, log_level=log_level, grace_s=grace_s)
    sockets = None
    if reuse_port:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.set_inheritable(True)
        sockets = [sock]
    GracefulServer(config, service, grace_s).run(sockets=sockets)
