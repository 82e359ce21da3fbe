"""Serving results → HTTP responses: JSON rendered with orjson, streams framed as SSE.

After the first SSE byte the status is sent, so a stream always ends with
``data: [DONE]``; errors inside it are in-band error events (made by the serving layer).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
from starlette.responses import Response, StreamingResponse

from router.chat.codecs import Frame
from router.chat.model import Protocol
from router.errors import RouterError
from router.jsonio import dumps, loads
from router.serving.results import Answer, ChatResult, Refusal

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
DONE = b"data: [DONE]\n\n"

INTERNAL_ERROR = {
    "error": {
        "message": "internal router error; see the router's log",
        "type": "server_error",
        "param": None,
        "code": None,
    }
}


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content)


def error_response(exc: RouterError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def http_error_response(status: int, method: str, path: str, detail: str = "") -> JSONResponse:
    """A routing error (no such path, method not allowed) in OpenAI's error shape."""
    kind = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
    msg = {
        404: f"no route {method} {path}; see README.md for the API",
        405: f"method {method} is not allowed on {path}",
    }.get(status, detail)
    body = {"error": {"message": msg, "type": "invalid_request_error", "param": None, "code": kind}}
    return JSONResponse(body, status_code=status)


def response_body(response: JSONResponse) -> dict[str, Any]:
    """The JSON a :class:`JSONResponse` was made with (to re-render it in another shape)."""
    return loads(response.body)


# Anthropic's error types by status (https://docs.anthropic.com/en/api/errors).
ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def anthropic_error(status: int, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """An OpenAI-shaped error (the router's own) in Anthropic's shape and status: 503
    (not ready, overloaded) is Anthropic's 529 ``overloaded_error``, which its SDKs and
    Claude Code retry. The router's ``code`` and ``param`` ride along as extra fields."""
    err = body.get("error") if isinstance(body.get("error"), dict) else {}
    if status == 503:
        status = 529
    kind = ANTHROPIC_ERROR_TYPES.get(status) or (
        "api_error" if status >= 500 else "invalid_request_error"
    )
    out: dict[str, Any] = {"type": kind, "message": str(err.get("message") or "error")}
    for key in ("code", "param"):
        if err.get(key) is not None:
            out[key] = err[key]
    return status, {"type": "error", "error": out}


def chat_response(result: ChatResult) -> Response:
    return front_response("openai-chat", result)


def front_response(front: Protocol, result: ChatResult) -> Response:
    """A serving result as the front's HTTP response: its JSON, its error shape, its
    SSE framing (data-only chunks and ``[DONE]`` for chat; named events for the others)."""
    if isinstance(result, Answer):
        return JSONResponse(result.body, headers=result.headers)
    if isinstance(result, Refusal):
        status, body = result.status, result.body
        if front == "anthropic-messages":
            status, body = anthropic_error(status, body)
        return JSONResponse(body, status_code=status, headers=result.headers)
    headers = {**result.headers, **SSE_HEADERS}
    frames = sse_frames(result.chunks) if front == "openai-chat" else sse_events(result.chunks)
    return StreamingResponse(frames, media_type="text/event-stream", headers=headers)


async def sse_events(batches: AsyncIterator[list[Frame]]) -> AsyncIterator[bytes]:
    """Named SSE events (``event:`` then ``data:``), as Anthropic and Responses send;
    each batch of frames (those of one upstream event) in one send."""
    try:
        async for frames in batches:
            out = []
            for event, data in frames:
                if event is not None:
                    out += (b"event: ", event.encode(), b"\n")
                out += (b"data: ", data.encode() if isinstance(data, str) else dumps(data), b"\n\n")
            yield b"".join(out)
    finally:
        with anyio.CancelScope(shield=True):
            await batches.aclose()  # type: ignore[attr-defined]


async def sse_frames(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            yield b"data: " + dumps(chunk) + b"\n\n"
        yield DONE
    finally:
        with anyio.CancelScope(shield=True):
            await chunks.aclose()  # type: ignore[attr-defined]
