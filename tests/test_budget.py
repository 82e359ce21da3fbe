"""Budget periods: calendar bounds in the team's zone, across DST changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from router.serving.periods import PERIODS, current_window, period_bounds, period_key

PARIS = ZoneInfo("Europe/Paris")
NY = ZoneInfo("America/New_York")
KOLKATA = ZoneInfo("Asia/Kolkata")
KATHMANDU = ZoneInfo("Asia/Kathmandu")
UTC_Z = ZoneInfo("UTC")


def utc(s: str) -> datetime:
    return datetime.fromisoformat(s).replace(tzinfo=UTC)


def hours(start: datetime, end: datetime) -> float:
    # Timestamps: datetimes of one zone subtract as wall clocks.
    return (end.timestamp() - start.timestamp()) / 3600


# (period, tz, now in UTC, expected start, expected end, key, hours long)
CASES = [
    # plain UTC
    ("hour", UTC_Z, "2026-11-28T13:45:10", "2026-11-28T13:00:00+00:00", "2026-11-28T14:00:00+00:00", "hour:2026-11-28T13:00+00:00", 1),
    ("day", UTC_Z, "2026-11-28T23:59:59.999999", "2026-11-28T00:00:00+00:00", "2026-11-29T00:00:00+00:00", "day:2026-11-28", 24),
    ("day", UTC_Z, "2026-11-29T00:00:00", "2026-11-29T00:00:00+00:00", "2026-11-30T00:00:00+00:00", "day:2026-11-29", 24),
    # a Saturday's week starts on the Monday before; a Monday at 00:00 starts its own week
    ("week", UTC_Z, "2026-11-28T12:00:00", "2026-11-23T00:00:00+00:00", "2026-11-30T00:00:00+00:00", "week:2026-11-23", 168),
    ("week", UTC_Z, "2026-11-30T00:00:00", "2026-11-30T00:00:00+00:00", "2026-12-07T00:00:00+00:00", "week:2026-11-30", 168),
    ("week", UTC_Z, "2026-11-29T23:59:59", "2026-11-23T00:00:00+00:00", "2026-11-30T00:00:00+00:00", "week:2026-11-23", 168),
    # a week across the new year
    ("week", UTC_Z, "2027-01-01T08:00:00", "2026-12-28T00:00:00+00:00", "2027-01-04T00:00:00+00:00", "week:2026-12-28", 168),
    # months: 28 / 29 / 31 days, year end
    ("month", UTC_Z, "2026-02-15T00:00:00", "2026-02-01T00:00:00+00:00", "2026-03-01T00:00:00+00:00", "month:2026-02", 28 * 24),
    ("month", UTC_Z, "2028-02-29T23:00:00", "2028-02-01T00:00:00+00:00", "2028-03-01T00:00:00+00:00", "month:2028-02", 29 * 24),
    ("month", UTC_Z, "2026-12-31T23:59:59", "2026-12-01T00:00:00+00:00", "2027-01-01T00:00:00+00:00", "month:2026-12", 31 * 24),
    # the team's midnight, not UTC's: 23:30 UTC on the 28th is already the 29th in Paris
    ("day", PARIS, "2026-11-28T23:30:00", "2026-11-29T00:00:00+01:00", "2026-11-30T00:00:00+01:00", "day:2026-11-29", 24),
    ("day", NY, "2026-11-29T03:00:00", "2026-11-28T00:00:00-05:00", "2026-11-29T00:00:00-05:00", "day:2026-11-28", 24),
    ("month", NY, "2026-12-01T02:00:00", "2026-11-01T00:00:00-04:00", "2026-12-01T00:00:00-05:00", "month:2026-11", 30 * 24 + 1),
    # Paris DST: spring forward 2026-03-29 (23 h), fall back 2026-10-25 (25 h)
    ("day", PARIS, "2026-03-29T12:00:00", "2026-03-29T00:00:00+01:00", "2026-03-30T00:00:00+02:00", "day:2026-03-29", 23),
    ("day", PARIS, "2026-10-25T12:00:00", "2026-10-25T00:00:00+02:00", "2026-10-26T00:00:00+01:00", "day:2026-10-25", 25),
    ("week", PARIS, "2026-03-29T12:00:00", "2026-03-23T00:00:00+01:00", "2026-03-30T00:00:00+02:00", "week:2026-03-23", 167),
    ("month", PARIS, "2026-10-31T23:30:00", "2026-11-01T00:00:00+01:00", "2026-12-01T00:00:00+01:00", "month:2026-11", 30 * 24),
    ("month", PARIS, "2026-03-10T00:00:00", "2026-03-01T00:00:00+01:00", "2026-04-01T00:00:00+02:00", "month:2026-03", 31 * 24 - 1),
    # the hour after the spring-forward gap, and the repeated 02:00 hour (two periods)
    ("hour", PARIS, "2026-03-29T01:30:00", "2026-03-29T03:00:00+02:00", "2026-03-29T04:00:00+02:00", "hour:2026-03-29T03:00+02:00", 1),
    ("hour", PARIS, "2026-10-25T00:30:00", "2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00", "hour:2026-10-25T02:00+02:00", 1),
    ("hour", PARIS, "2026-10-25T01:30:00", "2026-10-25T02:00:00+01:00", "2026-10-25T03:00:00+01:00", "hour:2026-10-25T02:00+01:00", 1),
    # New York: 2026-03-08 is 23 h long
    ("day", NY, "2026-03-08T15:00:00", "2026-03-08T00:00:00-05:00", "2026-03-09T00:00:00-04:00", "day:2026-03-08", 23),
    # half- and quarter-hour offsets: the hour starts at the local :00
    ("hour", KOLKATA, "2026-11-28T13:10:00", "2026-11-28T18:00:00+05:30", "2026-11-28T19:00:00+05:30", "hour:2026-11-28T18:00+05:30", 1),
    ("hour", KATHMANDU, "2026-11-28T13:10:00", "2026-11-28T18:00:00+05:45", "2026-11-28T19:00:00+05:45", "hour:2026-11-28T18:00+05:45", 1),
    ("day", KOLKATA, "2026-11-28T18:29:59", "2026-11-28T00:00:00+05:30", "2026-11-29T00:00:00+05:30", "day:2026-11-28", 24),
    ("day", KOLKATA, "2026-11-28T18:30:00", "2026-11-29T00:00:00+05:30", "2026-11-30T00:00:00+05:30", "day:2026-11-29", 24),
]  # fmt: skip


@pytest.mark.parametrize(("period", "tz", "now", "start", "end", "key", "length_h"), CASES)
def test_period_bounds_table(period, tz, now, start, end, key, length_h):
    s, e = period_bounds(period, tz, utc(now))
    # Same instant (timestamps: == between zones is False inside a repeated hour, PEP 495)
    # and the zone's wall clock with its offset.
    assert s.timestamp() == datetime.fromisoformat(start).timestamp()
    assert e.timestamp() == datetime.fromisoformat(end).timestamp()
    assert s.isoformat() == start
    assert e.isoformat() == end
    assert s.tzinfo == tz
    assert hours(s, e) == pytest.approx(length_h)
    assert s.timestamp() <= utc(now).timestamp() < e.timestamp()
    assert period_key(period, tz, utc(now)) == key


def test_total_is_epoch_to_never():
    for tz in (UTC_Z, PARIS, NY):
        s, e = period_bounds("total", tz, utc("2026-11-28T12:00:00"))
        assert s.timestamp() == 0 and e is None
        assert period_key("total", tz, utc("2031-01-01T00:00:00")) == "total"
    w = current_window("total", PARIS, utc("2026-11-28T12:00:00"))
    assert w.resets_at is None and w.elapsed_fraction(utc("2026-11-28T12:00:00")) is None


@pytest.mark.parametrize("period", [p for p in PERIODS if p != "total"])
@pytest.mark.parametrize("tz", [UTC_Z, PARIS, NY, KATHMANDU, ZoneInfo("Australia/Lord_Howe")])
def test_periods_tile_time(period, tz):
    """Walking a year (four days around a DST change for hours): every period starts where the previous ended, each key
    is new, and the key is the same for every instant inside a period."""
    now = first = utc("2026-01-01T00:00:00") if period != "hour" else utc("2026-03-27T00:00:00")
    stop = now + (timedelta(days=400) if period != "hour" else timedelta(days=4))
    step = {"hour": 3600, "day": 86400, "week": 7 * 86400, "month": 31 * 86400}[period]
    keys = []
    while now < stop:
        start, end = period_bounds(period, tz, now)
        assert start.timestamp() <= now.timestamp() < end.timestamp()
        key = period_key(period, tz, now)
        end_utc = end.astimezone(UTC)  # arithmetic in UTC: in ``tz`` it is wall-clock
        assert period_key(period, tz, end_utc - timedelta(microseconds=1)) == key
        assert period_bounds(period, tz, end_utc)[0].timestamp() == end.timestamp()
        assert period_key(period, tz, end_utc) != key
        keys.append(key)
        now = end_utc
    assert len(keys) == len(set(keys))
    assert len(keys) >= (stop - first).total_seconds() // step


def test_fall_back_hour_keys_are_distinct():
    # 00:00-02:00 UTC on 2026-10-25 are Paris 02:00+02 and 02:00+01: two budget hours
    a = period_key("hour", PARIS, utc("2026-10-25T00:10:00"))
    b = period_key("hour", PARIS, utc("2026-10-25T01:10:00"))
    assert a != b


def test_window_elapsed_uses_real_time_on_a_23_hour_day():
    now = utc("2026-03-29T10:30:00")  # Paris 12:30+02, 11.5 real hours after midnight+01
    w = current_window("day", PARIS, now)
    assert w.key == "day:2026-03-29"
    assert w.resets_at == datetime.fromisoformat("2026-03-30T00:00:00+02:00")
    assert w.elapsed_fraction(now) == pytest.approx(11.5 / 23)
    assert w.elapsed_fraction(w.start - timedelta(hours=1)) == 0.0
    assert w.elapsed_fraction(w.end + timedelta(hours=1)) == 1.0


def test_now_in_another_zone_is_the_same_instant():
    now_utc = utc("2026-11-28T23:30:00")
    now_tokyo = now_utc.astimezone(ZoneInfo("Asia/Tokyo"))
    assert period_bounds("day", PARIS, now_utc) == period_bounds("day", PARIS, now_tokyo)


@pytest.mark.parametrize(
    ("period", "now", "match"),
    [
        ("fortnight", utc("2026-01-01T00:00:00"), "unknown budget period 'fortnight'"),
        ("day", datetime(2026, 1, 1), "aware datetime"),
    ],
)
def test_bad_arguments(period, now, match):
    with pytest.raises(ValueError, match=match):
        period_bounds(period, UTC_Z, now)
