"""Decision history in the ledger (real SQLite file, real Redis) and its batching writer."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from typing import Any

import pytest
from test_ledger import store  # noqa: F401  (the fixture: both backends)

from router.ledger import LedgerError
from router.ledger.history import (
    DecisionQueryError,
    iso,
    parse_since,
    summarize_decisions,
)
from router.observability.history import DecisionHistory


def line(i: int, ts: float, *, team: str = "a", model: str = "m1", status: int = 200,
         cost: float = 0.001, **kw: Any) -> dict[str, Any]:  # fmt: skip
    return {
        "ts": iso(ts),
        "decision_id": f"d{i:04d}-{uuid.uuid4().hex[:6]}",
        "team": team,
        "chosen": model,
        "served_by": model if status < 400 else None,
        "candidates": [{"model": model, "coef": 0.1, "score": 0.5, "expected_cost_usd": cost}],
        "fallbacks": [],
        "attempts": 1,
        "cost_usd": cost if status < 400 else None,
        "scoring_ms": 1.0 + i,
        "upstream_ms": 10.0 + i,
        "overhead_ms": 0.5,
        "status": status,
        **kw,
    }


async def test_record_query_get_page(store):  # noqa: F811
    ledger = store()
    now = float(int(time.time()))
    lines = [
        line(i, now - 100 + i, team="a" if i % 3 else "b", status=502 if i == 7 else 200)
        for i in range(25)
    ]
    await ledger.record_decisions(lines[:10])
    await ledger.record_decisions(lines[10:])
    await ledger.record_decisions(lines[:5])  # a replayed batch adds nothing

    seen, cursor = [], None
    while True:
        page, cursor = await ledger.query_decisions(team="a", limit=4, cursor=cursor)
        seen += page
        if cursor is None:
            break
    want = [x for x in reversed(lines) if x["team"] == "a"]
    assert [x["decision_id"] for x in seen] == [x["decision_id"] for x in want]

    errors, _ = await ledger.query_decisions(status="error")
    assert [x["decision_id"] for x in errors] == [lines[7]["decision_id"]]
    recent, nxt = await ledger.query_decisions(since=now - 100 + 20, limit=100)
    assert [x["decision_id"] for x in recent] == [x["decision_id"] for x in lines[:19:-1]]
    assert nxt is None
    assert await ledger.get_decision(lines[3]["decision_id"]) == lines[3]
    assert await ledger.get_decision("nope") is None

    stats = await ledger.decision_stats(since=None, bucket_s=60)
    total = sum(x["cost_usd"] or 0.0 for x in lines)
    assert sum(g["spend_usd"] for g in stats["groups"]) == pytest.approx(total, abs=1e-12)
    assert sum(g["requests"] for g in stats["groups"]) == 25
    assert sum(b["requests"] for b in stats["buckets"]) == 25
    only_b = await ledger.decision_stats(since=None, team="b")
    assert {g["team"] for g in only_b["groups"]} == {"b"}

    with pytest.raises(ValueError):
        await ledger.query_decisions(cursor="!!not-a-cursor")


async def test_purge(store):  # noqa: F811
    ledger = store()
    now = float(int(time.time()))
    await ledger.record_decisions([line(1, now - 40 * 86400), line(2, now)])
    if type(ledger).__name__ == "SqliteLedger":  # by ts
        assert await ledger.purge_decisions(now - 30 * 86400) == 1
        [left], _ = await ledger.query_decisions()
        assert left["ts"] == iso(now)
    # Redis trims its stream by the time each entry was stored; both drop everything here.
    await ledger.purge_decisions(time.time() + 5)
    assert (await ledger.query_decisions())[0] == []


async def test_writer_batches_and_counts_drops(store):  # noqa: F811
    ledger = store()
    dropped: list[int] = []
    h = DecisionHistory(ledger, retention_s=86400, max_pending=5, on_drop=dropped.append)
    h.start()
    now = float(int(time.time()))
    for i in range(8):  # three over the bound: dropped at once, never waited for
        h.offer(line(i, now + i))
    assert h.dropped == 3 and sum(dropped) == 3
    await h.flush()
    assert h.written == 5
    assert len((await ledger.query_decisions())[0]) == 5
    await h.close()


async def test_writer_keeps_a_refused_batch(tmp_path):
    from router.ledger import SqliteLedger

    ledger = SqliteLedger(tmp_path / "l.db")
    h = DecisionHistory(ledger, retention_s=86400)
    h.offer(line(1, time.time()))
    await ledger.close()  # every write now fails
    await h.flush()
    assert h.pending == 1 and h.dropped == 0
    await h.close()  # the last try fails too: counted
    assert h.dropped == 1
    with pytest.raises(LedgerError):
        await ledger.record_decisions([line(2, time.time())])


def test_summarize_percentiles_and_share():
    t = 1_800_000_000.0
    lines = [line(i, t + i, model="m1") for i in range(100)]
    lines += [line(100, t, model="m2", status=502, fallbacks=[{"model": "m1", "error": "x"}])]
    s = summarize_decisions(lines, bucket_s=3600)
    g1, g2 = s["groups"]
    assert (g1["model"], g1["requests"], g2["errors"], g2["fallbacks"]) == ("m1", 100, 1, 1)
    assert g1["share"] == pytest.approx(100 / 101)
    assert g1["scoring_ms_p50"] == pytest.approx(50.5)
    assert g1["upstream_ms_p99"] == pytest.approx(10 + 98.01)
    assert s["since"] is None and s["buckets"][0]["requests"] == 100


def test_parse_since():
    assert parse_since("24h", 100_000.0) == 100_000.0 - 86400
    assert parse_since("30m", 10_000.0) == 10_000.0 - 1800
    assert parse_since("2026-01-01T00:00:00Z", 0) == 1767225600.0
    with pytest.raises(ValueError):
        parse_since("yesterday", 0)


async def test_history_needs_a_positive_retention(tmp_path):
    from router.ledger import SqliteLedger

    ledger = SqliteLedger(tmp_path / "l.db")
    with pytest.raises(ValueError):
        DecisionHistory(ledger, retention_s=0)
    await ledger.close()
    await asyncio.sleep(0)


def _odd_lines(now: float) -> list[dict[str, Any]]:
    """Lines at every edge of the summary's rules: a refusal before any choice, no
    upstream attempt, absent and null fields, a zero scoring time, integer times."""
    odd = [
        line(0, now - 50, status=401, model=None, attempts=0, scoring_ms=0, upstream_ms=0.0),
        line(1, now - 49, fallbacks=None, cost=0),
        line(2, now - 48, attempts=None),
        line(3, now - 47, scoring_ms=None, upstream_ms=None, overhead_ms=None),
        line(4, now - 46, status=502, fallbacks=[{"model": "m2", "error": "x"}] * 2),
        line(5, now - 45, team="b", model="m2", scoring_ms=7, upstream_ms=3, overhead_ms=1),
    ]
    for x in odd[:2]:
        del x["cost_usd"]
    del odd[3]["attempts"], odd[3]["fallbacks"]
    del odd[5]["status"]
    # What caching saved: absent (older lines), null, negative (writes cost more), positive.
    saved = [None, None, -0.0002, 0.0005]
    odd += [
        line(i, now - 40 + i, model=("m1", "m2")[i % 2], cache_saved_usd=saved[i % 4])
        for i in range(6, 30)
    ]

    # Sessions: a first turn, a kept turn with a warm cache (its expected cost under the
    # uncached one, another candidate's too), a switch, a failed turn, a session without
    # an id, one that is null, and a kept field left out.
    def turn(i: int, sid: Any, previous: Any, kept: Any, **kw: Any) -> dict[str, Any]:
        s = {"id": sid, "source": "header", "turn": i, "previous_model": previous, "kept": kept}
        return line(i, now - 10 + i - 30, session=s, **kw)

    warm = [
        {"model": "m1", "expected_cost_usd": 0.0002, "uncached_cost_usd": 0.0012},
        {"model": "m2", "expected_cost_usd": 0.0001, "uncached_cost_usd": 0.0021},
    ]
    odd += [
        turn(30, "s1", None, False),
        turn(31, "s1", "m1", True, candidates=warm),
        turn(32, "s1", "m1", False, model="m2", candidates=warm),
        turn(33, "s2", None, False),
        turn(34, "s2", "m1", False, status=502),
        turn(35, None, "m1", False),
        line(36, now - 14, session=None),
        {**turn(37, "s2", "m2", None), "candidates": [{**warm[0], "uncached_cost_usd": None}]},
    ]
    del odd[-1]["session"]["kept"]
    return odd


async def test_stats_from_the_store_match_the_log_lines(store):  # noqa: F811
    """The store's stats (SQLite extracts the fields in SQL) equal summarize_decisions over
    the same lines (what the CLI runs on a log file): the two cannot disagree."""
    ledger = store()
    now = float(int(time.time()))
    lines = _odd_lines(now)
    await ledger.record_decisions(lines)
    for since in (None, now - 46):
        got = await ledger.decision_stats(since=since, bucket_s=10)
        want = summarize_decisions(lines, bucket_s=10, since=since)
        assert {k: got[k] for k in want} == want
        n = sum(since is None or line_ts >= since for line_ts in (now - 50 + i for i in range(6)))
        assert got["decisions"] == n + 32 and got["truncated"] is False
    assert sum(g["cache_saved_usd"] for g in got["groups"]) == pytest.approx(6 * 0.0003)
    assert got["sessions"] == {
        "sessions": 2, "turns": 6, "switches": 2, "switches_per_session": 1.0,
        "max_switches_in_a_session": 1, "expected_cache_savings_usd": pytest.approx(0.003),
    }  # fmt: skip


async def test_stats_summarise_at_most_the_newest_n(store):  # noqa: F811
    ledger = store()
    now = float(int(time.time()))
    lines = [line(i, now - 100 + i, team="a" if i % 2 else "b") for i in range(25)]
    await ledger.record_decisions(lines)
    capped = await ledger.decision_stats(since=None, bucket_s=3600, max_decisions=10)
    assert capped["truncated"] is True and capped["decisions"] == 10
    assert capped["oldest"] == lines[15]["ts"]  # the ten newest
    assert capped == {
        **summarize_decisions(lines[15:], bucket_s=3600),
        "decisions": 10, "truncated": True, "oldest": lines[15]["ts"],
    }  # fmt: skip
    team_a = await ledger.decision_stats(since=None, team="a", max_decisions=5)
    assert team_a["decisions"] == 5 and team_a["truncated"] is True
    assert team_a["oldest"] == lines[15]["ts"]  # a's five newest: 23, 21, 19, 17, 15
    whole = await ledger.decision_stats(since=None, bucket_s=3600, max_decisions=25)
    assert whole["truncated"] is False and whole["decisions"] == 25
    assert whole["oldest"] == lines[0]["ts"]
    empty = await ledger.decision_stats(since=now + 10)
    assert (empty["decisions"], empty["truncated"], empty["oldest"]) == (0, False, None)


def _b64(raw: str | bytes) -> str:
    data = raw.encode() if isinstance(raw, str) else raw
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


# Cursors no page ever handed out, each refused by both backends.
FORGED_CURSORS = {
    "not base64": "!!not-a-cursor",
    "not ascii": "d\u00e9j\u00e0-vu",
    "base64 of bytes that are not text": _b64(b"\xff\xfe\xfa\x00\x81"),
    "base64 of one word": _b64("hello"),
    "time not a number": _b64("abc\x1fd0001"),
    "negative time": _b64("-5.0\x1fd0001"),
    "negative stream id": _b64("-5-0"),
    "time nan": _b64("nan\x1fd0001"),
    "time inf": _b64("inf\x1fd0001"),
    "no decision id": _b64("1.5\x1f"),
    "stream id past 2**64": _b64("18446744073709551616-0"),
    "stream id with three parts": _b64("1-2-3"),
    "three fields": _b64("1.5\x1fd0001\x1fx"),
    "too long": "A" * 300,
}


@pytest.mark.parametrize("cursor", FORGED_CURSORS.values(), ids=FORGED_CURSORS.keys())
async def test_forged_cursor_is_a_cursor_error(store, cursor):  # noqa: F811
    ledger = store()
    await ledger.record_decisions([line(i, time.time() - i) for i in range(3)])
    with pytest.raises(DecisionQueryError) as exc:
        await ledger.query_decisions(limit=1, cursor=cursor)
    assert exc.value.param == "cursor" and "cursor" in str(exc.value)


async def test_handed_out_cursor_pages_and_bad_arguments_name_theirs(store):  # noqa: F811
    ledger = store()
    now = float(int(time.time()))
    await ledger.record_decisions([line(i, now - i) for i in range(3)])
    page, cursor = await ledger.query_decisions(limit=2)
    assert len(page) == 2 and cursor is not None
    rest, end = await ledger.query_decisions(limit=2, cursor=cursor)
    assert len(rest) == 1 and end is None
    with pytest.raises(DecisionQueryError) as exc:
        await ledger.query_decisions(status="teapot")
    assert exc.value.param == "status"
    with pytest.raises(DecisionQueryError) as exc:
        await ledger.query_decisions(limit=0)
    assert exc.value.param == "limit"
