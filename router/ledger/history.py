"""Decision history: the decision-log lines kept by the ledger, shared by both backends.

Every replica writes its decisions to the one ledger, so the admin API and the reports
see the whole deployment. A stored decision is exactly the decision-log line (the prompt
only when prompt logging is on), indexed by ``ts`` (Unix seconds), ``team``, ``model``
(the model that served it, else the one chosen) and ``status``.

Paging is newest first with an opaque cursor (the last row's ``ts`` and id, or a Redis
stream id). A query argument that does not parse, a forged cursor included, raises
:class:`DecisionQueryError` naming the parameter, so the API's 400 names the right one.

``summarize_rows`` is the one aggregation behind ``/v1/admin/stats`` and ``p2l-router
decisions summarize``, so the API and the CLI cannot disagree. It reads a ``StatRow``
per decision, the few fields a summary needs: ``stat_row`` takes them from a log line,
and the SQLite ledger extracts the same ones in SQL (never parsing whole lines in
Python). ``/v1/admin/stats`` summarises at most ``MAX_STATS_DECISIONS`` decisions, the
newest, and says so when it cut (``truncated``): one call's cost is bounded whatever the
history holds.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import numpy as np

DEFAULT_RETENTION_DAYS = 30.0
MAX_QUERY_LIMIT = 1000
MAX_STATS_DECISIONS = 100_000  # decisions one /v1/admin/stats call summarises, newest first
MAX_CURSOR_CHARS = 256
LATENCIES = ("scoring_ms", "upstream_ms", "overhead_ms")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def line_ts(line: dict[str, Any]) -> float:
    """A line's ``ts`` (ISO 8601, as the decision log writes it) as Unix seconds."""
    ts = line.get("ts")
    if isinstance(ts, int | float):
        return float(ts)
    dt = datetime.fromisoformat(str(ts))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def line_model(line: dict[str, Any]) -> str | None:
    return line.get("served_by") or line.get("chosen")


class StoredLine(NamedTuple):
    """A decision as the stores index it: the line encoded once, with its index fields."""

    decision_id: str
    ts: float
    team: str | None
    model: str | None
    status: int
    text: str  # the line as compact JSON


def stored_line(line: dict[str, Any], text: str | None = None) -> StoredLine:
    """``text``: the line already encoded (the decision writer's), else encoded here."""
    if text is None:
        text = json.dumps(line, separators=(",", ":"), ensure_ascii=False)
    return StoredLine(
        str(line["decision_id"]),
        line_ts(line),
        line.get("team"),
        line_model(line),
        int(line.get("status") or 0),
        text,
    )


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def parse_duration(text: str) -> float:
    """Seconds in ``90``, ``30m``, ``24h``, ``7d``; ValueError otherwise."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30m, 24h, 7d or seconds)")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_since(text: str | None, now: float) -> float | None:
    """``since`` as Unix seconds: an ISO time, or a duration back from ``now``."""
    if text is None or text == "":
        return None
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        return line_ts({"ts": text})
    except ValueError:
        raise ValueError(
            f"since={text!r} is neither an ISO time nor a duration like 30m, 24h, 7d"
        ) from None


def status_matches(status: int, wanted: str | int | None) -> bool:
    """``wanted``: an HTTP status, ``ok`` (below 400) or ``error`` (400 and above)."""
    if wanted is None or wanted == "":
        return True
    if wanted == "ok":
        return status < 400
    if wanted == "error":
        return status >= 400
    return status == int(wanted)


class DecisionQueryError(ValueError):
    """A query argument that does not parse; ``param`` names it (``cursor``, ``status``,
    ``limit``)."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class DecisionQuery:
    """A checked ``query_decisions`` (``status``: the parsed filter)."""

    team: str | None
    model: str | None
    status: Any
    since: float | None
    limit: int
    cursor: str | None


def check_status_filter(wanted: str | int | None) -> str | int | None:
    if wanted in (None, "", "ok", "error"):
        return wanted
    try:
        return int(wanted)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DecisionQueryError(
            "status", f"status={wanted!r}: use an HTTP status, 'ok' or 'error'"
        ) from None


def encode_cursor(*parts: object) -> str:
    raw = "\x1f".join(str(p) for p in parts).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def bad_cursor(why: str) -> DecisionQueryError:
    return DecisionQueryError(
        "cursor", f"invalid cursor ({why}); pass next_cursor from the previous page unchanged"
    )


def decode_cursor(cursor: str, n: int) -> list[str]:
    """The ``n`` parts of a cursor of :func:`encode_cursor`; each backend checks their
    values (a forged cursor must be a 400 naming ``cursor``, never a store error)."""
    if len(cursor) > MAX_CURSOR_CHARS:
        raise bad_cursor("too long")
    try:
        padded = (cursor + "=" * (-len(cursor) % 4)).encode("ascii")
        raw = base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except (ValueError, UnicodeError):  # binascii.Error is a ValueError
        raise bad_cursor("not base64url text") from None
    parts = raw.split("\x1f")
    if len(parts) != n:
        raise bad_cursor(f"{len(parts)} part(s), this ledger's cursors have {n}")
    return parts


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_QUERY_LIMIT:
        raise DecisionQueryError("limit", f"limit must be 1..{MAX_QUERY_LIMIT} (got {limit})")
    return limit


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


class StatRow(NamedTuple):
    """What a summary reads of one decision. A latency is None where the decision spent
    no time there (scoring: only routed requests; upstream: only requests sent up)."""

    ts: float
    team: str | None
    model: str | None
    error: bool  # status >= 400
    cost_usd: float
    fallbacks: int
    scoring_ms: float | None
    upstream_ms: float | None
    overhead_ms: float | None
    cache_saved_usd: float = 0.0  # the cost at the full input price minus the cost paid
    session: str | None = None  # the session's digest (``session.id``)
    switched: bool = False  # served by another model than the session's previous turn
    session_saved_usd: float = 0.0  # the cache-aware pricing's expected saving (served)


def session_fields(line: dict[str, Any]) -> tuple[str | None, bool, float]:
    """A line's session (its id), whether the turn left the previous turn's model, and
    the expected saving of the cache reads the cache-aware pricing counted on the served
    model (its uncached minus its expected cost, as logged among the candidates)."""
    s = line.get("session")
    if not isinstance(s, dict) or not s.get("id"):
        return None, False, 0.0
    served = line.get("served_by")
    switched = bool(served and s.get("previous_model") and not s.get("kept"))
    saved = 0.0
    for c in line.get("candidates") or ():
        if c.get("model") == served and c.get("uncached_cost_usd") is not None:
            saved += max(0.0, c["uncached_cost_usd"] - (c.get("expected_cost_usd") or 0.0))
    return str(s["id"]), switched, saved


def stat_row(line: dict[str, Any]) -> StatRow:
    """A decision-log line's :class:`StatRow` (the SQLite ledger's ``STAT_COLUMNS`` are
    the same rules in SQL; tests hold the two equal)."""
    scoring, upstream, overhead = (line.get(name) for name in LATENCIES)
    return StatRow(
        ts=line_ts(line),
        team=line.get("team"),
        model=line_model(line),
        error=(line.get("status", 200) or 0) >= 400,
        cost_usd=float(line.get("cost_usd") or 0.0),
        fallbacks=len(line.get("fallbacks") or ()),
        scoring_ms=float(scoring) if scoring else None,
        upstream_ms=None if upstream is None or not line.get("attempts", 1) else float(upstream),
        overhead_ms=None if overhead is None else float(overhead),
        cache_saved_usd=float(line.get("cache_saved_usd") or 0.0),
        **dict(
            zip(("session", "switched", "session_saved_usd"), session_fields(line), strict=True)
        ),
    )


def summarize_decisions(
    lines: Iterable[dict[str, Any]], *, bucket_s: float = 3600.0, since: float | None = None
) -> dict[str, Any]:
    """:func:`summarize_rows` of decision-log lines."""
    return summarize_rows(map(stat_row, lines), bucket_s=bucket_s, since=since)


def summarize_rows(
    rows: Iterable[StatRow], *, bucket_s: float = 3600.0, since: float | None = None
) -> dict[str, Any]:
    """Per team × model: requests, spend, what caching saved (``cache_saved_usd``), share of the team's requests, P50/P99 of the
    scoring, upstream and overhead times, fallbacks tried, errors (status >= 400); and
    requests and spend per time bucket; the ``sessions`` summary
    (:func:`session_summary`). ``model`` is the serving model, else the chosen
    one, else null (refused before a choice). CPU-bound over many rows: callers on the
    event loop run it in a worker thread."""
    if not bucket_s > 0 or not math.isfinite(bucket_s):
        raise ValueError(f"bucket must be > 0 seconds (got {bucket_s!r})")
    groups: dict[tuple[Any, Any], dict[str, Any]] = {}
    lat: dict[tuple[Any, Any], tuple[list[float], ...]] = {}
    buckets: dict[tuple[float, Any, Any], dict[str, Any]] = {}
    per_team: dict[Any, int] = defaultdict(int)
    in_sessions: list[StatRow] = []
    for row in rows:
        ts = row.ts
        if since is not None and ts < since:
            continue
        if row.session is not None:
            in_sessions.append(row)
        key = (row.team, row.model)
        g = groups.get(key)
        if g is None:
            g = groups[key] = {
                "team": key[0], "model": key[1], "requests": 0, "spend_usd": 0.0,
                "cache_saved_usd": 0.0, "fallbacks": 0, "errors": 0,
            }  # fmt: skip
            lat[key] = ([], [], [])
        cost = row.cost_usd
        g["requests"] += 1
        g["spend_usd"] += cost
        g["cache_saved_usd"] += row.cache_saved_usd
        g["fallbacks"] += row.fallbacks
        g["errors"] += row.error
        per_team[key[0]] += 1
        for values, v in zip(
            lat[key], (row.scoring_ms, row.upstream_ms, row.overhead_ms), strict=True
        ):
            if v is not None:
                values.append(v)
        start = math.floor(ts / bucket_s) * bucket_s
        b = buckets.get((start, *key))
        if b is None:
            b = buckets[(start, *key)] = {
                "start": iso(start), "team": key[0], "model": key[1], "requests": 0,
                "spend_usd": 0.0,
            }  # fmt: skip
        b["requests"] += 1
        b["spend_usd"] += cost
    out_groups = []
    for key, g in sorted(groups.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))):
        g["share"] = g["requests"] / per_team[key[0]]
        for name, vals in zip(LATENCIES, lat[key], strict=True):
            g[f"{name.removesuffix('_ms')}_ms_p50"] = _pct(vals, 50)
            g[f"{name.removesuffix('_ms')}_ms_p99"] = _pct(vals, 99)
        out_groups.append(g)
    return {
        "since": None if since is None else iso(since),
        "bucket_s": bucket_s,
        "groups": out_groups,
        "buckets": [
            buckets[k] for k in sorted(buckets, key=lambda k: (k[0], str(k[1]), str(k[2])))
        ],
        "sessions": session_summary(in_sessions),
    }


def summarize_sessions(lines: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """:func:`session_summary` of decision-log lines."""
    return session_summary(map(stat_row, lines))


def session_summary(rows: Iterable[StatRow]) -> dict[str, Any]:
    """Conversations (rows with a ``session``): how many, how many turns, how often a
    served turn left the model that served the one before (``switches``, in all and per
    session), and the expected saving of the cache reads that the cache-aware pricing
    counted on the served model."""
    turns: dict[str, int] = defaultdict(int)
    switches: dict[str, int] = defaultdict(int)
    saved = 0.0
    for row in rows:
        if row.session is None:
            continue
        turns[row.session] += 1
        switches[row.session] += row.switched
        saved += row.session_saved_usd
    n = len(turns)
    return {
        "sessions": n,
        "turns": sum(turns.values()),
        "switches": sum(switches.values()),
        "switches_per_session": sum(switches.values()) / n if n else 0.0,
        "max_switches_in_a_session": max(switches.values(), default=0),
        "expected_cache_savings_usd": saved,
    }
