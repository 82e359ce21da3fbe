"""The HTTP routes: thin functions over :class:`RouterService`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import PlainTextResponse, Response

from router.api.fastpath import CHAT_PATH, read_body
from router.api.responses import JSONResponse, chat_response, error_response
from router.config import ROUTER_ALIASES
from router.errors import RouterError
from router.protocol import parse_json_object, parse_leaderboard
from router.serving.service import RouterService


def create_routes(service: RouterService) -> APIRouter:
    routes = APIRouter()

    @routes.post(CHAT_PATH)
    async def chat_completions(request: Request) -> Response:
        # Normally served by ChatFastPath; kept so the OpenAPI schema lists it.
        limit = service.max_body_bytes
        try:
            raw = await read_body(request, limit)
        except RouterError as exc:
            return error_response(exc)

        async def body() -> bytes:
            return raw

        return chat_response(await service.chat(body, request.headers.get("authorization")))

    @routes.get("/v1/models")
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

    @routes.get("/v1/budget")
    async def budget(request: Request) -> Response:
        team = service.authenticate(request.headers.get("authorization"))
        return JSONResponse(await service.budget(team))

    @routes.post("/v1/leaderboard")
    async def leaderboard(request: Request) -> Response:
        team = service.authenticate(request.headers.get("authorization"))
        req = parse_leaderboard(parse_json_object(await read_body(request, service.max_body_bytes)))
        return JSONResponse(await service.leaderboard(team, req))

    @routes.get("/healthz")
    async def healthz() -> Response:
        return JSONResponse({"status": "ok"})

    @routes.get("/readyz")
    async def readyz() -> Response:
        if service.ready:
            return JSONResponse({"status": "ready"})
        body: dict[str, Any] = {"status": "failed" if service.load_error else "loading"}
        if service.load_error:
            body["error"] = service.load_error
        return JSONResponse(body, status_code=503)

    @routes.get("/metrics")
    async def metrics() -> Response:
        return PlainTextResponse(service.metrics.render(), media_type="text/plain; version=0.0.4")

    return routes
