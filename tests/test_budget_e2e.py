"""Budgets through the whole router: concurrency, period rollover, restarts, Redis."""

from __future__ import annotations

import asyncio
from datetime import datetime
from zoneinfo import ZoneInfo

import openai
import pytest
from conftest import TEAM_KEY

O1 = "o1-mini"  # $3 / $12 per 1M tokens
MINI = "gpt-4o-mini-2024-07-18"
CHEAP = "gemini-1.5-flash-002"


async def _burst(client: openai.AsyncOpenAI, n: int, **kw: object) -> list[object]:
    async def one(i: int) -> object:
        try:
            return await client.chat.completions.create(
                messages=[{"role": "user", "content": f"burst {i}"}], **kw
            )
        except openai.APIStatusError as exc:
            return exc

    return await asyncio.gather(*(one(i) for i in range(n)))


async def test_200_concurrent_requests_never_overspend(make_router):
    # One request reserves ~$0.00027 (max_tokens 20) and settles at ~$0.00008 (the echo's
    # short answer); $0.0016 covers about 20 of them.
    limit = 0.0016
    r = make_router(team={"budget": {"usd": limit}})
    client = r.async_openai()
    results = await _burst(client, 200, model=O1, max_tokens=20)
    await client.close()
    ok = [x for x in results if not isinstance(x, Exception)]
    refused = [x for x in results if isinstance(x, Exception)]
    assert 5 <= len(ok) <= 60 and len(ok) + len(refused) == 200
    assert all(
        isinstance(x, openai.RateLimitError) and x.body["type"] == "budget_exceeded"
        for x in refused
    )

    lines = r.decisions()
    assert len(lines) == 200
    assert sorted(ln["status"] for ln in lines) == [200] * len(ok) + [429] * len(refused)
    max_cost = max(ln["expected_cost_usd"] for ln in lines if ln["status"] == 200)
    budget = r.http().get("/v1/budget").json()
    assert budget["reserved_usd"] == 0
    assert budget["spent_usd"] <= limit + max_cost
    logged = sum(ln["cost_usd"] or 0.0 for ln in lines)
    assert budget["spent_usd"] == pytest.approx(logged, abs=1e-9)
    assert r.run(r.service.ledger.total_spent("research")) == pytest.approx(logged, abs=1e-9)


def test_on_exhausted_cheapest_routes_to_what_fits(make_router, fake):
    msgs = [{"role": "user", "content": "hi"}]
    best, other = make_router().preferred(msgs, [O1, CHEAP])
    # Prices that make the model P2L prefers the dear one: its max_tokens reservation does
    # not fit the budget, the other's does.
    models = {
        best: {"provider": "fake", "input_usd_per_mtok": 3.0, "output_usd_per_mtok": 12.0},
        other: {"provider": "fake", "input_usd_per_mtok": 0.1, "output_usd_per_mtok": 0.2},
    }
    r = make_router(
        team={"budget": {"usd": 0.0005, "on_exhausted": "cheapest"}, "strategy": "max-quality"},
        models=models,
    )
    raw = r.openai().chat.completions.with_raw_response.create(
        model="p2l", messages=msgs, max_tokens=100, extra_body={"router": {"models": [O1, CHEAP]}}
    )
    line = r.decisions()[-1]
    # The strategy's pick did not fit, so the cheapest that fits served.
    assert f"budget: {best} (" in line["reason"] and "does not fit" in line["reason"]
    assert f"max-quality: {best} score" in line["reason"]
    assert raw.headers["x-router-model"] == other == line["served_by"]
    assert "cheapest" in line["reason"]


def test_period_rollover_in_team_timezone(make_router):
    tz = ZoneInfo("America/New_York")
    now = [datetime(2026, 3, 7, 23, 59, 58, tzinfo=tz).timestamp()]
    r = make_router(
        clock=lambda: now[0], team={"budget": {"usd": 1.0, "timezone": "America/New_York"}}
    )
    r.openai().chat.completions.create(model=MINI, messages=[{"role": "user", "content": "late"}])
    before = r.http().get("/v1/budget").json()
    assert before["spent_usd"] > 0
    assert before["resets_at"] == "2026-03-08T00:00:00-05:00"
    now[0] += 5  # past midnight in New York (still 05:00 UTC)
    after = r.http().get("/v1/budget").json()
    assert after["spent_usd"] == 0 and after["period_start"] == "2026-03-08T00:00:00-05:00"
    # DST starts that night: the new day is 23 hours long.
    assert after["resets_at"] == "2026-03-09T00:00:00-04:00"


def test_restart_keeps_spend(make_router, tmp_path):
    ledger = f"sqlite:///{tmp_path / 'shared-ledger.db'}"
    first = make_router(ledger=ledger)
    first.openai().chat.completions.create(
        model=MINI, messages=[{"role": "user", "content": "one"}]
    )
    spent = first.http().get("/v1/budget").json()["spent_usd"]
    second = make_router(ledger=ledger)  # a new process would open the same file
    assert second.http().get("/v1/budget").json()["spent_usd"] == pytest.approx(spent)


def test_crashed_reservation_is_released_after_ttl(make_router):
    now = [1_800_000_000.0]
    r = make_router(clock=lambda: now[0], team={"budget": {"usd": 1.0, "reservation_ttl_s": 30}})
    service = r.service

    async def hold() -> None:  # what a router killed mid-request leaves behind
        key = service.accounts.period(service.config.teams["research"]).key
        await service.ledger.reserve(
            "research", 0.9, limit_usd=1.0, period_key=key, ttl_s=30, now=now[0]
        )

    r.run(hold())
    with pytest.raises(openai.RateLimitError):
        r.openai().chat.completions.create(
            model=O1, messages=[{"role": "user", "content": "x"}], max_tokens=20_000
        )
    assert r.http().get("/v1/budget").json()["reserved_usd"] == pytest.approx(0.9)
    now[0] += 31
    assert r.http().get("/v1/budget").json()["reserved_usd"] == 0
    r.openai().chat.completions.create(
        model=O1, messages=[{"role": "user", "content": "x"}], max_tokens=20_000
    )


async def test_redis_ledger_through_the_router(make_router, redis_url):
    limit = 0.0016
    r = make_router(ledger=redis_url, team={"budget": {"usd": limit}})
    client = r.async_openai(key=TEAM_KEY)
    results = await _burst(client, 60, model=O1, max_tokens=20)
    await client.close()
    ok = [x for x in results if not isinstance(x, Exception)]
    assert ok and len(ok) < 60
    lines = r.decisions()
    budget = r.http().get("/v1/budget").json()
    assert budget["reserved_usd"] == 0
    assert budget["spent_usd"] == pytest.approx(sum(ln["cost_usd"] or 0 for ln in lines), abs=1e-9)
    assert budget["spent_usd"] <= limit + max(ln["expected_cost_usd"] or 0 for ln in lines)


def test_stale_usage_view_never_refuses_what_the_ledger_allows(make_router):
    now = [1_800_000_000.0]
    r = make_router(clock=lambda: now[0], team={"budget": {"usd": 1.0, "reservation_ttl_s": 30}})
    service = r.service

    async def hold() -> None:  # another router process holds most of the budget
        key = service.accounts.period(service.config.teams["research"]).key
        await service.ledger.reserve(
            "research", 0.95, limit_usd=1.0, period_key=key, ttl_s=30, now=now[0]
        )

    r.run(hold())
    body = {
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": 20_000,
        "extra_body": {"router": {"models": [O1]}},
    }
    with pytest.raises(openai.RateLimitError):
        r.openai().chat.completions.create(model="p2l", **body)
    now[0] += 31  # that hold expires; this router's cached view still counts it
    resp = r.openai().chat.completions.create(model="p2l", **body)
    assert resp.model == O1
    assert r.http().get("/v1/budget").json()["reserved_usd"] == 0


def test_ledger_outage_refuses_with_503_and_recovers(make_router, tmp_path):
    import sqlite3

    db = tmp_path / "locked.db"
    r = make_router(ledger=f"sqlite:///{db}?busy_timeout=0.3")
    body = {"model": MINI, "messages": [{"role": "user", "content": "x"}]}
    assert r.http().post("/v1/chat/completions", json=body).status_code == 200
    other = sqlite3.connect(db, isolation_level=None)  # another process holding the write lock
    other.execute("BEGIN IMMEDIATE")
    try:
        resp = r.http().post("/v1/chat/completions", json=body)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert resp.status_code == 503
    err = resp.json()["error"]
    assert err["type"] == "not_ready" and err["code"] == "ledger_unavailable"
    assert resp.headers["retry-after"] == "2"
    assert r.decisions()[-1]["status"] == 503
    assert r.http().post("/v1/chat/completions", json=body).status_code == 200
    assert r.http().get("/v1/budget").json()["reserved_usd"] == 0


def test_a_long_prompt_is_reserved_whole_after_another_was_scored(make_router):
    """A prompt longer than the scorer's ``max_length`` is scored on its last 8k tokens;
    the next request's reservation still counts its whole prompt (the counter once shared
    the truncation the scorer set, and reserved about a quarter of it)."""
    r = make_router()
    text = "Every dollar billed is on the ledger exactly once. " * 3000  # ~30k tokens
    costs = []
    for i in range(3):  # each a new scorer input: scored, so truncated, every time
        raw = r.openai().chat.completions.with_raw_response.create(
            model="p2l", max_tokens=10, extra_body={"router": {"models": [MINI]}},
            messages=[{"role": "user", "content": f"{i} {text}"}],
        )  # fmt: skip
        assert raw.headers["x-router-model"] == MINI
        costs.append(float(raw.headers["x-router-expected-cost-usd"]))
    assert costs[0] > 20_000 * 0.15 / 1e6  # the whole prompt at MINI's input price
    assert max(costs) == pytest.approx(min(costs), rel=0.01)
