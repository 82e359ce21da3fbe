"""Small pieces of the Anthropic wire shared by the request, answer and stream halves.

Usage is the delicate one: Anthropic's ``input_tokens`` *excludes* cache reads and cache
writes, and the writes may come split by TTL (``cache_creation``) or as one total. The
model's :class:`Usage` counts every input token in ``input_tokens`` and the classes as
subsets, so the normaliser adds them up here, once, for both the answer and the stream.
It never raises: a bill must not fail on a provider's odd usage object.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from router.chat.codecs._common import bad_count, clamped_count
from router.chat.model import FinishReason, Usage

NAME = "anthropic-messages"

# Anthropic stop_reason -> the model's finish. ``pause_turn`` (a server tool paused a
# long turn) is served as "stop": the turn is over for this request; an Anthropic client
# gets the original back through Answer.extras. ``model_context_window_exceeded`` is a
# length stop like ``max_tokens``.
FINISH_OF_STOP: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "refusal",
}
# The model's finish -> stop_reason for an Anthropic client ("error" never gets here: the
# stream encoder sends an error event instead, and a whole answer cannot be an error).
STOP_OF_FINISH: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
    "refusal": "refusal",
    "error": "end_turn",
}

_TOOL_ID_OK = re.compile(r"^[a-zA-Z0-9_-]+$")
_TOOL_ID_BAD = re.compile(r"[^a-zA-Z0-9_-]")


def safe_tool_id(call_id: str) -> str:
    """A tool id Anthropic accepts (``^[a-zA-Z0-9_-]+$``), the same for the same input.

    A valid id is kept as it is; another has its bad characters replaced by ``_`` and a
    short digest of the original appended, so two ids differing only in bad characters
    (``a.b``, ``a:b``) stay distinct, and a tool_use and its tool_result still match."""
    if _TOOL_ID_OK.match(call_id):
        return call_id
    digest = hashlib.sha256(call_id.encode()).hexdigest()[:8]
    return f"{_TOOL_ID_BAD.sub('_', call_id) or 'toolu'}_{digest}"


def compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def arguments_object(arguments: str) -> dict[str, Any]:
    """``ToolCall.arguments`` as the object Anthropic's ``input`` must be.

    Empty text is ``{}`` (OpenAI sends "" for a tool without parameters). Text that is
    not a JSON object (a provider's broken call) is also ``{}``: Anthropic rejects any
    other ``input``, and the call already happened or will fail the client's own schema
    check, which the model sees and retries; that beats failing the whole request."""
    if not arguments.strip():
        return {}
    try:
        value = json.loads(arguments)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def normalize_usage(obj: Any) -> Usage | None:
    """Anthropic's ``usage`` object as the model's :class:`Usage`; None when unusable.

    ``input_tokens`` (uncached) + ``cache_read_input_tokens`` + cache writes = every input
    token. The writes: ``cache_creation.ephemeral_5m_input_tokens`` →
    ``cache_write_tokens`` and ``ephemeral_1h_input_tokens`` → ``cache_write_1h_tokens``;
    without the split, the whole ``cache_creation_input_tokens`` bills at the 5-minute
    rate. When the split and the total disagree, the larger total wins and what the 1h
    figure does not account for is 5-minute. Negative counts clamp to 0; non-numbers
    count as absent; ``output_tokens_details.thinking_tokens`` (newer API versions)
    becomes ``reasoning_tokens``, capped at the output. A usage that needed any of these
    repairs, or lacks ``input_tokens`` or ``output_tokens``, is ``doubtful``."""
    if not isinstance(obj, dict):
        return None
    split_obj = obj.get("cache_creation")
    raw = [obj.get(k) for k in (
        "input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"
    )] + ([split_obj.get(k) for k in ("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens")]
          if isinstance(split_obj, dict) else [])  # fmt: skip
    doubtful = any(bad_count(v) for v in raw) or raw[0] is None or raw[1] is None
    uncached = clamped_count(obj.get("input_tokens"))
    output = clamped_count(obj.get("output_tokens"))
    read = clamped_count(obj.get("cache_read_input_tokens"))
    written = clamped_count(obj.get("cache_creation_input_tokens"))
    split = obj.get("cache_creation")
    w5m = w1h = None
    if isinstance(split, dict):
        w5m = clamped_count(split.get("ephemeral_5m_input_tokens"))
        w1h = clamped_count(split.get("ephemeral_1h_input_tokens"))
    if w5m is None and w1h is None:
        w5m = written
    else:
        total = max(written or 0, (w5m or 0) + (w1h or 0))
        w1h = w1h or 0
        w5m = total - w1h
    if uncached is None and output is None and read is None and w5m is None:
        return None
    reasoning = None
    details = obj.get("output_tokens_details")
    if isinstance(details, dict):
        reasoning = clamped_count(details.get("thinking_tokens"))
        if reasoning is not None:
            doubtful = doubtful or bad_count(details.get("thinking_tokens"))
            doubtful = doubtful or reasoning > (output or 0)
            reasoning = min(reasoning, output or 0)
    return Usage(
        input_tokens=(uncached or 0) + (read or 0) + (w5m or 0) + (w1h or 0),
        output_tokens=output or 0,
        cache_read_tokens=read,
        cache_write_tokens=w5m,
        cache_write_1h_tokens=w1h,
        reasoning_tokens=reasoning,
        doubtful=doubtful,
    )


def usage_wire(usage: Usage | None, *, output_tokens: int | None = None) -> dict[str, Any]:
    """The model's usage as Anthropic's usage object (input uncached, classes apart).

    Whatever protocol reported it: an OpenAI ``cached_tokens`` is a cache read here."""
    u = usage or Usage()
    w5m = u.cache_write_tokens or 0
    w1h = u.cache_write_1h_tokens or 0
    wire: dict[str, Any] = {
        "input_tokens": u.uncached_input_tokens,
        "output_tokens": u.output_tokens if output_tokens is None else output_tokens,
        "cache_read_input_tokens": u.cache_read_tokens or 0,
        "cache_creation_input_tokens": w5m + w1h,
        "cache_creation": {"ephemeral_5m_input_tokens": w5m, "ephemeral_1h_input_tokens": w1h},
    }
    if u.reasoning_tokens is not None:
        wire["output_tokens_details"] = {"thinking_tokens": u.reasoning_tokens}
    return wire
