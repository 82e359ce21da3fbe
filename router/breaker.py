"""A circuit breaker: stop calling a dependency that keeps failing.

One implementation for the two places that need it, each upstream provider and the
remote scoring engine. ``failures`` consecutive failed calls open the circuit: the caller
fails at once (``circuit_open`` for a provider, ``scorer_unavailable`` for the engine)
and sends nothing, rather than waiting on a dead peer. After ``cooldown_s`` one call goes
through as a probe (half-open); its success closes the circuit, its failure opens it
again, and a probe that ends without a verdict (cancelled) is ``abandon``-ed so the next
call probes. What counts as a failure is the caller's rule, not this module's.

A leaf module (no imports from the router) so that neither ``upstream`` nor ``scoring``
depends on the other for it. Small enough to keep here rather than take a library, and
the clock is an argument, for tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# The state names, as the metrics read them (``router_circuit_state``: 0, 1, 2).
CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitBreaker:
    """Closed -> open after ``failures`` in a row -> one probe after ``cooldown_s``."""

    __slots__ = ("failures", "cooldown_s", "clock", "_count", "_opened_at", "_probing")

    def __init__(
        self,
        failures: int,
        cooldown_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures = failures
        self.cooldown_s = cooldown_s
        self.clock = clock
        self._count = 0  # consecutive failed calls
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half_open`` (cooldown over, or a probe in flight)."""
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
