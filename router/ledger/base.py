"""What every ledger backend promises: reserve before forwarding, settle after.

Lifecycle of a request's money:

    reserve(expected cost)  -> Reservation        counts against the budget at once
      ├── settle(r, actual) -> spend row          the reservation becomes the actual cost
      ├── release(r)                               nothing was spent (failed before upstream)
      └── (nothing: the process died)              the reservation stops counting at
                                                   ``expires_at = now + ttl_s``

Decisions that the backends share (tests hold both to them):

- ``reserve`` is atomic: the check ``spent + live reserved + amount <= limit`` and the
  insert happen in one transaction (SQLite ``BEGIN IMMEDIATE``) or one Lua script
  (Redis), which may hold other operations of the same process too (group commit:
  ``router/ledger/group.py``; each keeps its own outcome), so concurrent requests, in one process or many, never overshoot the limit by
  more than the difference between one request's actual and reserved cost.
  ``limit_usd=None`` means unlimited: the reservation is still recorded.
- ``settle`` is idempotent by reservation id *and* by ``ref`` (the decision id): a second
  settle of either, say a journal replay after a crash half-way, charges nothing. The
  check and the spend row are one transaction / one script, so it holds across processes.
- A settle that arrives after the reservation expired, or after it was released, still
  records the actual cost, in the reservation's period: the money was spent upstream and
  the ledger must match the provider's bill (a release only means "hold no more", and a
  settle is only ever called with an upstream answer in hand). ``release`` after a settle
  does nothing; releasing twice does nothing.
- Amounts are USD as binary floats, summed by the backend; sums match the decision log's
  costs far within 1e-9 USD. A reserve passes when the total is within ``EPSILON_USD``
  of the limit, so ten reservations of 0.1 fit a limit of 1.0.
- Times are Unix seconds given by the caller (``now``), so the clock is testable and
  every process of a deployment agrees on expiry through the shared store.
- ``reserve(..., period_ends_at=)`` tells the store when the period ends, so a store that
  keeps per-period keys (Redis) can expire them ``PERIOD_GRACE_S`` later; ``inf`` (the
  default, and ``total`` budgets) keeps them for good.
- ``take_rate`` is the team rate limit (requests and tokens per minute), checked and
  counted atomically in the shared store; see ``router/ledger/rate.py`` for the algorithm.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from router.ledger.history import (
    DEFAULT_RETENTION_DAYS,
    MAX_STATS_DECISIONS,
    DecisionQuery,
    StatRow,
    check_limit,
    check_status_filter,
    iso,
    summarize_rows,
)
from router.ledger.rate import check_rate_args
from router.ledger.sessions import SessionState
from router.ledger.stored_responses import StoredResponse

EPSILON_USD = 1e-12
# Closed (settled/released) reservation markers are kept this long so that a late
# duplicate settle or release is still recognised; after it, only settle-after-release
# could double count, which a caller would have to delay by a week to hit.
CLOSED_RETENTION_S = 7 * 86400.0
# Per-period keys outlive their period by this much, for late settles and journal replays
# (a settle later than this still counts in the team's total and the audit stream).
PERIOD_GRACE_S = 7 * 86400.0


@dataclass(frozen=True)
class Reservation:
    """Budget held for one request. ``expires_at`` is Unix seconds."""

    id: str
    team: str
    period_key: str
    amount_usd: float
    expires_at: float = math.inf
    ref: str = ""
    period_ends_at: float = math.inf


@dataclass(frozen=True)
class Usage:
    """A team's period: settled spend and the reservations still live at ``now``."""

    spent_usd: float
    reserved_usd: float

    @property
    def committed_usd(self) -> float:
        return self.spent_usd + self.reserved_usd

    def remaining(self, limit_usd: float | None) -> float | None:
        """Budget left for new reservations (never negative); None when unlimited."""
        return None if limit_usd is None else max(0.0, limit_usd - self.committed_usd)


class InsufficientBudget(Exception):
    """``reserve`` refused: the team's spent + reserved + requested would pass its limit."""

    def __init__(self, usage: Usage, limit_usd: float, requested_usd: float) -> None:
        self.usage = usage
        self.limit_usd = limit_usd
        self.requested_usd = requested_usd
        super().__init__(
            f"budget exceeded: spent {usage.spent_usd:.6f} + reserved {usage.reserved_usd:.6f}"
            f" + requested {requested_usd:.6f} USD > limit {limit_usd:.6f} USD"
        )


class LedgerError(RuntimeError):
    """The backing store failed (disk, lock timeout, Redis connection); the cause is chained."""


class LedgerLost(LedgerError):
    """The store lost its memory (a Redis emptied by FLUSHALL or restarted without
    persistence): money operations are refused until an operator acknowledges the reset
    (``p2l-router ledger ack-reset``); see ``router/ledger/epoch.py``. ``reason`` is what
    was found, without the store's address (for /readyz)."""

    def __init__(self, message: str, *, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


def redacted(url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if password is None:
        return url
    netloc = parts.netloc.replace(f":{password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def check_amount(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0 (got {value!r})")
    return value


def check_reserve(amount_usd: float, limit_usd: float | None, ttl_s: float) -> float:
    amount = check_amount("amount_usd", amount_usd)
    if limit_usd is not None:
        check_amount("limit_usd", limit_usd)
    if not ttl_s > 0:
        raise ValueError(f"ttl_s must be > 0 (got {ttl_s!r})")
    return amount


def ewma(previous: float | None, tokens: float, alpha: float, prior: float | None = None) -> float:
    """Each observation moves the average by ``alpha``; with no average yet it starts from
    ``prior`` (the configured expectation), or from the first observation if none."""
    start = previous if previous is not None else prior
    return float(tokens) if start is None else (1.0 - alpha) * start + alpha * tokens


def check_alpha(alpha: float) -> None:
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1] (got {alpha!r})")


@dataclass(frozen=True)
class Observation:
    """One answer's completion tokens, to fold into its model's learned average."""

    model: str
    tokens: int
    alpha: float
    prior: float | None


class Ledger(ABC):
    """A team budget store. All methods are coroutines and safe to call concurrently."""

    url: str = ""
    # Set while the store has lost its memory (Redis); every money operation raises it.
    lost: LedgerLost | None = None
    # The operator's acknowledgement of the last loss this process lived through (by, at,
    # epoch, note), for /readyz; None when there was none.
    reset_acknowledged: dict[str, Any] | None = None
    # How long a stored decision is kept (Redis: the per-id lookup's TTL; both backends
    # also drop older ones at ``purge_decisions``). Set by the service from the flag.
    decision_retention_s: float = DEFAULT_RETENTION_DAYS * 86400.0

    async def reserve(
        self,
        team: str,
        amount_usd: float,
        *,
        limit_usd: float | None,
        period_key: str,
        ttl_s: float,
        now: float,
        ref: str = "",
        period_ends_at: float = math.inf,
    ) -> Reservation:
        """Hold ``amount_usd`` for a request; raise InsufficientBudget when it does not fit."""
        amount = check_reserve(amount_usd, limit_usd, ttl_s)
        r = Reservation(
            uuid.uuid4().hex, team, period_key, amount, now + ttl_s, ref, period_ends_at
        )
        await self._hold(r, limit_usd, now)
        return r

    @abstractmethod
    async def _hold(self, r: Reservation, limit_usd: float | None, now: float) -> None:
        """Record ``r`` if spent + reserved + it stays within ``limit_usd`` (atomically
        across processes), else raise InsufficientBudget."""

    async def settle(self, r: Reservation, actual_usd: float, *, now: float, ref: str = "") -> None:
        """Turn the reservation into a spend row of ``actual_usd``; a no-op if this
        reservation or this ``ref`` (default ``r.ref``) was settled before."""
        await self._charge(r, check_amount("actual_usd", actual_usd), now, ref, None)

    async def settle_observed(
        self, r: Reservation, actual_usd: float, *, now: float, ref: str = "",
        model: str, output_tokens: int, alpha: float = 0.1, prior: float | None = None,
    ) -> float:  # fmt: skip
        """``settle`` and ``observe_output_tokens`` (the answered request's completion
        tokens) in one transaction; returns the new average. A repeated settle (a replay)
        learns nothing: it returns the current average."""
        actual = check_amount("actual_usd", actual_usd)
        check_alpha(alpha)
        check_amount("output_tokens", output_tokens)
        learn = Observation(model, output_tokens, alpha, prior)
        value = await self._charge(r, actual, now, ref, learn)
        assert value is not None
        return value

    @abstractmethod
    async def _charge(
        self, r: Reservation, actual: float, now: float, ref: str, learn: Observation | None
    ) -> float | None:
        """:meth:`settle` for a checked amount, with :meth:`observe_output_tokens` in the
        same transaction when ``learn`` is given (then: the model's average)."""

    async def take_rate(
        self,
        team: str,
        *,
        requests_per_minute: int | None,
        tokens_per_minute: int | None,
        tokens: int,
        now: float,
    ) -> float | None:
        """Count one request of ``tokens`` against the team's per-minute limits (None: no
        limit) if both allow it and return None; else count nothing and return the seconds
        until it could pass (for ``Retry-After``)."""
        limits = check_rate_args(requests_per_minute, tokens_per_minute, tokens, now)
        return await self._take_rate(team, limits, now) if limits else None

    @abstractmethod
    async def _take_rate(
        self, team: str, limits: list[tuple[str, float, float]], now: float
    ) -> float | None:
        """:meth:`take_rate` for validated, non-empty ``limits`` (kind, limit, cost)."""

    @abstractmethod
    async def release(self, r: Reservation) -> None:
        """Drop the reservation without spend; no-op if already closed."""

    @abstractmethod
    async def usage(self, team: str, period_key: str, *, now: float) -> Usage:
        """Settled spend and live reservations of the team's period at ``now``."""

    @abstractmethod
    async def get_state(self, key: str) -> dict | None:
        """A small JSON document saved by ``set_state`` (the pacer's state), or None."""

    @abstractmethod
    async def set_state(self, key: str, value: dict) -> None:
        """Replace the document at ``key``; it must be JSON-serialisable."""

    async def observe_output_tokens(
        self, model: str, tokens: int, *, alpha: float = 0.1, prior: float | None = None
    ) -> float:
        """Fold one response's completion tokens into the model's EWMA; return the new value."""
        check_alpha(alpha)
        check_amount("tokens", tokens)
        return await self._observe(Observation(model, tokens, alpha, prior))

    @abstractmethod
    async def _observe(self, learn: Observation) -> float:
        """:meth:`observe_output_tokens` for checked values."""

    @abstractmethod
    async def expected_output_tokens(self, model: str) -> float | None:
        """The model's learned EWMA of completion tokens, None before any observation."""

    @abstractmethod
    async def total_spent(self, team: str | None = None) -> float:
        """Settled spend over all periods, of one team or of all teams (audit and tests)."""

    # ------------------------------------------------------------ stored responses
    # Semantics and bounds: router/ledger/stored_responses.py.

    @abstractmethod
    async def put_response(self, stored: StoredResponse, text: str | None = None) -> None:
        """Store (or replace) a response until ``stored.expires_at``; ``text`` is its
        JSON when the caller has serialised it already (to bound its size)."""

    @abstractmethod
    async def get_response(self, response_id: str, *, now: float) -> StoredResponse | None:
        """The stored response, None when unknown or expired at ``now``."""

    @abstractmethod
    async def delete_response(self, response_id: str, team: str) -> bool:
        """Delete the response if ``team`` owns it; whether one was deleted."""

    # ------------------------------------------------------------ sessions
    # Semantics and bounds: router/ledger/sessions.py.

    @abstractmethod
    async def get_session(self, session_id: str, *, now: float) -> SessionState | None:
        """The session's last turn, None when unknown or expired."""

    @abstractmethod
    async def record_session_turn(
        self, session_id: str, *, model: str, prompt_tokens: int, output_tokens: int,
        now: float, ttl_s: float,
    ) -> SessionState:  # fmt: skip
        """Store a settled turn as the session's last (kept ``ttl_s``) and count it."""

    # ------------------------------------------------------------ decision history
    # Semantics and the line format: router/ledger/history.py.

    @abstractmethod
    async def record_decisions(self, lines: list[dict[str, Any]]) -> None:
        """Store decision-log lines (idempotent by ``decision_id``)."""

    async def query_decisions(
        self,
        *,
        team: str | None = None,
        model: str | None = None,
        status: str | int | None = None,
        since: float | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Stored lines, newest first, and the cursor of the next page (None at the end).
        ``status``: an HTTP status, ``ok`` or ``error``; ``since``: Unix seconds."""
        check_limit(limit)
        return await self._query_decisions(
            DecisionQuery(team, model, check_status_filter(status), since, limit, cursor)
        )

    @abstractmethod
    async def _query_decisions(self, q: DecisionQuery) -> tuple[list[dict[str, Any]], str | None]:
        """:meth:`query_decisions` with checked arguments."""

    @abstractmethod
    async def get_decision(self, decision_id: str) -> dict[str, Any] | None:
        """One stored line, or None."""

    async def decision_stats(
        self,
        *,
        since: float | None,
        bucket_s: float = 3600.0,
        team: str | None = None,
        max_decisions: int = MAX_STATS_DECISIONS,
    ) -> dict[str, Any]:
        """``summarize_rows`` over the newest ``max_decisions`` stored decisions since
        ``since``, plus ``decisions`` (how many it summarised), ``truncated`` (older ones
        were left out) and ``oldest`` (the oldest one summarised). The rows are read and
        summarised off the event loop, in worker threads."""
        if max_decisions < 1:
            raise ValueError(f"max_decisions must be >= 1 (got {max_decisions})")
        rows = await self._stat_rows(since, team, max_decisions + 1)
        truncated = len(rows) > max_decisions
        del rows[max_decisions:]
        rows.reverse()  # oldest first: summed in the order of a log file (the CLI's)
        out = await asyncio.to_thread(summarize_rows, rows, bucket_s=bucket_s, since=since)
        out["decisions"] = len(rows)
        out["truncated"] = truncated
        out["oldest"] = iso(rows[0].ts) if rows else None
        return out

    @abstractmethod
    async def _stat_rows(self, since: float | None, team: str | None, limit: int) -> list[StatRow]:
        """The ``StatRow`` of at most ``limit`` stored decisions since ``since`` (of one
        team), newest first, read without parsing lines on the event loop."""

    @abstractmethod
    async def decisions_since(self, since: float | None, team: str | None) -> list[dict[str, Any]]:
        """Every stored line since ``since`` (of one team), oldest first."""

    @abstractmethod
    async def purge_decisions(self, before_ts: float) -> int:
        """Drop lines older than ``before_ts``; returns how many went (Redis: about)."""

    async def check(self) -> None:
        """Raise LedgerError if the store cannot be reached (start-up and /readyz)."""
        await self.usage("__check__", "total", now=0.0)

    async def check_epoch(self) -> None:
        """Compare the store's epoch with the one this process knows (adopting one at first
        use, or an acknowledged reset), setting :attr:`lost`; a no-op for stores that cannot
        lose their memory behind the process's back (SQLite)."""
        return None

    @abstractmethod
    async def close(self) -> None:
        """Release connections; the ledger must not be used afterwards."""
