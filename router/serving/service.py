"""The router service: owns the scorer engine, the ledger, the config generations (each
with its upstream client) and the decision log; created and closed by the app's lifespan.

The chat pipeline itself is in :mod:`router.serving.chat`; this module wires its parts,
answers the small endpoints (budget, leaderboard), and runs the lifecycle: warm-up,
readiness, reload, graceful shutdown.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio

from router.auth import bearer_key
from router.config import RouterConfig, TeamPolicy
from router.errors import AuthenticationError, NotReadyError, RouterError
from router.ledger import Ledger, LedgerError, SettlementJournal, create_ledger
from router.ledger.history import DEFAULT_RETENTION_DAYS
from router.ledger.journal_slots import open_journal
from router.observability import DecisionLog, DecisionRecord, RouterMetrics
from router.observability.history import DecisionHistory
from router.policy import price_table
from router.protocol import LeaderboardRequest, parse_json_object
from router.scoring.types import Scorer
from router.serving import fronts
from router.serving.accounting import Accounts
from router.serving.chat import ChatFlow, ChatParts
from router.serving.generations import Generation, Generations
from router.serving.planning import DEFAULT_MAX_PROMPT_TOKENS, Planner
from router.serving.results import Answer, ChatResult, Inbound, StreamedAnswer, refusal
from router.serving.stored import ResponseStore, StoreConfig
from router.serving.tokens import TokenCounter
from router.upstream import UpstreamClient

log = logging.getLogger("router")

# How often settlements waiting in the journal are offered to the ledger again.
JOURNAL_REPLAY_INTERVAL_S = 1.0
# How long /readyz waits for the ledger's epoch before answering without it.
READYZ_LEDGER_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class RequestLimits:
    """Bounds on one request, each a named setting."""

    max_body_bytes: int = 8 * 1024 * 1024  # 413 above
    max_n: int = 16  # 400 above
    max_prompt_tokens: int = DEFAULT_MAX_PROMPT_TOKENS  # 400 above


DEFAULT_LIMITS = RequestLimits()


@dataclass(frozen=True)
class ServiceOptions:
    """Where the service keeps its state and what it records (see ``RouterService``)."""

    ledger_url: str
    journal_path: str
    decision_log: str | None
    transports: dict[str, Any] | None
    log_prompts: bool
    decision_history: bool
    decision_retention_days: float
    response_store: StoreConfig


class RouterService:
    def __init__(
        self,
        config: RouterConfig,
        *,
        ledger_url: str,
        decision_log: str | None = "-",
        engine: Scorer | None = None,
        transports: dict[str, Any] | None = None,
        limits: RequestLimits = DEFAULT_LIMITS,
        log_prompts: bool = False,
        journal_path: str | None = None,
        clock: Callable[[], float] = time.time,
        decision_history: bool = True,
        decision_retention_days: float = DEFAULT_RETENTION_DAYS,
        response_store: StoreConfig = StoreConfig(),
    ) -> None:
        self.initial_config = config
        self.engine = engine
        self.limits = limits
        self.clock = clock
        self.options = ServiceOptions(
            ledger_url=ledger_url,
            journal_path=journal_path or default_journal_path(ledger_url),
            decision_log=decision_log,
            transports=transports,
            log_prompts=log_prompts,
            decision_history=decision_history,
            decision_retention_days=decision_retention_days,
            response_store=response_store,
        )
        self.history: DecisionHistory | None = None
        self.metrics = RouterMetrics()
        self.load_error: str | None = None
        self.tokens = TokenCounter(self._tokenizer)
        self.shutting_down = False
        self.ledger: Ledger
        self.journal: SettlementJournal
        self.accounts: Accounts
        self.planner: Planner
        self.responses: ResponseStore
        self.generations: Generations
        self.decisions: DecisionLog
        self._parts: ChatParts
        self._loader: asyncio.Task[None] | None = None
        self._drainer: asyncio.Task[None] | None = None

    @property
    def config(self) -> RouterConfig:
        return self.generations.current.config

    @property
    def scorer_key(self) -> str | None:
        """The remote scoring engine's key, one more secret to keep out of what teams see."""
        return self.engine.api_key if self.engine is not None else None

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        limits = self.limits
        self.loop = asyncio.get_running_loop()
        opts = self.options
        self.ledger = create_ledger(opts.ledger_url)
        await self.ledger.check_epoch()  # adopt the store's epoch before any money moves
        # A slot of its own; the drain below also adopts the slots of dead processes.
        self.journal = await asyncio.to_thread(open_journal, opts.journal_path)
        if self.journal.pending_count():
            log.warning(
                "journal %s holds %d settlement(s) the ledger has not taken; replaying",
                self.journal.path,
                self.journal.pending_count(),
            )
            await self.journal.replay(self.ledger)
        self._drainer = asyncio.create_task(
            self.journal.drain_forever(self.ledger, JOURNAL_REPLAY_INTERVAL_S)
        )
        self.accounts = Accounts(self.ledger, self.journal, self.clock)
        self.responses = ResponseStore(
            self.ledger, opts.response_store, self.clock, self.metrics.count_stored_response
        )
        await self.accounts.sync_periods(self.initial_config.teams.values())
        self.generations = Generations(
            self.initial_config,
            lambda c: UpstreamClient(
                c.catalog, transports=opts.transports, redactor=c.redactor(self.scorer_key)
            ),
        )
        self.decisions = DecisionLog(opts.decision_log)
        if opts.decision_history:
            self.history = DecisionHistory(
                self.ledger,
                retention_s=opts.decision_retention_days * 86400.0,
                clock=self.clock,
                on_drop=self.metrics.count_history_dropped,
            )
            self.history.start()
        await self.accounts.load_learned_output(self.initial_config.catalog.models)
        self.planner = Planner(
            self.accounts,
            self.tokens,
            self.require_ready,
            max_prompt_tokens=limits.max_prompt_tokens,
            circuit_states=lambda: self.generations.current.upstream.circuit_states(),
        )
        self._parts = ChatParts(
            accounts=self.accounts,
            planner=self.planner,
            tokens=self.tokens,
            authenticate=lambda gen, auth: authenticate(gen.config, auth),
            record=self.record,
            count_attempts=self.metrics.record_attempts,
            max_n=limits.max_n,
            log_prompts=opts.log_prompts,
            shutting_down=lambda: self.shutting_down,
            responses=self.responses,
        )
        self.metrics.set_callbacks(
            ready=lambda: self.ready,
            scorer_stats=lambda: self.engine.stats() if self.ready else None,
            circuit_states=lambda: self.generations.current.upstream.circuit_states(),
            journal_pending=self.journal.pending_count,
            decision_log_lost=lambda: self.decisions.lost,
            ledger_lost=lambda: self.ledger.lost is not None,
        )
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
        if self._drainer is not None:
            self._drainer.cancel()
        if self.engine is not None:
            await self.engine.close()
        await self.planner.sessions.drain()  # turns recorded after their answers went out
        await self.generations.close()
        if self.history is not None:
            await self.history.close()
        if self.journal.pending_count():
            await self.journal.replay(self.ledger)  # one last try; what is left stays on disk
        self.journal.close()
        await self.ledger.close()
        await asyncio.to_thread(self.decisions.close)

    async def ledger_lost(self) -> str | None:
        """Why the ledger refuses money (it lost its memory), after reading its epoch again;
        None when it does not. An unreachable ledger is not reported here: requests get
        their 503 one by one, and the router stays ready to answer when it is back."""
        try:  # bounded: a probe must not hang on a frozen Redis (or fill its pool)
            await asyncio.wait_for(self.ledger.check_epoch(), READYZ_LEDGER_TIMEOUT_S)
        except (LedgerError, TimeoutError) as exc:
            log.debug("ledger epoch not checked: %r", exc)
        lost = self.ledger.lost
        if lost is None:
            return None
        return (
            f"the spend ledger lost its data: {lost.reason}; requests that need it are refused "
            "until an operator runs 'p2l-router ledger ack-reset' (see the router's log)"
        )

    @property
    def ready(self) -> bool:
        return self.engine is not None and self.engine.ready

    def require_ready(self) -> Scorer:
        if not self.ready:
            why = (
                f"the P2L model failed to load: {self.load_error}"
                if self.load_error
                else "the P2L model is still loading; retry shortly "
                "(GET /readyz tells when it is ready)"
            )
            raise NotReadyError(why, headers={"retry-after": "5"})
        assert self.engine is not None
        return self.engine

    def _tokenizer(self) -> Callable[[str], int] | None:
        return self.engine.model.count_tokens if self.ready else None

    def begin_shutdown(self, grace_s: float) -> None:
        """Stop taking chat requests' streams past ``grace_s``: requests in flight finish
        within the grace, streams still running then are ended in-band and settled."""
        if self.shutting_down:
            return
        self.shutting_down = True
        log.info(
            "shutting down: %d request(s) in flight have %gs to finish",
            self.generations.in_flight,
            grace_s,
        )
        asyncio.get_running_loop().call_later(grace_s, self.interrupt_streams)

    def interrupt_streams(self) -> None:
        for flow in list(self._parts.streams):
            flow.interrupt()

    async def reload(self, config: RouterConfig) -> None:
        """Swap in a validated config (SIGHUP); requests in flight keep the one they
        started with, and spend lives in the ledger. A team whose budget period changed
        carries its current spend into the new period."""
        await self.accounts.sync_periods(config.teams.values())
        await self.generations.swap(config)

    # ------------------------------------------------------------ requests

    def authenticate(self, authorization: str | None) -> TeamPolicy:
        return authenticate(self.config, authorization)

    async def chat(self, read_body: Callable[[], Awaitable[bytes]], inbound: Inbound) -> ChatResult:
        """One chat request on any front; ``read_body`` raises BodyTooLargeError past
        the limit."""
        gen = self.generations.enter()
        result: ChatResult | None = None
        try:
            result = await ChatFlow(self._parts, gen).run(read_body, inbound)
            if isinstance(result, StreamedAnswer):
                result.chunks = self._leaving_after(gen, result.chunks)
            return result
        finally:
            if not isinstance(result, StreamedAnswer):
                with anyio.CancelScope(shield=True):
                    await self.generations.leave(gen)

    async def _leaving_after(
        self, gen: Generation, chunks: AsyncIterator[dict[str, Any]]
    ) -> AsyncIterator[dict[str, Any]]:
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            with anyio.CancelScope(shield=True):
                await chunks.aclose()  # type: ignore[attr-defined]
                await self.generations.leave(gen)

    async def count_tokens(
        self, read_body: Callable[[], Awaitable[bytes]], inbound: Inbound
    ) -> ChatResult:
        """``POST /v1/messages/count_tokens``: ``{"input_tokens": N}`` for a Messages
        request (``max_tokens`` may be left out), counted with the router's tokenizer
        (the P2L model's; about four characters a token while it loads), off the event
        loop when large. It is the router's count, not the provider's: a provider's own
        tokenizer and framing give a different number. Nothing is sent upstream, nothing
        is billed and no rate limit is taken."""
        try:
            authenticate(self.config, inbound.authorization)
            data = parse_json_object(await read_body())
            data.setdefault("max_tokens", 1)  # count_tokens takes no max_tokens
            data.pop("stream", None)
            typed = fronts.ANTHROPIC.decode_request(data)
            text, units = fronts.input_text(typed)
            n = await self._parts.tokens.count_text(text, units)
        except RouterError as exc:
            return refusal(exc)
        return Answer({"input_tokens": n}, {})

    async def admit(self, team: TeamPolicy | None, messages: list[dict[str, Any]]) -> int:
        """Before any endpoint scores a prompt: its tokens counted off the event loop and
        held to ``--max-prompt-tokens``, and the call counted against the team's rate
        limit (``team`` None: the admin key, which no team's limit covers)."""
        prompt_tokens = await self.planner.count_prompt(messages)
        if team is not None:
            await self.accounts.take_rate(team, prompt_tokens)
        return prompt_tokens

    async def budget(self, team: TeamPolicy) -> dict[str, Any]:
        return await self.accounts.budget_report(team)

    async def leaderboard(self, team: TeamPolicy, req: LeaderboardRequest) -> dict[str, Any]:
        from router.scoring.leaderboard import leaderboard_rows, pairwise_matrix

        engine = self.require_ready()
        messages = req.chat_messages()
        prompt_tokens = await self.admit(team, messages)
        scores = await engine.score(messages)
        catalog = self.config.catalog
        prices = price_table(
            catalog,
            [m for m in scores.models if catalog.available(m) and team.allows(m)],
            prompt_tokens,
            req.max_tokens,
            self.accounts.learned_output,
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

    # ------------------------------------------------------------ observability

    def record(self, rec: DecisionRecord) -> None:
        line = rec.log_line()
        # Upstream text was scrubbed where it came in; this is the second lock on the door
        # of everything a team can read (log, history, admin API, console).
        redactor = self.generations.current.upstream.redactor
        for key in ("error", "fallbacks"):
            if line.get(key):
                line[key] = redactor.value(line[key])
        self.decisions.write_line(line)
        if self.history is not None:
            self.history.offer(line)
        m = self.metrics
        m.record_request(
            rec.team,
            rec.served_by,
            rec.status,
            rec.overhead_ms() / 1000,
            rec.scoring_ms / 1000 if rec.scoring_ms else None,
            rec.upstream_ms / 1000 if rec.attempts else None,
            [(f["model"], str(f["error"])) for f in rec.fallbacks],
        )
        if rec.cost_usd is not None and rec.served_by:
            m.record_spend(
                rec.team, rec.served_by, rec.cost_usd, rec.prompt_tokens, rec.completion_tokens
            )


def default_journal_path(ledger_url: str) -> str:
    """Beside a SQLite ledger file; for Redis (or memory), in the working folder."""
    if ledger_url.startswith("sqlite:///") and ":memory:" not in ledger_url:
        return ledger_url.removeprefix("sqlite:///").partition("?")[0] + ".journal"
    return "p2l-router.journal"


def authenticate(cfg: RouterConfig, authorization: str | None) -> TeamPolicy:
    if not cfg.auth_enabled:
        return cfg.teams["default"]
    if not authorization:
        raise AuthenticationError("no API key given; send 'Authorization: Bearer <your team key>'")
    key = bearer_key(authorization)
    if key is None:
        raise AuthenticationError("malformed Authorization header; use 'Bearer <your team key>'")
    team = cfg.team_for_key(key)
    if team is None:
        raise AuthenticationError("invalid API key; ask your platform team for a team key")
    return team
