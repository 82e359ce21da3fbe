"""The admin API (``/v1/admin/*``): teams, decision history, stats, route preview, what-if.

Access: the key in ``P2L_ROUTER_ADMIN_KEY`` sees every team; a team key sees only its own
team (asking for another is 403; another team's decision is 404, as if unknown); no key
is 401. Shapes are the response models below (served in /openapi.json with ``--docs``);
errors are OpenAI's shape like everywhere else.
"""

from __future__ import annotations

import math
from typing import Any, TypeVar

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from router.api.fastpath import read_body
from router.auth import bearer_key
from router.errors import (
    AuthenticationError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
)
from router.ledger.history import (
    MAX_QUERY_LIMIT,
    MAX_STATS_DECISIONS,
    DecisionQueryError,
    parse_duration,
    parse_since,
)
from router.protocol import MAX_MESSAGES, parse_json_object, parse_model
from router.serving.admin import MAX_WHATIF_DECISIONS, AdminQueries


class TeamRow(BaseModel):
    team: str
    limit_usd: float | None
    spent_usd: float
    reserved_usd: float
    journaled_usd: float
    period: str
    period_start: str
    period_end: str | None
    elapsed_share: float | None = Field(description="share of the period gone, 0..1")
    projected_spend_usd: float | None = Field(description="spent / elapsed_share")
    strategy: str
    cost_sensitivity: float = Field(description="λ in the team file")
    cost_sensitivity_now: float = Field(description="the paced λ with pacing on, else the file's")


class TeamList(BaseModel):
    object: str = "list"
    data: list[TeamRow]


class DecisionPage(BaseModel):
    object: str = "list"
    data: list[dict[str, Any]] = Field(description="decision-log lines, newest first")
    next_cursor: str | None


class StatsGroup(BaseModel):
    team: str | None
    model: str | None
    requests: int
    spend_usd: float
    cache_saved_usd: float = Field(description="cost at the full input price minus cost paid")
    share: float = Field(description="share of the team's requests")
    scoring_ms_p50: float | None
    scoring_ms_p99: float | None
    upstream_ms_p50: float | None
    upstream_ms_p99: float | None
    overhead_ms_p50: float | None
    overhead_ms_p99: float | None
    fallbacks: int
    errors: int


class StatsBucket(BaseModel):
    start: str
    team: str | None
    model: str | None
    requests: int
    spend_usd: float


class StatsSessions(BaseModel):
    sessions: int = Field(description="conversations (decisions with a session)")
    turns: int
    switches: int = Field(description="turns served by another model than the turn before")
    switches_per_session: float
    max_switches_in_a_session: int
    expected_cache_savings_usd: float = Field(
        description="the cache-aware pricing's expected saving on the served models "
        "(uncached minus expected cost)"
    )


class Stats(BaseModel):
    since: str | None
    bucket_s: float
    groups: list[StatsGroup]
    buckets: list[StatsBucket]
    sessions: StatsSessions
    decisions: int = Field(description="decisions summarised")
    truncated: bool = Field(
        description=f"older decisions since `since` were left out: at most "
        f"{MAX_STATS_DECISIONS} are summarised, the newest"
    )
    oldest: str | None = Field(description="the oldest decision summarised")


class PreviewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_MESSAGES)


class PreviewTeam(BaseModel):
    team: str
    chosen: str | None = None
    expected_cost_usd: float | None = None
    strategy: str | None = None
    reason: str | None = None
    error: str | None = None


class Preview(BaseModel):
    head: str
    models: list[dict[str, Any]] = Field(description="the prompt's leaderboard rows")
    teams: list[PreviewTeam]


class WhatIfRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    team: str
    cost_sensitivity: list[float] = Field(min_length=1, max_length=200)
    limit: int = Field(500, ge=1, le=MAX_WHATIF_DECISIONS)


class WhatIfPoint(BaseModel):
    cost_sensitivity: float
    spend_usd: float
    mean_score: float
    requests: int


class WhatIf(BaseModel):
    team: str
    points: list[WhatIfPoint]


M = TypeVar("M", bound=BaseModel)


async def read_model(request: Request, model: type[M], limit: int) -> M:
    """The body as ``model``, read only once the caller is authenticated, within the
    same size and stall limits as chat (413, 408), malformed input a 400 naming the field."""
    return parse_model(model, parse_json_object(await read_body(request, limit)))


def _body(model: type[BaseModel]) -> dict[str, Any]:
    """The request body in /openapi.json: the handler reads it itself (after auth)."""
    schema = {"application/json": {"schema": model.model_json_schema()}}
    return {"requestBody": {"required": True, "content": schema}}


def admin_scope(service: Any, authorization: str | None) -> str | None:
    """None for the admin key (every team), else the team of a valid team key."""
    key = bearer_key(authorization)
    if key is None:
        raise AuthenticationError("the admin API needs 'Bearer <admin key or team key>'")
    cfg = service.config
    if cfg.admin_enabled and cfg.is_admin(key):
        return None
    return service.authenticate(authorization).name


def _team_filter(scope: str | None, team: str | None) -> str | None:
    if scope is not None and team not in (None, "", scope):
        raise PermissionDeniedError(f"a team key reads only its own team ('{scope}')")
    return scope or team or None


def _since(since: str | None, now: float) -> float | None:
    try:
        return parse_since(since, now)
    except ValueError as exc:
        raise _bad("since", exc) from None


def _bad(param: str, exc: ValueError) -> InvalidRequestError:
    return InvalidRequestError(str(exc), param=param)


def create_admin_routes(service: Any) -> APIRouter:
    routes = APIRouter(prefix="/v1/admin", tags=["admin"])
    queries = AdminQueries(service)

    @routes.get("/teams", response_model=TeamList)
    async def teams(request: Request) -> dict[str, Any]:
        """Each team: budget, spend, period, pace, strategy and λ now."""
        scope = admin_scope(service, request.headers.get("authorization"))
        return {"object": "list", "data": await queries.teams(scope)}

    @routes.get("/decisions", response_model=DecisionPage)
    async def decisions(
        request: Request,
        team: str | None = None,
        model: str | None = None,
        status: str | None = Query(None, description="an HTTP status, 'ok' or 'error'"),
        since: str | None = Query(None, description="ISO time or a duration: 30m, 24h, 7d"),
        limit: int = Query(50, ge=1, le=MAX_QUERY_LIMIT),
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """Stored decisions, newest first; pass ``next_cursor`` back for the next page."""
        scope = admin_scope(service, request.headers.get("authorization"))
        since_ts = _since(since, service.clock())
        try:
            data, nxt = await service.ledger.query_decisions(
                team=_team_filter(scope, team), model=model, status=status, since=since_ts,
                limit=limit, cursor=cursor,
            )  # fmt: skip
        except DecisionQueryError as exc:
            raise _bad(exc.param, exc) from None
        return {"object": "list", "data": data, "next_cursor": nxt}

    @routes.get("/decisions/{decision_id}", response_model=dict[str, Any])
    async def decision(request: Request, decision_id: str) -> dict[str, Any]:
        """One decision: its full log line."""
        scope = admin_scope(service, request.headers.get("authorization"))
        line = await service.ledger.get_decision(decision_id)
        if line is None or (scope is not None and line.get("team") != scope):
            raise NotFoundError(f"no decision '{decision_id}' (or past retention)")
        return line

    @routes.get("/stats", response_model=Stats)
    async def stats(
        request: Request,
        since: str | None = Query(None, description="ISO time or a duration: 30m, 24h, 7d"),
        bucket: str = Query("1h", description="bucket width: seconds, or 1m, 5m, 1h, 1d"),
    ) -> dict[str, Any]:
        """Per team × model: requests, spend, share, latency percentiles, fallbacks,
        errors; and requests and spend per time bucket."""
        scope = admin_scope(service, request.headers.get("authorization"))
        since_ts = _since(since, service.clock())
        try:
            bucket_s = parse_duration(bucket)
            if not 0 < bucket_s < math.inf:
                raise ValueError("bucket must be > 0 and finite")
        except ValueError as exc:
            raise _bad("bucket", exc) from None
        return await queries.stats(since_ts, bucket_s, scope)

    @routes.post("/route-preview", response_model=Preview, openapi_extra=_body(PreviewRequest))
    async def route_preview(request: Request) -> dict[str, Any]:
        """The prompt's leaderboard and the model each team's policy would pick now (no
        call upstream, nothing reserved)."""
        scope = admin_scope(service, request.headers.get("authorization"))
        body = await read_model(request, PreviewRequest, service.limits.max_body_bytes)
        return await queries.route_preview(body.messages, scope)

    @routes.post("/whatif", response_model=WhatIf, openapi_extra=_body(WhatIfRequest))
    async def whatif(request: Request) -> dict[str, Any]:
        """Cost-aware routing of the team's recent decisions at each λ: expected spend and
        mean score over them."""
        scope = admin_scope(service, request.headers.get("authorization"))
        body = await read_model(request, WhatIfRequest, service.limits.max_body_bytes)
        name = _team_filter(scope, body.team)
        team = service.config.teams.get(name)
        if team is None:
            raise InvalidRequestError(f"no team '{body.team}'", param="team")
        if scope is not None:
            await service.accounts.take_rate(team, 0)
        return await queries.whatif(team, body.cost_sensitivity, body.limit)

    return routes
