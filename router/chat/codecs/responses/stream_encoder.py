"""Model stream events → OpenAI's exact Responses event sequence for the client.

``sequence_number`` runs from 0: ``response.created``, ``response.in_progress``, then
per output item ``output_item.added`` … ``output_item.done`` (a message with its one
``output_text`` content part, a function call with its argument deltas, a reasoning item
with one summary part), and in ``finish()`` the terminal ``response.completed`` (or
``.incomplete`` / ``.failed``) carrying the whole ``Response``: usage comes last in the
model's stream, so the terminal event cannot be written on ``Finish``. The router's
decision rides as ``"router"`` on that last event's data object: the SDK's event models
keep unknown fields (``extra="allow"``) and the Open Responses models ignore them.

A reasoning item ends when its ``encrypted`` content arrives (OpenAI sends it on the
item's ``done``), so several reasoning items in a row stay apart. Encrypted content of a
redacted block (Anthropic's) is not a Responses item's and is not sent to the client.

A call of a tool the client declared ``custom`` is a ``custom_tool_call`` item with
``response.custom_tool_call_input.delta`` / ``.done`` events: streamed as it comes from a
Responses upstream (raw text), and in one delta at the call's end from an upstream of
another protocol, whose JSON ``{"input": ...}`` must be whole to be unwrapped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from router.chat.codecs import Frame
from router.chat.codecs._custom import custom_names, unwrap_input
from router.chat.codecs.responses.answer import (
    call_item,
    custom_call_item,
    message_item,
    output_text,
    reasoning_item,
    response_object,
    status_of,
)
from router.chat.codecs.responses.common import item_id, response_id
from router.chat.model import (
    ChatRequest,
    Finish,
    FinishReason,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
    UsageEvent,
)

TERMINAL = {
    "completed": "response.completed",
    "incomplete": "response.incomplete",
    "failed": "response.failed",
}


@dataclass(slots=True)
class _Item:
    kind: str  # "message" | "reasoning" | "function_call"
    index: int
    id: str
    text: list[str] = field(default_factory=list)  # message text / summary / arguments
    call: ToolCall | None = None
    encrypted: str | None = None
    raw: bool = True  # a custom call's deltas are its input (False: JSON to unwrap)


class ResponsesStreamEncoder:
    def __init__(self, req: ChatRequest | None = None) -> None:
        self._req = req
        self._custom = custom_names(req)
        self._seq = 0
        self._id = "resp_"
        self._model = ""
        self._created = 0
        self._done: dict[int, dict[str, Any]] = {}  # finished items by output index
        self._next = 0
        self._current: _Item | None = None  # the open message or reasoning item
        self._calls: dict[int, _Item] = {}  # open function calls by call index
        self._usage: Usage | None = None
        self._finish: FinishReason | None = None
        self._closed = False

    def _frame(self, kind: str, **fields: Any) -> Frame:
        data = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return kind, data

    def _response(self, status: str) -> dict[str, Any]:
        return response_object(
            id=self._id,
            model=self._model,
            created_at=self._created,
            status=status,
            output=[self._done[i] for i in sorted(self._done)],
            usage=self._usage if status != "in_progress" else None,
            req=self._req,
            finish=self._finish,
        )

    def start(self, id: str, model: str, created: int) -> list[Frame]:
        self._id, self._model, self._created = response_id(id), model, created
        return [
            self._frame("response.created", response=self._response("in_progress")),
            self._frame("response.in_progress", response=self._response("in_progress")),
        ]

    def feed(self, event: StreamEvent) -> list[Frame]:
        if self._closed or getattr(event, "index", 0) != 0:
            return []
        if isinstance(event, TextDelta):
            return self._text(event.text) if event.text else []
        if isinstance(event, ReasoningDelta):
            return self._reasoning(event)
        if isinstance(event, ToolCallStart):
            return self._call_start(event)
        if isinstance(event, ToolCallDelta):
            return self._call_delta(event)
        if isinstance(event, ToolCallEnd):
            item = self._calls.pop(event.call_index, None)
            return self._close(item) if item else []
        if isinstance(event, UsageEvent):
            self._usage = event.usage
        elif isinstance(event, Finish):
            self._finish = event.reason
        return []

    def finish(self, extra: dict[str, Any] | None = None) -> list[Frame]:
        if self._closed:
            return []
        frames = self._close(self._current)
        for call in list(self._calls):
            frames += self._close(self._calls.pop(call))
        self._closed = True
        finish = self._finish or "stop"
        status = status_of(finish)
        self._finish = finish
        kind, data = self._frame(TERMINAL[status], response=self._response(status))
        if extra:
            data["router"] = extra  # type: ignore[index]
        return [*frames, (kind, data)]

    # ------------------------------------------------------------ items

    def _open(self, kind: str, prefix: str) -> _Item:
        item = _Item(kind, self._next, item_id(prefix, self._id, self._next))
        self._next += 1
        return item

    def _continue(
        self, kind: str, prefix: str, added: Callable[[str], dict[str, Any]]
    ) -> tuple[_Item, list[Frame]]:
        """The open item if it is of ``kind``; else the open one closed and a new one
        opened (its ``output_item.added`` frame, ``added(item id)``, returned)."""
        item = self._current
        if item is not None and item.kind == kind:
            return item, []
        frames = self._close(item)
        item = self._current = self._open(kind, prefix)
        frames.append(self._added(item, added(item.id)))
        return item, frames

    def _text(self, text: str) -> list[Frame]:
        item, frames = self._continue(
            "message", "msg", lambda id: message_item(id, [], "in_progress")
        )
        if frames:  # a new message item: its one content part opens with it
            frames.append(self._part("response.content_part.added", item, ""))
        item.text.append(text)
        frames.append(
            self._frame(
                "response.output_text.delta",
                item_id=item.id,
                output_index=item.index,
                content_index=0,
                delta=text,
                logprobs=[],
            )
        )
        return frames

    def _reasoning(self, event: ReasoningDelta) -> list[Frame]:
        if event.redacted or not (event.text or event.encrypted):
            return []  # Anthropic's signatures and redacted blocks mean nothing here
        item, frames = self._continue("reasoning", "rs", lambda id: reasoning_item(id, [], None))
        if event.text:
            if not item.text:
                frames.append(self._summary("response.reasoning_summary_part.added", item, ""))
            item.text.append(event.text)
            frames.append(
                self._frame(
                    "response.reasoning_summary_text.delta",
                    item_id=item.id,
                    output_index=item.index,
                    summary_index=0,
                    delta=event.text,
                )
            )
        if event.encrypted:
            item.encrypted = event.encrypted
            frames += self._close(item)
        return frames

    def _call_start(self, event: ToolCallStart) -> list[Frame]:
        frames = self._close(self._current)
        if event.custom or event.name in self._custom:
            item = self._open("custom_tool_call", "ctc")
            item.call = ToolCall(event.id, event.name, "", custom=True)
            item.raw = event.custom
            body = custom_call_item(item.id, item.call, "in_progress", "")
        else:
            item = self._open("function_call", "fc")
            item.call = ToolCall(event.id, event.name, "")
            body = call_item(item.id, item.call, "in_progress")
        self._calls[event.call_index] = item
        frames.append(self._added(item, body))
        return frames

    def _call_delta(self, event: ToolCallDelta) -> list[Frame]:
        item = self._calls.get(event.call_index)
        if item is None or not event.arguments:
            return []
        item.text.append(event.arguments)
        if item.kind == "custom_tool_call":
            if not item.raw:
                return []  # JSON arguments: unwrapped when the call is whole
            return [
                self._frame(
                    "response.custom_tool_call_input.delta",
                    item_id=item.id,
                    output_index=item.index,
                    delta=event.arguments,
                )
            ]
        return [
            self._frame(
                "response.function_call_arguments.delta",
                item_id=item.id,
                output_index=item.index,
                delta=event.arguments,
            )
        ]

    def _added(self, item: _Item, body: dict[str, Any]) -> Frame:
        return self._frame("response.output_item.added", output_index=item.index, item=body)

    def _part(self, kind: str, item: _Item, text: str) -> Frame:
        return self._frame(
            kind, item_id=item.id, output_index=item.index, content_index=0, part=output_text(text)
        )

    def _summary(self, kind: str, item: _Item, text: str) -> Frame:
        return self._frame(
            kind,
            item_id=item.id,
            output_index=item.index,
            summary_index=0,
            part={"type": "summary_text", "text": text},
        )

    def _close(self, item: _Item | None) -> list[Frame]:
        """The ``.done`` events of an open item; it joins the final output."""
        if item is None:
            return []
        if item is self._current:
            self._current = None
        text = "".join(item.text)
        ids = {"item_id": item.id, "output_index": item.index}
        frames: list[Frame] = []
        if item.kind == "message":
            frames.append(
                self._frame(
                    "response.output_text.done", **ids, content_index=0, text=text, logprobs=[]
                )
            )
            frames.append(self._part("response.content_part.done", item, text))
            body = message_item(item.id, [output_text(text)], "completed")
        elif item.kind == "reasoning":
            if item.text:
                frames.append(
                    self._frame(
                        "response.reasoning_summary_text.done", **ids, summary_index=0, text=text
                    )
                )
                frames.append(self._summary("response.reasoning_summary_part.done", item, text))
            body = reasoning_item(item.id, [text] if text else [], item.encrypted)
        elif item.kind == "custom_tool_call":
            assert item.call is not None
            text = text if item.raw else unwrap_input(text)
            if not item.raw and text:
                frames.append(
                    self._frame("response.custom_tool_call_input.delta", **ids, delta=text)
                )
            frames.append(self._frame("response.custom_tool_call_input.done", **ids, input=text))
            body = custom_call_item(item.id, item.call, "completed", text)
        else:
            assert item.call is not None
            item.call.arguments = text
            frames.append(
                self._frame("response.function_call_arguments.done", **ids, arguments=text)
            )
            body = call_item(item.id, item.call, "completed")
        self._done[item.index] = body
        frames.append(self._frame("response.output_item.done", output_index=item.index, item=body))
        return frames
