"""The three chat fronts served straight from ASGI — ``POST /v1/chat/completions``,
``POST /v1/messages`` (Anthropic Messages, and its ``/count_tokens``), ``POST
/v1/responses`` (OpenAI Responses) —
every other request handed to the FastAPI app. The hot path skips the framework's
routing, middleware and dependency machinery (profiled: a large share of the router's
own time per request); its behaviour is the same as a route's, errors included, each
front's errors in its own protocol's shape.

The paths are this module's alone (the FastAPI app has no route for them): other methods
get the 405 a route would give, a path with a trailing slash the framework's 307 to the
path without it, and ``--docs`` lists chat through :func:`add_chat_to_openapi`.
Anthropic clients authenticate with ``x-api-key`` (taken when there is no
``Authorization``); ``anthropic-version`` and ``anthropic-beta`` are handed on.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import FastAPI
from starlette.datastructures import URL
from starlette.requests import Request
from starlette.responses import RedirectResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from router.api.responses import (
    INTERNAL_ERROR,
    front_response,
    http_error_response,
    response_body,
)
from router.chat.model import Protocol
from router.errors import BodyTooLargeError, InvalidRequestError, RequestTimeoutError
from router.serving.results import Inbound, Refusal
from router.serving.service import RouterService

log = logging.getLogger("router")

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


CHAT_PATH = "/v1/chat/completions"
MESSAGES_PATH = "/v1/messages"
RESPONSES_PATH = "/v1/responses"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
# The POST paths served here, and the protocol each speaks.
FRONTS: dict[str, Protocol] = {
    CHAT_PATH: "openai-chat",
    MESSAGES_PATH: "anthropic-messages",
    RESPONSES_PATH: "openai-responses",
    COUNT_TOKENS_PATH: "anthropic-messages",
}


class ChatFastPath:
    """The three chat fronts (``POST`` on :data:`FRONTS`), each straight from ASGI."""

    def __init__(self, app: ASGIApp, service: RouterService) -> None:
        self.app = app
        self.service = service
        self.state = getattr(app, "state", None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        front = FRONTS.get(path)
        if front is None and path.endswith("/") and path[:-1] in FRONTS:
            url = URL(scope={**scope, "path": path[:-1]})  # as redirect_slashes does
            await RedirectResponse(str(url))(scope, receive, send)
            return
        if front is not None and scope["method"] != "POST":
            response = http_error_response(405, scope["method"], path)
            if front == "anthropic-messages":
                response = front_response(front, Refusal(405, response_body(response)))
            await response(scope, receive, send)
            return
        if front is None:
            if scope["type"] == "http":  # every route's body within the chat path's bounds
                receive = bounded(receive, self.service.limits.max_body_bytes)
            await self.app(scope, receive, send)
            return
        inbound = Inbound(front=front)
        length = api_key = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                inbound.authorization = value.decode("latin-1")
            elif name == b"content-length":
                length = value.decode("latin-1")
            elif name == b"x-session-id":
                inbound.session_header = value.decode("latin-1")
            elif name == b"x-api-key":
                api_key = value.decode("latin-1")
            elif name == b"anthropic-version":
                inbound.anthropic_version = value.decode("latin-1")
            elif name == b"anthropic-beta":
                inbound.anthropic_beta = value.decode("latin-1")
        if inbound.authorization is None and api_key is not None:
            inbound.authorization = "Bearer " + api_key  # Anthropic's SDKs send x-api-key
        limit = self.service.limits.max_body_bytes
        serve = self.service.count_tokens if path == COUNT_TOKENS_PATH else self.service.chat
        try:
            result = await serve(lambda: read_limited(length, receive, limit), inbound)
            response = front_response(front, result)
        except Exception:
            log.exception("unhandled error on %s", path)
            response = front_response(front, Refusal(500, INTERNAL_ERROR))
        await response(scope, receive, send)


def add_chat_to_openapi(app: FastAPI) -> None:
    """List ``POST /v1/chat/completions`` in ``app``'s /openapi.json (``--docs``): it has
    no FastAPI route. The request and response are OpenAI's Chat Completions schema, plus
    the optional ``router`` field (README.md); they are not restated here."""
    build = app.openapi

    def openapi() -> dict:
        schema = build()  # cached by FastAPI; rebuilt when its routes change
        schema["paths"].setdefault(
            CHAT_PATH,
            {
                "post": {
                    "summary": "Chat Completions",
                    "description": "OpenAI's Chat Completions API; the model is a catalog "
                    "model or a router alias (p2l, auto, router).",
                    "operationId": "chat_completions_v1_chat_completions_post",
                    "responses": {
                        "200": {
                            "description": "Successful Response",
                            "content": {"application/json": {"schema": {}}},
                        }
                    },
                }
            },
        )
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
