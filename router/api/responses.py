"""Serving results → HTTP responses: JSON rendered with orjson, streams framed as SSE.

After the first SSE byte the status is sent, so a stream always ends with
``data: [DONE]``; errors inside it are in-band error events (made by the serving layer).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
from starlette.responses import Response, StreamingResponse

from router.errors import RouterError
from router.jsonio import dumps
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


def chat_response(result: ChatResult) -> Response:
    if isinstance(result, Answer):
        return JSONResponse(result.body, headers=result.headers)
    if isinstance(result, Refusal):
        return JSONResponse(result.body, status_code=result.status, headers=result.headers)
    headers = {**result.headers, **SSE_HEADERS}
    return StreamingResponse(
        sse_frames(result.chunks), media_type="text/event-stream", headers=headers
    )


async def sse_frames(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            yield b"data: " + dumps(chunk) + b"\n\n"
        yield DONE
    finally:
        with anyio.CancelScope(shield=True):
            await chunks.aclose()  # type: ignore[attr-defined]
