"""A provider's Responses server-sent events → model stream events.

Deltas are passed on as they come, and the ``.done`` events are the fallback for a
provider that sends an item whole (its text, arguments or summary come out as one delta
then). A stream that ends without ``response.completed`` / ``incomplete`` / ``failed``
was cut: ``close()`` owes the open calls' ends and ``Finish("error")``. An ``error``
event raises ``UpstreamStreamError``. Events the model has no place for (hosted tool
progress, annotations) say nothing.
"""

from __future__ import annotations

from typing import Any

from router.chat.codecs.responses.answer import finish_of, normalize_usage
from router.chat.model import (
    Finish,
    ReasoningDelta,
    StreamEvent,
    StreamStart,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    UsageEvent,
)


class UpstreamStreamError(Exception):
    """The provider's stream said ``error``: its code and message, for the error event
    the router sends its own client."""

    def __init__(self, message: str, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param


# ---------------------------------------------------------------- provider → model


class ResponsesStreamDecoder:
    def __init__(self) -> None:
        self._finished = False
        self._calls: dict[Any, int] = {}  # item id and output index → call index
        self._open_calls: list[int] = []
        self._with_args: set[int] = set()
        self._with_text: set[Any] = set()  # message and reasoning items that streamed
        self._n_calls = 0

    def feed(self, event: str | None, data: dict[str, Any]) -> list[StreamEvent]:
        if not isinstance(data, dict) or self._finished:
            return []
        kind = data.get("type") or event
        if kind == "error":
            err = data.get("error") if isinstance(data.get("error"), dict) else data
            raise UpstreamStreamError(
                str(err.get("message") or "upstream stream error"),
                code=err.get("code"),
                param=err.get("param"),
            )
        if kind == "response.created":
            resp = data.get("response") or {}
            created = resp.get("created_at")
            return [
                StreamStart(
                    id=str(resp.get("id") or ""),
                    model=str(resp.get("model") or ""),
                    created=int(created) if isinstance(created, int | float) else 0,
                )
            ]
        if kind in ("response.output_text.delta", "response.refusal.delta"):
            # A refusal has no stream event in the model: it reaches the client as text.
            self._with_text.add(data.get("item_id"))
            return [TextDelta(str(data.get("delta") or ""))] if data.get("delta") else []
        if kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
            self._with_text.add(data.get("item_id"))
            return [ReasoningDelta(text=str(data.get("delta") or ""))] if data.get("delta") else []
        if kind == "response.reasoning_summary_part.added" and data.get("summary_index"):
            return [ReasoningDelta(text="\n\n")]  # summary parts are paragraphs
        if kind in (
            "response.function_call_arguments.delta",
            "response.custom_tool_call_input.delta",
        ):
            call = self._call_of(data)
            if call is None or not data.get("delta"):
                return []
            self._with_args.add(call)
            return [ToolCallDelta(call, str(data["delta"]))]
        if kind == "response.output_item.added":
            item = data.get("item") or {}
            if item.get("type") in ("function_call", "custom_tool_call"):
                return self._start_call(item, data.get("output_index"))
            return []
        if kind == "response.output_item.done":
            return self._item_done(data.get("item") or {}, data.get("output_index"))
        if kind in ("response.completed", "response.incomplete", "response.failed"):
            return self._terminal(data.get("response") or {})
        return []  # in_progress, content parts, hosted tool progress: nothing to say

    def close(self) -> list[StreamEvent]:
        if self._finished:
            return []
        self._finished = True
        owed: list[StreamEvent] = [ToolCallEnd(c) for c in self._open_calls]
        self._open_calls.clear()
        return [*owed, Finish("error")]

    def _call_of(self, data: dict[str, Any]) -> int | None:
        call = self._calls.get(data.get("item_id"))
        return call if call is not None else self._calls.get(("out", data.get("output_index")))

    def _start_call(self, item: dict[str, Any], output_index: Any) -> list[StreamEvent]:
        call = self._n_calls
        self._n_calls += 1
        self._calls[item.get("id")] = call
        self._calls[("out", output_index)] = call
        self._open_calls.append(call)
        custom = item.get("type") == "custom_tool_call"
        out: list[StreamEvent] = [
            ToolCallStart(
                call,
                str(item.get("call_id") or item.get("id") or ""),
                str(item.get("name") or ""),
                custom=custom,
            )
        ]
        args = item.get("input" if custom else "arguments")
        if args:
            self._with_args.add(call)
            out.append(ToolCallDelta(call, str(args)))
        return out

    def _item_done(self, item: dict[str, Any], output_index: Any) -> list[StreamEvent]:
        kind = item.get("type")
        out: list[StreamEvent] = []
        if kind in ("function_call", "custom_tool_call"):
            args = item.get("input" if kind == "custom_tool_call" else "arguments")
            call = self._call_of({"item_id": item.get("id"), "output_index": output_index})
            if call is None:
                out += self._start_call(item, output_index)
                call = self._n_calls - 1
            elif call not in self._with_args and args:
                out.append(ToolCallDelta(call, str(args)))
            if call in self._open_calls:
                self._open_calls.remove(call)
                out.append(ToolCallEnd(call))
        elif kind == "message" and item.get("id") not in self._with_text:
            text = "".join(
                str(c.get("text") or c.get("refusal") or "")
                for c in item.get("content") or []
                if isinstance(c, dict)
            )
            if text:
                out.append(TextDelta(text))
        elif kind == "reasoning":
            if item.get("id") not in self._with_text:
                summary = [
                    s.get("text") or "" for s in item.get("summary") or [] if isinstance(s, dict)
                ]
                if any(summary):
                    out.append(ReasoningDelta(text="\n\n".join(summary)))
            if item.get("encrypted_content"):
                out.append(ReasoningDelta(encrypted=str(item["encrypted_content"])))
        return out

    def _terminal(self, resp: dict[str, Any]) -> list[StreamEvent]:
        self._finished = True
        out: list[StreamEvent] = [ToolCallEnd(c) for c in self._open_calls]
        self._open_calls.clear()
        usage = normalize_usage(resp.get("usage"))
        if usage is not None:
            out.append(UsageEvent(usage))
        reason = finish_of(resp.get("status"), resp.get("incomplete_details"), self._n_calls > 0)
        out.append(Finish(reason))
        return out
