"""A built-in OpenAI-compatible "provider" that echoes the prompt back.

It lets ``p2l-router demo`` run with no network and no keys, and the test fake upstream
serves the very same answers, so what the demo shows is what the tests check. The app is
raw ASGI (no framework) to stay cheap in benchmarks.

Answers: ``[<model>] echo: <last user text, first words>``; usage counts words
(prompt: every message's text; completion: the answer's words, cut at ``max_tokens``).
Tools: when ``tools`` is given and ``tool_choice`` is ``"required"`` or names a function,
the answer is one tool call with arguments ``"{}"``. ``response_format`` json_object or
json_schema: the content is a JSON object string.

``httpx.ASGITransport`` reads the whole response before returning it, which would turn a
stream into one late burst; :class:`StreamingASGITransport` hands the body over as the
app sends it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import httpx

from router.jsonio import dumps, loads  # noqa: F401 - re-exported for the test fake

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

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


def _wanted_tool(body: dict) -> str | None:
    """The function name to call when the request forces a tool call, else None."""
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools:
        return None
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        fn = choice.get("function")
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            return fn["name"]
        return None
    if choice == "required":
        first = tools[0] if isinstance(tools[0], dict) else {}
        fn = first.get("function") if isinstance(first.get("function"), dict) else {}
        return str(fn.get("name") or "tool")
    return None


def _wants_json(body: dict) -> bool:
    rf = body.get("response_format")
    return isinstance(rf, dict) and rf.get("type") in ("json_object", "json_schema")


class _Answer:
    """What the echo model says to one request, shared by both response shapes."""

    __slots__ = ("model", "words", "finish", "tool", "content", "prompt_tokens", "n")

    def __init__(self, body: dict) -> None:
        msgs = _messages(body)
        self.model = str(body.get("model") or "echo")
        self.prompt_tokens = prompt_tokens(msgs)
        self.n = _choice_count(body)
        self.tool = _wanted_tool(body)
        if self.tool is not None:
            self.words = [self.tool, "{}"]
            self.finish = "tool_calls"
            self.content = None
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
            "function": {"name": self.tool, "arguments": "{}"},
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


# ---------------------------------------------------------------- the ASGI app


async def read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            break
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body", False):
            break
    return b"".join(chunks)


async def send_json(send: Send, status: int, obj: dict, headers: list | None = None) -> None:
    data = dumps(obj)
    hdrs = [*JSON_HEADERS, (b"content-length", str(len(data)).encode()), *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": data, "more_body": False})


def parse_chat_body(raw: bytes) -> dict | str:
    """The request JSON, or an error message for a body that is not a chat request."""
    try:
        body = loads(raw)
    except ValueError:
        return "request body is not valid JSON"
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    if not isinstance(body.get("messages"), list):
        return "'messages' must be a list"
    return body


CHAT_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})
MODELS_PATHS = frozenset({"/v1/models", "/models"})


def create_echo_app(models: tuple[str, ...] = ("echo",)) -> ASGIApp:
    """The echo provider as an ASGI app (lifespan accepted and ignored)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path in CHAT_PATHS and method == "POST":
            body = parse_chat_body(await read_body(receive))
            if isinstance(body, str):
                await send_json(send, 400, error_body(body, param="messages"))
            elif body.get("stream") is True:
                await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
                for chunk in stream_chunks_for(body):
                    await send(
                        {"type": "http.response.body", "body": sse(chunk), "more_body": True}
                    )
                await send({"type": "http.response.body", "body": DONE, "more_body": False})
            else:
                await send_json(send, 200, completion_for(body))
        elif path in MODELS_PATHS and method == "GET":
            await send_json(send, 200, models_for(models))
        else:
            msg = f"no route {method} {path}"
            await send_json(send, 404, error_body(msg, code="not_found"))

    return app


# ---------------------------------------------------------------- in-process transport


class _QueueStream(httpx.AsyncByteStream):
    def __init__(self, queue: asyncio.Queue, task: asyncio.Task, gone: asyncio.Event) -> None:
        self._queue, self._task, self._gone = queue, task, gone

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise httpx.RemoteProtocolError(f"ASGI app failed: {item!r}") from item
            yield item

    async def aclose(self) -> None:
        self._gone.set()
        if not self._task.done():
            self._task.cancel()
            await asyncio.wait({self._task})  # its own end, not raised to the caller


class StreamingASGITransport(httpx.AsyncBaseTransport):
    """Call an ASGI app in-process and return as soon as it starts its response.

    The body arrives chunk by chunk as the app sends it; closing the response early sends the app ``http.disconnect`` and
    cancels it.
    """

    def __init__(self, app: ASGIApp, *, client: tuple[str, int] = ("127.0.0.1", 0)) -> None:
        self.app = app
        self.client = client

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = b"".join([part async for part in request.stream])  # type: ignore[union-attr]
        url = request.url
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": url.scheme,
            "path": url.path,
            "raw_path": url.raw_path.split(b"?")[0],
            "query_string": url.query,
            "root_path": "",
            "headers": [(k.lower(), v) for k, v in request.headers.raw],
            "client": self.client,
            "server": (url.host, url.port or (443 if url.scheme == "https" else 80)),
        }
        queue: asyncio.Queue = asyncio.Queue()
        started: asyncio.Future = asyncio.get_running_loop().create_future()
        gone = asyncio.Event()
        sent_request = False

        async def receive() -> Message:
            nonlocal sent_request
            if not sent_request:
                sent_request = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                if not started.done():
                    started.set_result(msg)
            elif msg["type"] == "http.response.body":
                chunk = msg.get("body", b"")
                if chunk:
                    await queue.put(chunk)
                if not msg.get("more_body", False):
                    await queue.put(None)

        async def run() -> None:
            try:
                await self.app(scope, receive, send)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # handed to whoever waits on the response
                if not started.done():
                    started.set_exception(exc)
                else:
                    queue.put_nowait(exc)
            finally:
                if not started.done():
                    started.set_exception(RuntimeError("ASGI app returned without a response"))
                queue.put_nowait(None)  # extra end markers after the first are never read

        task = asyncio.create_task(run())
        try:
            start = await started
        except BaseException:
            gone.set()
            task.cancel()
            raise
        return httpx.Response(
            start["status"],
            headers=start.get("headers", []),
            stream=_QueueStream(queue, task, gone),
        )
