"""Accounting: a team's budget period, its usage as this process sees it, and the
reserve → settle / release life of one request's hold on the ledger.

The ledger's atomic reserve is what enforces a limit. A settlement the ledger cannot take
(it is locked or down) goes to the local :class:`SettlementJournal` (fsync'd, replayed by
ref, so never charged twice) and the answer still goes out: the provider has billed it.
Journaled spend, every router process's (the journal reads the other slots), counts in
every usage figure until the ledger has it, and so does the spend of a period whose rule
a reload changed (``sync_periods``). The :class:`UsageView` only saves
a ledger read per request: it steers the choice of model and the budget header, and a
refusal based on it is re-checked against the ledger by the planner.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from router.chat.model import Usage as ChatUsage
from router.config import BudgetConfig, TeamPolicy
from router.errors import BudgetExceededError, NotReadyError, RateLimitedError
from router.ledger import (
    InsufficientBudget,
    Ledger,
    LedgerError,
    LedgerLost,
    Reservation,
    SettlementJournal,
    Usage,
)
from router.policy import paced_lambda
from router.serving.periods import carried_periods, period_bounds, period_key

log = logging.getLogger("router")

USAGE_REFRESH_S = 1.0


@dataclass(frozen=True)
class Period:
    """One budget period of a team: its ledger key and its bounds."""

    key: str
    start: datetime
    end: datetime | None  # None: the period never ends (``total``)
    start_ts: float
    end_ts: float  # math.inf when ``end`` is None

    def contains(self, ts: float) -> bool:
        return self.start_ts <= ts < self.end_ts


class PeriodCache:
    """The current period per (period, timezone) rule, computed once per period."""

    def __init__(self) -> None:
        self._by_rule: dict[tuple[str, str], Period] = {}

    def current(self, budget: BudgetConfig, now: float) -> Period:
        rule = (budget.period, budget.timezone)
        cached = self._by_rule.get(rule)
        if cached is not None and cached.contains(now):
            return cached
        dt = datetime.fromtimestamp(now, budget.tzinfo)
        start, end = period_bounds(budget.period, budget.tzinfo, dt)
        period = Period(
            key=period_key(budget.period, budget.tzinfo, dt),
            start=start,
            end=end,
            start_ts=start.timestamp(),
            end_ts=end.timestamp() if end else math.inf,
        )
        self._by_rule[rule] = period
        return period


@dataclass
class UsageSnapshot:
    """A team's usage in one period as last read from the ledger, moved since by this
    process's own holds and settlements."""

    period_key: str
    spent_usd: float
    reserved_usd: float
    read_at: float  # time.monotonic()


class UsageView:
    """Each team's period usage as this process last saw it, re-read every
    ``USAGE_REFRESH_S``."""

    def __init__(self) -> None:
        self._snapshots: dict[str, UsageSnapshot] = {}

    def get(self, team: str, key: str) -> Usage | None:
        s = self._snapshots.get(team)
        if s is None or s.period_key != key or time.monotonic() - s.read_at > USAGE_REFRESH_S:
            return None
        return Usage(s.spent_usd, max(0.0, s.reserved_usd))

    def put(self, team: str, key: str, usage: Usage) -> None:
        self._snapshots[team] = UsageSnapshot(
            key, usage.spent_usd, usage.reserved_usd, time.monotonic()
        )

    def adjust(self, team: str, key: str, *, spent: float = 0.0, reserved: float = 0.0) -> None:
        s = self._snapshots.get(team)
        if s is not None and s.period_key == key:
            s.spent_usd += spent
            s.reserved_usd += reserved


@dataclass
class Hold:
    """What one request holds on its team's budget: at most one reservation at a time."""

    team: TeamPolicy
    period: Period
    reservation: Reservation | None = None


@dataclass(frozen=True)
class Charge:
    """The actual cost of an answer and where its token counts came from."""

    cost_usd: float
    prompt_tokens: int | None
    completion_tokens: int | None
    source: str  # upstream | partial | estimated | reserved (router/serving/bills.py)
    learn_output_tokens: int | None = None  # per-choice length worth learning from
    usage: ChatUsage | None = None  # the classes billed, for the decision log
    full_input_usd: float | None = None  # the same at the full input price (caching saved)


class Accounts:
    """The ledger seen from one router process: periods, usage, holds, pacing, the
    learned output lengths that feed the next reservations."""

    def __init__(
        self, ledger: Ledger, journal: SettlementJournal, clock: Callable[[], float]
    ) -> None:
        self.ledger = ledger
        self.journal = journal
        self.clock = clock
        self.periods = PeriodCache()
        self.view = UsageView()
        self.learned_output: dict[str, float] = {}
        # (team, period key) -> other keys whose spend counts there (a rule changed
        # mid-period; see router/serving/periods.py ``carried_periods``).
        self.carry: dict[tuple[str, str], list[str]] = {}

    async def sync_periods(self, teams: Iterable[TeamPolicy]) -> None:
        """At start and at each reload: carry the spend of a period whose rule changed
        into the team's new period, so a change from day to week never starts at $0.
        The rule in force is kept in the ledger, so every replica carries the same."""
        carry: dict[tuple[str, str], list[str]] = {}
        now = self.clock()
        for team in teams:
            b = team.budget
            period = self.period(team)
            state_key = f"period:{team.name}"
            state = await self.ledger.get_state(state_key)
            sources, new_state = carried_periods(
                state, (b.period, b.timezone), period.key, datetime.fromtimestamp(now, UTC)
            )
            if new_state != state:
                await self.ledger.set_state(state_key, new_state)
            if sources:
                carry[(team.name, period.key)] = sources
                log.warning(
                    "team %s: budget rule changed mid-period; the spend of %s counts in %s",
                    team.name, ", ".join(sources), period.key,
                )  # fmt: skip
        self.carry = carry
        self.view = UsageView()  # what was read under the old rules is stale

    async def carried_usd(self, team: str, period_key: str) -> float:
        """Spend of earlier-rule periods that counts in this one (0 almost always)."""
        sources = self.carry.get((team, period_key))
        if not sources:
            return 0.0
        now = self.clock()
        total = 0.0
        for key in sources:
            u = await self.ledger.usage(team, key, now=now)
            total += u.spent_usd + u.reserved_usd + self.journal.pending_usd(team, key)
        return total

    async def load_learned_output(self, models: Iterable[str]) -> None:
        for name in models:
            v = await self.ledger.expected_output_tokens(name)
            if v is not None:
                self.learned_output[name] = v

    def period(self, team: TeamPolicy) -> Period:
        return self.periods.current(team.budget, self.clock())

    async def read_usage(self, team: str, period: Period) -> Usage:
        usage = await self._ledger_usage(team, period)
        self.view.put(team, period.key, usage)
        return usage

    async def _ledger_usage(self, team: str, period: Period) -> Usage:
        """The ledger's figures plus what the journal holds for it."""
        u = await self.ledger.usage(team, period.key, now=self.clock())
        pending = await self.off_ledger_usd(team, period.key)
        return Usage(u.spent_usd + pending, u.reserved_usd) if pending else u

    async def off_ledger_usd(self, team: str, period_key: str) -> float:
        """Spend that counts in the period though the ledger does not hold it under this
        key: journaled settlements (every slot's) and the carry of a changed rule."""
        return self.journal.pending_usd(team, period_key) + await self.carried_usd(team, period_key)

    async def usage(self, team: str, period: Period) -> tuple[Usage, bool]:
        """The team's usage and whether it came from this process's (possibly stale) view."""
        cached = self.view.get(team, period.key)
        if cached is not None:
            return cached, True
        return await self.read_usage(team, period), False

    async def budget_report(self, team: TeamPolicy) -> dict[str, Any]:
        p = self.period(team)
        u = await self._ledger_usage(team.name, p)
        limit = team.budget.usd
        return {
            "object": "budget",
            "team": team.name,
            "period": team.budget.period,
            "timezone": team.budget.timezone,
            "period_start": p.start.isoformat(),
            "resets_at": p.end.isoformat() if p.end else None,
            "limit_usd": limit,
            "spent_usd": round(u.spent_usd, 12),
            "reserved_usd": round(u.reserved_usd, 12),
            "journaled_usd": round(self.journal.pending_usd(team.name, p.key), 12),
            "remaining_usd": None
            if limit is None
            else round(limit - u.spent_usd - u.reserved_usd, 12),
            "on_exhausted": team.budget.on_exhausted,
            "strategy": team.strategy,
            "cost_sensitivity": team.cost_sensitivity,
        }

    async def cost_sensitivity(
        self, team: TeamPolicy, usage: Usage, period: Period, *, save: bool = True
    ) -> float:
        """The team's λ; with ``budget.pacing`` it adapts so spend tracks the budget.
        ``save=False`` reads it without moving the pacer (admin views, previews)."""
        b = team.budget
        if not b.pacing or b.usd is None or b.period == "total":
            return team.cost_sensitivity
        state_key = f"pacing:{team.name}"
        state = await self.ledger.get_state(state_key)
        lam, state = paced_lambda(
            state,
            team.cost_sensitivity,
            usage.spent_usd + usage.reserved_usd,
            b.usd,
            period.start,
            period.end,
            self.clock(),
        )
        if save:
            await self.ledger.set_state(state_key, state)
        return lam

    async def reserve(self, hold: Hold, amount_usd: float, *, ref: str) -> None:
        """Hold ``amount_usd`` of the team's budget, swapping any earlier hold of this
        request; :class:`BudgetExceededError` when it does not fit."""
        await self.release(hold)
        team, period = hold.team, hold.period
        limit = team.budget.usd
        if limit is not None:  # journaled and carried spend is spent all the same
            limit = max(0.0, limit - await self.off_ledger_usd(team.name, period.key))
        try:
            hold.reservation = await self.ledger.reserve(
                team.name,
                amount_usd,
                limit_usd=limit,
                period_key=period.key,
                ttl_s=team.budget.reservation_ttl_s,
                now=self.clock(),
                ref=ref,
                period_ends_at=period.end_ts,
            )
        except InsufficientBudget as exc:
            self.view.put(team.name, period.key, exc.usage)
            raise budget_exhausted(team, period, exc.usage, amount_usd) from None
        self.view.adjust(team.name, period.key, reserved=amount_usd)

    async def settle(self, hold: Hold, model: str, charge: Charge, *, ref: str, prior: int) -> None:
        """Charge ``charge`` against the hold (and learn the model's output length in the
        same ledger transaction where there is one)."""
        r, hold.reservation = hold.reservation, None
        if r is not None:
            self.view.adjust(r.team, r.period_key, spent=charge.cost_usd, reserved=-r.amount_usd)
        now, learn = self.clock(), charge.learn_output_tokens
        try:
            if r is not None and learn is not None:
                self.learned_output[model] = await self.ledger.settle_observed(
                    r, charge.cost_usd, now=now, ref=ref, model=model, output_tokens=learn,
                    prior=prior,
                )  # fmt: skip
            elif r is not None:
                await self.ledger.settle(r, charge.cost_usd, now=now, ref=ref)
            elif learn is not None:
                self.learned_output[model] = await self.ledger.observe_output_tokens(
                    model, learn, prior=prior
                )
        except LedgerError as exc:
            if r is None:  # only a learned average was lost
                log.warning("could not record %s's output length: %s", model, exc)
                return
            await self.journal.append(
                r, charge.cost_usd, now=now, ref=ref, model=model if learn else None,
                output_tokens=learn, prior=prior,
            )  # fmt: skip
            log.error(
                "ledger unavailable at settle (%s): $%.6f for %s journaled in %s; it is replayed "
                "when the ledger is back", exc, charge.cost_usd, ref, self.journal.path,
            )  # fmt: skip

    async def take_rate(self, team: TeamPolicy, tokens: int) -> None:
        """Count one request against the team's per-minute limits, or refuse it (429)."""
        rl = team.rate_limit
        if rl is None:
            return
        wait = await self.ledger.take_rate(
            team.name,
            requests_per_minute=rl.requests_per_minute,
            tokens_per_minute=rl.tokens_per_minute,
            tokens=tokens,
            now=self.clock(),
        )
        if wait is not None:
            raise RateLimitedError(
                f"team '{team.name}' is over its rate limit ({rl.describe()}); "
                f"retry in {wait:.1f} s",
                retry_after_s=wait,
            )

    async def release(self, hold: Hold) -> None:
        if hold.reservation is not None:
            r, hold.reservation = hold.reservation, None
            self.view.adjust(r.team, r.period_key, reserved=-r.amount_usd)
            await self.ledger.release(r)


def ledger_unavailable(exc: LedgerError) -> NotReadyError:
    """The 503 for any request that needs a ledger the router cannot use: without it no
    budget can be enforced, so refuse rather than overspend."""
    if isinstance(exc, LedgerLost):
        return NotReadyError(
            "the router's spend ledger lost its data (Redis was emptied or restarted without "
            "persistence), so budgets cannot be enforced; requests are refused until an "
            "operator acknowledges the reset",
            code="ledger_unavailable",
            headers={"retry-after": "30"},
        )
    return NotReadyError(
        "the router cannot reach its spend ledger, so it cannot enforce budgets; retry shortly",
        code="ledger_unavailable",
        headers={"retry-after": "2"},
    )


def budget_exhausted(
    team: TeamPolicy, period: Period, usage: Usage | None, need_usd: float
) -> BudgetExceededError:
    limit = team.budget.usd or 0.0
    when = f"; it resets at {period.end.isoformat()}" if period.end else ""
    have = (
        ""
        if usage is None
        else f" (spent ${usage.spent_usd:.6f}, reserved ${usage.reserved_usd:.6f})"
    )
    return BudgetExceededError(
        f"team '{team.name}' budget of ${limit:g} per {team.budget.period} is exhausted{have}; "
        f"this request needs up to ${need_usd:.6f}{when}"
    )
