"""When one call to a provider may send its request again: at most once per body.

A body is sent again only when it certainly did not reach the provider or the provider
said it did not process it (urllib3's rule for non-idempotent methods): a failure whose
``retryable`` is true — a connection never established, or a 429 / 503 / the provider's
``retry_statuses``. A drop or timeout once the body may have been written is final for
this provider (the router falls back to the next candidate instead).

Waits: ``Retry-After`` when the answer gives one — beyond :data:`RETRY_AFTER_CAP_S` the
provider is given up on rather than asked early — else exponential back-off with jitter
from :data:`BACKOFF_INITIAL_S`. A retry that could not finish before the total deadline
is not made. The first attempt runs without tenacity (a tenacity call costs ~70 µs);
only a retryable failure builds the ``AsyncRetrying`` that drives the rest.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential_jitter

from router.upstream.failures import UpstreamFailure

log = logging.getLogger("router.upstream")

RETRY_AFTER_CAP_S = 10.0
BACKOFF_INITIAL_S = 0.05
BACKOFF_MAX_S = 2.0

T = TypeVar("T")

_BACKOFF = wait_exponential_jitter(
    multiplier=BACKOFF_INITIAL_S, max=BACKOFF_MAX_S, jitter=BACKOFF_INITIAL_S
)


def _failure(rs: RetryCallState) -> UpstreamFailure | None:
    exc = rs.outcome.exception() if rs.outcome else None
    return exc if isinstance(exc, UpstreamFailure) else None


def _wait(rs: RetryCallState) -> float:
    exc = _failure(rs)
    if exc is not None and exc.retry_after is not None:
        return exc.retry_after
    return _BACKOFF(rs)


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, UpstreamFailure) and exc.retryable


def _stop(max_retries: int, deadline: float) -> Callable[[RetryCallState], bool]:
    def stop(rs: RetryCallState) -> bool:
        if rs.attempt_number > max_retries or rs.upcoming_sleep > RETRY_AFTER_CAP_S:
            return True
        # A retry that cannot get a response before the deadline is not worth making.
        return asyncio.get_running_loop().time() + rs.upcoming_sleep >= deadline

    return stop


async def with_retries(
    once: Callable[[], Awaitable[T]], *, name: str, max_retries: int, deadline: float
) -> tuple[T, int]:
    """``(result, attempts)`` of ``once()``, retried as the module docstring says.
    An :class:`UpstreamFailure` leaves with ``attempts`` set."""
    try:
        return await once(), 1
    except UpstreamFailure as exc:
        if not exc.retryable or max_retries == 0:
            raise
        replay: UpstreamFailure | None = exc
    attempts = 1

    async def attempt() -> T:
        nonlocal attempts, replay
        if replay is not None:  # tenacity decides about the failure already seen
            failure, replay = replay, None
            raise failure
        attempts += 1
        return await once()

    def before_sleep(rs: RetryCallState) -> None:
        log.info("%s: retry %d/%d in %.2fs after %s", name, rs.attempt_number, max_retries,
                 rs.upcoming_sleep, _failure(rs))  # fmt: skip

    retrying = AsyncRetrying(
        stop=_stop(max_retries, deadline),
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
    return result, attempts
