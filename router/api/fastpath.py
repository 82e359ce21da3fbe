"""``POST /v1/chat/completions`` served straight from ASGI, every other request handed to
the FastAPI app. The hot path skips the framework's routing, middleware and dependency
machinery (profiled: a large share of the router's own time per request); its behaviour
is the same as a route's, errors included."""

from __future__ import annotations

import asyncio
import logging

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from router.api.responses import INTERNAL_ERROR, JSONResponse, chat_response
from router.errors import BodyTooLargeError, InvalidRequestError, RequestTimeoutError
from router.serving.service import RouterService

log = logging.getLogger("router")

CHAT_PATH = "/v1/chat/completions"
# Longest wait for the next piece of a request body before the request is refused (408).
BODY_READ_TIMEOUT_S = 30.0


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes."""
    return await read_limited(request.headers.get("content-length"), request.receive, limit)


async def read_limited(declared: str | None, receive: Receive, limit: int) -> bytes:
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError(_too_large(int(declared), limit))
    receive = bounded(receive, limit)
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InvalidRequestError("the client disconnected before sending the whole body")
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def bounded(receive: Receive, limit: int) -> Receive:
    """``receive`` that refuses a body over ``limit`` bytes (413) or one that stalls
    ``BODY_READ_TIMEOUT_S`` (408), whichever route reads it and however: the safety net
    under the routes that read their bodies with :func:`read_limited` after auth."""
    size = 0
    done = False

    async def receive_bounded() -> Message:
        nonlocal size, done
        if done:  # the body is in: a wait for the disconnect may take as long as it takes
            return await receive()
        try:
            async with asyncio.timeout(BODY_READ_TIMEOUT_S):
                message = await receive()
        except TimeoutError:
            raise RequestTimeoutError(
                f"the request body stalled: nothing arrived for {BODY_READ_TIMEOUT_S:g} s "
                f"after {size} bytes"
            ) from None
        if message["type"] == "http.request":
            size += len(message.get("body", b""))
            if size > limit:
                raise BodyTooLargeError(_too_large(size, limit))
            done = not message.get("more_body", False)
        else:
            done = True
        return message

    return receive_bounded


def _too_large(size: int, limit: int) -> str:
    return f"request body is {size} bytes; the limit is {limit} bytes ({limit / 2**20:g} MiB)"


class ChatFastPath:
    def __init__(self, app: ASGIApp, service: RouterService) -> None:
        self.app = app
        self.service = service
        self.state = getattr(app, "state", None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != CHAT_PATH or scope["method"] != "POST":
            if scope["type"] == "http":  # every route's body within the chat path's bounds
                receive = bounded(receive, self.service.limits.max_body_bytes)
            await self.app(scope, receive, send)
            return
        auth = length = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                auth = value.decode("latin-1")
            elif name == b"content-length":
                length = value.decode("latin-1")
        limit = self.service.limits.max_body_bytes
        try:
            result = await self.service.chat(lambda: read_limited(length, receive, limit), auth)
            response = chat_response(result)
        except Exception:
            log.exception("unhandled error on %s", CHAT_PATH)
            response = JSONResponse(INTERNAL_ERROR, status_code=500)
        await response(scope, receive, send)
