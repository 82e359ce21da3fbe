"""Everything that can go wrong with one provider, as one exception: UpstreamFailure.

Its ``kind`` says what happened and whether the request body may have reached the
provider (``may_have_arrived``), which decides whether it may be sent again:

    UpstreamFailure
     ├── connect       no connection was made (refused, DNS, connect timeout, TLS, proxy):
     │                 nothing was sent; retried on the same provider (not TLS/proxy refusals)
     ├── circuit_open  the provider's circuit breaker is open: nothing was sent
     ├── status        a non-2xx answer; retried only for "not processed" statuses
     │                 (429, 503, the provider's ``retry_statuses``), after Retry-After
     ├── disconnect    the connection broke once the body may have been written: no retry
     ├── timeout       the first-byte, idle or total deadline passed: no retry
     ├── protocol      not valid HTTP/SSE/JSON, or an error event inside a stream
     └── too_large     an answer or SSE event over the provider's ``limits``

Third-party exceptions (httpx, aiohttp as the cause of an httpx one, OSError from an
injected transport) become these in :func:`translate` only, with ``raise ... from``.
Messages never contain a secret of the router: keys only travel in headers, and text
from upstream is decoded and scrubbed of every key the router holds
(``router/redaction.py``). On 401/403 the provider's text, which is about the router's
own credentials, is not kept at all. Where a message carries upstream text (which may
quote the prompt), ``summary`` is a prompt-free version built from the status and the
error's short identifiers (type, code, param): what the decision log keeps without
``--log-prompts``.
"""

from __future__ import annotations

import email.utils
import re
import time
from dataclasses import KW_ONLY, dataclass
from typing import Any, Protocol

import aiohttp
import httpx

from router.jsonio import loads
from router.upstream.transport import body_parts

ERROR_BODY_LIMIT = 64 * 1024
NOT_PROCESSED_STATUSES = frozenset({429, 503})
# What a transport may raise: httpx's errors, aiohttp's that httpx-aiohttp leaves
# unmapped (e.g. an oversized response head), OSError from an injected transport.
TRANSPORT_ERRORS = (httpx.HTTPError, aiohttp.ClientError, OSError)


@dataclass(eq=False)
class UpstreamFailure(Exception):
    """One provider could not answer; see the module docstring for ``kind``.

    ``retryable``: sending the same body to the same provider again is safe and may
    help. ``may_have_arrived``: the body may have reached the provider (false only when
    no request went out). ``attempts``: requests made by the call that failed.
    """

    kind: str
    message: str
    _: KW_ONLY
    status: int | None = None
    retryable: bool = False
    may_have_arrived: bool = True
    body: dict | None = None
    retry_after: float | None = None
    provider: str | None = None
    attempts: int = 1
    summary: str | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)

    @property
    def prompt_free(self) -> str:
        """The message without upstream text (which may quote the prompt)."""
        return self.summary or self.message

    @property
    def provider_fault(self) -> bool:
        """Whether this counts against the provider's health (the circuit breaker):
        it did not answer, or answered 5xx; a client fault or rate limit does not."""
        if self.kind == "status":
            return self.status is not None and self.status >= 500
        return self.kind in ("connect", "disconnect", "timeout", "protocol")


class FailureSource(Protocol):
    """What failures need from a provider: its name, key scrubbing, retry statuses."""

    name: str
    connect: float
    retry_statuses: frozenset[int]

    def scrub(self, text: str) -> str: ...

    def scrub_value(self, value: Any) -> Any: ...


def failure(p: FailureSource, kind: str, message: str, **kw: Any) -> UpstreamFailure:
    """A failure of provider ``p``, its name in front of the message."""
    return UpstreamFailure(kind, f"{p.name}: {message}", provider=p.name, **kw)


def translate(exc: BaseException, p: FailureSource, *, answer_started: bool) -> UpstreamFailure:
    """The one place transport exceptions become :class:`UpstreamFailure`.

    httpx-aiohttp maps aiohttp errors onto httpx ones loosely (a server disconnect becomes
    ``httpx.ConnectTimeout``), so the aiohttp cause, when there is one, decides.
    """
    cause = exc.__cause__
    if isinstance(cause, aiohttp.ClientError):
        exc = cause
    detail = p.scrub(str(exc)) or type(exc).__name__
    after = " after the answer started" if answer_started else ""
    if isinstance(exc, aiohttp.ClientSSLError | aiohttp.ClientHttpProxyError):
        return failure(p, "connect", f"no connection: {detail}", may_have_arrived=False)
    if isinstance(exc, aiohttp.ClientConnectorError | httpx.ConnectError):
        return _not_sent(p, f"connection failed: {detail}")
    if isinstance(exc, aiohttp.ConnectionTimeoutError | httpx.ConnectTimeout):
        return _not_sent(p, f"connect timeout after {p.connect:g}s")
    if isinstance(exc, aiohttp.ClientResponseError | httpx.LocalProtocolError):
        return failure(
            p, "protocol", f"invalid answer{after}: {detail}",
            summary=f"{p.name}: invalid answer{after} ({type(exc).__name__})",
        )  # fmt: skip
    if isinstance(exc, aiohttp.ServerTimeoutError | httpx.TimeoutException):
        return failure(p, "timeout", f"timeout{after}: {detail}")
    if isinstance(exc, aiohttp.ClientError | httpx.TransportError | OSError):
        return failure(p, "disconnect", f"connection broken{after}: {detail}")
    # UnsupportedProtocol, DecodingError, ...
    return failure(p, "protocol", detail, summary=f"{p.name}: {type(exc).__name__}")


def _not_sent(p: FailureSource, message: str) -> UpstreamFailure:
    return failure(p, "connect", message, retryable=True, may_have_arrived=False)


def retry_after(headers: httpx.Headers) -> float | None:
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


# Statuses whose text is about the router's own credentials: never relayed.
CREDENTIAL_STATUSES = frozenset({401, 403, 407})
_IDENT = re.compile(r"[A-Za-z0-9_.:\-\[\]]{1,64}")


async def status_failure(resp: httpx.Response, p: FailureSource) -> UpstreamFailure:
    """Read (a bounded part of) a non-2xx answer and describe it, scrubbed."""
    raw = b""
    try:
        async for part in body_parts(resp):
            raw += part
            if len(raw) >= ERROR_BODY_LIMIT:
                break
    except TRANSPORT_ERRORS:
        pass
    finally:
        await resp.aclose()
    status = resp.status_code
    summary = f"{p.name}: upstream returned {status}"
    if status in CREDENTIAL_STATUSES:
        detail, body = "the provider refused the router's credentials (see its api_key_env)", None
    else:
        text = raw[:ERROR_BODY_LIMIT].decode("utf-8", "replace")
        body = parse_object(text)  # decoded first, then scrubbed: escapes hide nothing
        body = p.scrub_value(body) if body is not None else None
        err = body.get("error") if body else None
        detail = (
            err.get("message") if isinstance(err, dict) else err if isinstance(err, str) else None
        )
        detail = str(detail) if detail else p.scrub(text)[:200].strip() or resp.reason_phrase
        summary += describe_error(err)
    return failure(
        p,
        "status",
        f"upstream returned {status}: {detail}",
        status=status,
        retryable=status in NOT_PROCESSED_STATUSES or status in p.retry_statuses,
        body=body,
        retry_after=retry_after(resp.headers),
        summary=summary,
    )


def describe_error(err: Any) -> str:
    """`` (type x, code y, param z)`` from an upstream error object: its short identifiers
    only, never its message (which may quote the prompt)."""
    if not isinstance(err, dict):
        return ""
    parts = [
        f"{k} {v}"
        for k in ("type", "code", "param")
        if isinstance(v := err.get(k), str | int) and _IDENT.fullmatch(str(v))
    ]
    return f" ({', '.join(parts)})" if parts else ""


def parse_object(data: bytes | str) -> dict | None:
    """``data`` as a JSON object, or None when it is not one."""
    try:
        obj = loads(data)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None
