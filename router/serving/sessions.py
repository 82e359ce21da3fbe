"""Routing conversations, not prompts: which session a request belongs to, what that
session's last turn was, and how the team's ``session.affinity`` bends the choice.

A session's id comes from, in order (docs/DESIGN.md, "Protocols, bills and sessions"):
the ``x-session-id`` header, Anthropic ``metadata.user_id`` (Claude Code puts its session
there), OpenAI ``prompt_cache_key``, the session of ``previous_response_id`` (the
Responses front passes it as ``Inbound.previous_session``), else a digest of the team
and the conversation's first messages (a shared prefix is a shared cache). Only a
digest of the team and the client's value is ever stored or logged.

Affinity:

- ``cache-aware``: every candidate's expected cost counts what it would read from the
  provider's prompt cache. The model that served the last turn, while within its
  provider's ``cache_ttl_s``, reads the last turn's prompt and output at the cached
  price; any other model pays the full input, written to its cache at the write price
  where the provider bills one (``cache_write_usd_per_mtok`` set). The strategy then
  chooses as always, so P2L moves a conversation only when the gain is worth the cache.
  The reservation is never below the uncached cost (a cache miss must not overshoot).
- ``sticky``: the session's model is kept while it is eligible (the request's needs,
  its context window, the team's allow list, the cap and budget, a closed circuit);
  otherwise the request is routed afresh and the decision log says why.
- ``off``: every request routed on its own, as before sessions.

The state (ledger, router/ledger/sessions.py) is written after settle, so a turn that
failed everywhere leaves the session as it was. The write is off the response path: a
task of its own, tracked so that a graceful stop waits for it (:meth:`Sessions.drain`);
the turn the decision log names is counted here (the last turn's + 1). Until its write
is in, a turn's state is also kept in this process (``_pending``), so the session's next
turn on this replica sees it even if it arrives first. No cache of the ledger's state:
a read is one indexed row (inline for SQLite, one round trip for Redis), and a cached
state would be stale for turns another replica served.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from router.chat.hygiene import SWITCH_NOTES
from router.config import ModelConfig, RouterConfig, TeamPolicy
from router.ledger import LedgerError
from router.ledger.sessions import SessionState
from router.observability.decisions import DecisionRecord
from router.policy import Candidate, Decision, expected_output_tokens
from router.protocol import ChatRequest

log = logging.getLogger("router.sessions")

Source = Literal["header", "metadata", "prompt_cache_key", "previous_response", "derived"]
# A client's session value longer than this is refused as an id and derived instead
# (it is digested either way; the bound keeps hashing cheap).
MAX_SESSION_VALUE_CHARS = 4096
# The longest a request waits on the session store (a locked or slow ledger): past it the
# request routes as a fresh turn, or its turn goes unrecorded. No money rides on either.
SESSION_IO_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class SessionId:
    id: str  # "ses_" + hex digest; never the client's value
    source: Source


def session_digest(team: str, value: str) -> str:
    h = hashlib.blake2b(f"{team}\x00{value}".encode("utf-8", "surrogatepass"), digest_size=12)
    return "ses_" + h.hexdigest()


def _given(value: Any) -> str | None:
    if isinstance(value, str) and value.strip() and len(value) <= MAX_SESSION_VALUE_CHARS:
        return value.strip()
    return None


def identify(
    team: str,
    req: ChatRequest,
    *,
    front: str = "openai-chat",
    header: str | None = None,
    previous_session: str | None = None,
) -> SessionId:
    """The request's session, by the first source that gives one."""
    if (v := _given(header)) is not None:
        return SessionId(session_digest(team, v), "header")
    typed = _typed_if_decoded(req, front)
    user = typed.user if front == "anthropic-messages" and typed is not None else None
    if (v := _given(user)) is not None:
        return SessionId(session_digest(team, v), "metadata")
    key = (
        (req.model_extra or {}).get("prompt_cache_key")
        if typed is None
        else typed.extras.get("prompt_cache_key")
    )
    if (v := _given(key)) is not None:
        return SessionId(session_digest(team, v), "prompt_cache_key")
    if (v := _given(previous_session)) is not None:
        return SessionId(v, "previous_response")  # already one of our digests
    return SessionId(session_digest(team, conversation_head(req, typed)), "derived")


def _typed_if_decoded(req: ChatRequest, front: str) -> Any:
    """The typed request when another front set it (the chat front's fast path never
    decodes just to find a session)."""
    return None if front == "openai-chat" else req.typed()


def conversation_head(req: ChatRequest, typed: Any = None) -> str:
    """The conversation's opening (system turns and the first user turn) as canonical
    text: every later turn of the conversation starts with it."""
    if typed is not None:
        first = next((m for m in typed.messages if m.role == "user"), None)
        parts = [["system", [t.text for t in typed.system]]]
        if first is not None:
            parts.append(["user", [getattr(p, "text", type(p).__name__) for p in first.parts]])
        return json.dumps(parts, ensure_ascii=False, separators=(",", ":"))
    head: list[Any] = []
    for m in req.messages:
        head.append([m.get("role"), m.get("content")])
        if m.get("role") == "user":
            break
    return json.dumps(head, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


# ---------------------------------------------------------------- cache-aware pricing


@dataclass(frozen=True, slots=True)
class CachePrice:
    """One candidate's expected cost with the session's cache taken into account."""

    cost_usd: float  # what the strategy weighs
    uncached_cost_usd: float  # the same request priced with no cache at all (``off``)
    cache_read_tokens: int
    cache_write_tokens: int

    def logged(self) -> dict[str, Any]:
        return {
            "uncached_cost_usd": round(self.uncached_cost_usd, 9),
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
        }


def warm_prefix(
    state: SessionState, model: str, prompt_tokens: int, ttl_s: float, now: float
) -> int:
    """Prompt tokens ``model`` would read from its provider's cache: the last turn's prompt
    and output when it served that turn less than ``ttl_s`` ago, else none."""
    if state.model != model or now - state.at > ttl_s:
        return 0
    return max(0, min(prompt_tokens, state.prompt_tokens + state.output_tokens))


def cache_price(cfg: ModelConfig, prompt_tokens: int, output_tokens: int, warm: int) -> CachePrice:
    """The expected cost of ``prompt_tokens`` in and ``output_tokens`` out on ``cfg`` when
    ``warm`` of the prompt is already cached: the rest is written to the cache where the
    provider bills writes (``cache_write_usd_per_mtok`` set), else billed as input."""
    writes = cfg.cache_write_usd_per_mtok is not None
    written = prompt_tokens - warm if writes else 0
    cost = cfg.cost_usd(prompt_tokens, output_tokens, cache_read=warm, cache_write=written)
    return CachePrice(cost, cfg.cost_usd(prompt_tokens, output_tokens), warm, written)


# ---------------------------------------------------------------- one request's session


@dataclass
class SessionTurn:
    """The session of one request, from planning to settle."""

    sid: SessionId
    team: TeamPolicy
    state: SessionState | None  # the session's last settled turn
    why_not_previous: str | None = None  # set when planning did not pick the last model
    # What the history needed for each upstream body encoded (router/chat/hygiene.py).
    switch_notes: list[Any] = field(default_factory=list)

    @property
    def previous_model(self) -> str | None:
        return self.state.model if self.state else None

    def logged(self, served_by: str | None = None) -> dict[str, Any]:
        prev = self.previous_model
        out: dict[str, Any] = {
            "id": self.sid.id,
            "source": self.sid.source,
            "turn": (self.state.turns if self.state else 0) + 1,
            "previous_model": prev,
            "kept": prev is not None and served_by == prev,
        }
        return out


class Sessions:
    """Session identity, state and affinity for the planner (one per router process)."""

    def __init__(
        self,
        ledger: Callable[[], Any],
        clock: Callable[[], float],
        circuit_states: Callable[[], Mapping[str, str]] | None = None,
    ) -> None:
        self._ledger = ledger
        self.clock = clock
        self.circuit_states = circuit_states
        self._writes: set[asyncio.Task[None]] = set()  # turns being recorded
        self._pending: dict[str, SessionState] = {}  # their states, until recorded

    async def open(
        self,
        team: TeamPolicy,
        req: ChatRequest,
        rec: DecisionRecord,
        *,
        front: str = "openai-chat",
        header: str | None = None,
        previous_session: str | None = None,
    ) -> SessionTurn:
        sid = identify(
            team.name, req, front=front, header=header, previous_session=previous_session
        )
        state = self._pending.get(sid.id)
        if state is None:
            try:
                async with asyncio.timeout(SESSION_IO_TIMEOUT_S):
                    state = await self._ledger().get_session(sid.id, now=self.clock())
            except (LedgerError, TimeoutError) as exc:  # routed afresh; money unaffected
                log.warning("session state unavailable, routing afresh: %s", exc or "timed out")
        turn = SessionTurn(sid, team, state)
        rec.session = turn.logged()
        SWITCH_NOTES.set(turn.switch_notes)  # filled where upstream bodies are encoded
        return turn

    # ------------------------------------------------------------ affinity

    def price(
        self,
        turn: SessionTurn,
        config: RouterConfig,
        req: ChatRequest,
        cands: Sequence[Candidate],
        prompt_tokens: int,
        learned: Mapping[str, float],
        rec: DecisionRecord,
    ) -> list[Candidate]:
        """``cache-aware``: the candidates at their session-aware expected costs (the
        costs logged per candidate beside the uncached ones). Others: unchanged."""
        state = turn.state
        if turn.team.session.affinity != "cache-aware" or state is None:
            return list(cands)
        now, catalog = self.clock(), config.catalog
        out, detail = [], {}
        for c in cands:
            cfg = catalog.models[c.model]
            ttl = catalog.providers[cfg.provider].cache_ttl_s
            output = expected_output_tokens(cfg, req.output_token_limit, learned.get(c.model)) * (
                req.n or 1
            )
            warm = warm_prefix(state, c.model, prompt_tokens, ttl, now)
            p = cache_price(cfg, prompt_tokens, output, warm)
            detail[c.model] = p
            out.append(replace(c, expected_cost_usd=p.cost_usd))
        rec.cache_prices = detail
        if state.model not in detail:
            turn.why_not_previous = f"{state.model} is not a candidate for this request"
        elif detail[state.model].cache_read_tokens == 0:
            cfg = catalog.models[state.model]
            ttl = catalog.providers[cfg.provider].cache_ttl_s
            turn.why_not_previous = (
                f"the cache on {state.model} has lapsed ({now - state.at:.0f} s since the "
                f"last turn, cache_ttl_s {ttl:g})"
            )
        return out

    def steer(
        self,
        turn: SessionTurn,
        decision: Decision,
        cands: Sequence[Candidate],
        config: RouterConfig,
        why_ineligible: Callable[[str], str],
    ) -> Decision:
        """The decision as the team's affinity leaves it: ``sticky`` moves the session's
        model to the front while it is eligible; the reason in words when the session
        leaves its model."""
        prev = turn.previous_model
        if prev is None or decision.chosen == prev:
            return decision
        affinity = turn.team.session.affinity
        ranked = [c.model for c in decision.ranking]
        if affinity == "sticky":
            cfg = config.catalog.models.get(prev)
            states = self.circuit_states() if self.circuit_states else {}
            circuit = states.get(cfg.provider, "closed") if cfg else "closed"
            if prev in ranked and circuit != "open":
                keep = decision.ranking[ranked.index(prev)]
                rest = tuple(c for c in decision.ranking if c.model != prev)
                return replace(
                    decision,
                    chosen=prev,
                    ranking=(keep, *rest),
                    runner_up=decision.chosen,
                    reason=f"session sticky: kept {prev} ({decision.strategy} preferred "
                    f"{decision.chosen}: {decision.reason})",
                )
            if prev in ranked:
                why = f"{prev}'s provider circuit is open"
            elif any(c.model == prev for c in cands):
                why = f"{prev} is over the cap or the budget left"
            else:
                why = why_ineligible(prev)
            turn.why_not_previous = f"sticky: {why}; routed afresh"
        elif affinity == "off":
            turn.why_not_previous = "affinity off: routed on this prompt alone"
        elif turn.why_not_previous is None:
            turn.why_not_previous = (
                f"{decision.strategy} chose {decision.chosen} over {prev} with the cache "
                f"priced in ({decision.reason})"
            )
        return decision

    # ------------------------------------------------------------ after settle

    def settled(
        self,
        turn: SessionTurn,
        model: str,
        prompt_tokens: int | None,
        output_tokens: int | None,
        rec: DecisionRecord,
    ) -> None:
        """Fill the log's ``session`` and record the served turn as the session's last,
        in the background (:meth:`drain` waits for it)."""
        logged = turn.logged(model)
        prev = turn.previous_model
        if prev is not None and model != prev:
            failed = next((f for f in rec.fallbacks if f.get("model") == prev), None)
            if failed is not None:
                logged["reason"] = f"{prev} failed ({failed.get('error')}); served by {model}"
            elif rec.strategy == "direct":
                logged["reason"] = f"{model} requested by name"
            else:
                logged["reason"] = turn.why_not_previous or f"{rec.reason}"
        notes = turn.switch_notes[-1] if turn.switch_notes else None
        if notes:  # the served attempt's body needed changes to be valid
            logged["history"] = notes.logged()
        rec.session = logged
        now = self.clock()
        state = SessionState(
            model, now, max(0, prompt_tokens or 0), max(0, output_tokens or 0), logged["turn"]
        )
        sid = turn.sid.id
        self._pending[sid] = state
        task = asyncio.create_task(self._record(sid, state, turn.team.session.ttl_s))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _record(self, sid: str, state: SessionState, ttl_s: float) -> None:
        try:
            async with asyncio.timeout(SESSION_IO_TIMEOUT_S):
                await self._ledger().record_session_turn(
                    sid,
                    model=state.model,
                    prompt_tokens=state.prompt_tokens,
                    output_tokens=state.output_tokens,
                    now=state.at,
                    ttl_s=ttl_s,
                )
        except (LedgerError, TimeoutError) as exc:  # the next turn routes as a fresh one
            log.warning("could not record session state: %s", exc or "timed out")
        except Exception:  # a background task: nobody else would hear of it
            log.exception("could not record session state")
        finally:
            if self._pending.get(sid) is state:
                del self._pending[sid]

    async def drain(self) -> None:
        """Wait for the turns still being recorded (a graceful stop, before the ledger
        closes); each is bounded by ``SESSION_IO_TIMEOUT_S``."""
        while self._writes:
            await asyncio.gather(*list(self._writes), return_exceptions=True)
