"""The upstream box: chat completions sent to providers, at most once per body.

Public surface (everything else in the package is internal):

- :class:`UpstreamClient` — ``complete(model, body) -> (dict, attempts)``,
  ``open_stream(model, body) -> UpstreamStream``, ``circuit_states()``, ``aclose()``.
- :class:`UpstreamStream` — the chunks of a streamed answer (``attempts``, ``completed``).
- :class:`UpstreamFailure` — every failure, with ``kind``, ``status``, ``retryable``,
  ``may_have_arrived``, ``attempts``, ``code`` (kinds drawn in failures.py).
- :class:`SSEDecoder`, :class:`Deadline`, :class:`CircuitBreaker` — the parts, public for
  their tests and for anyone relaying SSE (the breaker lives in ``router.breaker``, shared
  with the remote scorer).
- :data:`TRANSPORT_ENV` — ``P2L_ROUTER_UPSTREAM_TRANSPORT=httpx`` selects httpx's own pool.
"""

from __future__ import annotations

from router.breaker import CircuitBreaker
from router.upstream.client import UpstreamClient
from router.upstream.deadlines import Deadline
from router.upstream.failures import UpstreamFailure, retry_after
from router.upstream.sse import SSEDecoder, UpstreamStream
from router.upstream.transport import TRANSPORT_ENV

__all__ = [
    "TRANSPORT_ENV",
    "CircuitBreaker",
    "Deadline",
    "SSEDecoder",
    "UpstreamClient",
    "UpstreamFailure",
    "UpstreamStream",
    "retry_after",
]
