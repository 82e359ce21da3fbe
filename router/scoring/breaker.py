"""A circuit breaker for the remote scoring engine.

Written here rather than taken from a library: it is a dozen lines of state, with the
half-open rule this engine needs (one trial call after the cooldown), and no threads.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("router.scoring")


class CircuitBreaker:
    """Closed -> open after ``failures`` in a row -> one trial call after ``cooldown_s``."""

    def __init__(self, failures: int, cooldown_s: float) -> None:
        self.failures, self.cooldown_s = failures, cooldown_s
        self.in_a_row = 0
        self.opened_at: float | None = None
        self.trial = False

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def allow(self) -> bool:
        if self.opened_at is None:
            return True
        if not self.trial and time.monotonic() - self.opened_at >= self.cooldown_s:
            self.trial = True  # half-open: this call tests the engine
            return True
        return False

    def success(self) -> None:
        if self.opened_at is not None:
            log.info("scoring engine is answering again; circuit closed")
        self.in_a_row, self.opened_at, self.trial = 0, None, False

    def failure(self) -> None:
        self.in_a_row += 1
        if self.trial or (self.opened_at is None and self.in_a_row >= self.failures):
            if self.opened_at is None:
                log.error("scoring engine failed %d call(s) in a row; circuit open", self.in_a_row)
            self.opened_at, self.trial = time.monotonic(), False
