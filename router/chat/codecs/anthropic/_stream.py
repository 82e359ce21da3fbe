"""Anthropic's SSE, both ways.

Decoding: usage arrives in two halves (the input classes in ``message_start``, the
output, and possibly updated input counts, in ``message_delta``); the decoder keeps the
first half and emits one :class:`UsageEvent` with both, the final usage. An ``error``
event raises :class:`UpstreamStreamError` (the decoder interface returns events, and an
in-band error is not one: serving decides between retrying and passing it on). A stream
that ends before ``message_delta`` owes the usage known so far and a ``Finish("error")``;
one whose ``message_delta`` had no usage still owes ``message_start``'s.

Encoding: the exact sequence Anthropic's SDKs accumulate: ``message_start`` (sent on the
upstream's StreamStart, so that it carries the input usage; ``start()`` sends nothing),
``ping``, blocks with their own indices, then — only in ``finish()`` — ``message_delta``
carrying the router's decision as ``"router"`` (clients ignore unknown fields) and
``message_stop``. A finish of ``"error"`` becomes an ``error`` event instead, which
Anthropic clients raise. Reasoning blocks end at their signature: a ``ReasoningDelta``
with a signature closes the thinking block it belongs to.
"""

from __future__ import annotations

from typing import Any

from router.chat.codecs import Frame
from router.chat.codecs.anthropic._answer import message_id
from router.chat.codecs.anthropic._wire import (
    FINISH_OF_STOP,
    STOP_OF_FINISH,
    compact_json,
    normalize_usage,
    safe_tool_id,
    usage_wire,
)
from router.chat.model import (
    Finish,
    ReasoningDelta,
    StreamEvent,
    StreamStart,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
    UsageEvent,
)


class UpstreamStreamError(Exception):
    """An ``error`` event in an Anthropic stream (``overloaded_error``, ``api_error``…)."""

    def __init__(self, type: str, message: str) -> None:
        super().__init__(f"{type}: {message}")
        self.type = type
        self.message = message


class AnthropicStreamDecoder:
    def __init__(self) -> None:
        self._kinds: dict[int, str] = {}  # block index -> text | tool | thinking | other
        self._calls: dict[int, int] = {}  # block index -> call_index
        self._usage: dict[str, Any] = {}  # message_start's usage, overlaid by message_delta's
        self._started = self._finished = self._usage_sent = False

    def feed(self, event: str | None, data: dict[str, Any]) -> list[StreamEvent]:
        if not isinstance(data, dict):
            return []
        kind = event or data.get("type")
        if kind == "message_start":
            return self._start(data.get("message") or {})
        if kind == "content_block_start":
            return self._block_start(data.get("index"), data.get("content_block") or {})
        if kind == "content_block_delta":
            return self._delta(data.get("index"), data.get("delta") or {})
        if kind == "content_block_stop":
            index = data.get("index")
            if self._kinds.get(index) == "tool":
                return [ToolCallEnd(self._calls[index])]
            return []
        if kind == "message_delta":
            return self._message_delta(data)
        if kind == "error":
            error = data.get("error") or {}
            raise UpstreamStreamError(
                str(error.get("type") or "api_error"), str(error.get("message") or "")
            )
        return []  # ping, message_stop, and event types newer than this codec

    def close(self) -> list[StreamEvent]:
        if not self._started:
            return []
        owed: list[StreamEvent] = []
        if not self._usage_sent and (usage := normalize_usage(self._usage)) is not None:
            owed.append(UsageEvent(usage))  # the input was billed even if the output was cut
            self._usage_sent = True
        if not self._finished:
            owed.append(Finish("error"))
            self._finished = True
        return owed

    def _start(self, message: dict[str, Any]) -> list[StreamEvent]:
        self._started = True
        usage = message.get("usage")
        self._usage = dict(usage) if isinstance(usage, dict) else {}
        return [
            StreamStart(
                id=str(message.get("id") or ""),
                model=str(message.get("model") or ""),
                usage=normalize_usage(self._usage),
            )
        ]

    def _block_start(self, index: Any, block: dict[str, Any]) -> list[StreamEvent]:
        kind = block.get("type")
        if kind == "text":
            self._kinds[index] = "text"
            return [TextDelta(block["text"])] if block.get("text") else []
        if kind == "tool_use":
            self._kinds[index] = "tool"
            call = self._calls[index] = len(self._calls)
            out: list[StreamEvent] = [
                ToolCallStart(call, str(block.get("id") or ""), str(block.get("name") or ""))
            ]
            if isinstance(block.get("input"), dict) and block["input"]:
                out.append(ToolCallDelta(call, compact_json(block["input"])))
            return out
        if kind == "thinking":
            self._kinds[index] = "thinking"
            text, signature = block.get("thinking") or "", block.get("signature") or None
            return [ReasoningDelta(text=text, signature=signature)] if text or signature else []
        if kind == "redacted_thinking":
            self._kinds[index] = "other"
            return [ReasoningDelta(redacted=True, encrypted=str(block.get("data") or ""))]
        self._kinds[index] = "other"  # server tools and their results: no part in the model
        return []

    def _delta(self, index: Any, delta: dict[str, Any]) -> list[StreamEvent]:
        kind, block = delta.get("type"), self._kinds.get(index)
        if kind == "text_delta" and block == "text" and delta.get("text"):
            return [TextDelta(str(delta["text"]))]
        if kind == "input_json_delta" and block == "tool" and delta.get("partial_json"):
            return [ToolCallDelta(self._calls[index], str(delta["partial_json"]))]
        if kind == "thinking_delta" and block == "thinking" and delta.get("thinking"):
            return [ReasoningDelta(text=str(delta["thinking"]))]
        if kind == "signature_delta" and block == "thinking" and delta.get("signature"):
            return [ReasoningDelta(signature=str(delta["signature"]))]
        return []  # citations_delta, deltas of server-tool blocks

    def _message_delta(self, data: dict[str, Any]) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        stop = (data.get("delta") or {}).get("stop_reason")
        if isinstance(stop, str):
            out.append(Finish(FINISH_OF_STOP.get(stop, "stop")))
            self._finished = True
        usage = data.get("usage")
        if isinstance(usage, dict):
            # Counts in message_delta are cumulative: they replace, never add.
            self._usage.update({k: v for k, v in usage.items() if v is not None})
            if (final := normalize_usage(self._usage)) is not None:
                out.append(UsageEvent(final))
                self._usage_sent = True
        return out


class AnthropicStreamEncoder:
    def __init__(self) -> None:
        self._id = "msg_router"
        self._model = ""
        self._started = False
        self._next = 0  # the next block index
        self._open: int | None = None  # the open text or thinking block
        self._open_kind: str | None = None
        self._tools: dict[int, int] = {}  # call_index -> block index, while open
        self._usage: Usage | None = None
        self._reason: str | None = None

    def start(self, id: str, model: str, created: int) -> list[Frame]:
        self._id, self._model = message_id(id), model
        return []

    def feed(self, event: StreamEvent) -> list[Frame]:
        if isinstance(event, StreamStart):
            self._usage = event.usage or self._usage
            return self._message_start()
        if isinstance(event, UsageEvent):
            self._usage = event.usage
            return []
        if getattr(event, "index", 0) != 0:
            return []  # other choices (n > 1) cannot be expressed here
        if isinstance(event, Finish):
            self._reason = event.reason
            return []
        out = self._message_start()
        if isinstance(event, TextDelta):
            if event.text:
                out += self._open_block("text", {"type": "text", "text": ""})
                out.append(self._delta({"type": "text_delta", "text": event.text}))
        elif isinstance(event, ReasoningDelta):
            out += self._reasoning(event)
        elif isinstance(event, ToolCallStart):
            out += self._close_open()
            index = self._tools[event.call_index] = self._next
            self._next += 1
            block = {
                "type": "tool_use",
                "id": safe_tool_id(event.id),
                "name": event.name,
                "input": {},
            }
            out.append(_frame("content_block_start", index=index, content_block=block))
        elif isinstance(event, ToolCallDelta):
            index = self._tools.get(event.call_index)
            if index is not None and event.arguments:
                delta = {"type": "input_json_delta", "partial_json": event.arguments}
                out.append(_frame("content_block_delta", index=index, delta=delta))
        elif isinstance(event, ToolCallEnd):
            index = self._tools.pop(event.call_index, None)
            if index is not None:
                out.append(_frame("content_block_stop", index=index))
        return out

    def finish(self, extra: dict[str, Any] | None = None) -> list[Frame]:
        out = self._message_start() + self._close_open()
        out += [_frame("content_block_stop", index=i) for i in sorted(self._tools.values())]
        self._tools.clear()
        if self._reason == "error":
            error: dict[str, Any] = {
                "type": "error",
                "error": {"type": "api_error", "message": "the upstream stream ended early"},
            }
            if extra is not None:
                error["router"] = extra
            return [*out, ("error", error)]
        delta: dict[str, Any] = {
            "type": "message_delta",
            "delta": {"stop_reason": STOP_OF_FINISH[self._reason or "stop"], "stop_sequence": None},
            "usage": usage_wire(self._usage),
        }
        if extra is not None:
            delta["router"] = extra
        return [*out, ("message_delta", delta), _frame("message_stop")]

    def _message_start(self) -> list[Frame]:
        if self._started:
            return []
        self._started = True
        usage = usage_wire(
            self._usage, output_tokens=min(1, self._usage.output_tokens) if self._usage else 0
        )
        message = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        return [_frame("message_start", message=message), _frame("ping")]

    def _open_block(self, kind: str, block: dict[str, Any]) -> list[Frame]:
        if self._open_kind == kind:
            return []
        out = self._close_open()
        self._open, self._open_kind = self._next, kind
        self._next += 1
        return [*out, _frame("content_block_start", index=self._open, content_block=block)]

    def _close_open(self) -> list[Frame]:
        if self._open is None:
            return []
        index, self._open, self._open_kind = self._open, None, None
        return [_frame("content_block_stop", index=index)]

    def _delta(self, delta: dict[str, Any]) -> Frame:
        return _frame("content_block_delta", index=self._open, delta=delta)

    def _reasoning(self, event: ReasoningDelta) -> list[Frame]:
        if event.redacted:
            out = self._close_open()
            index, self._next = self._next, self._next + 1
            block = {"type": "redacted_thinking", "data": event.encrypted or ""}
            out.append(_frame("content_block_start", index=index, content_block=block))
            return [*out, _frame("content_block_stop", index=index)]
        if not event.text and not event.signature:
            return []  # another provider's encrypted reasoning: nothing to show
        out = self._open_block("thinking", {"type": "thinking", "thinking": "", "signature": ""})
        if event.text:
            out.append(self._delta({"type": "thinking_delta", "thinking": event.text}))
        if event.signature:
            out.append(self._delta({"type": "signature_delta", "signature": event.signature}))
            out += self._close_open()
        return out


def _frame(event: str, **fields: Any) -> Frame:
    return event, {"type": event, **fields}
