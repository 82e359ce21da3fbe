"""The ASGI app: lifespan-owned resources, OpenAI-shaped errors for everything, the routes.

Every error, including unknown routes and malformed bodies, leaves in OpenAI's shape
``{"error": {"message", "type", "param", "code"}}``; a ledger that fails under any route
(Redis down, or lost: router/ledger/epoch.py) is a 503 ``ledger_unavailable``, not a 500.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from router.api.admin import create_admin_routes
from router.api.console import mount_console
from router.api.fastpath import ChatFastPath, add_chat_to_openapi
from router.api.responses import (
    INTERNAL_ERROR,
    JSONResponse,
    error_response,
    http_error_response,
)
from router.api.routes import create_routes
from router.config import RouterConfig
from router.errors import ConfigError, InvalidRequestError, RouterError
from router.ledger import LedgerError, LedgerLost
from router.serving.accounting import ledger_unavailable
from router.serving.service import RouterService

log = logging.getLogger("router")


def create_app(
    service: RouterService,
    *,
    reload_config: Callable[[], RouterConfig] | None = None,
    docs: bool = False,
) -> ChatFastPath:
    """``reload_config`` re-reads the files; SIGHUP calls it (when serving in the main
    thread). ``docs`` serves /docs and /openapi.json."""

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

    app = FastAPI(
        title="p2l-router",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url=None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.state.service = service
    app.state.reload = _reload
    _install_error_handlers(app)
    app.include_router(create_routes(service))
    app.include_router(create_admin_routes(service))
    mount_console(app)
    if docs:
        add_chat_to_openapi(app)
    return ChatFastPath(app, service)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RouterError)
    async def _router_error(request: Request, exc: RouterError) -> Response:
        return error_response(exc)

    @app.exception_handler(LedgerError)
    async def _ledger_error(request: Request, exc: LedgerError) -> Response:
        if not isinstance(exc, LedgerLost):  # a lost ledger is logged once, when found
            log.error("ledger unavailable on %s: %s", request.url.path, exc)
        return error_response(ledger_unavailable(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        err = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = ".".join(str(p) for p in err["loc"] if p != "body")
        return error_response(InvalidRequestError(f"'{loc}': {err['msg']}", param=loc or None))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        return http_error_response(
            exc.status_code, request.method, request.url.path, str(exc.detail)
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path)
        return JSONResponse(INTERNAL_ERROR, status_code=500)
