"""The HTTP routes: thin functions over :class:`RouterService`.

``POST /v1/chat/completions`` is not here: :mod:`router.api.fastpath` serves it (and
its 405, its trailing-slash redirect and its /openapi.json entry)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from router.api.fastpath import read_body
from router.api.responses import JSONResponse, anthropic_error
from router.auth import bearer_key
from router.config import ROUTER_ALIASES
from router.errors import (
    AuthenticationError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    RouterError,
)
from router.protocol import parse_json_object, parse_leaderboard
from router.serving.service import RouterService


def create_routes(service: RouterService) -> APIRouter:
    routes = APIRouter()

    @routes.get("/v1/models")
    async def models(request: Request) -> Response:
        """OpenAI's model list; Anthropic's (``type: model``, ``display_name``, paged by
        ``after_id`` / ``before_id`` / ``limit``) when the request has
        ``anthropic-version``, as Anthropic's SDKs send. Router aliases first."""
        anthropic = "anthropic-version" in request.headers
        try:
            service.authenticate(request_auth(request))
            rows = model_rows(service)
            if anthropic:
                return JSONResponse(anthropic_model_page(rows, request.query_params))
        except RouterError as exc:
            if not anthropic:
                raise
            return anthropic_error_response(exc)
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": owner} for name, owner in rows
        ]
        return JSONResponse({"object": "list", "data": data})

    @routes.get("/v1/models/{model_id:path}")
    async def model(request: Request, model_id: str) -> Response:
        """One model of :func:`models`, in the same shape; 404 for one not served."""
        anthropic = "anthropic-version" in request.headers
        try:
            service.authenticate(request_auth(request))
            owner = dict(model_rows(service)).get(model_id)
            if owner is None:
                raise NotFoundError(f"model '{model_id}' is not served by this router")
        except RouterError as exc:
            if not anthropic:
                raise
            return anthropic_error_response(exc)
        if anthropic:
            return JSONResponse(anthropic_model(model_id, owner))
        return JSONResponse({"id": model_id, "object": "model", "created": 0, "owned_by": owner})

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


def request_auth(request: Request) -> str | None:
    """``Authorization``, else Anthropic's ``x-api-key`` as a Bearer key."""
    auth = request.headers.get("authorization")
    if auth is None and (key := request.headers.get("x-api-key")) is not None:
        return "Bearer " + key
    return auth


def model_rows(service: RouterService) -> list[tuple[str, str]]:
    """(model id, owner) of every model a client may name: the aliases, then the catalog."""
    catalog = service.config.catalog
    rows = [(a, "p2l-router") for a in ROUTER_ALIASES]
    rows += [(name, m.provider) for name, m in sorted(catalog.available_models().items())]
    return rows


EPOCH = "1970-01-01T00:00:00Z"  # Anthropic's "release date unknown"


def anthropic_model(model_id: str, owner: str) -> dict[str, Any]:
    name = f"P2L router ({model_id})" if owner == "p2l-router" else model_id
    return {"type": "model", "id": model_id, "display_name": name, "created_at": EPOCH}


def anthropic_model_page(rows: list[tuple[str, str]], query: Any) -> dict[str, Any]:
    """Anthropic's paged list: ``limit`` (1-1000, default 20) rows after ``after_id`` or
    before ``before_id``."""
    limit_s = query.get("limit", "20")
    if not limit_s.isdigit() or not 1 <= int(limit_s) <= 1000:
        raise InvalidRequestError("limit: must be an integer from 1 to 1000", param="limit")
    limit = int(limit_s)
    ids = [m for m, _ in rows]
    start, end = 0, len(rows)
    for key in ("after_id", "before_id"):
        value = query.get(key)
        if value is not None and value not in ids:
            raise InvalidRequestError(f"{key}: no model '{value}'", param=key)
    if (after := query.get("after_id")) is not None:
        start = ids.index(after) + 1
    if (before := query.get("before_id")) is not None:
        end = ids.index(before)
        start = max(start, end - limit)
    page = rows[start : min(end, start + limit)]
    data = [anthropic_model(m, owner) for m, owner in page]
    more = start + len(page) < end if before is None else start > 0
    return {
        "data": data,
        "has_more": more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


def anthropic_error_response(exc: RouterError) -> JSONResponse:
    status, body = anthropic_error(exc.status, exc.body())
    return JSONResponse(body, status_code=status, headers=exc.headers)


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
