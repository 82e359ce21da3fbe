"""The pool under each provider: httpx-aiohttp's transport over an aiohttp session.

``httpx_aiohttp.AiohttpTransport`` (maintained, keeps httpx's transport seam so tests and
the demo inject in-process transports) over an ``aiohttp.ClientSession`` per provider:
keep-alive pool of ``max_connections``, happy eyeballs, a DNS cache, TLS with one
verifying context, bounded response heads (:data:`MAX_HEADER_LINE_BYTES`, ...), no
``Accept-Encoding`` (bodies are relayed and measured as they come). It costs about half
of httpx's own transport per request (bench/upstream.py).

Proxies: ``HTTP_PROXY`` / ``HTTPS_PROXY`` / ``NO_PROXY`` (and a proxy's ``.netrc`` entry)
are honoured exactly as aiohttp's ``trust_env`` does, but resolved once per provider
with aiohttp's own :func:`aiohttp.helpers.get_env_proxy_for_url`: ``trust_env=True``
would read the environment and ``.netrc`` in a worker thread on every request (and a
``.netrc`` entry for the provider's host would clash with our Authorization header).

aiohttp resends a request on a stale pooled connection only for idempotent methods;
ours are POSTs, so nothing is ever sent twice below us (tests/test_upstream.py checks).

Compared side by side in bench/upstream.py: aiohttp directly costs the least CPU, but not
behind this seam; of the seam-keeping transports, pyreqwest's costs less CPU for JSON at
c=32, yet fails tests/test_upstream*.py (a reset after the body is sent comes back as a
retryable connect error, streams are not read incrementally), so this one stays.

``P2L_ROUTER_UPSTREAM_TRANSPORT=httpx`` switches every provider to httpx's own transport
(an escape hatch; it does not read proxy variables).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import AsyncIterator, Callable

import aiohttp
import httpx
from aiohttp.helpers import get_env_proxy_for_url
from httpx_aiohttp import AiohttpTransport
from yarl import URL

from router.config import ProviderConfig

TRANSPORT_ENV = "P2L_ROUTER_UPSTREAM_TRANSPORT"
# Below uvicorn's (so vLLM's) 5 s keep-alive: we drop an idle connection before the
# server does, instead of racing its close with a request we could not resend.
KEEPALIVE_EXPIRY_S = 4.0
DNS_CACHE_TTL_S = 10.0
HAPPY_EYEBALLS_DELAY_S = 0.25
MAX_HEADER_LINE_BYTES = 8190  # the status line / one header line
MAX_HEADER_FIELD_BYTES = 8190  # one header value
MAX_HEADERS = 128


def create_transport(
    cfg: ProviderConfig, tls: Callable[[], ssl.SSLContext]
) -> httpx.AsyncBaseTransport:
    """The provider's pool, as :envvar:`P2L_ROUTER_UPSTREAM_TRANSPORT` says (default
    ``aiohttp``). ``tls`` makes the shared verifying context, only for https."""
    kind = os.environ.get(TRANSPORT_ENV, "aiohttp").strip().lower() or "aiohttp"
    https = cfg.base_url.startswith("https://")
    if kind == "aiohttp":
        context = tls() if https else None
        proxy = env_proxy(cfg.base_url)

        def session() -> aiohttp.ClientSession:  # made on first use, inside the loop
            connector = aiohttp.TCPConnector(
                limit=cfg.max_connections,
                limit_per_host=0,
                ssl=context if context is not None else True,
                keepalive_timeout=KEEPALIVE_EXPIRY_S,
                ttl_dns_cache=DNS_CACHE_TTL_S,
                happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY_S,
            )
            return aiohttp.ClientSession(
                connector=connector,
                trust_env=False,  # resolved above, once
                skip_auto_headers=("Accept-Encoding",),
                auto_decompress=False,
                max_line_size=MAX_HEADER_LINE_BYTES,
                max_field_size=MAX_HEADER_FIELD_BYTES,
                max_headers=MAX_HEADERS,
            )

        # verify= is only read to build a context the session never uses: a bare one
        # costs nothing (the default would load the CA bundle).
        bare = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        return AiohttpTransport(verify=bare, proxy=proxy, client=session)
    if kind == "httpx":
        limits = httpx.Limits(
            max_connections=cfg.max_connections,
            max_keepalive_connections=cfg.max_connections,
            keepalive_expiry=KEEPALIVE_EXPIRY_S,
        )
        # httpx wants a context even for plain HTTP: a bare one (verifying, so it would
        # fail closed) saves loading the CA bundle.
        verify = tls() if https else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        return httpx.AsyncHTTPTransport(verify=verify, limits=limits, http1=True, http2=False)
    raise ValueError(f"{TRANSPORT_ENV}={kind!r}: expected 'aiohttp' (the default) or 'httpx'")


def env_proxy(base_url: str) -> httpx.Proxy | None:
    """The proxy the environment names for ``base_url`` (aiohttp's rules), if any."""
    try:
        url, auth = get_env_proxy_for_url(URL(base_url))
    except LookupError:
        return None
    return httpx.Proxy(str(url), auth=(auth.login, auth.password) if auth else None)


def body_parts(resp: httpx.Response) -> AsyncIterator[bytes]:
    """The body as it arrives. Uncompressed (we send no Accept-Encoding) it is the raw
    stream, without the three generator layers of ``aiter_bytes``."""
    for name, _ in resp.headers.raw:
        if name.lower() == b"content-encoding":
            return resp.aiter_bytes()
    return aiter(resp.stream)  # type: ignore[arg-type]
