"""Chat Completions streams: provider chunks into events, events into client chunks.

The decoder is lenient the way providers need: a tool call is known by its ``index``
(a new ``id`` at a used index starts a new call, and a delta with no index continues
the last call or, with an id, starts one); a call's arguments that come before its name
wait for it; ``reasoning_content`` (DeepSeek) and ``reasoning`` (vLLM, Groq) are
reasoning; a ``refusal`` delta is text (the model has no refusal event); a usage object
(standard, or Groq's ``x_groq.usage``) becomes a ``UsageEvent`` each time it comes (vLLM
can send one per chunk: the last one wins). An ``error`` object mid-stream raises
``UpstreamError``. A stream that ends without a finish gets its tool calls ended and a
finish (``tool_calls`` if it made any, else ``stop``) from ``close``.

The encoder writes chunks the way OpenAI streams them: a first chunk with
``{"role": "assistant", "content": ""}`` for each of the ``n`` choices, then content and tool-call deltas (a call's
first delta carries id, type, name and empty arguments; later ones only arguments), a
chunk with the finish reason; then the usage chunk (``choices: []``) only when the
client asked for it, the ``router`` chunk when ``finish`` is given the decision, and
``[DONE]``. Tool calls are renumbered 0, 1, ... per choice whatever ``call_index`` the
events carry (Anthropic counts content blocks).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from router.chat.codecs import Frame
from router.chat.codecs.openai_chat.answer import encode_usage, finish_out, normalize_usage
from router.chat.codecs.openai_chat.parts import FINISH_IN
from router.chat.model import (
    ChatRequest,
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
from router.errors import UpstreamError

CHUNK = "chat.completion.chunk"


@dataclass(slots=True)
class _Call:
    position: int
    id: str | None = None
    name: str | None = None
    started: bool = False
    ended: bool = False
    waiting: str = ""  # arguments that came before the name


@dataclass(slots=True)
class _Choice:
    calls: list[_Call] = field(default_factory=list)
    by_index: dict[int, _Call] = field(default_factory=dict)
    by_id: dict[str, _Call] = field(default_factory=dict)
    last: _Call | None = None
    finished: bool = False


class ChatStreamDecoder:
    def __init__(self) -> None:
        self._started = False
        self._choices: dict[int, _Choice] = {}

    def feed(self, event: str | None, data: Any) -> list[StreamEvent]:
        if not isinstance(data, dict):  # "[DONE]"
            return []
        err = data.get("error")
        if isinstance(err, dict) and not data.get("choices"):
            message = err.get("message") or "no message"
            raise UpstreamError(
                f"the upstream stream reported an error: {message}",
                code="stream_error",
                summary="the upstream stream reported an error",
            )
        out: list[StreamEvent] = []
        if not self._started:
            self._started = True
            created = data.get("created")
            out.append(
                StreamStart(
                    id=str(data.get("id") or ""),
                    model=str(data.get("model") or ""),
                    created=created if type(created) is int else 0,
                )
            )
        choices = data.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if isinstance(choice, dict):
                self._choice(choice, out)
        usage = data.get("usage")
        if usage is None and isinstance(data.get("x_groq"), dict):
            usage = data["x_groq"].get("usage")
        if (parsed := normalize_usage(usage)) is not None:
            out.append(UsageEvent(parsed))
        return out

    def _choice(self, choice: dict[str, Any], out: list[StreamEvent]) -> None:
        idx = choice.get("index")
        idx = idx if type(idx) is int else 0
        st = self._choices.setdefault(idx, _Choice())
        delta = choice.get("delta")
        delta = delta if isinstance(delta, dict) else {}
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            out.append(ReasoningDelta(text=reasoning, index=idx))
        for key in ("content", "refusal"):
            text = delta.get(key)
            if isinstance(text, str) and text:
                out.append(TextDelta(text, index=idx))
        calls = delta.get("tool_calls")
        for tc in calls if isinstance(calls, list) else ():
            if isinstance(tc, dict):
                self._tool_delta(st, idx, tc, out)
        if isinstance(delta.get("function_call"), dict):  # legacy: one call per answer
            fc = {"index": 0, "function": delta["function_call"]}
            if not st.calls:
                fc["id"] = "call_legacy_0"
            self._tool_delta(st, idx, fc, out)
        reason = choice.get("finish_reason")
        if isinstance(reason, str) and reason and not st.finished:
            self._end(st, idx, FINISH_IN.get(reason, "stop"), out)

    def _tool_delta(
        self, st: _Choice, idx: int, tc: dict[str, Any], out: list[StreamEvent]
    ) -> None:
        key = tc.get("index") if type(tc.get("index")) is int else None
        call_id = tc.get("id") if isinstance(tc.get("id"), str) and tc.get("id") else None
        if key is not None:
            call = st.by_index.get(key)
            if call and call_id and call.id and call_id != call.id:
                call = None  # a new call at a used index
        elif call_id:
            call = st.by_id.get(call_id)
        else:
            call = st.last
        if call is None:
            call = _Call(position=len(st.calls))
            st.calls.append(call)
        if key is not None:
            st.by_index[key] = call
        if call_id and call.id is None:
            call.id = call_id
            st.by_id[call_id] = call
        st.last = call
        fn = tc.get("function")
        fn = fn if isinstance(fn, dict) else {}
        name = fn.get("name")
        if not call.started and isinstance(name, str) and name:
            call.name = name
            call.started = True
            call.id = call.id or f"call_{idx}_{call.position}"
            out.append(ToolCallStart(call.position, call.id, name, index=idx))
            if call.waiting:
                out.append(ToolCallDelta(call.position, call.waiting, index=idx))
                call.waiting = ""
        args = fn.get("arguments")
        if isinstance(args, str) and args:
            if call.started:
                out.append(ToolCallDelta(call.position, args, index=idx))
            else:
                call.waiting += args

    def _end(self, st: _Choice, idx: int, reason: Any, out: list[StreamEvent]) -> None:
        for call in st.calls:
            if call.started and not call.ended:
                call.ended = True
                out.append(ToolCallEnd(call.position, index=idx))
        st.finished = True
        out.append(Finish(reason, index=idx))

    def close(self) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        if self._started and not self._choices:
            self._choices[0] = _Choice()
        for idx, st in sorted(self._choices.items()):
            if not st.finished:
                made_calls = any(c.started for c in st.calls)
                self._end(st, idx, "tool_calls" if made_calls else "stop", out)
        return out


class ChatStreamEncoder:
    def __init__(self, req: ChatRequest) -> None:
        self._wants_usage = req.stream_usage
        self._n = max(1, req.n or 1)
        self._id, self._model, self._created = "", "", 0
        self._started = False
        self._opened: set[int] = set()
        self._calls: dict[tuple[int, int], int] = {}  # (choice, call_index) -> chat index
        self._usage: Usage | None = None

    def start(self, id: str, model: str, created: int) -> list[Frame]:
        self._id, self._model, self._created = id, model, created
        self._started = True
        return [f for index in range(self._n) for f in self._open(index)]

    def _head(self) -> dict[str, Any]:
        return {"id": self._id, "object": CHUNK, "created": self._created, "model": self._model}

    def _chunk(self, index: int, delta: dict[str, Any], finish: str | None = None) -> Frame:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        chunk = {**self._head(), "choices": [choice]}
        if self._wants_usage:  # OpenAI's shape: null on every chunk but the usage one
            chunk["usage"] = None
        return (None, chunk)

    def _open(self, index: int) -> list[Frame]:
        if index in self._opened:
            return []
        self._opened.add(index)
        return [self._chunk(index, {"role": "assistant", "content": ""})]

    def feed(self, event: StreamEvent) -> list[Frame]:
        if isinstance(event, StreamStart):
            return [] if self._started else self.start(event.id, event.model, event.created)
        if not self._started:
            raise RuntimeError("ChatStreamEncoder.start() must come before the events")
        if isinstance(event, UsageEvent):
            self._usage = event.usage
            return []
        idx = event.index
        frames = self._open(idx)
        if isinstance(event, TextDelta):
            if event.text:
                frames.append(self._chunk(idx, {"content": event.text}))
        elif isinstance(event, ReasoningDelta):
            if event.text:  # signatures and encrypted reasoning have no chat field
                frames.append(self._chunk(idx, {"reasoning_content": event.text}))
        elif isinstance(event, ToolCallStart):
            n = self._calls[(idx, event.call_index)] = sum(1 for c, _ in self._calls if c == idx)
            call = {
                "index": n,
                "id": event.id,
                "type": "function",
                "function": {"name": event.name, "arguments": ""},
            }
            frames.append(self._chunk(idx, {"tool_calls": [call]}))
        elif isinstance(event, ToolCallDelta):
            n = self._calls.get((idx, event.call_index))
            if n is not None and event.arguments:
                call = {"index": n, "function": {"arguments": event.arguments}}
                frames.append(self._chunk(idx, {"tool_calls": [call]}))
        elif isinstance(event, Finish):
            frames.append(self._chunk(idx, {}, finish_out(event.reason)))
        elif not isinstance(event, ToolCallEnd):
            raise TypeError(f"not a stream event: {event!r}")
        return frames

    def finish(self, extra: dict[str, Any] | None = None) -> list[Frame]:
        frames: list[Frame] = []
        if self._wants_usage and self._usage is not None:
            frames.append(
                (None, {**self._head(), "choices": [], "usage": encode_usage(self._usage)})
            )
        if extra is not None:
            frames.append((None, {**self._head(), "choices": [], "router": extra}))
        frames.append((None, "[DONE]"))
        return frames
