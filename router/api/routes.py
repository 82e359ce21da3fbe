"""The HTTP routes: thin functions over :class:`RouterService`.

``POST /v1/chat/completions`` is not here: :mod:`router.api.fastpath` serves it (and
its 405, its trailing-slash redirect and its /openapi.json entry)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from router.api.fastpath import read_body
from router.api.responses import JSONResponse
from router.auth import bearer_key
from router.config import ROUTER_ALIASES
from router.errors import AuthenticationError, PermissionDeniedError
from router.protocol import parse_json_object, parse_leaderboard
from router.serving.service import RouterService


def create_routes(service: RouterService) -> APIRouter:
    routes = APIRouter()

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
        req = parse_leaderboard(
            parse_json_object(await read_body(request, service.limits.max_body_bytes))
        )
        return JSONResponse(await service.leaderboard(team, req))

    @routes.get("/v1/responses/{response_id}")
    async def get_response(response_id: str, request: Request) -> Response:
        """A stored response of the caller's team (router/serving/stored.py)."""
        team = service.authenticate(request.headers.get("authorization"))
        return JSONResponse(await service.responses.get(team.name, response_id))

    @routes.delete("/v1/responses/{response_id}")
    async def delete_response(response_id: str, request: Request) -> Response:
        team = service.authenticate(request.headers.get("authorization"))
        return JSONResponse(await service.responses.delete(team.name, response_id))

    @routes.get("/healthz")
    async def healthz() -> Response:
        return JSONResponse({"status": "ok"})

    @routes.get("/readyz")
    async def readyz() -> Response:
        # Settlements waiting for the ledger do not stop traffic (they are safe on disk and
        # counted in budgets), but an operator should see them.
        journaled = service.journal.pending_count()
        extra: dict[str, Any] = {"journaled_settlements": journaled} if journaled else {}
        # A remote scorer says whether its engine answers; a replica stays ready while it
        # is down (teams with on_scorer_down other than reject are still served).
        if service.engine is not None:
            extra.update(service.engine.health())
        # A ledger that lost its memory refuses money until an operator acknowledges it;
        # reading its epoch here also picks up that acknowledgement without traffic.
        lost = await service.ledger_lost()
        if lost is not None:
            return JSONResponse({"status": "ledger_lost", "error": lost, **extra}, status_code=503)
        if service.ledger.reset_acknowledged:
            extra["ledger_reset_acknowledged"] = service.ledger.reset_acknowledged
        if service.ready:
            return JSONResponse({"status": "ready", **extra})
        body: dict[str, Any] = {"status": "failed" if service.load_error else "loading", **extra}
        if service.load_error:
            body["error"] = service.load_error
        return JSONResponse(body, status_code=503)

    @routes.get("/metrics")
    async def metrics(request: Request) -> Response:
        require_admin(service, request.headers.get("authorization"))
        body, content_type = service.metrics.render()
        return Response(body, media_type=content_type)

    return routes


def require_admin(service: RouterService, authorization: str | None) -> None:
    """Admin endpoints: the key in ``P2L_ROUTER_ADMIN_KEY`` only; closed when it is unset."""
    cfg = service.config
    if not cfg.admin_enabled:
        raise PermissionDeniedError(
            "admin endpoints are closed: the router was started without P2L_ROUTER_ADMIN_KEY"
        )
    key = bearer_key(authorization)
    if key is None:
        raise AuthenticationError("this endpoint needs the admin key: 'Bearer <admin key>'")
    if not cfg.is_admin(key):
        if cfg.team_for_key(key) is not None:
            raise PermissionDeniedError("a team key cannot read this endpoint; use the admin key")
        raise AuthenticationError("invalid admin key")
