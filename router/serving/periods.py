"""Budget periods: calendar boundaries in the team's IANA time zone.

A team's budget resets on wall-clock boundaries where the team lives (midnight in
Europe/Paris, not in UTC), so a "day" is 23 or 25 hours long on DST-change days and a
"month" is 28 to 31 days. All arithmetic goes through UTC instants and ``zoneinfo``; the
returned datetimes are aware, in the team's zone. Pure: the clock is an argument.
Measure spans with ``.timestamp()`` differences: Python subtracts two datetimes of the
same zone as wall clocks.

``period_key`` names the period a reservation or spend belongs to; the ledger stores spend
per (team, key), so a new key means the budget starts again from zero. ``resets_at`` is
the end bound (``None`` for ``total``, which never resets).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

PERIODS: tuple[str, ...] = ("hour", "day", "week", "month", "total")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _local(d: date, tz: ZoneInfo) -> datetime:
    """Midnight of ``d`` in ``tz`` as a real instant. When midnight does not exist (a DST
    jump at 00:00), zoneinfo reads the wall time with the offset before the jump, which is
    the first instant of the day; the round trip through a timestamp normalises the wall
    clock to what a clock in that zone shows at that instant."""
    return datetime(d.year, d.month, d.day, tzinfo=tz).astimezone(UTC).astimezone(tz)


def _check(period: str, now: datetime) -> None:
    if period not in PERIODS:
        raise ValueError(f"unknown budget period {period!r} (expected one of {', '.join(PERIODS)})")
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be an aware datetime (e.g. datetime.now(UTC))")


def period_bounds(period: str, tz: ZoneInfo, now: datetime) -> tuple[datetime, datetime | None]:
    """[start, end) of the period containing ``now``; ``end`` is when the budget resets.

    hour: the local clock hour (a repeated hour at a DST fall-back is two periods);
    day: local midnight to midnight; week: Monday 00:00 to Monday 00:00;
    month: the 1st 00:00 to the next 1st; total: (Unix epoch, None).
    """
    _check(period, now)
    local = now.astimezone(tz)
    if period == "total":
        return EPOCH.astimezone(tz), None
    if period == "hour":
        # The local hour started local-minutes-and-seconds ago, counted in absolute time
        # (UTC arithmetic; aware arithmetic in ``tz`` would be wall-clock and lose the
        # fold of a repeated hour).
        past = timedelta(minutes=local.minute, seconds=local.second, microseconds=local.microsecond)
        start_utc = now.astimezone(UTC) - past
        return start_utc.astimezone(tz), (start_utc + timedelta(hours=1)).astimezone(tz)
    today = local.date()
    if period == "day":
        first, nxt = today, today + timedelta(days=1)
    elif period == "week":
        first = today - timedelta(days=today.weekday())
        nxt = first + timedelta(days=7)
    else:  # month
        first = today.replace(day=1)
        nxt = (first + timedelta(days=32)).replace(day=1)
    return _local(first, tz), _local(nxt, tz)


def period_key(period: str, tz: ZoneInfo, now: datetime) -> str:
    """A stable name for the period containing ``now``: ``day:2026-11-28``,
    ``week:2026-11-23`` (its Monday), ``month:2026-11``, ``total``, and for hours the
    local start with its offset, ``hour:2026-10-25T02:00+02:00``, so that the hour
    repeated at a DST fall-back gets its own key."""
    start, _ = period_bounds(period, tz, now)
    if period == "total":
        return "total"
    if period == "hour":
        return f"hour:{start.isoformat(timespec='minutes')}"
    if period == "month":
        return f"month:{start:%Y-%m}"
    return f"{period}:{start.date().isoformat()}"


@dataclass(frozen=True)
class PeriodWindow:
    """The current period of a budget: its ledger key, bounds and reset time."""

    period: str
    key: str
    start: datetime
    end: datetime | None

    @property
    def resets_at(self) -> datetime | None:
        return self.end

    def elapsed_fraction(self, now: datetime) -> float | None:
        """Share of the period already gone, in [0, 1]; None for ``total``."""
        if self.end is None:
            return None
        # Timestamps, not datetime subtraction: two datetimes in the same zone subtract
        # as wall clocks, which would make a 23-hour DST day 24 hours long.
        span = self.end.timestamp() - self.start.timestamp()
        done = now.timestamp() - self.start.timestamp()
        return min(1.0, max(0.0, done / span))


def current_window(period: str, tz: ZoneInfo, now: datetime) -> PeriodWindow:
    """Bounds and key in one call (what the server and the pacer need per request)."""
    start, end = period_bounds(period, tz, now)
    return PeriodWindow(period, period_key(period, tz, now), start, end)


def carried_periods(
    state: dict | None, rule: tuple[str, str], key: str, now: datetime
) -> tuple[list[str], dict]:
    """Which other period keys count as spent in ``key``, and the state to store.

    A team whose budget rule (period, time zone) changes mid-period would otherwise start
    the new window at $0 though the old one was spent: the old rule's period running now
    is carried into the new key for as long as that key lasts (and what it carried
    itself). ``state`` is what the last start or reload stored for the team (``rule``,
    ``key``, ``carry_from``); when the period rolls over under an unchanged rule, nothing
    is carried any more.
    """
    new_state = {"rule": list(rule), "key": key, "carry_from": []}
    if not state or not isinstance(state.get("rule"), list) or len(state["rule"]) != 2:
        return [], new_state
    old_rule = (str(state["rule"][0]), str(state["rule"][1]))
    earlier = [str(k) for k in state.get("carry_from") or ()]
    if old_rule == rule:
        sources = earlier if state.get("key") == key else []
    else:
        try:
            old_key = period_key(old_rule[0], ZoneInfo(old_rule[1]), now)
        except (ValueError, KeyError):  # a rule this version cannot read: nothing to carry
            return [], new_state
        sources = [old_key, *(earlier if state.get("key") == old_key else [])]
    sources = list(dict.fromkeys(k for k in sources if k != key))
    new_state["carry_from"] = sources
    return sources, new_state
