"""Calls to upstream OpenAI-compatible providers: pooled, timed, retried, streamed.

One pooled HTTP/1.1 transport per provider: :class:`router._http1.HTTP1Transport`
(asyncio + httptools, keep-alive, ``max_connections`` from providers.yaml), about ten
times cheaper per request than ``httpx.AsyncHTTPTransport``. Setting the environment
variable ``P2L_ROUTER_UPSTREAM_TRANSPORT=httpx`` switches every provider back to httpx's
own transport (an escape hatch; providers.yaml has no field for it). Requests go to the
transport directly rather than through ``httpx.AsyncClient``: a proxy wants none of the
client's cookies, redirects or auth flows. URLs and headers are built once per provider.

Timeouts (providers.yaml ``timeouts``) are asyncio deadlines around each phase:
``first_byte`` until the response headers (and a stream's first event), ``idle`` between
body chunks, ``total`` over the whole exchange (every attempt, every back-off sleep, the
whole stream); ``connect`` is handed to the transport.

Retries: connect errors, disconnects and timeouts before the response headers, and
statuses 408/409/429/5xx, at most ``max_retries`` times, waiting ``Retry-After`` when
given (capped at :data:`RETRY_AFTER_CAP_S`), else exponential back-off with jitter from
:data:`BACKOFF_INITIAL_S`. A retry that could not finish before the total deadline is not
made. The first attempt runs without tenacity (a tenacity call costs ~70 µs); only a
retryable failure builds the ``AsyncRetrying`` that drives the rest.

Errors: every failure leaves this module as :class:`UpstreamFailure`; httpx exceptions
are translated at one place (:func:`_translate`). Messages never contain the provider
key: the key only travels in a header, and error text from upstream is scrubbed of it.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential_jitter

from router._http1 import HTTP1Transport
from router.config import Catalog, ModelConfig, ProviderConfig
from router.echo import dumps, loads
from router.sse import SSEDecoder

log = logging.getLogger("router.upstream")

RETRYABLE_STATUSES = frozenset({408, 409, 429})
RETRY_AFTER_CAP_S = 10.0
BACKOFF_INITIAL_S = 0.05
BACKOFF_MAX_S = 2.0
ERROR_BODY_LIMIT = 64 * 1024
USER_AGENT = b"p2l-router/0.1"
TRANSPORT_ENV = "P2L_ROUTER_UPSTREAM_TRANSPORT"


class UpstreamFailure(Exception):
    """One provider could not answer.

    ``kind``: ``connect`` (no connection, or it broke before the answer), ``timeout``
    (first byte, idle or total deadline), ``status`` (a non-2xx answer; ``status`` and
    ``body`` tell which), ``protocol`` (not valid HTTP/SSE/JSON, or an error event
    inside a stream). ``retryable`` says whether trying again might help (the same or
    another provider); ``attempts`` how many requests were made.
    """

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = False,
        body: dict | None = None,
        retry_after: float | None = None,
        provider: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.retryable = retryable
        self.body = body
        self.retry_after = retry_after
        self.provider = provider
        self.attempts = 1

    @property
    def code(self) -> str:
        """What the router reports as the 502's ``code``: the status, else the kind."""
        return str(self.status) if self.status is not None else self.kind


# ---------------------------------------------------------------- per provider, built once


class _Provider:
    """A provider's pool, URL, headers and timeouts, ready for many requests."""

    __slots__ = (
        "name", "transport", "owned", "url", "headers", "extensions", "connect", "first_byte",
        "idle", "total", "max_retries", "key",
    )  # fmt: skip

    def __init__(
        self,
        cfg: ProviderConfig,
        transport: httpx.AsyncBaseTransport | None,
        tls: Callable[[], ssl.SSLContext],
    ) -> None:
        self.name = cfg.name
        self.owned = transport is None
        if transport is None:
            # Plain HTTP never uses TLS: no context, so no CA bundle to load (~100 ms).
            https = cfg.base_url.startswith("https://")
            transport = _default_transport(cfg, tls() if https else None)
        self.transport = transport
        self.url = httpx.URL(cfg.base_url + "/chat/completions")
        self.key = cfg.api_key
        headers = [
            (b"host", self.url.netloc),
            (b"accept", b"application/json, text/event-stream"),
            (b"content-type", b"application/json"),
            (b"user-agent", USER_AGENT),
        ]
        if self.key:
            headers.append((b"authorization", b"Bearer " + self.key.encode()))
        for k, v in cfg.headers.items():
            headers = [h for h in headers if h[0] != k.lower().encode()]
            headers.append((k.lower().encode(), v.encode()))
        self.headers = headers
        t = cfg.timeouts
        self.connect, self.first_byte, self.idle, self.total = (
            t.connect,
            t.first_byte,
            t.idle,
            t.total,
        )
        # Reads, writes and pool waits are bounded by our own asyncio deadlines.
        self.extensions = {
            "timeout": {"connect": t.connect, "read": None, "write": None, "pool": None}
        }
        self.max_retries = cfg.max_retries

    def request(self, content: bytes) -> httpx.Request:
        # stream= rather than content=: httpx then adds no headers of its own (ours are
        # complete), which halves the cost of building the request.
        headers = [*self.headers, (b"content-length", b"%d" % len(content))]
        return httpx.Request(
            "POST", self.url, headers=headers, stream=httpx.ByteStream(content),
            extensions=self.extensions,
        )  # fmt: skip

    def scrub(self, text: str) -> str:
        return text.replace(self.key, "***") if self.key and self.key in text else text


def _default_transport(cfg: ProviderConfig, tls: ssl.SSLContext | None) -> httpx.AsyncBaseTransport:
    """The provider's pool: :class:`HTTP1Transport`, or httpx's own when the environment
    says ``P2L_ROUTER_UPSTREAM_TRANSPORT=httpx``."""
    kind = os.environ.get(TRANSPORT_ENV, "http1").strip().lower() or "http1"
    if kind == "http1":
        return HTTP1Transport(
            ssl_context=tls,
            max_connections=cfg.max_connections,
            connect_timeout=cfg.timeouts.connect,
        )
    if kind == "httpx":
        limits = httpx.Limits(
            max_connections=cfg.max_connections, max_keepalive_connections=cfg.max_connections
        )
        # httpx wants a context even for plain HTTP: an empty one (verifying, so it would
        # fail closed) saves loading the CA bundle.
        verify = tls or ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        return httpx.AsyncHTTPTransport(verify=verify, limits=limits, http1=True, http2=False)
    raise ValueError(f"{TRANSPORT_ENV}={kind!r}: expected 'http1' (the default) or 'httpx'")


def _body(resp: httpx.Response) -> AsyncIterator[bytes]:
    """The body as it arrives. Uncompressed (we send no Accept-Encoding) it is the raw
    stream, without the three generator layers of ``aiter_bytes``."""
    for name, _ in resp.headers.raw:
        if name.lower() == b"content-encoding":
            return resp.aiter_bytes()
    return aiter(resp.stream)  # type: ignore[arg-type]


# ---------------------------------------------------------------- failure translation


def _translate(exc: httpx.HTTPError, p: _Provider, *, before_headers: bool) -> UpstreamFailure:
    """The one place httpx exceptions become :class:`UpstreamFailure`."""
    detail = p.scrub(str(exc)) or type(exc).__name__
    if isinstance(exc, httpx.ConnectTimeout):
        kind, what = "connect", f"connect timeout after {p.connect:g}s"
    elif isinstance(exc, httpx.TimeoutException):
        kind, what = "timeout", f"timeout ({type(exc).__name__})"
    elif isinstance(exc, (httpx.ConnectError, httpx.NetworkError)):
        kind, what = "connect", f"connection failed: {detail}"
    elif isinstance(exc, httpx.RemoteProtocolError):
        kind, what = "protocol", f"connection broken: {detail}"
    else:  # LocalProtocolError, UnsupportedProtocol, DecodingError, ...: ours to fix
        return UpstreamFailure("protocol", f"{p.name}: {detail}", provider=p.name)
    where = "" if before_headers else " after the response started"
    return UpstreamFailure(
        kind, f"{p.name}: {what}{where}", retryable=before_headers, provider=p.name
    )


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


async def _status_failure(resp: httpx.Response, p: _Provider) -> UpstreamFailure:
    """Read (a bounded part of) an error answer and describe it."""
    raw = b""
    try:
        async for part in _body(resp):
            raw += part
            if len(raw) >= ERROR_BODY_LIMIT:
                break
    except httpx.HTTPError:
        pass
    finally:
        await resp.aclose()
    text = p.scrub(raw[:ERROR_BODY_LIMIT].decode("utf-8", "replace"))
    body: dict | None = None
    try:
        parsed = loads(text)
        body = parsed if isinstance(parsed, dict) else None
    except ValueError:
        pass
    err = body.get("error") if body else None
    detail = err.get("message") if isinstance(err, dict) else err if isinstance(err, str) else None
    detail = detail or text[:200].strip() or resp.reason_phrase
    status = resp.status_code
    return UpstreamFailure(
        "status",
        f"{p.name}: upstream returned {status}: {detail}",
        status=status,
        retryable=status in RETRYABLE_STATUSES or status >= 500,
        body=body,
        retry_after=_retry_after(resp.headers),
        provider=p.name,
    )


# ---------------------------------------------------------------- retry policy


def _wait(rs: RetryCallState) -> float:
    exc = rs.outcome.exception() if rs.outcome else None
    ra = getattr(exc, "retry_after", None)
    if ra is not None:
        return min(ra, RETRY_AFTER_CAP_S)
    return _BACKOFF(rs)


_BACKOFF = wait_exponential_jitter(
    multiplier=BACKOFF_INITIAL_S, max=BACKOFF_MAX_S, jitter=BACKOFF_INITIAL_S
)


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, UpstreamFailure) and exc.retryable


def _stop(max_retries: int, deadline: float) -> Callable[[RetryCallState], bool]:
    def stop(rs: RetryCallState) -> bool:
        if rs.attempt_number > max_retries:
            return True
        # A retry that cannot get a response before the deadline is not worth making.
        return asyncio.get_running_loop().time() + rs.upcoming_sleep >= deadline

    return stop


# ---------------------------------------------------------------- the client


class UpstreamClient:
    """Sends chat completions to the provider of a catalog model."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
    ) -> None:
        """``transports`` replaces a provider's network pool (e.g. the in-process echo
        app); those are not closed by :meth:`aclose`."""
        transports = transports or {}
        self._tls: ssl.SSLContext | None = None
        self._providers = {
            name: _Provider(cfg, transports.get(name), self._tls_context)
            for name, cfg in catalog.providers.items()
        }

    def _tls_context(self) -> ssl.SSLContext:
        """One verifying TLS context (CA bundle loaded once) shared by every provider."""
        if self._tls is None:
            self._tls = httpx.create_ssl_context()
        return self._tls

    def _provider(self, model: ModelConfig) -> _Provider:
        try:
            return self._providers[model.provider]
        except KeyError:
            raise UpstreamFailure(
                "connect", f"no provider {model.provider!r} for model {model.name!r}"
            ) from None

    async def complete(self, model: ModelConfig, body: dict) -> tuple[dict, int]:
        """POST a non-streamed chat completion; returns (response JSON, attempts)."""
        p = self._provider(model)
        payload = dict(body)
        payload["model"] = model.upstream_model
        return await self._call(p, self._complete_once, dumps(payload))

    async def open_stream(self, model: ModelConfig, body: dict) -> UpstreamStream:
        """Start a streamed chat completion; returns once 200 headers have arrived."""
        p = self._provider(model)
        payload = dict(body)
        payload["model"] = model.upstream_model
        payload["stream"] = True
        so = body.get("stream_options")
        payload["stream_options"] = {**(so if isinstance(so, dict) else {}), "include_usage": True}
        return await self._call(p, self._stream_once, dumps(payload))

    async def aclose(self) -> None:
        for p in self._providers.values():
            if p.owned:
                await p.transport.aclose()

    async def __aenter__(self) -> UpstreamClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------ attempts

    async def _call(self, p: _Provider, once: Callable, content: bytes) -> Any:
        """Run one attempt, then tenacity-driven retries while the failure is retryable."""
        deadline = asyncio.get_running_loop().time() + p.total
        try:
            return _finish(await once(p, content, deadline), 1)
        except UpstreamFailure as exc:
            if not exc.retryable or p.max_retries == 0:
                raise
            first = exc
        attempts = 1
        replay: UpstreamFailure | None = first

        async def attempt() -> Any:
            nonlocal attempts, replay
            if replay is not None:  # tenacity decides about the failure already seen
                failure, replay = replay, None
                raise failure
            attempts += 1
            return await once(p, content, deadline)

        def before_sleep(rs: RetryCallState) -> None:
            exc = rs.outcome.exception() if rs.outcome else None
            log.info("%s: retry %d/%d in %.2fs after %s", p.name, rs.attempt_number,
                     p.max_retries, rs.upcoming_sleep, exc)  # fmt: skip

        retrying = AsyncRetrying(
            stop=_stop(p.max_retries, deadline),
            wait=_wait,
            retry=retry_if_exception(_retryable),
            before_sleep=before_sleep,
            sleep=asyncio.sleep,
            reraise=True,
        )
        try:
            result = await retrying(attempt)
        except UpstreamFailure as exc:
            exc.attempts = attempts
            raise
        return _finish(result, attempts)

    async def _send(self, p: _Provider, content: bytes, deadline: float) -> httpx.Response:
        """One request until 2xx response headers (body unread), within ``first_byte``."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(min(loop.time() + p.first_byte, deadline)):
                resp = await p.transport.handle_async_request(p.request(content))
                if resp.status_code >= 300:
                    raise await _status_failure(resp, p)
        except TimeoutError:
            if loop.time() >= deadline:
                raise UpstreamFailure(
                    "timeout", f"{p.name}: total deadline of {p.total:g}s passed", provider=p.name
                ) from None
            raise UpstreamFailure(
                "timeout",
                f"{p.name}: no response headers within {p.first_byte:g}s",
                retryable=True,
                provider=p.name,
            ) from None
        except httpx.HTTPError as exc:
            raise _translate(exc, p, before_headers=True) from exc
        return resp

    async def _complete_once(self, p: _Provider, content: bytes, deadline: float) -> dict:
        resp = await self._send(p, content, deadline)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(min(loop.time() + p.idle, deadline)):
                data = b"".join([part async for part in _body(resp)])
        except TimeoutError:
            raise UpstreamFailure(
                "timeout", f"{p.name}: response body stalled", provider=p.name
            ) from None
        except httpx.HTTPError as exc:
            raise _translate(exc, p, before_headers=False) from exc
        finally:
            await resp.aclose()
        try:
            out = loads(data)
        except ValueError:
            out = None
        if not isinstance(out, dict):
            raise UpstreamFailure(
                "protocol", f"{p.name}: the answer is not a JSON object", provider=p.name
            )
        return out

    async def _stream_once(self, p: _Provider, content: bytes, deadline: float) -> UpstreamStream:
        first_by = asyncio.get_running_loop().time() + p.first_byte
        resp = await self._send(p, content, deadline)
        ctype = resp.headers.get("content-type", "")
        if ctype.startswith("application/json"):  # an answer or an error, but not a stream
            got = await _status_failure(resp, p)
            raise UpstreamFailure(
                "protocol", f"{p.name}: expected an event stream, got JSON", body=got.body,
                provider=p.name,
            )  # fmt: skip
        return UpstreamStream(resp, p, deadline, first_by)


def _finish(result: Any, attempts: int) -> Any:
    if isinstance(result, UpstreamStream):
        result.attempts = attempts
        return result
    return result, attempts


# ---------------------------------------------------------------- streams


class UpstreamStream:
    """The chunks of a streamed answer as they arrive.

    ``async for chunk in stream`` yields each ``data:`` JSON object (usage chunks too)
    and ends at ``[DONE]`` (``completed`` is then true) or when the upstream closes.
    Raises :class:`UpstreamFailure`: ``timeout`` when the first event has not come
    ``first_byte`` after the request (headers often come at once, the first token much
    later), a later chunk not within ``idle``, or the total deadline passes; ``protocol`` for an error event or a broken connection.
    Always ``aclose()`` it (or use ``async with``): that frees the upstream connection.
    """

    def __init__(
        self, resp: httpx.Response, p: _Provider, deadline: float, first_by: float
    ) -> None:
        self.attempts = 1
        self.completed = False
        self._resp = resp
        self._p = p
        self._deadline = deadline
        self._first_by: float | None = first_by  # until the first event arrives
        self._raw = _body(resp)
        self._decoder = SSEDecoder()
        self._pending: deque[dict] = deque()
        self._ended = False
        self._closed = False
        self._failure: UpstreamFailure | None = None

    def __aiter__(self) -> UpstreamStream:
        return self

    async def __anext__(self) -> dict:
        while not self._pending:
            if self._failure is not None:  # after the chunks that came before it
                failure, self._failure = self._failure, None
                await self.aclose()
                raise failure
            if self._ended:
                await self.aclose()
                raise StopAsyncIteration
            await self._read()
        return self._pending.popleft()

    async def _read(self) -> None:
        p = self._p
        loop = asyncio.get_running_loop()
        first = self._first_by
        when = first if first is not None else loop.time() + p.idle
        try:
            async with asyncio.timeout_at(min(when, self._deadline)):
                chunk = await anext(self._raw, None)
        except TimeoutError:
            await self.aclose()
            if loop.time() >= self._deadline:
                msg = f"{p.name}: total deadline of {p.total:g}s passed mid-stream"
            elif first is not None:
                msg = f"{p.name}: no first stream event within {p.first_byte:g}s"
            else:
                msg = f"{p.name}: no stream chunk within {p.idle:g}s"
            raise UpstreamFailure("timeout", msg, provider=p.name) from None
        except httpx.HTTPError as exc:
            await self.aclose()
            raise _translate(exc, p, before_headers=False) from exc
        if chunk is None:
            self._ended = True
            events = self._decoder.flush()
        else:
            events = self._decoder.feed(chunk)
        if events:
            self._first_by = None
        for event, data in events:
            if data == b"[DONE]":
                self._ended = self.completed = True
                return
            try:
                self._pending.append(self._parse(event, data))
            except UpstreamFailure as exc:
                self._failure = exc
                self._ended = True
                return

    def _parse(self, event: bytes, data: bytes) -> dict:
        p = self._p
        try:
            obj = loads(data)
        except ValueError:
            obj = None
        if event == b"error" or (isinstance(obj, dict) and "error" in obj and "choices" not in obj):
            err = obj.get("error") if isinstance(obj, dict) else None
            detail = err.get("message") if isinstance(err, dict) else err
            detail = p.scrub(str(detail or data[:200].decode("utf-8", "replace")))
            body = obj if isinstance(obj, dict) else None
            raise UpstreamFailure(
                "protocol", f"{p.name}: error event in stream: {detail}", body=body, provider=p.name
            )
        if not isinstance(obj, dict):
            raise UpstreamFailure(
                "protocol", f"{p.name}: a stream chunk is not a JSON object", provider=p.name
            )
        return obj

    async def aclose(self) -> None:
        """Close the upstream response (idempotent; safe to call from ``finally``)."""
        if self._closed:
            return
        self._closed = True
        self._ended = True
        close = getattr(self._raw, "aclose", None)  # a generator's, or the stream's own
        try:
            if close is not None:
                await close()
        finally:
            await self._resp.aclose()

    async def __aenter__(self) -> UpstreamStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
