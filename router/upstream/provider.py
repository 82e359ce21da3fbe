"""One provider, ready for many requests: its pool, URL, headers, timeouts, limits and
circuit breaker, built once when the client is made."""

from __future__ import annotations

import re
import ssl
from collections.abc import Callable
from typing import Any

import httpx

from router.breaker import CircuitBreaker
from router.config import ProviderConfig
from router.errors import ConfigError, ConfigProblem
from router.redaction import Redactor
from router.upstream.failures import UpstreamFailure, failure, translate
from router.upstream.protocols import NOT_PROCESSED_BY_API, auth_headers, endpoint
from router.upstream.transport import create_transport

USER_AGENT = b"p2l-router/0.1"
# Control characters (tab aside) in a header value would let a value end the header
# early (request splitting) or be refused by the provider.
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


class Provider:
    """What every request to one provider shares. ``transport`` replaces the network
    pool (then it is not ours to close)."""

    __slots__ = (
        "name", "transport", "owned", "url", "headers", "extensions", "connect", "first_byte",
        "idle", "total", "max_retries", "retry_statuses", "max_response_bytes",
        "max_sse_event_bytes", "breaker", "redactor", "api",
    )  # fmt: skip

    def __init__(
        self,
        cfg: ProviderConfig,
        transport: httpx.AsyncBaseTransport | None,
        tls: Callable[[], ssl.SSLContext],
        clock: Callable[[], float],
        source: str = "providers.yaml",
        redactor: Redactor | None = None,
    ) -> None:
        self.name = cfg.name
        self.api = cfg.api
        self.url = httpx.URL(endpoint(cfg.api, cfg.base_url))
        # Every secret of the router, not only this provider's key: a provider may quote
        # anything it was ever sent, and a gateway in front of several may quote another's.
        self.redactor = redactor if redactor is not None else Redactor([cfg.api_key])
        self.headers = _headers(cfg, self.url, source)
        self.owned = transport is None
        self.transport = transport if transport is not None else create_transport(cfg, tls)
        t = cfg.timeouts
        self.connect, self.first_byte, self.idle, self.total = (
            t.connect, t.first_byte, t.idle, t.total,
        )  # fmt: skip
        # Reads, writes and pool waits are bounded by our own deadlines.
        self.extensions = {
            "timeout": {"connect": t.connect, "read": None, "write": None, "pool": None}
        }
        self.max_retries = cfg.max_retries
        # Anthropic's 529 (overloaded) means "not processed" like 503.
        self.retry_statuses = cfg.retry_statuses | NOT_PROCESSED_BY_API.get(cfg.api, frozenset())
        self.max_response_bytes = cfg.limits.max_response_bytes
        self.max_sse_event_bytes = cfg.limits.max_sse_event_bytes
        self.breaker = CircuitBreaker(cfg.circuit.failures, cfg.circuit.cooldown_s, clock)

    def request(self, content: bytes, extra: dict[bytes, bytes] | None = None) -> httpx.Request:
        """``extra``: per-request headers (the client's ``anthropic-version`` and
        ``anthropic-beta``), replacing the provider's own of the same name."""
        # stream= rather than content=: httpx then adds no headers of its own (ours are
        # complete), which halves the cost of building the request; read() makes the
        # body plain bytes again for transports that look at ``request.content``.
        if extra:
            base = [h for h in self.headers if h[0] not in extra]
            headers = [*base, *extra.items(), (b"content-length", b"%d" % len(content))]
        else:
            headers = [*self.headers, (b"content-length", b"%d" % len(content))]
        request = httpx.Request(
            "POST", self.url, headers=headers, stream=httpx.ByteStream(content),
            extensions=self.extensions,
        )  # fmt: skip
        request.read()
        return request

    def scrub(self, text: str) -> str:
        return self.redactor.text(text)

    def scrub_value(self, value: Any) -> Any:
        return self.redactor.value(value)

    def fail(self, kind: str, message: str, **kw: Any) -> UpstreamFailure:
        return failure(self, kind, message, **kw)

    def translate(self, exc: BaseException, *, answer_started: bool) -> UpstreamFailure:
        return translate(exc, self, answer_started=answer_started)

    def record(self, exc: BaseException | None) -> None:
        """Tell the circuit breaker how a call (or a stream, later) ended."""
        if isinstance(exc, UpstreamFailure) and exc.provider_fault:
            self.breaker.failure()
        else:
            self.breaker.success()


def _headers(cfg: ProviderConfig, url: httpx.URL, source: str) -> list[tuple[bytes, bytes]]:
    """The provider's request headers; a value with a control character stops the
    router here, before anything is sent (the message names the header, not the value)."""
    headers: dict[bytes, bytes] = {
        b"host": url.netloc,
        b"accept": b"application/json, text/event-stream",
        b"content-type": b"application/json",
        b"user-agent": USER_AGENT,
    }
    fields: dict[bytes, tuple[str, str]] = {}
    if cfg.api_key:
        for name, value in auth_headers(cfg.api, cfg.api_key).items():
            headers[name] = value
            fields[name] = ("api_key_env", f"${cfg.api_key_env}")
    for k, v in cfg.headers.items():
        name = k.lower().encode()
        headers[name] = v.encode()
        fields[name] = (f"headers.{k}", "the value")
    problems = []
    for name, value in headers.items():
        if _CONTROL.search(value) or _CONTROL.search(name):
            where, what = fields.get(name, ("", name.decode()))
            problems.append(
                ConfigProblem(
                    source, f"providers.{cfg.name}.{where}", f"{what} has a control character"
                )
            )
    if problems:
        raise ConfigError(problems)
    return list(headers.items())
