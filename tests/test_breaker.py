"""The shared circuit breaker (router/breaker.py) on a hand-driven clock: the rules both
the upstream providers and the remote scorer rely on."""

from __future__ import annotations

from router.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def opened(failures: int = 2, cooldown_s: float = 10.0) -> tuple[CircuitBreaker, Clock]:
    clock = Clock()
    b = CircuitBreaker(failures, cooldown_s, clock)
    for _ in range(failures):
        assert b.admit()
        b.failure()
    return b, clock


def test_failures_in_a_row_open_the_circuit_and_a_success_resets_the_count() -> None:
    b = CircuitBreaker(3, 5.0, Clock())
    b.failure()
    b.failure()
    b.success()
    b.failure()
    b.failure()
    assert b.state == CLOSED and b.admit() and b.retry_in() == 0.0
    b.failure()
    assert b.state == OPEN and not b.admit() and b.retry_in() == 5.0


def test_after_the_cooldown_one_probe_goes_and_its_success_closes() -> None:
    b, clock = opened()
    clock.now += 4
    assert not b.admit() and b.retry_in() == 6.0
    clock.now += 6
    assert b.state == HALF_OPEN
    assert b.admit()  # the probe
    assert b.state == HALF_OPEN and not b.admit()  # one at a time
    b.success()
    assert b.state == CLOSED and b.admit()


def test_a_failed_probe_opens_again_for_a_whole_cooldown() -> None:
    b, clock = opened()
    clock.now += 10
    assert b.admit()
    b.failure()
    assert b.state == OPEN and not b.admit() and b.retry_in() == 10.0


def test_an_abandoned_probe_lets_the_next_call_probe() -> None:
    b, clock = opened()
    clock.now += 10
    assert b.admit()
    b.abandon()
    assert b.state == HALF_OPEN and b.admit()


def test_the_default_clock_is_monotonic() -> None:
    b = CircuitBreaker(1, 60.0)
    b.failure()
    assert b.state == OPEN and 59.0 < b.retry_in() <= 60.0
