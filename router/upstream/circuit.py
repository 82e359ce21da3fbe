"""A per-provider circuit breaker: stop sending to a provider that keeps failing.

``failures`` consecutive failed calls (no answer, or 5xx: see
``UpstreamFailure.provider_fault``) open the circuit: calls fail at once with kind
``circuit_open`` and nothing is sent, so the router falls back to the next candidate
without waiting on a dead provider. After ``cooldown_s`` one call goes through as a
probe (half-open); its success closes the circuit, its failure opens it again. Small
enough to keep here rather than take a library (and the clock is an argument, for tests).
"""

from __future__ import annotations

from collections.abc import Callable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitBreaker:
    __slots__ = ("failures", "cooldown_s", "clock", "_count", "_opened_at", "_probing")

    def __init__(self, failures: int, cooldown_s: float, clock: Callable[[], float]) -> None:
        self.failures = failures
        self.cooldown_s = cooldown_s
        self.clock = clock
        self._count = 0  # consecutive failed calls
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return CLOSED
        if self._probing or self.clock() >= self._opened_at + self.cooldown_s:
            return HALF_OPEN
        return OPEN

    def retry_in(self) -> float:
        """Seconds until the next probe may go (0 when closed)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self.cooldown_s - self.clock())

    def admit(self) -> bool:
        """Whether a call may be sent now; the first one after the cooldown is the probe."""
        if self._opened_at is None:
            return True
        if self._probing or self.clock() < self._opened_at + self.cooldown_s:
            return False
        self._probing = True
        return True

    def success(self) -> None:
        self._count = 0
        self._opened_at = None
        self._probing = False

    def failure(self) -> None:
        self._count += 1
        if self._probing or self._count >= self.failures:
            self._opened_at = self.clock()
        self._probing = False

    def abandon(self) -> None:
        """The probe ended without a verdict (cancelled): let the next call probe."""
        self._probing = False
