"""HTTP routes: thin functions over ``RouterService``; resources live in the lifespan.

Every error, including unknown routes and malformed bodies, leaves in OpenAI's shape
``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from router.jsonio import JSONResponse
from router.config import ROUTER_ALIASES, RouterConfig
from router.errors import BodyTooLargeError, ConfigError, InvalidRequestError, RouterError
from router.api.protocol import parse_json_object, parse_leaderboard
from router.serving.service import RouterService

log = logging.getLogger("router")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes."""
    return await _read_limited(request.headers.get("content-length"), request.receive, limit)


async def _read_limited(declared: str | None, receive: Receive, limit: int) -> bytes:
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError(_too_large(int(declared), limit))
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InvalidRequestError("the client disconnected before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError(_too_large(size, limit))
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class ChatFastPath:
    """``POST /v1/chat/completions`` served straight from ASGI, every other request handed
    to the FastAPI app. The hot path skips the framework's routing, middleware and
    dependency machinery (profiled: a large share of the router's own time per request);
    its behaviour is the same as a route's, errors included."""

    PATH = "/v1/chat/completions"

    def __init__(self, app: FastAPI, service: RouterService) -> None:
        self.app = app
        self.service = service
        self.state = app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        auth = length = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                auth = value.decode("latin-1")
            elif name == b"content-length":
                length = value.decode("latin-1")
        limit = self.service.max_body_bytes
        try:
            response = await self.service.chat(lambda: _read_limited(length, receive, limit), auth)
        except Exception:
            log.exception("unhandled error on %s", self.PATH)
            response = JSONResponse(INTERNAL_ERROR, status_code=500)
        await response(scope, receive, send)


INTERNAL_ERROR = {
    "error": {
        "message": "internal router error; see the router's log",
        "type": "server_error",
        "param": None,
        "code": None,
    }
}


def _too_large(size: int, limit: int) -> str:
    return f"request body is {size} bytes; the limit is {limit} bytes ({limit / 2**20:g} MiB)"


def create_app(
    service: RouterService,
    *,
    reload_config: Callable[[], RouterConfig] | None = None,
) -> ChatFastPath:
    """``reload_config`` re-reads the files; SIGHUP calls it (when serving in the main thread)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        loop = asyncio.get_running_loop()
        hup = False
        if reload_config is not None:
            try:
                loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(_reload()))
                hup = True
            except (ValueError, RuntimeError, NotImplementedError):
                log.debug("SIGHUP reload unavailable (not in the main thread)")
        try:
            yield
        finally:
            if hup:
                loop.remove_signal_handler(signal.SIGHUP)
            await service.close()

    async def _reload() -> bool:
        try:
            cfg = await asyncio.to_thread(reload_config)  # type: ignore[arg-type]
        except ConfigError as exc:
            log.error("config reload refused; keeping the old config:\n%s", exc)
            return False
        await service.reload(cfg)
        for w in cfg.warnings:
            log.warning("%s", w)
        log.info("config reloaded: %d teams, %d models", len(cfg.teams), len(cfg.catalog.models))
        return True

    app = FastAPI(title="p2l-router", version="0.1.0", lifespan=lifespan)
    app.state.service = service
    app.state.reload = _reload

    @app.exception_handler(RouterError)
    async def _router_error(request: Request, exc: RouterError) -> Response:
        return service.error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        err = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = ".".join(str(p) for p in err["loc"] if p != "body")
        return service.error_response(
            InvalidRequestError(f"'{loc}': {err['msg']}", param=loc or None)
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        msg = {
            404: f"no route {request.method} {request.url.path}; see /docs for the API",
            405: f"method {request.method} is not allowed on {request.url.path}",
        }.get(exc.status_code, str(exc.detail))
        body = {
            "error": {"message": msg, "type": "invalid_request_error", "param": None, "code": kind}
        }
        return JSONResponse(body, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path)
        body = {
            "error": {
                "message": "internal router error; see the router's log",
                "type": "server_error",
                "param": None,
                "code": None,
            }
        }
        return JSONResponse(body, status_code=500)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        try:
            raw = await read_body(request, service.max_body_bytes)
        except RouterError as exc:
            return service.error_response(exc)
        return await service.chat(raw, request.headers.get("authorization"))

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        service.authenticate(request.headers.get("authorization"))
        catalog = service.config.catalog
        data = [
            {"id": a, "object": "model", "created": 0, "owned_by": "p2l-router"}
            for a in ROUTER_ALIASES
        ]
        data += [
            {"id": name, "object": "model", "created": 0, "owned_by": m.provider}
            for name, m in sorted(catalog.available_models().items())
        ]
        return JSONResponse({"object": "list", "data": data})

    @app.get("/v1/budget")
    async def budget(request: Request) -> Response:
        team = service.authenticate(request.headers.get("authorization"))
        return JSONResponse(await service.budget(team))

    @app.post("/v1/leaderboard")
    async def leaderboard(request: Request) -> Response:
        team = service.authenticate(request.headers.get("authorization"))
        req = parse_leaderboard(parse_json_object(await read_body(request, service.max_body_bytes)))
        return JSONResponse(await service.leaderboard(team, req))

    @app.get("/healthz")
    async def healthz() -> Response:
        return JSONResponse({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        if service.ready:
            return JSONResponse({"status": "ready"})
        body: dict[str, Any] = {"status": "failed" if service.load_error else "loading"}
        if service.load_error:
            body["error"] = service.load_error
        return JSONResponse(body, status_code=503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return PlainTextResponse(service.metrics.render(), media_type="text/plain; version=0.0.4")

    return ChatFastPath(app, service)
