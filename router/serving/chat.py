"""One chat completion as small steps, with no HTTP types:

authenticate → parse → plan (score, decide) → reserve → forward with fallback → settle
→ record. The result is an :class:`Answer`, a :class:`StreamedAnswer` (chunks as dicts;
the api layer frames them as SSE) or a :class:`Refusal`; the api layer turns each into a
response. Exactly one decision record per request, whatever happens.

The streaming relay (``relay_chunks``, at the end) is part of the flow, not a module of
its own: it sets the flow's task, registers it for shutdown, reads its interruption flag
and settles and records through it, while the flow opens the relay. As two modules that
was a two-way dependency hidden behind ``TYPE_CHECKING``; they are one thing.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from router.config import DEFAULT_EXPECTED_OUTPUT_TOKENS, ModelConfig, TeamPolicy
from router.errors import (
    BudgetExceededError,
    NotReadyError,
    ProviderRejectedError,
    RouterError,
    UpstreamError,
)
from router.ledger import LedgerError, LedgerLost
from router.observability.decisions import DecisionRecord
from router.protocol import ChatRequest, parse_chat, parse_json_object
from router.serving.accounting import Accounts, Charge, ledger_unavailable
from router.serving.generations import Generation
from router.serving.planning import Planner, RoutePlan
from router.serving.results import Answer, Inbound, StreamedAnswer, refusal
from router.serving.tokens import TokenCounter
from router.upstream import UpstreamFailure, UpstreamStream

log = logging.getLogger("router")

# Upstream statuses that mean "the client's request is wrong": passed through, no fallback.
CLIENT_FAULT_STATUSES = frozenset({400, 413, 422})


def new_decision_id() -> str:
    return "dec_" + secrets.token_hex(12)


@dataclass
class ChatParts:
    """What every chat request uses; owned by the service."""

    accounts: Accounts
    planner: Planner
    tokens: TokenCounter
    authenticate: Callable[[Generation, str | None], TeamPolicy]
    record: Callable[[DecisionRecord], None]
    count_attempts: Callable[[str, int], None]  # provider, requests sent
    max_n: int
    log_prompts: bool
    shutting_down: Callable[[], bool]
    streams: set[ChatFlow] = field(default_factory=set)  # streams being relayed now


class ChatFlow:
    """The life of one chat request."""

    def __init__(self, parts: ChatParts, gen: Generation) -> None:
        self.parts = parts
        self.gen = gen
        self.rec = DecisionRecord(decision_id=new_decision_id())
        self.plan: RoutePlan | None = None
        self.interrupted = False  # set by a shutdown whose grace ran out
        self.task: asyncio.Task[Any] | None = None  # the task relaying this stream

    def interrupt(self) -> None:
        """End this stream now (shutdown): the relay emits an error event and settles."""
        if self.task is not None and not self.interrupted:
            self.interrupted = True
            self.task.cancel()

    async def run(self, read_body: Callable[[], Awaitable[bytes]], inbound: Inbound):
        """A :data:`ChatResult`; a stream owns the rest of the request (and its record)."""
        rec, parts = self.rec, self.parts
        self.inbound = inbound
        streaming = False
        try:
            team = parts.authenticate(self.gen, inbound.authorization)
            rec.team = team.name
            data = parse_json_object(await read_body())
            req = parse_chat(data, max_n=parts.max_n)
            rec.requested_model = req.model
            rec.stream = req.stream
            if parts.log_prompts or team.log_prompts:
                rec.prompt = req.messages
            body = {k: v for k, v in data.items() if k != "router"}
            # Rate limit and budget are checked in planning, before anything is scored.
            self.plan = await parts.planner.plan(self.gen.config, team, req, rec, inbound)
            await self._reserve_first(self.plan)
            if req.stream:
                answer = await self._open_stream(self.plan, body)
                streaming = True
                return answer
            return await self._complete(self.plan, body)
        except RouterError as exc:
            rec.status, rec.error = exc.status, self.loggable(exc.message, exc.summary)
            return refusal(exc, rec)
        except LedgerError as exc:
            if not isinstance(exc, LedgerLost):  # a lost ledger is logged once, when found
                log.error("ledger unavailable: %s", exc)
            err = ledger_unavailable(exc)
            rec.status, rec.error = err.status, err.message
            return refusal(err, rec)
        except BaseException as exc:
            self.mark_interrupted(exc)
            raise
        finally:
            if not streaming:
                await self._release()
                parts.record(rec)

    def loggable(self, message: str, summary: str | None) -> str:
        """What the decision log keeps of an error: without prompt logging, the
        prompt-free ``summary`` of one that carries upstream text."""
        return message if summary is None or self.rec.prompt is not None else summary

    def mark_interrupted(self, exc: BaseException) -> None:
        rec = self.rec
        if isinstance(exc, asyncio.CancelledError | GeneratorExit):
            if self.parts.shutting_down():
                rec.status, rec.error = 503, "router shutting down"
            else:
                rec.status, rec.error = 499, "client disconnected"
        else:
            rec.status, rec.error = 500, f"internal error: {type(exc).__name__}"

    async def _release(self) -> None:
        if self.plan is None:
            return
        with anyio.CancelScope(shield=True):
            try:
                await self.parts.accounts.release(self.plan.hold)
            except LedgerError as exc:  # the hold lapses after its TTL
                log.error("could not release a reservation: %s", exc)

    # ------------------------------------------------------------ reserve

    async def _reserve(self, plan: RoutePlan, model: str) -> None:
        amount = plan.expected_cost_usd[model]
        await self.parts.accounts.reserve(plan.hold, amount, ref=self.rec.decision_id)
        self.rec.expected_cost_usd = amount

    async def _reserve_first(self, plan: RoutePlan) -> None:
        """Reserve for the chosen model; under ``on_exhausted: cheapest`` a lost race for the
        last of the budget moves to the cheapest candidate that still fits."""
        try:
            await self._reserve(plan, plan.candidates[0])
        except BudgetExceededError:
            if plan.team.budget.on_exhausted != "cheapest" or len(plan.candidates) < 2:
                raise
            cheapest = min(plan.candidates, key=lambda m: (plan.expected_cost_usd[m], m))
            await self._reserve(plan, cheapest)
            plan.candidates = [cheapest] + [m for m in plan.candidates if m != cheapest]
            self.rec.chosen = cheapest
            self.rec.reason = f"budget nearly exhausted: cheapest candidate {cheapest} instead ({self.rec.reason})"

    # ------------------------------------------------------------ forward with fallback

    async def _each_candidate(self, plan: RoutePlan) -> AsyncIterator[ModelConfig]:
        """The models to try in order, the reservation moved to the one being tried."""
        for i, model in enumerate(plan.candidates):
            if i > 0:
                try:
                    await self._reserve(plan, model)
                except BudgetExceededError:
                    self.rec.fallbacks.append(
                        {"model": model, "error": "budget_exceeded", "message": "does not fit"}
                    )
                    continue
            yield self.gen.config.catalog.models[model]

    def _sent(self, cfg: ModelConfig, attempts: int) -> None:
        self.rec.attempts += attempts
        self.parts.count_attempts(cfg.provider, attempts)

    def _failed(self, cfg: ModelConfig, exc: UpstreamFailure) -> None:
        self._sent(cfg, exc.attempts)
        if not exc.retryable and exc.status in CLIENT_FAULT_STATUSES:
            err = (exc.body or {}).get("error") if isinstance(exc.body, dict) else None
            raise ProviderRejectedError(
                exc.status or 400,
                exc.message,
                err if isinstance(err, dict) else None,
                summary=exc.prompt_free,
            )
        self.rec.fallbacks.append(
            {
                "model": cfg.name,
                "error": str(exc.status) if exc.status else exc.kind,
                "message": self.loggable(exc.message, exc.summary)[:300],
                "attempts": exc.attempts,
                "may_have_arrived": exc.may_have_arrived,
            }
        )

    def _all_failed(self, plan: RoutePlan, last: UpstreamFailure | None) -> UpstreamError:
        code = str(last.status) if last and last.status else (last.kind if last else "no_candidate")
        n = len(plan.candidates)
        what = "the requested model" if n == 1 else f"all {n} candidates"
        head = f"{what} failed upstream; last error: "
        return UpstreamError(
            head + (last.message if last else "?"),
            code=code,
            summary=head + last.prompt_free if last and last.summary else None,
        )

    async def _complete(self, plan: RoutePlan, body: dict[str, Any]) -> Answer:
        rec, last = self.rec, None
        async for cfg in self._each_candidate(plan):
            t0 = time.perf_counter()
            try:
                result, attempts = await self.gen.upstream.complete(cfg, body, plan.request.typed)
            except UpstreamFailure as exc:
                rec.upstream_ms += (time.perf_counter() - t0) * 1000
                self._failed(cfg, exc)
                last = exc
                continue
            rec.upstream_ms += (time.perf_counter() - t0) * 1000
            self._sent(cfg, attempts)
            rec.served_by = cfg.name
            await self.settle(cfg, result.get("usage"))
            result["model"] = cfg.name
            return Answer(result, rec.headers())
        raise self._all_failed(plan, last)

    async def _open_stream(self, plan: RoutePlan, body: dict[str, Any]) -> StreamedAnswer:
        rec, last = self.rec, None
        t_start = time.perf_counter()
        async for cfg in self._each_candidate(plan):
            t0 = time.perf_counter()
            try:
                stream = await self.gen.upstream.open_stream(cfg, body, plan.request.typed)
                first = await self._first_chunk(stream)
            except UpstreamFailure as exc:
                rec.upstream_ms += (time.perf_counter() - t0) * 1000
                self._failed(cfg, exc)
                last = exc
                continue
            if first is not None:
                rec.ttft_ms = (time.perf_counter() - t_start) * 1000
            self._sent(cfg, stream.attempts)
            rec.served_by = cfg.name
            chunks = relay_chunks(self, cfg, stream, first, t0)
            return StreamedAnswer(chunks, rec.headers())
        raise self._all_failed(plan, last)

    @staticmethod
    async def _first_chunk(stream: UpstreamStream) -> dict[str, Any] | None:
        """The stream's first chunk (None: it ended empty), read before the status line
        goes out: a stream that fails before its first chunk (an error event, an event
        over the size limit, no event within ``first_byte``) falls back to the next
        candidate like any other failed call, instead of a 200 with an in-band error."""
        try:
            return await anext(stream, None)
        except UpstreamFailure as exc:
            exc.attempts = stream.attempts  # the stream closed itself
            raise
        except BaseException:
            with anyio.CancelScope(shield=True):
                await stream.aclose()
            raise

    # ------------------------------------------------------------ settle and record

    def charge(
        self, cfg: ModelConfig, usage: dict[str, Any] | None, streamed: str | None
    ) -> Charge:
        """The actual cost: the upstream's ``usage``; without it (a stream cut short), the
        prompt plus the ``streamed`` text counted with the scorer's tokenizer; without
        either, what was reserved."""
        plan = self.plan
        assert plan is not None
        pt = ct = None
        if usage:
            pt, ct = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(pt, int) and isinstance(ct, int):
            n = plan.request.n or 1
            limit = plan.request.output_token_limit
            # An answer cut at max_tokens says nothing about the model's natural length.
            learn = max(1, ct // n) if limit is None or ct < limit * n else None
            cost = cfg.cost_usd(pt, ct, **input_classes(usage, pt))
            return Charge(cost, pt, ct, "upstream", learn)
        if streamed is not None:
            ct = self.parts.tokens.text_tokens(streamed)
            return Charge(cfg.cost_usd(plan.prompt_tokens, ct), plan.prompt_tokens, ct, "estimated")
        cost = plan.expected_cost_usd.get(cfg.name, 0.0)
        return Charge(cost, plan.prompt_tokens, None, "reserved")

    async def settle(
        self, cfg: ModelConfig, usage: dict[str, Any] | None, streamed: str | None = None
    ) -> None:
        plan, rec = self.plan, self.rec
        assert plan is not None
        c = self.charge(cfg, usage, streamed)
        rec.cost_usd, rec.usage_source = c.cost_usd, c.source
        rec.prompt_tokens, rec.completion_tokens = c.prompt_tokens, c.completion_tokens
        # The learned average starts from the configured expectation, not one answer.
        prior = cfg.expected_output_tokens or DEFAULT_EXPECTED_OUTPUT_TOKENS
        await self.parts.accounts.settle(plan.hold, cfg.name, c, ref=rec.decision_id, prior=prior)
        await self.parts.planner.settle_session(
            plan, cfg.name, c.prompt_tokens, c.completion_tokens, rec
        )
        if rec.budget_remaining_usd is not None:
            rec.budget_remaining_usd -= c.cost_usd

    def record(self) -> None:
        self.parts.record(self.rec)

    def request(self) -> ChatRequest:
        assert self.plan is not None
        return self.plan.request


# ---------------------------------------------------------------- streaming
#
# A streamed answer, chunk by chunk as the upstream sends it. Each chunk is renamed to
# the catalog model; the usage chunk (always asked of the upstream) reaches the client
# only if it asked for it; after the stream ends comes the ``router`` chunk (the
# decision). An upstream failure mid-stream becomes an in-band error chunk (the status
# line is long gone); one before the first chunk never gets here (the flow reads that
# chunk first and falls back to the next candidate). Whatever happens, including a
# client that leaves, the spend is settled and the decision recorded exactly once, before
# the last chunk.


async def relay_chunks(
    flow: ChatFlow,
    cfg: ModelConfig,
    stream: UpstreamStream,
    first: dict[str, Any] | None,
    t0: float,
) -> AsyncIterator[dict[str, Any]]:
    """``first``: the chunk already read from ``stream`` (None: the stream ended empty)."""
    rec, model = flow.rec, cfg.name
    wants_usage = flow.request().wants_usage
    usage: dict[str, Any] | None = None
    relayed: list[str] = []  # the answer's text, to estimate its tokens if no usage comes
    last_id, created = None, int(time.time())
    settled = False
    flow.task = asyncio.current_task()
    flow.parts.streams.add(flow)
    chunks = _after(first, stream)
    try:
        try:
            async for chunk in chunks:
                if chunk.get("usage"):
                    usage = chunk["usage"]
                last_id = chunk.get("id", last_id)
                created = chunk.get("created", created)
                if not chunk.get("choices") and "usage" in chunk and not wants_usage:
                    continue
                if not wants_usage:
                    chunk.pop("usage", None)
                for choice in chunk.get("choices") or ():
                    _collect_text(choice.get("delta"), relayed)
                chunk["model"] = model
                yield chunk
        except UpstreamFailure as exc:
            rec.status = 502
            rec.error = flow.loggable(exc.message, exc.summary)
            err = UpstreamError(
                f"the upstream stream from '{model}' broke: {exc.message}", code=exc.kind
            )
            yield err.body()
        except asyncio.CancelledError:
            if not flow.interrupted:
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            rec.status, rec.error = 503, "router shutting down"
            yield NotReadyError(
                "the router is shutting down and ended this stream; the text so far is billed",
                code="shutting_down",
            ).body()
        rec.upstream_ms += (time.perf_counter() - t0) * 1000
        with anyio.CancelScope(shield=True):
            await flow.settle(cfg, usage, "".join(relayed))
        settled = True
        # Recorded before the last chunk goes out: a client that has read [DONE] can rely
        # on the decision being in the log and the spend in the ledger.
        flow.record()
        yield {
            "id": last_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "router": rec.summary(),
        }
    except BaseException as exc:
        if rec.status == 200 and not settled:
            flow.mark_interrupted(exc)
        raise
    finally:
        flow.parts.streams.discard(flow)
        with anyio.CancelScope(shield=True):
            await chunks.aclose()
            await stream.aclose()
            if not settled:
                if rec.upstream_ms == 0:
                    rec.upstream_ms = (time.perf_counter() - t0) * 1000
                await flow.settle(cfg, usage, "".join(relayed))
                flow.record()


async def _after(
    first: dict[str, Any] | None, stream: UpstreamStream
) -> AsyncIterator[dict[str, Any]]:
    if first is not None:
        yield first
    async for chunk in stream:
        yield chunk


def _collect_text(delta: Any, out: list[str]) -> None:
    """Content and tool-call argument text of one streamed delta."""
    if not isinstance(delta, dict):
        return
    content = delta.get("content")
    if isinstance(content, str):
        out.append(content)
    for call in delta.get("tool_calls") or ():
        args = (call.get("function") or {}).get("arguments") if isinstance(call, dict) else None
        if isinstance(args, str):
            out.append(args)


def input_classes(usage: dict[str, Any], prompt_tokens: int) -> dict[str, int]:
    """The cache classes of a chat usage's ``prompt_tokens``: reads
    (``prompt_tokens_details.cached_tokens``) and writes (what the upstream protocol layer
    carries for Anthropic). Writes count first (they cost more than input), reads get what
    is left; counts that are not whole numbers >= 0 count as none."""
    details = usage.get("prompt_tokens_details")
    if not isinstance(details, dict) or prompt_tokens <= 0:
        return {}
    left = prompt_tokens
    out: dict[str, int] = {}
    for key, name in (
        ("cache_write_1h_tokens", "cache_write_1h"),
        ("cache_write_tokens", "cache_write"),
        ("cached_tokens", "cache_read"),
    ):
        v = details.get(key)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            out[name] = min(v, left)
            left -= out[name]
    return out
