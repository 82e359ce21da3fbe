"""Calls to upstream OpenAI-compatible providers: pooled, timed, retried, streamed.

One pooled HTTP/1.1 transport per provider: :class:`router._http1.HTTP1Transport`
(asyncio + httptools, keep-alive, ``max_connections`` from providers.yaml), about ten
times cheaper per request than ``httpx.AsyncHTTPTransport``. Setting the environment
variable ``P2L_ROUTER_UPSTREAM_TRANSPORT=httpx`` switches every provider back to httpx's
own transport (an escape hatch; providers.yaml has no field for it). Requests go to the
transport directly rather than through ``httpx.AsyncClient``: a proxy wants none of the
client's cookies, redirects or auth flows. URLs and headers are built once per provider.

Timeouts (providers.yaml ``timeouts``) are deadlines on each phase: ``first_byte`` until
the response headers (and a stream's first event), ``idle`` between body chunks,
``total`` over the whole exchange (every attempt, every back-off sleep, the whole
stream); ``connect`` is handed to the transport. One exchange's phases share one lazily
re-armed timer (:class:`_Deadline`) rather than an ``asyncio.timeout`` each.

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
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential_jitter

from router.config import Catalog, ModelConfig, ProviderConfig
from router.offline.echo import dumps, loads
from router.upstream._http1 import HTTP1Transport
from router.upstream.sse import UpstreamStream

log = logging.getLogger("router.upstream.client")

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

    def fail(self, kind: str, message: str, **kw: Any) -> UpstreamFailure:
        """A failure of this provider, its name in front of the message."""
        return UpstreamFailure(kind, f"{self.name}: {message}", provider=self.name, **kw)

    def translate(self, exc: httpx.HTTPError, *, before_headers: bool) -> UpstreamFailure:
        return _translate(exc, self, before_headers=before_headers)


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
        return p.fail("protocol", detail)
    where = "" if before_headers else " after the response started"
    return p.fail(kind, f"{what}{where}", retryable=before_headers)


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


# ---------------------------------------------------------------- deadlines


class _Deadline:
    """The deadlines of one exchange's phases (headers, body, each stream chunk) on one
    lazily re-armed timer, plus the ``total`` deadline.

    ``asyncio.timeout`` arms and cancels a timer per phase (~10 µs each on the benchmark
    VM; a stream has a phase per chunk). Here a phase only records its deadline; the
    timer, armed for the earliest one, re-arms itself when it fires before the running
    phase is due. A late phase cancels its task, and ``with`` turns that cancellation
    into ``TimeoutError``, with ``asyncio.timeout``'s rules for other cancellations.
    """

    __slots__ = ("loop", "total", "_handle", "_when", "_at", "_task", "_cancelling", "_expired")

    def __init__(self, loop: asyncio.AbstractEventLoop, total: float) -> None:
        self.loop = loop
        self.total = total
        self._handle: asyncio.TimerHandle | None = None
        self._when = 0.0  # when the armed timer fires
        self._at = 0.0  # when the running phase is due
        self._task: asyncio.Task | None = None
        self._cancelling = 0
        self._expired = False

    def phase(self, at: float) -> _Deadline:
        """``with deadline.phase(when): ...`` raises TimeoutError after ``when``."""
        task = self._task = asyncio.current_task()
        self._cancelling = task.cancelling()  # type: ignore[union-attr]
        self._at = at
        self._expired = False
        if self._handle is None or at < self._when:
            if self._handle is not None:
                self._handle.cancel()
            self._when = at
            self._handle = self.loop.call_at(at, self._fire)
        return self

    def __enter__(self) -> None:
        return None

    def __exit__(self, et: type | None, exc: BaseException | None, tb: object) -> None:
        task, self._task = self._task, None
        if self._expired:
            self._expired = False
            if task.uncancel() <= self._cancelling and et is asyncio.CancelledError:  # type: ignore[union-attr]
                raise TimeoutError from exc

    def _fire(self) -> None:
        self._handle = None
        if self._task is None:  # between phases: the next one arms again
            return
        if self._at <= self._when:
            self._expired = True
            self._task.cancel()
        else:
            self._when = self._at
            self._handle = self.loop.call_at(self._at, self._fire)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


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
        """Run the attempts; the deadlines end with them, or with the stream they open."""
        loop = asyncio.get_running_loop()
        deadline = _Deadline(loop, loop.time() + p.total)
        result = None
        try:
            result = await self._attempts(p, once, content, deadline)
            return result
        finally:
            if not isinstance(result, UpstreamStream):
                deadline.close()

    async def _attempts(
        self, p: _Provider, once: Callable, content: bytes, deadline: _Deadline
    ) -> Any:
        """Run one attempt, then tenacity-driven retries while the failure is retryable."""
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
            stop=_stop(p.max_retries, deadline.total),
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

    async def _send(self, p: _Provider, content: bytes, deadline: _Deadline) -> httpx.Response:
        """One request until 2xx response headers (body unread), within ``first_byte``."""
        loop = deadline.loop
        try:
            with deadline.phase(min(loop.time() + p.first_byte, deadline.total)):
                resp = await p.transport.handle_async_request(p.request(content))
                if resp.status_code >= 300:
                    raise await _status_failure(resp, p)
        except TimeoutError:
            if loop.time() >= deadline.total:
                raise p.fail("timeout", f"total deadline of {p.total:g}s passed") from None
            msg = f"no response headers within {p.first_byte:g}s"
            raise p.fail("timeout", msg, retryable=True) from None
        except httpx.HTTPError as exc:
            raise p.translate(exc, before_headers=True) from exc
        return resp

    async def _complete_once(self, p: _Provider, content: bytes, deadline: _Deadline) -> dict:
        resp = await self._send(p, content, deadline)
        try:
            with deadline.phase(min(deadline.loop.time() + p.idle, deadline.total)):
                data = b"".join([part async for part in _body(resp)])
        except TimeoutError:
            raise p.fail("timeout", "response body stalled") from None
        except httpx.HTTPError as exc:
            raise p.translate(exc, before_headers=False) from exc
        finally:  # the stream's own close: Response.aclose adds a context manager (~5%)
            await resp.stream.aclose()  # type: ignore[union-attr]
        try:
            out = loads(data)
        except ValueError:
            out = None
        if not isinstance(out, dict):
            raise p.fail("protocol", "the answer is not a JSON object")
        return out

    async def _stream_once(
        self, p: _Provider, content: bytes, deadline: _Deadline
    ) -> UpstreamStream:
        first_by = deadline.loop.time() + p.first_byte
        resp = await self._send(p, content, deadline)
        ctype = resp.headers.get("content-type", "")
        if ctype.startswith("application/json"):  # an answer or an error, but not a stream
            got = await _status_failure(resp, p)
            raise p.fail("protocol", "expected an event stream, got JSON", body=got.body)
        return UpstreamStream(resp, _body(resp), p, deadline, first_by)


def _finish(result: Any, attempts: int) -> Any:
    if isinstance(result, UpstreamStream):
        result.attempts = attempts
        return result
    return result, attempts
