"""A :class:`ChatRequest` as an Anthropic Messages request, and what it cannot express.

Anthropic is stricter than the OpenAI protocols in ways that decide whether a request
is accepted at all, so the encoder repairs the shape rather than forwarding it:

- roles alternate strictly, starting with ``user``: consecutive same-role turns merge,
  and a conversation that opens with the assistant gets a ``"."`` user turn first;
- tool results come first in the user turn after the tool calls;
- empty text blocks (which Anthropic rejects) are left out;
- tool ids outside ``^[a-zA-Z0-9_-]+$`` are mapped (``safe_tool_id``), call and result alike;
- reasoning goes back only when Anthropic made it and it can be verified (a signature,
  or a redacted block); other reasoning is dropped here, and counted by the caller.

Thinking is a hint (docs/DESIGN.md, "Protocols, bills and sessions"): ``plan_thinking``
says when it is sent and why not.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from router.chat.codecs._custom import functions_only
from router.chat.codecs.anthropic._wire import NAME, arguments_object, safe_tool_id
from router.chat.model import (
    ChatRequest,
    Document,
    Image,
    Message,
    Reasoning,
    Text,
    ToolCall,
    ToolResult,
    Unsupported,
)

# ReasoningHint.effort -> thinking.budget_tokens (1024 is Anthropic's minimum budget).
EFFORT_BUDGET = {"minimal": 1024, "low": 1024, "medium": 4096, "high": 16384}
MIN_BUDGET = 1024

# Keys another protocol may carry in extras that do not change the answer: storage,
# caching and tracing hints, delivery options. Anything else from another protocol makes
# an Anthropic upstream ineligible (unless its value is the protocol's default: None,
# False, 0, "", [], {}).
_HARMLESS_EXTRAS = {
    "store",
    "metadata",
    "prompt_cache_key",
    "prompt_cache_retention",
    "safety_identifier",
    "service_tier",
    "stream_options",
    "user",
    "include",
    "parallel_tool_calls",
    # Responses: the router resolved it (the stored conversation is in the messages).
    "previous_response_id",
}


def _cache(block: dict[str, Any], cache_control: dict[str, Any] | None) -> dict[str, Any]:
    if cache_control:
        block["cache_control"] = cache_control
    return block


def _sniff(data: str, default: str) -> str:
    for prefix, media_type in (
        ("iVBOR", "image/png"),
        ("/9j/", "image/jpeg"),
        ("R0lGOD", "image/gif"),
        ("UklGR", "image/webp"),
        ("JVBER", "application/pdf"),
    ):
        if data.startswith(prefix):
            return media_type
    return default


def _image(part: Image) -> dict[str, Any]:
    if part.data is not None:
        media_type = part.media_type or _sniff(part.data, "image/png")
        source = {"type": "base64", "media_type": media_type, "data": part.data}
    else:
        source = {"type": "url", "url": part.url or ""}
    return _cache({"type": "image", "source": source}, part.cache_control)


def _document(part: Document) -> dict[str, Any]:
    if part.data is not None:
        media_type = part.media_type or _sniff(part.data, "application/pdf")
        if media_type == "text/plain":
            text = base64.b64decode(part.data).decode("utf-8", "replace")
            source: dict[str, Any] = {"type": "text", "media_type": "text/plain", "data": text}
        else:
            source = {"type": "base64", "media_type": media_type, "data": part.data}
    elif part.url is not None:
        source = {"type": "url", "url": part.url}
    else:
        source = {"type": "file", "file_id": part.file_id or ""}
    block: dict[str, Any] = {"type": "document", "source": source}
    if part.title:
        block["title"] = part.title
    return _cache(block, part.cache_control)


def _content(part: Text | Image | Document) -> dict[str, Any] | None:
    if isinstance(part, Text):
        return (
            _cache({"type": "text", "text": part.text}, part.cache_control) if part.text else None
        )
    return _image(part) if isinstance(part, Image) else _document(part)


def _reasoning(part: Reasoning) -> dict[str, Any] | None:
    if part.origin != NAME:
        return None
    if part.redacted and part.encrypted:
        return {"type": "redacted_thinking", "data": part.encrypted}
    if part.signature:
        return {"type": "thinking", "thinking": part.text, "signature": part.signature}
    return None


def _blocks(msg: Message) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(tool_result blocks, other blocks) of one turn."""
    results, others = [], []
    for part in msg.parts:
        if isinstance(part, ToolResult):
            block: dict[str, Any] = {
                "type": "tool_result",
                "tool_use_id": safe_tool_id(part.call_id),
            }
            content = [b for b in map(_content, part.content) if b is not None]
            if content:
                block["content"] = content
            if part.is_error:
                block["is_error"] = True
            results.append(_cache(block, part.cache_control))
        elif isinstance(part, ToolCall):
            others.append(
                {
                    "type": "tool_use",
                    "id": safe_tool_id(part.id),
                    "name": part.name,
                    "input": arguments_object(part.arguments),
                }
            )
        elif isinstance(part, Reasoning):
            if (block := _reasoning(part)) is not None:
                others.append(block)
        elif (block := _content(part)) is not None:
            others.append(block)
    return results, others


def encode_messages(messages: list[Message]) -> list[dict[str, Any]]:
    turns: list[tuple[str, list[dict[str, Any]], list[dict[str, Any]]]] = []
    for msg in messages:
        results, others = _blocks(msg)
        if not results and not others:
            continue
        if turns and turns[-1][0] == msg.role:
            turns[-1][1].extend(results)
            turns[-1][2].extend(others)
        else:
            turns.append((msg.role, results, others))
    if not turns or turns[0][0] != "user":
        turns.insert(0, ("user", [], [{"type": "text", "text": "."}]))
    return [{"role": role, "content": results + others} for role, results, others in turns]


def _in_tool_loop_without_thinking(messages: list[dict[str, Any]]) -> bool:
    """With thinking on, Anthropic wants the assistant turn whose tool calls are being
    answered to start with a thinking block; a history from another provider has none."""
    if len(messages) < 2 or messages[-1]["role"] != "user":
        return False
    last = messages[-1]["content"]
    if not last or last[0]["type"] != "tool_result":
        return False
    first = messages[-2]["content"][0]["type"]
    return first not in ("thinking", "redacted_thinking")


def plan_thinking(
    req: ChatRequest, max_tokens: int, messages: list[dict[str, Any]]
) -> tuple[dict[str, Any] | None, str | None]:
    """The ``thinking`` to send and, when the hint is not sent as given, why (for the
    decision log).

    An Anthropic client's own ``thinking`` goes as sent (with the interleaved-thinking
    beta a budget above ``max_tokens`` is valid, and a conflict is the provider's 400 to
    give, as it would be without the router). A hint from another protocol is fitted:
    it yields to fields that change the answer (a temperature other than 1, top_k, top_p
    below 0.95, a forced tool choice), its budget is raised to Anthropic's minimum 1024
    and kept below ``max_tokens`` (the client's hard limit). Either way thinking is left
    out when the tool calls being answered have no thinking block to lead with (a tool
    loop another provider began), which Anthropic would refuse."""
    hint = req.reasoning
    if hint is None:
        return None, None
    if not hint.enabled:
        return {"type": "disabled"}, None
    if _in_tool_loop_without_thinking(messages) and (hint.budget_tokens or hint.effort):
        return None, "thinking left out: the pending tool calls have no thinking block"
    if req.extras_protocol == NAME and hint.budget_tokens is not None:
        return {"type": "enabled", "budget_tokens": hint.budget_tokens}, None
    budget = hint.budget_tokens or EFFORT_BUDGET.get(hint.effort or "")
    if budget is None:
        # Anthropic's adaptive thinking rides in extras; another protocol's bare hint
        # (a summary setting without an effort) says nothing about a budget.
        return None, None if req.extras_protocol == NAME else "thinking: no budget or effort"
    native_effort = "effort" in req.extras.get("output_config", {})
    if req.extras_protocol == NAME and native_effort and hint.budget_tokens is None:
        return None, None  # output_config.effort rides along as sent
    if req.temperature not in (None, 1.0) or req.top_k is not None:
        return None, "thinking left out: it cannot be combined with temperature or top_k"
    if req.top_p is not None and req.top_p < 0.95:
        return None, "thinking left out: it cannot be combined with top_p below 0.95"
    if req.tool_choice and req.tool_choice.mode in ("required", "tool"):
        return None, "thinking left out: it cannot be combined with a forced tool choice"
    budget = min(max(budget, MIN_BUDGET), max_tokens - 1)
    if budget < MIN_BUDGET:
        return None, f"thinking left out: max_tokens {max_tokens} leaves no room for a budget"
    why = None if budget == hint.budget_tokens else f"thinking budget_tokens {budget}"
    return {"type": "enabled", "budget_tokens": budget}, why


def _tool_choice(req: ChatRequest) -> dict[str, Any] | None:
    tc = req.tool_choice
    if tc is None:
        return None
    kind = {"auto": "auto", "required": "any", "none": "none", "tool": "tool"}[tc.mode]
    choice: dict[str, Any] = {"type": kind}
    if kind == "tool":
        choice["name"] = tc.name or ""
    if tc.parallel is False and kind != "none":
        choice["disable_parallel_tool_use"] = True
    return choice


def encode_request(
    req: ChatRequest, upstream_model: str, *, default_max_tokens: int | None = None
) -> dict[str, Any]:
    req = functions_only(req)  # custom tools as one-string functions (codecs/_custom.py)
    max_tokens = req.max_output_tokens or default_max_tokens
    if not max_tokens:
        raise ValueError("Anthropic requires max_tokens: pass default_max_tokens")
    messages = encode_messages(req.messages)
    body: dict[str, Any] = {"model": upstream_model, "max_tokens": max_tokens}
    system = [
        _cache({"type": "text", "text": t.text}, t.cache_control) for t in req.system if t.text
    ]
    if system:
        body["system"] = system
    body["messages"] = messages
    same = req.extras_protocol == NAME
    tools: list[dict[str, Any]] = []
    for tool in req.tools:
        params = (
            tool.parameters if "type" in tool.parameters else {"type": "object", **tool.parameters}
        )
        wire: dict[str, Any] = {"name": tool.name}
        if tool.description:
            wire["description"] = tool.description
        wire["input_schema"] = params
        if tool.strict:
            wire["strict"] = True
        tools.append(_cache(wire, tool.cache_control))
    if same:
        tools.extend(req.extras.get("server_tools", []))
    if tools:
        body["tools"] = tools
        if (choice := _tool_choice(req)) is not None:
            body["tool_choice"] = choice
    thinking, _ = plan_thinking(req, max_tokens, messages)
    if thinking is not None:
        body["thinking"] = thinking
    if req.stop:
        body["stop_sequences"] = list(req.stop)
    for key, value in (
        ("temperature", req.temperature),
        ("top_p", req.top_p),
        ("top_k", req.top_k),
    ):
        if value is not None:
            body[key] = value
    if req.output is not None and req.output.kind == "json_schema":
        body["output_config"] = {
            "format": {"type": "json_schema", "schema": req.output.schema or {}}
        }
    if req.user:
        body["metadata"] = {"user_id": req.user}
    if req.stream:
        body["stream"] = True
    if same:
        for key, value in req.extras.items():
            if key == "server_tools":
                continue
            if key in ("metadata", "output_config") and isinstance(value, dict):
                body[key] = {**value, **body.get(key, {})}
            else:
                body.setdefault(key, value)
    return body


def _format_field(req: ChatRequest) -> str:
    return "text.format" if req.extras_protocol == "openai-responses" else "response_format"


def unsupported(req: ChatRequest) -> list[Unsupported]:
    out = []
    if req.n is not None and req.n > 1:
        out.append(Unsupported("n", NAME, "Anthropic returns one answer per request"))
    if req.seed is not None:
        out.append(Unsupported("seed", NAME, "Anthropic has no sampling seed"))
    if req.output is not None and req.output.kind == "json_object":
        out.append(
            Unsupported(
                _format_field(req),
                NAME,
                "Anthropic has JSON schemas (output_config), not JSON mode",
            )
        )
    for i, msg in enumerate(req.messages):
        for j, part in enumerate(msg.parts):
            items = part.content if isinstance(part, ToolResult) else [part]
            for item in items:
                why = _part_problem(item, req)
                if why:
                    out.append(Unsupported(f"messages.{i}.content.{j}", NAME, why))
    if req.extras_protocol != NAME:
        for key, value in req.extras.items():
            if key not in _HARMLESS_EXTRAS and value not in (None, False, 0, "", [], {}):
                out.append(Unsupported(key, NAME, "no Anthropic equivalent"))
    return out


def _part_problem(part: object, req: ChatRequest) -> str | None:
    if isinstance(part, Document):
        if part.data is None and part.url is None and req.extras_protocol != NAME:
            return "a file id of another provider"
        media_type = part.media_type or (part.data and _sniff(part.data, ""))
        if part.data is not None and media_type not in ("application/pdf", "text/plain"):
            return f"Anthropic takes PDF and plain-text documents, not {media_type or 'unknown'}"
        if media_type == "text/plain" and part.data is not None:
            try:
                base64.b64decode(part.data, validate=True)
            except (binascii.Error, ValueError):
                return "a text document whose data is not base64"
    return None
