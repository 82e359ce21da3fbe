"""A whole Anthropic ``Message`` as an :class:`Answer`, and an :class:`Answer` as one.

Blocks the model has no part for (server-tool use and results, text citations) cannot
reach another protocol's client, but an Anthropic client must get them back as the
provider sent them: when a message has any, its whole ``content`` rides in
``Answer.extras["content"]`` and ``encode_answer`` sends that instead of the parts.
``pause_turn`` and the matched ``stop_sequence`` ride the same way.
"""

from __future__ import annotations

import re
from typing import Any

from router.chat.codecs.anthropic._wire import (
    FINISH_OF_STOP,
    NAME,
    STOP_OF_FINISH,
    arguments_object,
    compact_json,
    normalize_usage,
    safe_tool_id,
    usage_wire,
)
from router.chat.model import Answer, Part, Reasoning, Text, ToolCall
from router.errors import UpstreamError

_MODELLED = {"text", "tool_use", "thinking", "redacted_thinking"}


def decode_block(block: dict[str, Any]) -> Part | None:
    kind = block.get("type")
    if kind == "text":
        return Text(str(block.get("text") or ""))
    if kind == "tool_use":
        args = block.get("input")
        return ToolCall(
            str(block.get("id") or ""),
            str(block.get("name") or ""),
            compact_json(args if isinstance(args, dict) else {}),
        )
    if kind == "thinking":
        return Reasoning(
            text=str(block.get("thinking") or ""),
            signature=block.get("signature") or None,
            origin=NAME,
        )
    if kind == "redacted_thinking":
        return Reasoning(redacted=True, encrypted=str(block.get("data") or ""), origin=NAME)
    return None


def decode_answer(body: dict[str, Any]) -> Answer:
    if not isinstance(body, dict) or body.get("type", "message") != "message":
        raise UpstreamError("the Anthropic answer is not a message", code="malformed_answer")
    content = body.get("content")
    content = [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []
    parts = [p for p in map(decode_block, content) if p is not None]
    stop = body.get("stop_reason")
    extras: dict[str, Any] = {}
    if any(b.get("type") not in _MODELLED or b.get("citations") for b in content):
        extras["content"] = content
    if stop == "pause_turn":
        extras["stop_reason"] = stop
    for key in ("stop_sequence", "container", "stop_details"):
        if body.get(key) is not None:
            extras[key] = body[key]
    return Answer(
        id=str(body.get("id") or ""),
        model=str(body.get("model") or ""),
        parts=parts,
        finish=FINISH_OF_STOP.get(stop, "stop") if isinstance(stop, str) else "stop",
        usage=normalize_usage(body.get("usage")),
        extras=extras,
        extras_protocol=NAME,
    )


_ID_BAD = re.compile(r"[^a-zA-Z0-9_-]")


def message_id(answer_id: str) -> str:
    """``msg_…``: the answer's own id when it is one, else derived from it."""
    if answer_id.startswith("msg_"):
        return answer_id
    return "msg_" + (_ID_BAD.sub("_", answer_id) or "router")


def encode_block(part: Part) -> dict[str, Any] | None:
    if isinstance(part, Text):
        return {"type": "text", "text": part.text} if part.text else None
    if isinstance(part, ToolCall):
        return {
            "type": "tool_use",
            "id": safe_tool_id(part.id),
            "name": part.name,
            "input": arguments_object(part.arguments),
        }
    if isinstance(part, Reasoning):
        if part.redacted and part.origin == NAME and part.encrypted:
            return {"type": "redacted_thinking", "data": part.encrypted}
        text = part.text or "\n\n".join(part.summary)
        signature = part.signature if part.origin == NAME else None
        if not text and not signature:
            return None
        # Another provider's reasoning is shown with an empty signature: a client that
        # sends it back gets it dropped before any Anthropic upstream sees it.
        return {"type": "thinking", "thinking": text, "signature": signature or ""}
    return None


def encode_answer(answer: Answer) -> dict[str, Any]:
    same = answer.extras_protocol == NAME
    if same and isinstance(answer.extras.get("content"), list):
        content = answer.extras["content"]
    else:
        content = [b for b in map(encode_block, answer.parts) if b is not None]
        if answer.refusal:
            content.append({"type": "text", "text": answer.refusal})
    stop_reason = STOP_OF_FINISH[answer.finish]
    stop_sequence = answer.extras.get("stop_sequence") if same else None
    if same and answer.extras.get("stop_reason") == "pause_turn":
        stop_reason = "pause_turn"
    elif stop_sequence is not None and stop_reason == "end_turn":
        stop_reason = "stop_sequence"
    message: dict[str, Any] = {
        "id": message_id(answer.id),
        "type": "message",
        "role": "assistant",
        "model": answer.model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage_wire(answer.usage),
    }
    if same:
        for key in ("container", "stop_details"):
            if key in answer.extras:
                message[key] = answer.extras[key]
    return message
