"""Calls to upstream OpenAI-compatible providers: pooled, timed, sent at most once.

Each provider has its pool (router/upstream/transport.py), built once with its URL,
headers, limits and circuit breaker (:class:`~router.upstream.provider.Provider`).
Requests go to the transport directly rather than through ``httpx.AsyncClient``: a
proxy wants none of the client's cookies, redirects or auth flows.

Timeouts (providers.yaml ``timeouts``) are deadlines on each phase: ``first_byte`` until
the response headers (and a stream's first event), ``idle`` between body chunks,
``total`` over the whole exchange (every attempt, every back-off sleep, the whole
stream); ``connect`` is handed to the transport. One exchange's phases share one
:class:`~router.upstream.deadlines.Deadline`.

A body is sent again only when it cannot have been processed (router/upstream/retry.py);
answers are read chunk by chunk against the provider's ``limits`` (a non-streamed answer
over ``max_response_bytes`` is refused before it is all in memory). Every failure leaves
as :class:`~router.upstream.failures.UpstreamFailure`.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import httpx

from router.chat.model import ChatRequest
from router.config import Catalog, ModelConfig
from router.errors import RouterError
from router.jsonio import dumps
from router.redaction import Redactor
from router.upstream.deadlines import Deadline
from router.upstream.failures import (
    TRANSPORT_ERRORS,
    UpstreamFailure,
    parse_object,
    status_failure,
)
from router.upstream.protocols import (
    ChatChunks,
    TypedEvents,
    chat_answer,
    forwarded_headers,
    provider_body,
    typed_answer,
)
from router.upstream.provider import Provider
from router.upstream.retry import with_retries
from router.upstream.sse import Translator, UpstreamStream
from router.upstream.transport import body_parts

T = TypeVar("T")


class UpstreamClient:
    """Sends chat completions to the provider of a catalog model."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
        clock: Callable[[], float] = time.monotonic,
        redactor: Redactor | None = None,
    ) -> None:
        """``transports`` replaces a provider's network pool (e.g. the in-process echo
        app); those are not closed by :meth:`aclose`. ``clock`` drives the circuit
        breakers' cooldowns. Raises ``ConfigError`` for a header value that could not
        be sent safely (a control character, e.g. a key with a trailing newline).
        ``redactor`` masks the router's secrets in upstream text (default: the
        providers' keys)."""
        transports = transports or {}
        if redactor is None:
            redactor = Redactor(p.api_key for p in catalog.providers.values())
        self.redactor = redactor
        self._tls: ssl.SSLContext | None = None
        self._providers = {
            name: Provider(
                cfg, transports.get(name), self._tls_context, clock, catalog.source, redactor
            )
            for name, cfg in catalog.providers.items()
        }

    def _tls_context(self) -> ssl.SSLContext:
        """One verifying TLS context (CA bundle loaded once) shared by every provider."""
        if self._tls is None:
            self._tls = httpx.create_ssl_context()
        return self._tls

    def _provider(self, model: ModelConfig) -> Provider:
        try:
            return self._providers[model.provider]
        except KeyError:
            raise UpstreamFailure(
                "connect",
                f"no provider {model.provider!r} for model {model.name!r}",
                may_have_arrived=False,
            ) from None

    def circuit_states(self) -> dict[str, str]:
        """Each provider's circuit: ``closed``, ``open`` or ``half_open`` (for metrics)."""
        return {name: p.breaker.state for name, p in self._providers.items()}

    async def complete(
        self,
        model: ModelConfig,
        body: dict,
        typed: Callable[[], ChatRequest] | None = None,
        *,
        typed_out: bool = False,
        anthropic: tuple[str | None, str | None] | None = None,
    ) -> tuple[Any, int]:
        """POST a non-streamed chat completion (in the provider's protocol); returns
        (the answer as a chat completion, attempts); ``typed_out``: the answer as the
        typed model (``router.chat.Answer``) instead, whatever the provider's protocol.
        ``anthropic``: the client's (``anthropic-version``, ``anthropic-beta``), sent on
        to an Anthropic provider only."""
        p = self._provider(model)
        payload, mapped = provider_body(
            p.api, body, model.upstream_model, model.max_output_tokens, stream=False, typed=typed
        )
        content = dumps(payload)
        extra = forwarded_headers(p.api, *anthropic) if anthropic else None
        answer, attempts = await self._call(p, lambda d: self._complete_once(p, content, d, extra))
        if p.api != "openai-chat" or typed_out:
            try:
                answer = (
                    typed_answer(p.api, answer, mapped)
                    if typed_out
                    else chat_answer(p.api, answer, mapped)
                )
            except (RouterError, ValueError) as exc:  # a malformed answer of that protocol
                raise p.fail("protocol", f"unreadable answer: {p.scrub(str(exc))}") from exc
        return answer, attempts

    async def open_stream(
        self,
        model: ModelConfig,
        body: dict,
        typed: Callable[[], ChatRequest] | None = None,
        *,
        typed_out: bool = False,
        anthropic: tuple[str | None, str | None] | None = None,
    ) -> UpstreamStream:
        """Start a streamed chat completion; returns once 200 headers have arrived.
        The stream's ``attempts`` says how many requests it took; it yields chat chunks
        whatever the provider's protocol (``typed_out``: the typed model's events).
        ``anthropic``: as for :meth:`complete`."""
        p = self._provider(model)
        payload, mapped = provider_body(
            p.api, body, model.upstream_model, model.max_output_tokens, stream=True, typed=typed
        )
        content = dumps(payload)
        extra = forwarded_headers(p.api, *anthropic) if anthropic else None

        def translator() -> Translator | None:  # one per attempt; None: chunks as they came
            if typed_out:
                return TypedEvents(p.api, mapped)
            return ChatChunks(p.api, mapped) if p.api != "openai-chat" else None

        stream, attempts = await self._call(
            p, lambda d: self._stream_once(p, content, d, translator(), extra)
        )
        stream.attempts = attempts
        return stream

    async def aclose(self) -> None:
        """Close the pools we own; requests still in flight fail as ``disconnect``."""
        for p in self._providers.values():
            if p.owned:
                await p.transport.aclose()

    async def __aenter__(self) -> UpstreamClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------ one call

    async def _call(self, p: Provider, once: Callable[[Deadline], Awaitable[T]]) -> tuple[T, int]:
        """The attempts under one deadline (which ends with them, or with the stream they
        open) and the provider's circuit breaker."""
        if not p.breaker.admit():
            exc = p.fail("circuit_open", f"circuit open after {p.breaker.failures} failed "
                         f"calls; next try in {p.breaker.retry_in():.1f}s",
                         may_have_arrived=False)  # fmt: skip
            exc.attempts = 0
            raise exc
        loop = asyncio.get_running_loop()
        deadline = Deadline(loop, loop.time() + p.total)
        result: Any = None
        try:
            result = await with_retries(
                lambda: once(deadline), name=p.name, max_retries=p.max_retries,
                deadline=deadline.total,
            )  # fmt: skip
        except UpstreamFailure as exc:
            p.record(exc)
            raise
        except BaseException:
            p.breaker.abandon()
            raise
        finally:
            if result is None or not isinstance(result[0], UpstreamStream):
                deadline.close()
        p.record(None)
        return result

    async def _send(
        self,
        p: Provider,
        content: bytes,
        deadline: Deadline,
        extra: dict[bytes, bytes] | None = None,
    ) -> httpx.Response:
        """One request until 2xx response headers (body unread), within ``first_byte``."""
        try:
            with deadline.after(p.first_byte):
                resp = await p.transport.handle_async_request(p.request(content, extra))
                if resp.status_code >= 300:
                    raise await status_failure(resp, p)
        except TimeoutError:
            if deadline.passed:
                raise p.fail("timeout", f"total deadline of {p.total:g}s passed") from None
            raise p.fail("timeout", f"no response headers within {p.first_byte:g}s") from None
        except TRANSPORT_ERRORS as exc:
            raise p.translate(exc, answer_started=False) from exc
        return resp

    async def _complete_once(
        self,
        p: Provider,
        content: bytes,
        deadline: Deadline,
        extra: dict[bytes, bytes] | None = None,
    ) -> dict:
        resp = await self._send(p, content, deadline, extra)
        cap = p.max_response_bytes
        body = body_parts(resp)
        part: bytes | None = b""
        try:
            declared = resp.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > cap:
                raise p.fail("too_large", f"the answer is {declared} bytes, over {cap}")
            parts: list[bytes] = []
            size = 0
            while True:
                with deadline.after(p.idle):
                    part = await anext(body, None)
                if part is None:
                    break
                size += len(part)
                if size > cap:
                    raise p.fail("too_large", f"the answer is over {cap} bytes")
                parts.append(part)
        except TimeoutError:
            raise p.fail("timeout", "response body stalled") from None
        except TRANSPORT_ERRORS as exc:
            raise p.translate(exc, answer_started=True) from exc
        finally:  # the stream's own close: Response.aclose adds a context manager (~5%)
            close = getattr(body, "aclose", None)
            if part is not None and close is not None:  # stopped early: end the iterator too
                await close()
            await resp.stream.aclose()  # type: ignore[union-attr]
        out = parse_object(parts[0] if len(parts) == 1 else b"".join(parts))
        if out is None:
            raise p.fail("protocol", "the answer is not a JSON object")
        return out

    async def _stream_once(
        self,
        p: Provider,
        content: bytes,
        deadline: Deadline,
        translator: Translator | None,
        extra: dict[bytes, bytes] | None = None,
    ) -> UpstreamStream:
        first_by = deadline.loop.time() + p.first_byte
        resp = await self._send(p, content, deadline, extra)
        ctype = resp.headers.get("content-type", "")
        if ctype.startswith("application/json"):  # an answer or an error, but not a stream
            got = await status_failure(resp, p)
            raise p.fail("protocol", "expected an event stream, got JSON", body=got.body)
        return UpstreamStream(resp, body_parts(resp), p, deadline, first_by, translator)
