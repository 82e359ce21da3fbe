"""The echo provider's answers, as plain dicts: a completion, its stream chunks, usage.

Answers: ``[<model>] echo: <last user text, first words>``; usage counts words
(prompt: every message's text; completion: the answer's words, cut at ``max_tokens``).
Tools: when ``tools`` is given (and ``tool_choice`` is not ``"none"``, and the last
message is not a tool result), the answer is one call of the named or first function with
arguments that fit its ``parameters`` schema (a minimal valid instance). ``response_format``
json_schema: the content is a minimal instance of the schema; json_object: an object with
the echo text.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from typing import Any

from router.jsonio import dumps
from router.offline.schema_instance import minimal_instance

ECHO_WORDS = 48  # the answer quotes at most this many words of the user's text
DONE = b"data: [DONE]\n\n"
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]
JSON_HEADERS = [(b"content-type", b"application/json")]

_ids = itertools.count(1)
_id_prefix = os.urandom(4).hex()


def _new_id(kind: str = "chatcmpl") -> str:
    return f"{kind}-echo{_id_prefix}{next(_ids):08d}"


# ---------------------------------------------------------------- request reading


def text_of(content: Any) -> str:
    """The text of a message's ``content``: a string, or the text parts of a part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            p.get("text", "")
            for p in content
            if isinstance(p, dict) and p.get("type") in ("text", "input_text")
        )
    return ""


def _messages(body: dict) -> list[dict]:
    msgs = body.get("messages")
    return [m for m in msgs if isinstance(m, dict)] if isinstance(msgs, list) else []


def last_user_text(messages: list[dict]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            return text_of(m.get("content"))
    return ""


def prompt_tokens(messages: list[dict]) -> int:
    """Whitespace words of every message's text: a stand-in for a tokenizer."""
    return sum(len(text_of(m.get("content")).split()) for m in messages)


def _max_tokens(body: dict) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        v = body.get(key)
        if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
            return v
    return None


def _choice_count(body: dict) -> int:
    n = body.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 128 else 1


def _wanted_tool(body: dict) -> dict | None:
    """The function to call, or None: the named one, else the first tool, whenever tools
    are given, unless ``tool_choice`` is ``"none"`` or the last message is a tool's result
    (then the echo answers in text, so an agent loop ends)."""
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict)]
    choice = body.get("tool_choice")
    if not tools or choice == "none":
        return None
    msgs = _messages(body)
    forced = choice == "required" or isinstance(choice, dict)
    if not forced and msgs and msgs[-1].get("role") == "tool":
        return None
    fns = [t["function"] for t in tools if isinstance(t.get("function"), dict)]
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        return next((f for f in fns if f.get("name") == name), {"name": str(name)})
    return fns[0] if fns else {"name": "tool"}


def _json_content(body: dict) -> str | None:
    """For ``response_format`` json_schema: a minimal instance of the schema; json_object:
    an object with the answer; else None."""
    rf = body.get("response_format")
    if not isinstance(rf, dict):
        return None
    if rf.get("type") == "json_schema":
        spec = rf.get("json_schema") if isinstance(rf.get("json_schema"), dict) else {}
        return json.dumps(minimal_instance(spec.get("schema") or {"type": "object"}))
    return None


def _wants_json(body: dict) -> bool:
    rf = body.get("response_format")
    return isinstance(rf, dict) and rf.get("type") == "json_object"


class _Answer:
    """What the echo model says to one request, shared by both response shapes."""

    __slots__ = ("model", "words", "finish", "tool", "arguments", "content", "prompt_tokens", "n")

    def __init__(self, body: dict) -> None:
        msgs = _messages(body)
        self.model = str(body.get("model") or "echo")
        self.prompt_tokens = prompt_tokens(msgs)
        self.n = _choice_count(body)
        fn = _wanted_tool(body)
        self.tool = None if fn is None else str(fn.get("name") or "tool")
        if fn is not None:
            self.arguments = json.dumps(minimal_instance(fn.get("parameters") or {}) or {})
            self.words = [self.tool, *self.arguments.split()]
            self.finish = "tool_calls"
            self.content = None
            return
        structured = _json_content(body)
        if structured is not None:
            self.words = structured.split()
            self.finish = "stop"
            self.content = structured
            return
        quoted = last_user_text(msgs).split()[:ECHO_WORDS]
        words = [f"[{self.model}]", "echo:", *quoted]
        self.finish = "stop"
        limit = _max_tokens(body)
        if limit is not None and len(words) > limit:
            words = words[:limit]
            self.finish = "length"
        self.words = words
        text = " ".join(words)
        self.content = json.dumps({"answer": text}) if _wants_json(body) else text

    @property
    def completion_tokens(self) -> int:
        return len(self.words) * self.n

    def usage(self) -> dict[str, int]:
        c = self.completion_tokens
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": c,
            "total_tokens": self.prompt_tokens + c,
        }

    def tool_call(self, call_id: str) -> dict:
        return {
            "id": call_id,
            "type": "function",
            "function": {"name": self.tool, "arguments": self.arguments},
        }

    def pieces(self) -> list[str]:
        """The content cut word by word; joined back they give the content exactly."""
        if not self.content:
            return [""]
        parts = self.content.split(" ")
        return [parts[0], *(" " + p for p in parts[1:])]


# ---------------------------------------------------------------- response builders


def completion_for(body: dict) -> dict:
    """The non-streamed ``chat.completion`` object for ``body``."""
    a = _Answer(body)
    cid = _new_id()
    choices = []
    for i in range(a.n):
        msg: dict[str, Any] = {"role": "assistant", "content": a.content}
        if a.tool is not None:
            msg["tool_calls"] = [a.tool_call(f"call_{cid[-8:]}{i}")]
        choices.append({"index": i, "message": msg, "logprobs": None, "finish_reason": a.finish})
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": a.model,
        "choices": choices,
        "usage": a.usage(),
    }


def stream_chunks_for(body: dict) -> list[dict]:
    """The ``chat.completion.chunk`` objects of a streamed answer, in order (no [DONE]).

    The first chunk of each choice carries the role, the last content chunk carries the
    finish reason, and a final usage chunk with empty ``choices`` follows only when
    ``stream_options.include_usage`` is true.
    """
    a = _Answer(body)
    cid = _new_id()
    head = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time())}
    head["model"] = a.model
    out: list[dict] = []
    for i in range(a.n):
        if a.tool is not None:
            call = {"index": 0, **a.tool_call(f"call_{cid[-8:]}{i}")}
            delta: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [call]}
            out.append({**head, "choices": [{"index": i, "delta": delta, "finish_reason": None}]})
            out.append({**head, "choices": [{"index": i, "delta": {}, "finish_reason": a.finish}]})
            continue
        pieces = a.pieces()
        last = len(pieces) - 1
        for j, piece in enumerate(pieces):
            delta = {"role": "assistant", "content": piece} if j == 0 else {"content": piece}
            finish = a.finish if j == last else None
            out.append({**head, "choices": [{"index": i, "delta": delta, "finish_reason": finish}]})
    so = body.get("stream_options")
    if isinstance(so, dict) and so.get("include_usage") is True:
        out.append({**head, "choices": [], "usage": a.usage()})
    return out


def models_for(names: list[str] | tuple[str, ...] = ("echo",)) -> dict:
    """An OpenAI ``list`` of models; the echo app serves any name, these are examples."""
    now = int(time.time())
    data = [{"id": n, "object": "model", "created": now, "owned_by": "echo"} for n in names]
    return {"object": "list", "data": data}


def error_body(
    message: str,
    *,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def sse(obj: dict) -> bytes:
    """One SSE event carrying ``obj`` as JSON."""
    return b"data: " + dumps(obj) + b"\n\n"
