"""Planning: which models to call for one chat request, in which order, at what expected
cost. Routed requests are scored by P2L and decided by the team's strategy (pure code in
``router.policy``); a model requested by name is checked and priced.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from router.chat.words import user_messages
from router.config import ROUTER_ALIASES, ModelConfig, RouterConfig, TeamPolicy
from router.errors import (
    BudgetExceededError,
    InvalidRequestError,
    ModelNotFoundError,
    NoCandidateError,
    ScorerUnavailableError,
)
from router.ledger.base import EPSILON_USD, Usage
from router.observability.decisions import DecisionRecord
from router.policy import (
    Candidate,
    Decision,
    check_fits,
    decide,
    eligible_models,
    expected_cost_usd,
    expected_output_tokens,
    make_candidates,
)
from router.protocol import ChatRequest
from router.scoring.types import Scorer, Scores
from router.serving.accounting import Accounts, Hold, Period, budget_exhausted
from router.serving.bills import cache_write_ttl, reservation_usd
from router.serving.results import Inbound
from router.serving.sessions import Sessions, SessionTurn
from router.serving.tokens import TokenCounter
from router.upstream.protocols import unsupported

# The most prompt tokens one request may carry (400 beyond): a bound on the work a single
# body can cause, well above every context window in providers.yaml.
DEFAULT_MAX_PROMPT_TOKENS = 2_000_000


@dataclass
class RoutePlan:
    """What to call, in order, and what this request holds on the team's budget."""

    team: TeamPolicy
    request: ChatRequest
    candidates: list[str]  # models to try, preferred first
    expected_cost_usd: dict[str, float]
    prompt_tokens: int
    hold: Hold
    session: SessionTurn | None = None

    def expected_tokens(self, model: ModelConfig, learned: float | None) -> int:
        """Prompt plus expected output tokens of ``model``, for the tokens-per-minute limit."""
        limit = self.request.output_token_limit
        return self.prompt_tokens + expected_output_tokens(model, limit, learned) * (
            self.request.n or 1
        )


@dataclass(frozen=True)
class _Asked:
    """One request being planned, with what ``plan`` worked out before choosing."""

    config: RouterConfig
    team: TeamPolicy
    req: ChatRequest
    rec: DecisionRecord
    cap: float | None
    hold: Hold
    prompt_tokens: int
    session: SessionTurn | None = field(default=None, compare=False)

    def ranked(self, ranking: Sequence[Candidate]) -> RoutePlan:
        """The plan that tries ``ranking`` in order, each reserved at its expected cost
        (never below the uncached cost: a cache the provider no longer holds must not
        overshoot), or more where the request asks for a cache write (``reserved``)."""
        cached = self.rec.cache_prices or {}
        return RoutePlan(
            self.team,
            self.req,
            [c.model for c in ranking],
            self.reserved(
                {
                    c.model: max(c.expected_cost_usd, cached[c.model].uncached_cost_usd)
                    if c.model in cached
                    else c.expected_cost_usd
                    for c in ranking
                }
            ),  # fmt: skip
            self.prompt_tokens,
            self.hold,
            self.session,
        )

    def reserved(self, expected: dict[str, float]) -> dict[str, float]:
        """The amounts to reserve for these expected costs (router/serving/bills.py): a
        cache write the request asks for is reserved at its price, so the settle of a
        request that writes the cache stays within its hold. The request is read for
        ``cache_control`` only where a model prices a write above its input."""
        models = self.config.catalog.models
        if not any(_writes_above_input(models[m], self.prompt_tokens) for m in expected):
            return expected
        ttl = cache_write_ttl(self.req.typed())
        return {
            m: reservation_usd(models[m], self.prompt_tokens, usd, ttl)
            for m, usd in expected.items()
        }


def _writes_above_input(cfg: ModelConfig, prompt_tokens: int) -> bool:
    p = cfg.tier(prompt_tokens)
    writes = (p.cache_write_usd_per_mtok, p.cache_write_1h_usd_per_mtok)
    return any(w is not None and w > p.input_usd_per_mtok for w in writes)


class Planner:
    def __init__(
        self,
        accounts: Accounts,
        tokens: TokenCounter,
        scorer: Callable[[], Scorer],
        *,
        max_prompt_tokens: int = DEFAULT_MAX_PROMPT_TOKENS,
        circuit_states: Callable[[], Mapping[str, str]] | None = None,
    ) -> None:
        self.max_prompt_tokens = max_prompt_tokens
        self.sessions = Sessions(lambda: accounts.ledger, accounts.clock, circuit_states)
        self._models_of: RouterConfig | None = None
        self._team_models: dict[str, list[ModelConfig]] = {}
        self.accounts = accounts
        self.tokens = tokens
        self.scorer = scorer  # the ready scoring engine, or NotReadyError

    async def plan(
        self,
        config: RouterConfig,
        team: TeamPolicy,
        req: ChatRequest,
        rec: DecisionRecord,
        inbound: Inbound | None = None,
    ) -> RoutePlan:
        inbound = inbound or Inbound()
        period = self.accounts.period(team)
        usage, from_view = await self.accounts.usage(team.name, period)
        limit = team.budget.usd
        rec.budget_remaining_usd = (
            None if limit is None else limit - usage.spent_usd - usage.reserved_usd
        )
        opts = req.router
        caps = [
            c for c in (team.max_cost_per_request_usd, opts.max_cost_usd if opts else None) if c
        ]
        cap = min(caps) if caps else None
        hold = Hold(team, period)
        prompt_tokens = await self.count_prompt(req.messages)
        session = await self.sessions.open(
            team,
            req,
            rec,
            front=inbound.front,
            header=inbound.session_header,
            previous_session=inbound.previous_session,
        )
        asked = _Asked(config, team, req, rec, cap, hold, prompt_tokens, session)
        if req.model not in ROUTER_ALIASES:
            plan = self._direct(asked)
            model = config.catalog.models[req.model]
            learned = self.accounts.learned_output.get(model.name)
            await self.accounts.take_rate(team, plan.expected_tokens(model, learned))
            return plan
        # Limits before scoring: a team over its rate limit or out of budget gets its 429
        # without costing a P2L forward pass (the budget is checked again, at the chosen
        # model's expected cost, when deciding and when reserving).
        await self.accounts.take_rate(team, prompt_tokens + self._output_bound(config, team, req))
        if limit is not None:
            usage, from_view = await self._check_floor(
                team, period, (usage, from_view), prompt_tokens, config
            )
            rec.budget_remaining_usd = limit - usage.spent_usd - usage.reserved_usd

        scorer = self.scorer()
        try:
            scores = await scorer.score(scoring_messages(req, inbound.front))
        except ScorerUnavailableError as exc:
            if team.on_scorer_down == "reject":
                raise
            return self._scorer_down(asked, scorer, exc)
        rec.scoring_ms = scores.scoring_ms
        cands, coefs = self.candidates(config, team, req, scores, prompt_tokens)
        cands = self.sessions.price(
            session, config, req, cands, prompt_tokens, self.accounts.learned_output, rec
        )
        strategy = (opts.strategy if opts else None) or team.strategy
        rec.strategy = strategy
        lam = await self.accounts.cost_sensitivity(team, usage, period)

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
                decision = choose(rec.budget_remaining_usd)
            except BudgetExceededError:
                if not from_view or limit is None:
                    raise
                fresh = await self.accounts.read_usage(team.name, period)  # the view was stale
                rec.budget_remaining_usd = limit - fresh.spent_usd - fresh.reserved_usd
                decision = choose(rec.budget_remaining_usd)
        except BudgetExceededError as exc:
            when = f"; it resets at {period.end.isoformat()}" if period.end else ""
            raise BudgetExceededError(f"team '{team.name}': {exc.message}{when}") from None
        decision = self.sessions.steer(
            session,
            decision,
            cands,
            config,
            lambda m: self.why_ineligible(config, team, req, scores, prompt_tokens, m),
        )
        rec.decision = decision
        rec.chosen = decision.chosen
        rec.reason = decision.reason
        return asked.ranked(decision.ranking)

    def settle_session(
        self,
        plan: RoutePlan,
        model: str,
        prompt_tokens: int | None,
        output_tokens: int | None,
        rec: DecisionRecord,
    ) -> None:
        """After settle: the served turn becomes the session's last (and is logged)."""
        if plan.session is not None:
            self.sessions.settled(plan.session, model, prompt_tokens, output_tokens, rec)

    def why_ineligible(
        self,
        config: RouterConfig,
        team: TeamPolicy,
        req: ChatRequest,
        scores: Scores,
        prompt_tokens: int,
        model: str,
    ) -> str:
        """Why ``model`` is not a candidate for this request, in words (sticky's reason)."""
        if model not in scores.models:
            return f"{model} is not in the P2L model list"
        try:
            names = self._eligible(config, team, req, [model], prompt_tokens)
        except (NoCandidateError, InvalidRequestError) as exc:
            return f"{model} cannot take this request: {exc.message}"
        return f"{model} is not eligible" if names else f"{model} cannot take this request"

    async def count_prompt(self, messages: list[dict[str, Any]]) -> int:
        """The prompt's tokens (off the event loop when large), refused (400) over the
        router's ``--max-prompt-tokens``: every endpoint that scores calls this first."""
        prompt_tokens = await self.tokens.count_prompt(messages)
        if prompt_tokens > self.max_prompt_tokens:
            raise InvalidRequestError(
                f"the prompt is about {prompt_tokens} tokens; this router takes at most "
                f"{self.max_prompt_tokens} per request",
                param="messages",
            )
        return prompt_tokens

    def team_models(self, config: RouterConfig, team: TeamPolicy) -> list[ModelConfig]:
        """The models the team may be routed to (allowed, with a key), per config."""
        if self._models_of is not config:
            self._models_of, self._team_models = config, {}
        got = self._team_models.get(team.name)
        if got is None:
            available = config.catalog.available_models()
            got = [m for name, m in sorted(available.items()) if team.allows(name)]
            self._team_models[team.name] = got
        return got

    def _output_bound(self, config: RouterConfig, team: TeamPolicy, req: ChatRequest) -> int:
        """Output tokens to count against the tokens-per-minute limit before the model is
        known: the request's own limit, else the most any of the team's models expects."""
        limit, learned = req.output_token_limit, self.accounts.learned_output
        models = self.team_models(config, team)
        per = max(
            (expected_output_tokens(m, limit, learned.get(m.name)) for m in models),
            default=limit or 0,
        )
        return per * (req.n or 1)

    async def _check_floor(
        self,
        team: TeamPolicy,
        period: Period,
        seen: tuple[Usage, bool],
        prompt_tokens: int,
        config: RouterConfig,
    ) -> tuple[Usage, bool]:
        """Refuse (429) before scoring when the budget left cannot pay even the cheapest
        of the team's models for the prompt alone; returns the usage it judged by and
        whether that came from this process's view."""
        usage, from_view = seen
        models = self.team_models(config, team)
        if not models:
            return seen  # no candidate at all: the 400 naming why comes later
        floor = min(expected_cost_usd(m, prompt_tokens, 0) for m in models)
        limit = team.budget.usd or 0.0
        if floor <= limit - usage.spent_usd - usage.reserved_usd + EPSILON_USD:
            return seen
        if from_view:  # this process's view may be stale: ask the ledger
            usage = await self.accounts.read_usage(team.name, period)
            if floor <= limit - usage.spent_usd - usage.reserved_usd + EPSILON_USD:
                return usage, False
        raise budget_exhausted(team, period, usage, floor)

    def candidates(
        self,
        config: RouterConfig,
        team: TeamPolicy,
        req: ChatRequest,
        scores: Scores,
        prompt_tokens: int,
    ) -> tuple[list[Candidate], dict[str, float]]:
        """The team's candidates for this scored request, priced; and the coefs by model.
        NoCandidateError when none is eligible."""
        coefs = scores.coef_of()
        cands = self._priced(config, team, req, scores.models, coefs, scores.head, prompt_tokens)
        return cands, coefs

    def _priced(
        self,
        config: RouterConfig,
        team: TeamPolicy,
        req: ChatRequest,
        models: Sequence[str],
        coefs: Mapping[str, float],
        head: str,
        prompt_tokens: int,
    ) -> list[Candidate]:
        names = self._eligible(config, team, req, models, prompt_tokens)
        return make_candidates(
            names,
            coefs,
            head=head,
            catalog=config.catalog,
            prompt_tokens=prompt_tokens,
            max_tokens=req.output_token_limit,
            learned_output_tokens=self.accounts.learned_output,
            choices=req.n or 1,
        )

    def _eligible(
        self,
        config: RouterConfig,
        team: TeamPolicy,
        req: ChatRequest,
        models: Sequence[str],
        prompt_tokens: int,
    ) -> list[str]:
        opts = req.router
        names = eligible_models(
            models,
            config.catalog,
            team,
            opts.models if opts else None,
            req.needs(),
            prompt_tokens=prompt_tokens,
            max_tokens=req.output_token_limit,
            learned_output_tokens=self.accounts.learned_output,
        )
        return expressible(config, req, names)

    def _scorer_down(self, asked: _Asked, scorer: Scorer, exc: ScorerUnavailableError) -> RoutePlan:
        """No scores (the remote engine is down): the team's ``on_scorer_down`` picks,
        cheapest first or its named model first, within the cap and the budget."""
        config, team, req, rec, cap = asked.config, asked.team, asked.req, asked.rec, asked.cap
        mode = team.on_scorer_down
        names = list(scorer.model.model_list)
        if mode != "cheapest" and mode not in names and mode in config.catalog.models:
            names.append(mode)  # a named fallback may be a model P2L does not rank
        cands = self._priced(
            config, team, req, names, dict.fromkeys(names, 0.0), "bt", asked.prompt_tokens
        )
        left = rec.budget_remaining_usd
        fits = [
            c
            for c in cands
            if (cap is None or c.expected_cost_usd <= cap)
            and (left is None or c.expected_cost_usd <= left)
        ]
        if not fits:
            raise BudgetExceededError(
                f"team '{team.name}': the scorer is down and no candidate's expected cost "
                "fits the cap and the budget left"
            )
        order = sorted(fits, key=lambda c: (c.expected_cost_usd, c.model))
        named = [c for c in order if c.model == mode]
        ranking: list[Candidate] = named + [c for c in order if c.model != mode]
        why = f"model {mode} first" if named else "cheapest first"
        if mode != "cheapest" and not named:
            why += f" ({mode} is not eligible for this request)"
        rec.strategy = f"on_scorer_down:{mode}" if mode == "cheapest" else "on_scorer_down:model"
        rec.reason = f"scorer unavailable ({exc.message}); on_scorer_down: {why}"
        rec.chosen = ranking[0].model
        rec.decision = Decision(
            strategy=rec.strategy,
            chosen=rec.chosen,
            ranking=tuple(ranking),
            reason=rec.reason,
            runner_up=ranking[1].model if len(ranking) > 1 else None,
        )
        return asked.ranked(ranking)

    def _direct(self, asked: _Asked) -> RoutePlan:
        team, req, rec, cap, prompt_tokens = (
            asked.team,
            asked.req,
            asked.rec,
            asked.cap,
            asked.prompt_tokens,
        )
        catalog = asked.config.catalog
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
                f"model '{req.model}' is not allowed for team '{team.name}' "
                f"(see allow/deny in its team file, {PurePath(team.file or '').name or team.name})"
            )
        expressible(asked.config, req, [req.model])
        rec.strategy = "direct"
        rec.chosen = req.model
        rec.reason = "requested by name"
        learned = self.accounts.learned_output.get(model.name)
        per_choice = expected_output_tokens(model, req.output_token_limit, learned)
        check_fits(model, prompt_tokens, per_choice)
        output = per_choice * (req.n or 1)
        cost = expected_cost_usd(model, prompt_tokens, output)
        if cap is not None and cost > cap:
            raise NoCandidateError(
                f"expected cost ${cost:.6f} of '{req.model}' is over the cap ${cap:g} per request; "
                "lower max_tokens or raise router.max_cost_usd",
                param="router.max_cost_usd"
                if req.router and req.router.max_cost_usd
                else "max_tokens",
            )
        return RoutePlan(
            team, req, [req.model], asked.reserved({req.model: cost}), prompt_tokens,
            asked.hold, asked.session,
        )  # fmt: skip


def expressible(config: RouterConfig, req: ChatRequest, names: list[str]) -> list[str]:
    """The candidates whose provider's protocol can express the request; a field that
    changes the answer is never dropped to reach one. None left: a 400 naming the field."""
    catalog = config.catalog
    if req.front == "openai-chat" and all(
        p.api == "openai-chat" for p in catalog.providers.values()
    ):
        return names  # the common case, checked per provider rather than per candidate
    api_of = {n: catalog.providers[catalog.models[n].provider].api for n in names}
    typed = req.typed()
    missing = {api: unsupported(api, typed) for api in set(api_of.values())}
    keep = [n for n in names if not missing[api_of[n]]]
    if names and not keep:
        u = next(u for found in missing.values() for u in found)
        raise InvalidRequestError(
            f"'{u.field}' cannot be sent to {'this model' if len(names) == 1 else 'any candidate'}"
            f" ({u.protocol}: {u.why})",
            param=u.field,
        )
    return keep


def scoring_messages(req: ChatRequest, front: str) -> list[dict[str, Any]]:
    """The scorer's messages: the chat body's own (the scorer keeps user turns' text
    only, so tool results and tool-call arguments never reach it), or, from another
    front, the user's words taken from the typed request (router/chat/words.py)."""
    if front == "openai-chat":
        return req.messages
    return user_messages(req.typed())
