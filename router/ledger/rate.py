"""Team rate limits (requests and tokens per minute) as GCRA, for both ledger backends.

Why GCRA (the generic cell rate algorithm, a.k.a. a virtual-scheduling token bucket) and
not a fixed one-minute window: a fixed window lets a team send its whole minute's quota at
the end of one window and again at the start of the next (2x the limit within a second),
and a sliding log stores one entry per request. GCRA keeps a single number per limit, the
"theoretical arrival time" ``tat``: each request of cost ``c`` pushes it ``c * 60 / L``
seconds forward, and a request passes while ``tat`` stays within 60 s of now. That is a
bucket of capacity ``L`` refilling continuously at ``L`` per minute: at most ``L`` in any
burst, exactly ``L`` per minute sustained, and an exact ``Retry-After``. A request bigger
than the whole limit (more tokens than ``tokens_per_minute``) passes only when the bucket
is full, and then pays its full cost forward, so the long-run rate still holds.

Both limits of a team are checked and counted together: if either refuses, neither
counts. The check and the update are one SQLite write transaction or one Redis Lua
script, so it is atomic across processes. No library does this against our own SQLite
file and Redis prefix in one transaction with the budget (``limits`` and
``redis-rate-limiters`` each own their storage), hence this module.

Stored state: SQLite table ``rate (team, kind, tat)`` (one row per team and limit);
Redis keys ``{p}rate:{team}:req`` / ``:tok`` whose TTL ends when the bucket is full again,
so idle teams leave nothing behind.
"""

from __future__ import annotations

import math
import sqlite3

WINDOW_S = 60.0
# Float slack, so that L requests of 60/L seconds each fit a minute exactly: at Unix-time
# magnitudes (1.8e9) a double's step is 2.4e-7 s, and L additions accumulate L steps.
SLACK_S = 1e-3


def check_rate_args(
    requests_per_minute: int | None, tokens_per_minute: int | None, tokens: int, now: float
) -> list[tuple[str, float, float]]:
    """The limits that apply, as (kind, limit, cost); raises ValueError on bad input."""
    out = []
    for kind, limit, cost in (("req", requests_per_minute, 1), ("tok", tokens_per_minute, tokens)):
        if limit is None:
            continue
        if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
            raise ValueError(f"per-minute limits must be integers > 0 (got {limit!r})")
        out.append((kind, float(limit), float(cost)))
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
        raise ValueError(f"tokens must be an integer >= 0 (got {tokens!r})")
    if not math.isfinite(now):
        raise ValueError(f"now must be finite (got {now!r})")
    return out


def gcra(tat: float | None, now: float, limit: float, cost: float) -> tuple[float, float]:
    """One limit's decision: ``(new_tat, wait)``; ``wait == 0.0`` means it passes, and the
    caller stores ``new_tat`` (only if every limit passes)."""
    start = now if tat is None or tat < now else tat
    per = WINDOW_S / limit
    new_tat = start + cost * per
    if new_tat - now <= WINDOW_S + SLACK_S or start == now:
        return new_tat, 0.0
    if cost * per <= WINDOW_S:
        return new_tat, new_tat - WINDOW_S - now
    return new_tat, start - now  # bigger than the bucket: wait until it is full


def take_sqlite(
    db: sqlite3.Connection, team: str, limits: list[tuple[str, float, float]], now: float
) -> float | None:
    """``take_rate`` on a connection already inside a write transaction."""
    decisions = []
    for kind, limit, cost in limits:
        row = db.execute(
            "SELECT tat FROM rate WHERE team = ? AND kind = ?", (team, kind)
        ).fetchone()
        decisions.append((kind, *gcra(row[0] if row else None, now, limit, cost)))
    wait = max((w for _, _, w in decisions), default=0.0)
    if wait > 0:
        return wait
    for kind, new_tat, _ in decisions:
        db.execute(
            "INSERT INTO rate (team, kind, tat) VALUES (?, ?, ?)"
            " ON CONFLICT (team, kind) DO UPDATE SET tat = excluded.tat",
            (team, kind, new_tat),
        )
    return None


# KEYS: one per limit; ARGV: now, slack, then (limit, cost) per key.
# Returns '' when it passes, else the wait in seconds as a string (%.17g round-trips).
TAKE_RATE_LUA = """
local now = tonumber(ARGV[1])
local slack = tonumber(ARGV[2])
local new, wait = {}, 0
for i = 1, #KEYS do
  local limit, cost = tonumber(ARGV[2 * i + 1]), tonumber(ARGV[2 * i + 2])
  local start = tonumber(redis.call('GET', KEYS[i]) or '-1')
  if start < now then start = now end
  local per = 60 / limit
  local n = start + cost * per
  new[i] = n
  if not (n - now <= 60 + slack or start == now) then
    local w = start - now
    if cost * per <= 60 then w = n - 60 - now end
    if w > wait then wait = w end
  end
end
if wait > 0 then return string.format('%.17g', wait) end
for i = 1, #KEYS do
  local ms = math.ceil((new[i] - now) * 1000) + 1000
  redis.call('SET', KEYS[i], string.format('%.17g', new[i]), 'PX', ms)
end
return ''
"""
