"""A conversation made valid for the protocol that will serve its next turn.

When a session moves between providers, the history it carries was written by another
one, and providers refuse what they cannot verify:

- reasoning blocks (Anthropic thinking, Responses reasoning items) go back only to the
  protocol that made them (``Reasoning.origin``): others are dropped and counted;
- Anthropic, asked to think, refuses a request whose last assistant tool-use turn has
  no signed thinking block: such a turn runs without thinking (and says so);
- tool-call ids must match the target's form (Anthropic: ``^[a-zA-Z0-9_-]+$``): they are
  mapped the same way everywhere in the request (a call and its result still pair), and
  :func:`restore_tool_ids` maps an answer's ids back, so the client's ids never change.

Nothing else in the history changes. Pure functions on the typed model (router/chat/
model.py); the codecs' encoders apply the same rules as a last line of defence, this
module is where a switch is made, counted and explained.
"""

from __future__ import annotations

import hashlib
import re
from contextvars import ContextVar
from dataclasses import dataclass, field, replace

from router.chat.model import (
    Answer,
    ChatRequest,
    Message,
    Part,
    Protocol,
    Reasoning,
    StreamEvent,
    ToolCall,
    ToolCallStart,
    ToolResult,
)

# Tool-call id forms a protocol accepts (None: any string).
TOOL_ID_FORM: dict[str, re.Pattern[str] | None] = {
    "anthropic-messages": re.compile(r"^[a-zA-Z0-9_-]+$"),
    "openai-chat": None,
    "openai-responses": None,
}
_BAD = re.compile(r"[^a-zA-Z0-9_-]")


@dataclass
class SwitchNotes:
    """What :func:`prepare_for` changed, for the decision log."""

    dropped_reasoning: int = 0
    thinking_off: str | None = None
    tool_ids: dict[str, str] = field(default_factory=dict)  # mapped id -> client's id

    def __bool__(self) -> bool:
        return bool(self.dropped_reasoning or self.thinking_off or self.tool_ids)

    def logged(self) -> dict[str, int | bool]:
        return {
            "dropped_reasoning": self.dropped_reasoning,
            "thinking_off": self.thinking_off is not None,
            "tool_ids_mapped": len(self.tool_ids),
        }

    def describe(self) -> str:
        out = []
        if self.dropped_reasoning:
            out.append(f"{self.dropped_reasoning} reasoning block(s) of another provider dropped")
        if self.thinking_off:
            out.append(self.thinking_off)
        if self.tool_ids:
            out.append(f"{len(self.tool_ids)} tool id(s) mapped")
        return "; ".join(out)


# What each upstream body of the current request needed (one entry per candidate tried,
# the served one last). The session planner puts a list here for each request and reads
# it back after settle, for the decision log; the upstream edge appends to it. A context
# variable because the edge that encodes bodies knows nothing of the request's record.
SWITCH_NOTES: ContextVar[list[SwitchNotes] | None] = ContextVar("switch_notes", default=None)


def mapped_tool_id(call_id: str, form: re.Pattern[str]) -> str:
    """``call_id`` in ``form``: kept when it fits, else its bad characters replaced and a
    short digest of the original appended (distinct ids stay distinct)."""
    if form.match(call_id):
        return call_id
    digest = hashlib.sha256(call_id.encode()).hexdigest()[:8]
    return f"{_BAD.sub('_', call_id) or 'toolu'}_{digest}"


def keeps_reasoning(part: Reasoning, target: Protocol) -> bool:
    """A reasoning block goes back only to the protocol that produced it, and only in a
    form that protocol can verify (a signature or encrypted content, or an item id)."""
    if part.origin != target or target == "openai-chat":
        return False
    if target == "anthropic-messages":
        return bool(part.signature or (part.redacted and part.encrypted))
    return bool(part.encrypted or part.id)


def signed_thinking(msg: Message) -> bool:
    return any(
        isinstance(p, Reasoning) and keeps_reasoning(p, "anthropic-messages") for p in msg.parts
    )


def last_tool_use_turn(messages: list[Message]) -> Message | None:
    """The last assistant turn that calls a tool, when the request answers its calls."""
    for msg in reversed(messages):
        if msg.role == "assistant":
            return msg if any(isinstance(p, ToolCall) for p in msg.parts) else None
    return None


def prepare_for(req: ChatRequest, target: Protocol) -> tuple[ChatRequest, SwitchNotes]:
    """``req`` as ``target`` will accept it, and what was changed."""
    notes = SwitchNotes()
    form = TOOL_ID_FORM.get(target)

    def part(p: Part) -> Part | None:
        if isinstance(p, Reasoning):
            if keeps_reasoning(p, target):
                return p
            notes.dropped_reasoning += 1
            return None
        if form is not None and isinstance(p, ToolCall) and not form.match(p.id):
            new = mapped_tool_id(p.id, form)
            notes.tool_ids[new] = p.id
            return replace(p, id=new)
        if form is not None and isinstance(p, ToolResult) and not form.match(p.call_id):
            new = mapped_tool_id(p.call_id, form)
            notes.tool_ids[new] = p.call_id
            return replace(p, call_id=new)
        return p

    messages = []
    for msg in req.messages:
        parts = [q for q in map(part, msg.parts) if q is not None]
        messages.append(msg if parts == msg.parts else replace(msg, parts=parts))
    out = replace(req, messages=messages)
    hint = req.reasoning
    if target == "anthropic-messages" and hint is not None and hint.enabled:
        turn = last_tool_use_turn(messages)
        if turn is not None and not signed_thinking(turn):
            out = replace(out, reasoning=None)
            notes.thinking_off = (
                "thinking off for this turn: the last assistant tool-use turn has no "
                "thinking block signed by Anthropic"
            )
    return out, notes


def restore_tool_ids(answer: Answer, mapped: dict[str, str]) -> Answer:
    """``answer`` with every tool-call id that :func:`prepare_for` mapped given back as
    the client wrote it (an answer's new ids are left as the provider made them)."""
    if not mapped:
        return answer

    def part(p: Part) -> Part:
        if isinstance(p, ToolCall) and p.id in mapped:
            return replace(p, id=mapped[p.id])
        if isinstance(p, ToolResult) and p.call_id in mapped:
            return replace(p, call_id=mapped[p.call_id])
        return p

    return replace(
        answer,
        parts=[part(p) for p in answer.parts],
        choices=[restore_tool_ids(c, mapped) for c in answer.choices],
    )


def restore_event_ids(events: list[StreamEvent], mapped: dict[str, str]) -> list[StreamEvent]:
    """A stream's events with the ids :func:`prepare_for` mapped given back (a tool call
    announces its id once, in :class:`ToolCallStart`)."""
    if not mapped:
        return events
    return [
        replace(e, id=mapped[e.id]) if isinstance(e, ToolCallStart) and e.id in mapped else e
        for e in events
    ]
