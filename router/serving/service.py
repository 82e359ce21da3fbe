"""Serving: one chat request from authentication to the settled spend.

score (P2L) -> decide (policy) -> reserve (ledger) -> forward with fallback (upstream)
-> settle the actual cost -> one decision-log line. Route functions in ``server.py`` stay
thin; every resource used here is created in ``start()`` (the app's lifespan).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anyio
from starlette.responses import Response, StreamingResponse

from router.jsonio import JSONResponse
from router.serving.periods import period_bounds, period_key
from router.config import (
    DEFAULT_EXPECTED_OUTPUT_TOKENS,
    ROUTER_ALIASES,
    ModelConfig,
    RouterConfig,
    TeamPolicy,
)
from router.observability.decisions import DecisionLog, DecisionRecord
from router.errors import (
    AuthenticationError,
    BudgetExceededError,
    ModelNotFoundError,
    NoCandidateError,
    NotReadyError,
    RouterError,
    UpstreamError,
)
from router.ledger import (
    InsufficientBudget,
    Ledger,
    LedgerError,
    Reservation,
    Usage,
    create_ledger,
)
from router.observability.metrics import Metrics
from router.policy.pacing import paced_lambda
from router.policy.strategies import (
    Decision,
    decide,
    eligible_models,
    expected_cost_usd,
    make_candidates,
    price_table,
)
from router.policy.strategies import expected_output_tokens as expected_output
from router.api.protocol import ChatRequest, LeaderboardRequest, parse_chat, parse_json_object
from router.api.relay import PassThrough, relay_stream
from router.upstream.client import UpstreamClient, UpstreamFailure

log = logging.getLogger("router")

# Upstream statuses that mean "the client's request is wrong": passed through, no fallback.
CLIENT_FAULT_STATUSES = frozenset({400, 413, 422})
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def new_decision_id() -> str:
    return "dec_" + secrets.token_hex(12)


def message_text(messages: list[dict[str, Any]]) -> str:
    """All text a provider bills as input (every role), for the reservation estimate."""
    parts: list[str] = []
    for m in messages:
        c = m.get("content") if isinstance(m, dict) else None
        if isinstance(c, str):
            parts.append(c)
        elif isinstance(c, list):
            parts += [
                p.get("text", "")
                for p in c
                if isinstance(p, dict) and isinstance(p.get("text"), str)
            ]
    return "\n".join(parts)


USAGE_REFRESH_S = 1.0


class UsageView:
    """Each team's period usage as this process last saw it: read from the ledger at most
    every ``USAGE_REFRESH_S`` and moved meanwhile by this process's own holds and
    settlements. It saves a ledger read per request; it only steers the choice of model
    and the budget header, while the ledger's atomic reserve is what enforces the limit
    (and a refusal based on it is re-checked against the ledger)."""

    def __init__(self) -> None:
        self._views: dict[str, list[Any]] = {}  # team -> [period_key, spent, reserved, read_at]

    def get(self, team: str, key: str) -> Usage | None:
        v = self._views.get(team)
        if v is None or v[0] != key or time.monotonic() - v[3] > USAGE_REFRESH_S:
            return None
        return Usage(v[1], max(0.0, v[2]))

    def put(self, team: str, key: str, usage: Usage) -> None:
        self._views[team] = [key, usage.spent_usd, usage.reserved_usd, time.monotonic()]

    def move(self, team: str, key: str, *, spent: float = 0.0, reserved: float = 0.0) -> None:
        v = self._views.get(team)
        if v is not None and v[0] == key:
            v[1] += spent
            v[2] += reserved


@dataclass
class Plan:
    """What to call, in order, and what has been reserved for it."""

    team: TeamPolicy
    request: ChatRequest
    order: list[str]
    costs: dict[str, float]
    prompt_tokens: int
    period_key: str
    resets_at: datetime | None
    reservation: Reservation | None = None


class RouterService:
    """Owns the scorer engine, the ledger, the upstream client and the decision log."""

    def __init__(
        self,
        config: RouterConfig,
        *,
        ledger_url: str,
        decision_log: str | None = "-",
        engine: Any = None,
        transports: dict[str, Any] | None = None,
        max_body_bytes: int = 8 * 1024 * 1024,
        max_n: int = 16,
        log_prompts: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.ledger_url = ledger_url
        self.decision_log_target = decision_log
        self.engine = engine
        self.transports = transports
        self.max_body_bytes = max_body_bytes
        self.max_n = max_n
        self.log_prompts = log_prompts
        self.clock = clock
        self.metrics = Metrics()
        self.learned_output: dict[str, float] = {}
        self.usage_view = UsageView()
        # (period, timezone) -> (key, start, end, start_ts, end_ts)
        self._periods: dict[
            tuple[str, str], tuple[str, datetime, datetime | None, float, float]
        ] = {}
        self.load_error: str | None = None
        self.ledger: Ledger
        self.upstream: UpstreamClient
        self.decisions: DecisionLog
        self._loader: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.ledger = create_ledger(self.ledger_url)
        self.upstream = UpstreamClient(self.config.catalog, transports=self.transports)
        self.decisions = DecisionLog(self.decision_log_target)
        for name in self.config.catalog.models:
            v = await self.ledger.expected_output_tokens(name)
            if v is not None:
                self.learned_output[name] = v
        self._describe_metrics()
        if self.engine is not None:
            await self.engine.start()
            self._loader = asyncio.create_task(self._warmup())

    async def _warmup(self) -> None:
        try:
            await self.engine.warmup()
            m = self.engine.model
            log.info(
                "P2L model ready: %d models, head %s, on %s", len(m.model_list), m.head, m.device
            )
            # Everything allocated so far (torch, transformers, the model) lives as long as
            # the process: keep the cyclic GC from re-scanning it, which showed up as
            # multi-millisecond pauses in request P99.
            gc.collect()
            gc.freeze()
        except Exception as exc:  # surfaced on /readyz and in 503 messages
            self.load_error = f"warm-up failed: {exc}"
            log.error("P2L warm-up failed: %s", exc)

    async def close(self) -> None:
        if self._loader is not None and not self._loader.done():
            self._loader.cancel()
        if self.engine is not None:
            await self.engine.close()
        await self.upstream.aclose()
        await self.ledger.close()
        self.decisions.close()

    @property
    def ready(self) -> bool:
        return self.engine is not None and bool(getattr(self.engine, "ready", False))

    def require_ready(self) -> Any:
        if not self.ready:
            why = (
                f"the P2L model failed to load: {self.load_error}"
                if self.load_error
                else (
                    "the P2L model is still loading; retry shortly (GET /readyz tells when it is ready)"
                )
            )
            raise NotReadyError(why, headers={"retry-after": "5"})
        return self.engine

    async def reload(self, config: RouterConfig) -> None:
        """Swap in a validated config (SIGHUP); spend lives in the ledger and is kept."""
        old = self.upstream
        self.upstream = UpstreamClient(config.catalog, transports=self.transports)
        self.config = config
        # Let requests in flight on the old client finish before closing it.
        asyncio.get_running_loop().call_later(60, lambda: asyncio.ensure_future(old.aclose()))

    # ------------------------------------------------------------ auth & budget

    def authenticate(self, authorization: str | None) -> TeamPolicy:
        cfg = self.config
        if not cfg.auth_enabled:
            return cfg.teams["default"]
        if not authorization:
            raise AuthenticationError(
                "no API key given; send 'Authorization: Bearer <your team key>'"
            )
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise AuthenticationError(
                "malformed Authorization header; use 'Bearer <your team key>'"
            )
        team = cfg.team_for_key(key.strip())
        if team is None:
            raise AuthenticationError("invalid API key; ask your platform team for a team key")
        return team

    def period(self, team: TeamPolicy) -> tuple[str, datetime, datetime | None]:
        """The team's current budget period: (key, start, end); cached until it ends."""
        b = team.budget
        now = self.clock()
        cached = self._periods.get((b.period, b.timezone))
        if cached is not None and cached[3] <= now < cached[4]:
            return cached[0], cached[1], cached[2]
        dt = datetime.fromtimestamp(now, b.tzinfo)
        start, end = period_bounds(b.period, b.tzinfo, dt)
        key = period_key(b.period, b.tzinfo, dt)
        self._periods[(b.period, b.timezone)] = (
            key,
            start,
            end,
            start.timestamp(),
            end.timestamp() if end else math.inf,
        )
        return key, start, end

    async def budget(self, team: TeamPolicy) -> dict[str, Any]:
        key, start, end = self.period(team)
        u = await self.ledger.usage(team.name, key, now=self.clock())
        limit = team.budget.usd
        return {
            "object": "budget",
            "team": team.name,
            "period": team.budget.period,
            "timezone": team.budget.timezone,
            "period_start": start.isoformat(),
            "resets_at": end.isoformat() if end else None,
            "limit_usd": limit,
            "spent_usd": round(u.spent_usd, 12),
            "reserved_usd": round(u.reserved_usd, 12),
            "remaining_usd": None
            if limit is None
            else round(limit - u.spent_usd - u.reserved_usd, 12),
            "on_exhausted": team.budget.on_exhausted,
            "strategy": team.strategy,
            "cost_sensitivity": team.cost_sensitivity,
        }

    async def read_usage(self, team: str, key: str) -> Usage:
        usage = await self.ledger.usage(team, key, now=self.clock())
        self.usage_view.put(team, key, usage)
        return usage

    def _budget_error(self, plan: Plan, usage: Usage | None, need: float) -> BudgetExceededError:
        team = plan.team
        limit = team.budget.usd or 0.0
        when = f"; it resets at {plan.resets_at.isoformat()}" if plan.resets_at else ""
        have = (
            ""
            if usage is None
            else f" (spent ${usage.spent_usd:.6f}, reserved ${usage.reserved_usd:.6f})"
        )
        return BudgetExceededError(
            f"team '{team.name}' budget of ${limit:g} per {team.budget.period} is exhausted{have}; "
            f"this request needs up to ${need:.6f}{when}"
        )

    # ------------------------------------------------------------ planning

    def count_prompt_tokens(self, messages: list[dict[str, Any]]) -> int:
        return self.count_text_tokens(message_text(messages)) + 4 * len(messages)

    def count_text_tokens(self, text: str) -> int:
        """The scorer's tokenizer when loaded, else about four characters a token."""
        if self.ready:
            return self.engine.model.count_tokens(text)
        return (len(text) + 3) // 4

    def _output_tokens(self, model: ModelConfig, req: ChatRequest) -> int:
        per_choice = expected_output(
            model, req.output_token_limit, self.learned_output.get(model.name)
        )
        return per_choice * (req.n or 1)

    async def plan(self, team: TeamPolicy, req: ChatRequest, rec: DecisionRecord) -> Plan:
        catalog = self.config.catalog
        key, _start, end = self.period(team)
        opts = req.router
        caps = [
            c for c in (team.max_cost_per_request_usd, opts.max_cost_usd if opts else None) if c
        ]
        cap = min(caps) if caps else None
        cached = self.usage_view.get(team.name, key)
        usage = cached or await self.read_usage(team.name, key)
        limit = team.budget.usd
        remaining = None if limit is None else limit - usage.spent_usd - usage.reserved_usd
        rec.budget_remaining_usd = remaining

        if req.model in ROUTER_ALIASES:
            engine = self.require_ready()
            scores = await engine.score(req.messages)
            rec.scoring_ms = scores.scoring_ms
            prompt_tokens = self.count_prompt_tokens(req.messages)
            names = eligible_models(
                scores.models, catalog, team, opts.models if opts else None, req.needs()
            )
            coefs = scores.coef_of()
            cands = make_candidates(
                names,
                coefs,
                head=scores.head,
                catalog=catalog,
                prompt_tokens=prompt_tokens,
                max_tokens=req.output_token_limit,
                learned_output_tokens=self.learned_output,
                choices=req.n or 1,
            )
            strategy = (opts.strategy if opts else None) or team.strategy
            rec.strategy = strategy
            lam = await self.cost_sensitivity(team, usage, key)

            def choose(remaining: float | None) -> Decision:
                return decide(
                    cands,
                    strategy=strategy,
                    cost_sensitivity=lam,
                    cap_usd=cap,
                    budget_remaining_usd=remaining,
                    on_exhausted=team.budget.on_exhausted,
                    seed=opts.seed if opts else None,
                    coefs=coefs,
                    opponent_mix=team.opponent_mix,
                )

            try:
                try:
                    decision = choose(remaining)
                except BudgetExceededError:
                    if cached is None or limit is None:
                        raise
                    fresh = await self.read_usage(team.name, key)  # the view may be stale
                    remaining = limit - fresh.spent_usd - fresh.reserved_usd
                    rec.budget_remaining_usd = remaining
                    decision = choose(remaining)
            except BudgetExceededError as exc:
                when = f"; it resets at {end.isoformat()}" if end else ""
                raise BudgetExceededError(f"team '{team.name}': {exc.message}{when}") from None
            rec.decision = decision
            rec.chosen = decision.chosen
            rec.reason = decision.reason
            order = [c.model for c in decision.ranking]
            costs = {c.model: c.expected_cost_usd for c in decision.ranking}
            return Plan(
                team,
                req,
                order,
                costs,
                prompt_tokens,
                key,
                end,
            )

        model = catalog.models.get(req.model)
        if model is None:
            raise ModelNotFoundError(
                f"model '{req.model}' does not exist; use 'p2l' (or 'auto') to let the router "
                "choose, or a name from GET /v1/models"
            )
        if catalog.available(req.model) is None:
            var = catalog.skipped.get(model.provider, "its key variable")
            raise ModelNotFoundError(
                f"model '{req.model}' is not available: provider '{model.provider}' has no API key "
                f"({var} is unset on the router)"
            )
        if not team.allows(req.model):
            raise ModelNotFoundError(
                f"model '{req.model}' is not allowed for team '{team.name}' (see allow/deny in {team.file})"
            )
        rec.strategy = "direct"
        rec.chosen = req.model
        rec.reason = "requested by name"
        prompt_tokens = self.count_prompt_tokens(req.messages)
        cost = expected_cost_usd(model, prompt_tokens, self._output_tokens(model, req))
        if cap is not None and cost > cap:
            raise NoCandidateError(
                f"expected cost ${cost:.6f} of '{req.model}' is over the cap ${cap:g} per request; "
                "lower max_tokens or raise router.max_cost_usd",
                param="router.max_cost_usd" if opts and opts.max_cost_usd else "max_tokens",
            )
        return Plan(
            team,
            req,
            [req.model],
            {req.model: cost},
            prompt_tokens,
            key,
            end,
        )

    async def cost_sensitivity(self, team: TeamPolicy, usage: Usage, key: str) -> float:
        """The team's λ; with ``budget.pacing`` it adapts so spend tracks the budget."""
        b = team.budget
        if not b.pacing or b.usd is None or b.period == "total":
            return team.cost_sensitivity
        _, start, end = self.period(team)
        state_key = f"pacing:{team.name}"
        state = await self.ledger.get_state(state_key)
        lam, state = paced_lambda(
            state,
            team.cost_sensitivity,
            usage.spent_usd + usage.reserved_usd,
            b.usd,
            start,
            end,
            self.clock(),
        )
        await self.ledger.set_state(state_key, state)
        return lam

    async def reserve(self, plan: Plan, model: str, rec: DecisionRecord) -> None:
        """Hold the expected cost of ``model``; swap any earlier hold of this request."""
        if plan.reservation is not None:
            await self.release(plan)
        amount = plan.costs[model]
        b = plan.team.budget
        try:
            plan.reservation = await self.ledger.reserve(
                plan.team.name,
                amount,
                limit_usd=b.usd,
                period_key=plan.period_key,
                ttl_s=b.reservation_ttl_s,
                now=self.clock(),
                ref=rec.decision_id,
            )
        except InsufficientBudget as exc:
            self.usage_view.put(plan.team.name, plan.period_key, exc.usage)
            raise self._budget_error(plan, exc.usage, amount) from None
        self.usage_view.move(plan.team.name, plan.period_key, reserved=amount)
        rec.expected_cost_usd = amount

    async def reserve_first(self, plan: Plan, rec: DecisionRecord) -> None:
        """Reserve for the chosen model; under ``on_exhausted: cheapest`` a lost race for the
        last of the budget moves to the cheapest candidate that still fits."""
        try:
            await self.reserve(plan, plan.order[0], rec)
        except BudgetExceededError:
            if plan.team.budget.on_exhausted != "cheapest" or len(plan.order) < 2:
                raise
            cheapest = min(plan.order, key=lambda m: (plan.costs[m], m))
            await self.reserve(plan, cheapest, rec)
            plan.order = [cheapest] + [m for m in plan.order if m != cheapest]
            rec.chosen = cheapest
            rec.reason = (
                f"budget nearly exhausted: cheapest candidate {cheapest} instead ({rec.reason})"
            )

    async def settle(
        self,
        plan: Plan,
        model: str,
        usage: dict[str, Any] | None,
        rec: DecisionRecord,
        *,
        streamed: str | None = None,
    ) -> None:
        """Charge the actual cost: the upstream's ``usage``; without it (a stream cut
        short), the prompt plus the ``streamed`` text counted with the scorer's tokenizer;
        without either, what was reserved."""
        cfg = self.config.catalog.models[model]
        pt = ct = None
        if usage:
            pt, ct = usage.get("prompt_tokens"), usage.get("completion_tokens")
        learn = None
        if isinstance(pt, int) and isinstance(ct, int):
            cost = cfg.cost_usd(pt, ct)
            rec.prompt_tokens, rec.completion_tokens = pt, ct
            n = plan.request.n or 1
            # An answer cut at max_tokens says nothing about the model's natural length.
            if plan.request.output_token_limit is None or ct < plan.request.output_token_limit * n:
                learn = max(1, ct // n)
            rec.usage_source = "upstream"
        elif streamed is not None:
            ct = self.count_text_tokens(streamed)
            cost = cfg.cost_usd(plan.prompt_tokens, ct)
            rec.prompt_tokens, rec.completion_tokens = plan.prompt_tokens, ct
            rec.usage_source = "estimated"
        else:
            cost = plan.costs.get(model, 0.0)
            rec.prompt_tokens = plan.prompt_tokens
            rec.usage_source = "reserved"
        rec.cost_usd = cost
        r, plan.reservation = plan.reservation, None
        if r is not None:
            self.usage_view.move(r.team, r.period_key, spent=cost, reserved=-r.amount_usd)
        now, ref = self.clock(), rec.decision_id
        # The learned average starts from the configured expectation, not one answer.
        prior = cfg.expected_output_tokens or DEFAULT_EXPECTED_OUTPUT_TOKENS
        if r is not None and learn is not None:  # one ledger transaction for both
            self.learned_output[model] = await self.ledger.settle_observed(
                r, cost, now=now, ref=ref, model=model, output_tokens=learn, prior=prior
            )
        elif r is not None:
            await self.ledger.settle(r, cost, now=now, ref=ref)
        elif learn is not None:
            self.learned_output[model] = await self.ledger.observe_output_tokens(
                model, learn, prior=prior
            )
        if rec.budget_remaining_usd is not None:
            rec.budget_remaining_usd -= cost
        self.metrics.inc("router_spend_usd_total", cost, team=plan.team.name, model=model)
        self.metrics.inc(
            "router_tokens_total", pt or plan.prompt_tokens, team=plan.team.name, kind="prompt"
        )
        self.metrics.inc("router_tokens_total", ct or 0, team=plan.team.name, kind="completion")

    async def release(self, plan: Plan) -> None:
        if plan.reservation is not None:
            r, plan.reservation = plan.reservation, None
            self.usage_view.move(r.team, r.period_key, reserved=-r.amount_usd)
            await self.ledger.release(r)

    # ------------------------------------------------------------ chat completions

    async def chat(
        self, read_body: Callable[[], Awaitable[bytes]], authorization: str | None
    ) -> Response:
        """One chat completion; ``read_body`` raises BodyTooLargeError past the limit."""
        rec = DecisionRecord(decision_id=new_decision_id())
        plan: Plan | None = None
        streaming = False
        try:
            team = self.authenticate(authorization)
            rec.team = team.name
            data = parse_json_object(await read_body())
            req = parse_chat(data, max_n=self.max_n)
            rec.requested_model = req.model
            rec.stream = req.stream
            if self.log_prompts or team.log_prompts:
                rec.prompt = req.messages
            body = {k: v for k, v in data.items() if k != "router"}
            plan = await self.plan(team, req, rec)
            await self.reserve_first(plan, rec)
            if req.stream:
                resp = await self._open_stream(plan, body, rec)
                streaming = True
                return resp
            return await self._complete(plan, body, rec)
        except RouterError as exc:
            rec.status = exc.status
            rec.error = exc.message
            return self.error_response(exc, rec)
        except PassThrough as p:
            rec.status = p.status
            rec.error = p.message
            return JSONResponse(p.body, status_code=p.status, headers=rec.headers())
        except LedgerError as exc:
            # Without the ledger no budget can be enforced: refuse rather than overspend.
            log.error("ledger unavailable: %s", exc)
            err = NotReadyError(
                "the router cannot reach its spend ledger, so it cannot enforce budgets; "
                "retry shortly",
                code="ledger_unavailable",
                headers={"retry-after": "2"},
            )
            rec.status, rec.error = err.status, err.message
            return self.error_response(err, rec)
        except BaseException as exc:
            rec.status, rec.error = 500, f"internal error: {type(exc).__name__}"
            if isinstance(exc, asyncio.CancelledError):
                rec.status, rec.error = 499, "client disconnected"
            raise
        finally:
            if plan is not None and not streaming:
                with anyio.CancelScope(shield=True):
                    try:
                        await self.release(plan)
                    except LedgerError as exc:  # the hold lapses after its TTL
                        log.error("could not release a reservation: %s", exc)
            if not streaming:
                self.record(rec)

    def error_response(self, exc: RouterError, rec: DecisionRecord | None = None) -> JSONResponse:
        headers = dict(rec.headers()) if rec else {}
        headers.update(exc.headers)
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    def record(self, rec: DecisionRecord) -> None:
        self.decisions.write(rec)
        labels = {"team": rec.team or "", "model": rec.served_by or "", "status": str(rec.status)}
        self.metrics.inc("router_requests_total", **labels)
        self.metrics.observe(
            "router_overhead_seconds", rec.overhead_ms() / 1000, team=rec.team or ""
        )
        if rec.scoring_ms:
            self.metrics.observe("router_scoring_seconds", rec.scoring_ms / 1000)
        for f in rec.fallbacks:
            self.metrics.inc("router_fallbacks_total", model=f["model"], error=str(f["error"]))

    def _failure(self, plan: Plan, model: str, exc: UpstreamFailure, rec: DecisionRecord) -> None:
        if not exc.retryable and exc.status in CLIENT_FAULT_STATUSES:
            raise PassThrough(exc)
        rec.fallbacks.append(
            {
                "model": model,
                "error": str(exc.status) if exc.status else exc.kind,
                "message": exc.message[:300],
            }
        )

    def _all_failed(self, plan: Plan, last: UpstreamFailure | None) -> UpstreamError:
        code = str(last.status) if last and last.status else (last.kind if last else "no_candidate")
        what = (
            "the requested model" if len(plan.order) == 1 else f"all {len(plan.order)} candidates"
        )
        return UpstreamError(
            f"{what} failed upstream; last error: {last.message if last else '?'}", code=code
        )

    async def _attempts(self, plan: Plan, rec: DecisionRecord):  # type: ignore[no-untyped-def]
        """Yield the models to try in order, keeping the reservation on the one being tried."""
        for i, model in enumerate(plan.order):
            if i > 0:
                try:
                    await self.reserve(plan, model, rec)
                except BudgetExceededError:
                    rec.fallbacks.append(
                        {
                            "model": model,
                            "error": "budget_exceeded",
                            "message": "does not fit the budget",
                        }
                    )
                    continue
            yield model

    async def _complete(self, plan: Plan, body: dict[str, Any], rec: DecisionRecord) -> Response:
        last: UpstreamFailure | None = None
        async for model in self._attempts(plan, rec):
            cfg = self.config.catalog.models[model]
            t0 = time.perf_counter()
            try:
                result, _attempts = await self.upstream.complete(cfg, body)
            except UpstreamFailure as exc:
                rec.upstream_ms += (time.perf_counter() - t0) * 1000
                self._failure(plan, model, exc, rec)
                last = exc
                continue
            rec.upstream_ms += (time.perf_counter() - t0) * 1000
            rec.served_by = model
            await self.settle(plan, model, result.get("usage"), rec)
            result["model"] = model
            return JSONResponse(result, headers=rec.headers())
        raise self._all_failed(plan, last)

    async def _open_stream(self, plan: Plan, body: dict[str, Any], rec: DecisionRecord) -> Response:
        last: UpstreamFailure | None = None
        t_start = time.perf_counter()
        async for model in self._attempts(plan, rec):
            cfg = self.config.catalog.models[model]
            t0 = time.perf_counter()
            try:
                stream = await self.upstream.open_stream(cfg, body)
            except UpstreamFailure as exc:
                rec.upstream_ms += (time.perf_counter() - t0) * 1000
                self._failure(plan, model, exc, rec)
                last = exc
                continue
            rec.served_by = model
            headers = {**rec.headers(), **SSE_HEADERS}
            gen = relay_stream(self, plan, model, stream, rec, t0, t_start)
            return StreamingResponse(gen, media_type="text/event-stream", headers=headers)
        raise self._all_failed(plan, last)

    # ------------------------------------------------------------ leaderboard

    async def leaderboard(self, team: TeamPolicy, req: LeaderboardRequest) -> dict[str, Any]:
        from router.scoring.leaderboard import leaderboard_rows, pairwise_matrix

        engine = self.require_ready()
        messages = req.chat_messages()
        scores = await engine.score(messages)
        catalog = self.config.catalog
        prices = price_table(
            catalog,
            [m for m in scores.models if catalog.available(m) and team.allows(m)],
            self.count_prompt_tokens(messages),
            req.max_tokens,
            self.learned_output,
        )
        board: dict[str, Any] = {
            "object": "leaderboard",
            "head": scores.head,
            "eta": scores.eta,
            "team": team.name,
            "scoring_ms": round(scores.scoring_ms, 3),
            "models": leaderboard_rows(scores, prices),
        }
        if req.top_k:
            board["pairwise"] = pairwise_matrix(scores, req.top_k)
        return board

    # ------------------------------------------------------------ metrics

    def _describe_metrics(self) -> None:
        m = self.metrics
        m.describe(
            "router_requests_total", "counter", "Chat requests by team, serving model and status"
        )
        m.describe("router_spend_usd_total", "counter", "Settled spend in USD")
        m.describe("router_tokens_total", "counter", "Tokens billed, by kind")
        m.describe(
            "router_fallbacks_total", "counter", "Candidates skipped after an upstream failure"
        )
        m.describe(
            "router_overhead_seconds", "histogram", "Time spent in the router, upstream excluded"
        )
        m.describe("router_scoring_seconds", "histogram", "P2L scoring time per routed request")
        m.describe("router_ready", "gauge", "1 when the P2L model is loaded and warm")
        m.gauge("router_ready", lambda: {(): 1.0 if self.ready else 0.0})
        m.gauge(
            "router_scorer",
            lambda: {
                (("stat", k),): float(v)
                for k, v in (self.engine.stats() if self.ready else {}).items()
            },
        )
