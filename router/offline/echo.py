"""A built-in OpenAI-compatible "provider" that echoes the prompt back.

It lets ``p2l-router demo`` run with no network and no keys, and the test fake upstream
serves the very same answers, so what the demo shows is what the tests check. The app is
raw ASGI (no framework) to stay cheap in benchmarks.

The answers themselves are built in :mod:`router.offline.answers`.

``httpx.ASGITransport`` reads the whole response before returning it, which would turn a
stream into one late burst; :class:`StreamingASGITransport` hands the body over as the
app sends it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import httpx

from router.jsonio import dumps, loads
from router.offline.answers import (
    DONE,
    JSON_HEADERS,
    SSE_HEADERS,
    completion_for,
    error_body,
    models_for,
    sse,
    stream_chunks_for,
)

# The wire helpers and answer builders the test fake upstream serves with.
__all__ = [
    "DONE",
    "SSE_HEADERS",
    "StreamingASGITransport",
    "completion_for",
    "create_echo_app",
    "error_body",
    "models_for",
    "parse_chat_body",
    "read_body",
    "send_json",
    "sse",
    "stream_chunks_for",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

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
