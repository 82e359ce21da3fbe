"""``ChatRequest`` → a provider's Responses request, and what Responses cannot express.

Choices, each because of what a provider does with the field:

- System text: the first ``Text`` is ``instructions``, the rest are ``developer``
  messages at the head of ``input``. A Codex request (instructions, then developer
  messages) goes back out token for token, so the provider's prompt cache still hits;
  no joining separator is invented.
- ``store: false`` unless the client's own extras say otherwise: the router keeps its
  own store, so a provider never holds state the router cannot see.
- Reasoning items go back only when they came from a Responses provider and carry
  ``encrypted_content`` (an id alone names an item a ``store: false`` provider never
  kept: it would be refused), or an id when the request asks for ``store: true``. And
  ``include: ["reasoning.encrypted_content"]`` is asked whenever reasoning is on or
  reasoning items are sent, so the next turn can send them back statelessly.
- ``budget_tokens`` (Anthropic's control) becomes an effort bucket: under 4096 low,
  under 16384 medium, else high (Claude Code's "think" / "think hard" / "ultrathink"
  land on low / medium / high). A disabled hint sends no ``reasoning`` at all: the
  model's default, which a non-reasoning model also accepts.
- Function tools: ``strict`` None goes out as ``false`` for a request from another
  protocol (their default is non-strict; Responses would otherwise normalise the
  schema into strict mode) and is left out for a Responses client (its own default).
- ``default_max_tokens`` is not used: Responses does not require a limit.
- ``previous_response_id`` never goes out: the router resolved it against its own store
  (router/serving/stored.py) and the stored conversation is already in ``input``; a
  provider would not know the router's ids.
"""

from __future__ import annotations

from typing import Any

from router.chat.codecs._common import anthropic_neutral
from router.chat.codecs.responses.common import PROTOCOL, encode_part
from router.chat.model import (
    ChatRequest,
    Document,
    Image,
    Message,
    Reasoning,
    ReasoningHint,
    Text,
    ToolCall,
    ToolResult,
    Unsupported,
)

ENCRYPTED_INCLUDE = "reasoning.encrypted_content"

# Extras of the other protocols that Responses takes under its own name.
FOREIGN_MAPPED: dict[str, dict[str, str]] = {
    "openai-chat": {
        "verbosity": "text.verbosity",
        "metadata": "metadata",
        "service_tier": "service_tier",
        "prompt_cache_key": "prompt_cache_key",
        "prompt_cache_retention": "prompt_cache_retention",
        "safety_identifier": "safety_identifier",
        "presence_penalty": "presence_penalty",
        "frequency_penalty": "frequency_penalty",
    },
    "anthropic-messages": {},
}
# Extras of the other protocols that change nothing in the answer: not carried.
FOREIGN_NEUTRAL: dict[str, frozenset[str]] = {
    "openai-chat": frozenset({"store", "stream_options"}),
    "anthropic-messages": frozenset({"metadata"}),
}
# Fields of the model Responses has no way to say, by their name in the client's protocol.
FIELD_NAMES = {
    "anthropic-messages": {"stop": "stop_sequences"},
}


def unsupported(req: ChatRequest) -> list[Unsupported]:
    names = FIELD_NAMES.get(req.extras_protocol or "", {})
    out = []

    def add(field: str, why: str) -> None:
        out.append(Unsupported(names.get(field, field), PROTOCOL, why))

    if req.n is not None and req.n > 1:
        add("n", "Responses returns one answer per request")
    if req.stop:
        add("stop", "Responses has no stop sequences")
    if req.seed is not None:
        add("seed", "Responses has no seed")
    if req.top_k is not None:
        add("top_k", "Responses has no top_k")
    if req.extras_protocol not in (None, PROTOCOL):
        mapped = FOREIGN_MAPPED.get(req.extras_protocol, {})
        neutral = FOREIGN_NEUTRAL.get(req.extras_protocol, frozenset())
        for key, value in req.extras.items():
            if key in mapped or key in neutral:
                continue
            if req.extras_protocol == "anthropic-messages" and anthropic_neutral(key, value):
                continue
            add(key, f"a {req.extras_protocol} field with no Responses equivalent")
    return out


def encode_request(
    req: ChatRequest, upstream_model: str, *, default_max_tokens: int | None = None
) -> dict[str, Any]:
    own = req.extras_protocol == PROTOCOL
    extras = dict(req.extras) if own else _foreign_extras(req)
    out: dict[str, Any] = {"model": upstream_model}
    if req.system:
        out["instructions"] = req.system[0].text
    items: list[dict[str, Any]] = [
        {"type": "message", "role": "developer", "content": [encode_part(t)]}
        for t in req.system[1:]
    ]
    store = bool(extras.pop("store", False))
    extras.pop("previous_response_id", None)
    for msg in req.messages:
        items.extend(_encode_message(msg, store=store))
    out["input"] = items

    tools = [_encode_tool(t, own) for t in req.tools] + list(extras.pop("tools", []))
    if tools:
        out["tools"] = tools
    choice = extras.pop("tool_choice", None)
    if req.tool_choice is not None:
        tc = req.tool_choice
        if choice is None:
            kind = "custom" if tc.name in {t.name for t in req.tools if t.custom} else "function"
            choice = {"type": kind, "name": tc.name} if tc.mode == "tool" else tc.mode
        if tc.parallel is not None:
            out["parallel_tool_calls"] = tc.parallel
    if choice is not None:
        out["tool_choice"] = choice

    text: dict[str, Any] = {}
    if req.output is not None:
        text["format"] = _encode_format(req, extras.pop("text.format.description", None))
    if "text.verbosity" in extras:
        text["verbosity"] = extras.pop("text.verbosity")
    if text:
        out["text"] = text

    reasoning = _encode_reasoning(req.reasoning, own, extras.pop("reasoning.effort", None))
    if reasoning:
        out["reasoning"] = reasoning
    include = list(extras.pop("include", None) or [])
    sends_reasoning = any(i["type"] == "reasoning" for i in items)
    if (reasoning or sends_reasoning) and not store and ENCRYPTED_INCLUDE not in include:
        include.append(ENCRYPTED_INCLUDE)
    if include:
        out["include"] = include

    for key, value in (
        ("max_output_tokens", req.max_output_tokens),
        ("temperature", req.temperature),
        ("top_p", req.top_p),
        ("user", req.user),
    ):
        if value is not None:
            out[key] = value
    out["stream"] = req.stream
    out["store"] = store
    out.update(extras)  # the rest of the client's own Responses fields, verbatim
    return out


def _foreign_extras(req: ChatRequest) -> dict[str, Any]:
    mapped = FOREIGN_MAPPED.get(req.extras_protocol or "", {})
    return {mapped[k]: v for k, v in req.extras.items() if k in mapped}


def _encode_message(msg: Message, *, store: bool) -> list[dict[str, Any]]:
    """One turn → items in order; a run of content parts is one message item."""
    items: list[dict[str, Any]] = []
    run: list[dict[str, Any]] = []
    assistant = msg.role == "assistant"

    def flush() -> None:
        if run:
            items.append({"type": "message", "role": msg.role, "content": list(run)})
            run.clear()

    for part in msg.parts:
        if isinstance(part, Text | Image | Document):
            run.append(encode_part(part, assistant=assistant and isinstance(part, Text)))
            continue
        flush()
        if isinstance(part, ToolCall) and part.custom:
            items.append(
                {
                    "type": "custom_tool_call",
                    "call_id": part.id,
                    "name": part.name,
                    "input": part.arguments,
                }
            )
        elif isinstance(part, ToolCall):
            items.append(
                {
                    "type": "function_call",
                    "call_id": part.id,
                    "name": part.name,
                    "arguments": part.arguments,
                }
            )
        elif isinstance(part, ToolResult):
            kind = "custom_tool_call_output" if part.custom else "function_call_output"
            items.append({"type": kind, "call_id": part.call_id, "output": _output(part)})
        elif isinstance(part, Reasoning):
            item = _reasoning_item(part, store=store)
            if item is not None:
                items.append(item)
    flush()
    return items


def _output(result: ToolResult) -> str | list[dict[str, Any]]:
    """A string when the result is text alone (what clients send), else parts."""
    if all(isinstance(p, Text) for p in result.content):
        return "".join(p.text for p in result.content)  # type: ignore[union-attr]
    return [encode_part(p) for p in result.content]


def _reasoning_item(part: Reasoning, *, store: bool) -> dict[str, Any] | None:
    if part.origin != PROTOCOL or not (part.encrypted or (part.id and store)):
        return None
    item: dict[str, Any] = {"type": "reasoning"}
    if part.id:
        item["id"] = part.id
    item["summary"] = [{"type": "summary_text", "text": s} for s in part.summary]
    if part.text:
        item["content"] = [{"type": "reasoning_text", "text": part.text}]
    if part.encrypted:
        item["encrypted_content"] = part.encrypted
    return item


def _encode_tool(tool: Any, own: bool) -> dict[str, Any]:
    if tool.custom:
        out = {"type": "custom", "name": tool.name}
        if tool.description is not None:
            out["description"] = tool.description
        if tool.format is not None:
            out["format"] = tool.format
        return out
    out: dict[str, Any] = {"type": "function", "name": tool.name}
    if tool.description is not None:
        out["description"] = tool.description
    out["parameters"] = tool.parameters
    if tool.strict is not None or not own:
        out["strict"] = bool(tool.strict)
    return out


def _encode_format(req: ChatRequest, description: str | None) -> dict[str, Any]:
    fmt = req.output
    assert fmt is not None
    if fmt.kind != "json_schema":
        return {"type": fmt.kind}
    out: dict[str, Any] = {"type": "json_schema", "name": fmt.name or "output"}
    if description is not None:
        out["description"] = description
    out["schema"] = fmt.schema or {"type": "object"}
    if fmt.strict is not None:
        out["strict"] = fmt.strict
    return out


def budget_to_effort(budget: int) -> str:
    if budget < 4096:
        return "low"
    if budget < 16384:
        return "medium"
    return "high"


def _encode_reasoning(
    hint: ReasoningHint | None, own: bool, own_effort: str | None
) -> dict[str, Any]:
    if hint is None:
        return {}
    out: dict[str, Any] = {}
    if not hint.enabled:
        # "none" is a Responses client's own word; a request from another protocol
        # gets no reasoning field (the model's default, which any model accepts).
        return {"effort": "none"} if own else {}
    effort = own_effort or hint.effort
    if effort is None and hint.budget_tokens is not None:
        effort = budget_to_effort(hint.budget_tokens)
    if effort is not None:
        out["effort"] = effort
    if hint.summary is not None:
        out["summary"] = hint.summary
    return out
