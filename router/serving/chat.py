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

from router.chat.codecs import Frame
from router.chat.codecs.openai_chat.answer import PARTIAL_MARK, encode_usage, without_marks
from router.chat.model import (
    Finish,
    StreamStart,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageEvent,
)
from router.chat.model import Text as TextPart
from router.config import DEFAULT_EXPECTED_OUTPUT_TOKENS, ModelConfig, TeamPolicy
from router.errors import (
    BudgetExceededError,
    NotFoundError,
    NotReadyError,
    ProviderRejectedError,
    RouterError,
    UpstreamError,
)
from router.ledger import LedgerError, LedgerLost
from router.observability.decisions import DecisionRecord
from router.protocol import ChatRequest, parse_chat, parse_json_object
from router.serving import fronts
from router.serving.accounting import Accounts, Charge, ledger_unavailable
from router.serving.bills import bill, full_input_cost
from router.serving.generations import Generation
from router.serving.planning import Planner, RoutePlan
from router.serving.results import Answer, Inbound, StreamedAnswer, refusal
from router.serving.stored import ResponseStore, input_items, new_response_id, store_flag
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
    responses: ResponseStore | None = None  # stored responses (the Responses front)


@dataclass(slots=True)
class ResponsesTurn:
    """A Responses-front request's part in the stored conversation: the id the router
    minted for its answer, whether to store it, its own input items and the response
    it continues (router/serving/stored.py)."""

    response_id: str
    store: bool
    own_input: list[dict[str, Any]]
    previous_id: str | None


class ChatFlow:
    """The life of one chat request."""

    def __init__(self, parts: ChatParts, gen: Generation) -> None:
        self.parts = parts
        self.gen = gen
        self.rec = DecisionRecord(decision_id=new_decision_id())
        self.plan: RoutePlan | None = None
        self.interrupted = False  # set by a shutdown whose grace ran out
        self.task: asyncio.Task[Any] | None = None  # the task relaying this stream
        self.inbound = Inbound()
        self.recorded = self.concluded = False
        self.turn: ResponsesTurn | None = None

    @property
    def typed_front(self) -> bool:
        """The client speaks another protocol than chat: answers and stream events come
        back from the upstream client as the typed model, for the front's codec."""
        return self.inbound.front != "openai-chat"

    @property
    def anthropic_headers(self) -> tuple[str | None, str | None] | None:
        """The client's ``anthropic-version`` and ``anthropic-beta``, for an Anthropic
        upstream (None when it sent neither: the common case costs nothing)."""
        i = self.inbound
        if i.anthropic_version is None and i.anthropic_beta is None:
            return None
        return i.anthropic_version, i.anthropic_beta

    def interrupt(self) -> None:
        """End this stream now (shutdown): the relay emits an error event and settles."""
        if self.task is not None and not self.interrupted:
            self.interrupted = True
            self.task.cancel()

    async def run(self, read_body: Callable[[], Awaitable[bytes]], inbound: Inbound):
        """A :data:`ChatResult`; a stream owns the rest of the request (and its record)."""
        rec, parts = self.rec, self.parts
        self.inbound = inbound
        rec.front = inbound.front
        streaming = False
        try:
            team = parts.authenticate(self.gen, inbound.authorization)
            rec.team = team.name
            data = parse_json_object(await read_body())
            if inbound.front == "openai-responses":
                await self._continue_conversation(team, data)
            if inbound.front == "openai-chat":
                req = parse_chat(data, max_n=parts.max_n)
                body = {k: v for k, v in data.items() if k != "router"}
            else:
                req, body = fronts.decode(inbound.front, data, max_n=parts.max_n)
            rec.requested_model = req.model
            rec.stream = req.stream
            if parts.log_prompts or team.log_prompts:
                rec.prompt = req.messages
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
                self.record()

    async def _continue_conversation(self, team: TeamPolicy, data: dict[str, Any]) -> None:
        """Mint the response id; with ``previous_response_id``, prepend the stored
        conversation to ``data["input"]`` (404 when it is not the team's)."""
        store = self.parts.responses
        previous = data.get("previous_response_id")
        self.turn = ResponsesTurn(
            new_response_id(),
            store_flag(data) and store is not None,
            input_items(data.get("input")),
            previous if isinstance(previous, str) else None,
        )
        if previous is not None:
            if store is None:
                raise NotFoundError(
                    "previous_response_id: this router stores no responses",
                    param="previous_response_id",
                )
            data["input"] = await store.conversation(team.name, previous) + self.turn.own_input
            owner = await store.owner(previous)  # the session the conversation continues
            if owner is not None and owner.session is not None:
                self.inbound.previous_session = owner.session

    async def store_response(self, response: dict[str, Any]) -> None:
        """Keep the answered ``Response`` when the request asked to (after settling)."""
        turn, store = self.turn, self.parts.responses
        if turn is None or not turn.store or store is None or self.plan is None:
            return
        with anyio.CancelScope(shield=True):
            await store.save(
                self.plan.team,
                response,
                turn.own_input,
                previous_id=turn.previous_id,
                session=(self.rec.session or {}).get("id") or self.inbound.session_header,
                decision_id=self.rec.decision_id,
            )

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
                result, attempts = await self.gen.upstream.complete(
                    cfg,
                    body,
                    plan.request.typed,
                    typed_out=self.typed_front,
                    anthropic=self.anthropic_headers,
                )
            except UpstreamFailure as exc:
                rec.upstream_ms += (time.perf_counter() - t0) * 1000
                self._failed(cfg, exc)
                last = exc
                continue
            rec.upstream_ms += (time.perf_counter() - t0) * 1000
            self._sent(cfg, attempts)
            rec.served_by = cfg.name
            if self.typed_front:  # the typed model's answer, for the front's codec
                result.model = cfg.name
                if self.turn is not None:
                    result.id = self.turn.response_id
                usage = encode_usage(result.usage) if result.usage else None
                await self.settle(cfg, usage, typed_answer_text(result))
                body_out = fronts.encode_answer(self.inbound.front, result, plan.request.typed())
                await self.store_response(body_out)
                return Answer(body_out, rec.headers())
            await self.settle(cfg, result.get("usage"), answer_text(result))
            if isinstance(result.get("usage"), dict):  # the router's own marks stay inside
                result["usage"] = without_marks(result["usage"])
            result["model"] = cfg.name
            return Answer(result, rec.headers())
        raise self._all_failed(plan, last)

    async def _open_stream(self, plan: RoutePlan, body: dict[str, Any]) -> StreamedAnswer:
        rec, last = self.rec, None
        t_start = time.perf_counter()
        async for cfg in self._each_candidate(plan):
            t0 = time.perf_counter()
            try:
                stream = await self.gen.upstream.open_stream(
                    cfg,
                    body,
                    plan.request.typed,
                    typed_out=self.typed_front,
                    anthropic=self.anthropic_headers,
                )
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
            rec.upstream_api = self.gen.config.catalog.providers[cfg.provider].api  # a stream
            relay = relay_events if self.typed_front else relay_chunks
            return StreamedAnswer(relay(self, cfg, stream, first, t0), rec.headers())
        raise self._all_failed(plan, last)

    @staticmethod
    async def _first_chunk(stream: UpstreamStream) -> Any:
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
        """The actual cost (router/serving/bills.py): the upstream's ``usage`` where it can
        be trusted; else estimated from the prompt and the answer's text (``streamed``),
        never below the input reported; without either, what was reserved."""
        plan = self.plan
        assert plan is not None
        tokens = self.parts.tokens
        b = bill(
            cfg, usage, prompt_estimate=plan.prompt_tokens,
            text_tokens=None if streamed is None else lambda: tokens.text_tokens(streamed),
            reserved_usd=plan.expected_cost_usd.get(cfg.name, 0.0),
        )  # fmt: skip
        if b.usage is None:
            return Charge(b.cost_usd, plan.prompt_tokens, None, b.source)
        pt, ct = b.usage.input_tokens, b.usage.output_tokens
        learn = None
        if b.source == "upstream":
            n = plan.request.n or 1
            limit = plan.request.output_token_limit
            # An answer cut at max_tokens says nothing about the model's natural length.
            learn = max(1, ct // n) if limit is None or ct < limit * n else None
        full = full_input_cost(cfg, b.usage)
        return Charge(b.cost_usd, pt, ct, b.source, learn, b.usage, full)

    async def settle(
        self, cfg: ModelConfig, usage: dict[str, Any] | None, streamed: str | None = None
    ) -> None:
        plan, rec = self.plan, self.rec
        assert plan is not None
        c = self.charge(cfg, usage, streamed)
        rec.cost_usd, rec.usage_source = c.cost_usd, c.source
        rec.prompt_tokens, rec.completion_tokens = c.prompt_tokens, c.completion_tokens
        record_classes(rec, c, self.gen.config.catalog.providers[cfg.provider].api)
        # The learned average starts from the configured expectation, not one answer.
        prior = cfg.expected_output_tokens or DEFAULT_EXPECTED_OUTPUT_TOKENS
        await self.parts.accounts.settle(plan.hold, cfg.name, c, ref=rec.decision_id, prior=prior)
        self.parts.planner.settle_session(plan, cfg.name, c.prompt_tokens, c.completion_tokens, rec)
        if rec.budget_remaining_usd is not None:
            rec.budget_remaining_usd -= c.cost_usd

    def record(self) -> None:
        """The decision's one record (a second call does nothing): every path of a
        request ends here."""
        if not self.recorded:
            self.recorded = True
            self.parts.record(self.rec)

    async def conclude(self, cfg: ModelConfig, usage: dict[str, Any] | None, text: str) -> None:
        """A stream's end, whatever ended it: settled (shielded: a client leaving does
        not lose the spend) and recorded, once."""
        if self.concluded:
            return
        self.concluded = True
        with anyio.CancelScope(shield=True):
            try:
                await self.settle(cfg, usage, text)
            finally:
                self.record()

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
    flow.task = asyncio.current_task()
    flow.parts.streams.add(flow)
    chunks = _after(first, stream)
    try:
        try:
            async for chunk in chunks:
                if chunk.get("usage"):
                    usage = chunk["usage"]
                    if isinstance(usage, dict) and PARTIAL_MARK in usage:  # for the bill only
                        continue
                last_id = chunk.get("id", last_id)
                created = chunk.get("created", created)
                if not chunk.get("choices") and "usage" in chunk and not wants_usage:
                    continue
                if not wants_usage:
                    chunk.pop("usage", None)
                elif isinstance(chunk.get("usage"), dict):
                    chunk["usage"] = without_marks(chunk["usage"])
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
        # Settled and recorded before the last chunk goes out: a client that has read
        # [DONE] can rely on the decision being in the log and the spend in the ledger.
        await flow.conclude(cfg, usage, "".join(relayed))
        yield {
            "id": last_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "router": rec.summary(),
        }
    except BaseException as exc:
        if rec.status == 200 and not flow.concluded:
            flow.mark_interrupted(exc)
        raise
    finally:
        await _close_relay(flow, cfg, chunks, stream, t0, lambda: usage, relayed)


async def relay_events(
    flow: ChatFlow,
    cfg: ModelConfig,
    stream: UpstreamStream,
    first: Any,
    t0: float,
) -> AsyncIterator[list[Frame]]:
    """The stream for a front of another protocol: the upstream's events as the typed
    model's (``first`` already read), encoded by the front's codec into its SSE frames,
    yielded as one list per upstream event (the api layer sends each list at once: a
    Responses text delta is two or three events, one send).
    Settled and recorded exactly once, before the closing frames (which carry the
    decision where the protocol allows an extra field), as :func:`relay_chunks` does;
    an upstream failure or a shutdown mid-stream ends it with the protocol's own failure
    event (Anthropic ``error``, Responses ``response.failed``)."""
    rec, model = flow.rec, cfg.name
    encoder = fronts.stream_encoder(flow.inbound.front, flow.request().typed())
    usage: Usage | None = None
    started_usage: Usage | None = None  # Anthropic's message_start: the input, known early
    relayed: list[str] = []  # the answer's text, to estimate its tokens if no usage comes
    started = failed = False

    def reported() -> dict[str, Any] | None:
        """The usage to bill: the stream's own, else (cut short) what its start reported,
        marked partial so that only the missing output is estimated."""
        if usage is not None:
            return encode_usage(usage)
        if started_usage is not None:
            return {**encode_usage(started_usage), PARTIAL_MARK: True}
        return None

    finish: str | None = None  # the upstream's last finish reason

    def opening(event: Any) -> list[Frame]:
        """The protocol's opening frames, under the id the client will hold: a stored
        response's minted id, else the upstream's, else the decision's."""
        sid, created = rec.decision_id, 0
        if isinstance(event, StreamStart):
            sid, created = event.id or sid, event.created
        if flow.turn is not None:
            sid = flow.turn.response_id
        return encoder.start(sid, model, created or int(time.time()))

    flow.task = asyncio.current_task()
    flow.parts.streams.add(flow)
    events = _after(first, stream)
    try:
        try:
            async for event in events:
                frames: list[Frame] = []
                if not started:
                    started = True
                    frames = opening(event)
                if isinstance(event, UsageEvent):
                    usage = event.usage
                elif isinstance(event, TextDelta):
                    relayed.append(event.text)
                elif isinstance(event, ToolCallDelta):
                    relayed.append(event.arguments)
                elif isinstance(event, StreamStart):
                    event.model = model
                    started_usage = event.usage
                elif isinstance(event, Finish):
                    finish = event.reason
                frames += encoder.feed(event)
                if frames:
                    yield frames
            if not stream.completed or finish == "error":
                # Cut short: a chat stream without [DONE], or another protocol's without
                # its last event (its decoder then owes a Finish("error")). The text so
                # far is not a whole answer: the protocol's failure ends it.
                rec.status = 502
                rec.error = f"the upstream stream from '{model}' ended before its end"
                failed = True
        except UpstreamFailure as exc:
            rec.status = 502
            rec.error = flow.loggable(exc.message, exc.summary)
            failed = True
        except asyncio.CancelledError:
            if not flow.interrupted:
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            rec.status, rec.error = 503, "router shutting down"
            failed = True
        # A stream that ended empty is still a whole message of the protocol.
        first_frames = [] if started else opening(None)
        rec.upstream_ms += (time.perf_counter() - t0) * 1000
        await flow.conclude(cfg, reported(), "".join(relayed))  # before the closing frames
        extra = rec.summary()
        closing = fronts.failed_frames(encoder, extra) if failed else encoder.finish(extra)
        if flow.turn is not None and closing:
            # Stored before the terminal event goes out: a client that has it may chain on.
            await flow.store_response(closing[-1][1]["response"])
        if first_frames or closing:
            yield first_frames + closing
    except BaseException as exc:
        if rec.status == 200 and not flow.concluded:
            flow.mark_interrupted(exc)
        raise
    finally:
        await _close_relay(flow, cfg, events, stream, t0, reported, relayed)


async def _close_relay(
    flow: ChatFlow,
    cfg: ModelConfig,
    source: AsyncIterator[Any],
    stream: UpstreamStream,
    t0: float,
    usage: Callable[[], dict[str, Any] | None],
    relayed: list[str],
) -> None:
    """The end of either relay, however it ended: the upstream closed, and a stream that
    did not reach its own end (a client gone, a failure) concluded all the same."""
    flow.parts.streams.discard(flow)
    with anyio.CancelScope(shield=True):
        await source.aclose()  # type: ignore[attr-defined]
        await stream.aclose()
        if not flow.concluded:
            if flow.rec.upstream_ms == 0:
                flow.rec.upstream_ms = (time.perf_counter() - t0) * 1000
            await flow.conclude(cfg, usage(), "".join(relayed))


async def _after(first: Any, stream: UpstreamStream) -> AsyncIterator[Any]:
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


def record_classes(rec: DecisionRecord, c: Charge, api: str) -> None:
    """The decision log's usage classes and what caching saved, from the charge."""
    rec.upstream_api = api
    u = c.usage
    if u is not None:
        rec.cached_prompt_tokens, rec.reasoning_tokens = u.cache_read_tokens, u.reasoning_tokens
        rec.cache_write_tokens, rec.cache_write_1h_tokens = (
            u.cache_write_tokens,
            u.cache_write_1h_tokens,
        )
    if c.full_input_usd is not None:
        rec.cache_saved_usd = c.full_input_usd - c.cost_usd


def typed_answer_text(answer: Any) -> str:
    """Text and tool-call arguments of a typed answer (every choice), for the estimate."""
    out: list[str] = []
    for one in (answer, *answer.choices):
        for part in one.parts:
            if isinstance(part, TextPart):
                out.append(part.text)
            elif isinstance(part, ToolCall):
                out.append(part.arguments)
    return "".join(out)


def answer_text(answer: Any) -> str:
    """Content and tool-call argument text of every choice of a whole chat answer, to
    estimate its tokens when its usage cannot be trusted."""
    out: list[str] = []
    choices = answer.get("choices") if isinstance(answer, dict) else None
    for choice in choices if isinstance(choices, list) else ():
        if isinstance(choice, dict):
            _collect_text(choice.get("message"), out)
    return "".join(out)
