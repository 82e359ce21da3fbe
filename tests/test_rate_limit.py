"""Team rate limits (GCRA, router/ledger/rate.py) on a real SQLite file and the real Redis.

The clock is the caller's (``now``), frozen or moved by hand, so the tests are exact.
"""

from __future__ import annotations

import asyncio
import textwrap

import pytest
import test_ledger
from conftest import run_processes
from test_ledger import REDIS_HOST, REDIS_PORT, T0, needs_redis

from router.ledger import Ledger
from router.ledger.rate import gcra

store = test_ledger.store  # the SQLite + Redis ledger factory fixture


async def take(ledger: Ledger, *, rpm: int | None = None, tpm: int | None = None,
               tokens: int = 0, now: float = T0, team: str = "t") -> float | None:  # fmt: skip
    return await ledger.take_rate(
        team, requests_per_minute=rpm, tokens_per_minute=tpm, tokens=tokens, now=now
    )


@pytest.mark.parametrize(
    ("tat", "now", "limit", "cost", "new_tat", "wait"),
    [
        (None, 100.0, 60, 1, 101.0, 0.0),  # empty state: passes
        (90.0, 100.0, 60, 1, 101.0, 0.0),  # a past tat is a full bucket
        (159.0, 100.0, 60, 1, 160.0, 0.0),  # the 60th in a burst fits exactly
        (160.0, 100.0, 60, 1, 161.0, 1.0),  # the 61st waits one emission interval
        (100.0, 100.0, 10, 30, 280.0, 0.0),  # bigger than the bucket, bucket full: passes
        (130.0, 100.0, 10, 30, 310.0, 30.0),  # ... else waits until the bucket is full
        (100.0, 100.0, 1000, 0, 100.0, 0.0),  # zero tokens never wait
    ],
)
def test_gcra_table(tat, now, limit, cost, new_tat, wait):
    got_tat, got_wait = gcra(tat, now, limit, cost)
    assert got_tat == pytest.approx(new_tat) and got_wait == pytest.approx(wait)


async def test_requests_per_minute_burst_then_steady(store):
    ledger = store()
    assert [await take(ledger, rpm=5) for _ in range(5)] == [None] * 5  # a full bucket
    assert await take(ledger, rpm=5) == pytest.approx(12.0)  # Retry-After: 60 / 5
    assert await take(ledger, rpm=5, now=T0 + 11.9) == pytest.approx(0.1)
    assert await take(ledger, rpm=5, now=T0 + 12.0) is None  # exactly then
    assert await take(ledger, rpm=5, now=T0 + 12.0) == pytest.approx(12.0)
    assert await take(ledger, rpm=5, team="other") is None  # teams are separate
    assert await take(ledger, rpm=5, now=T0 + 1000) is None  # idle refills, no more than 5
    assert [await take(ledger, rpm=5, now=T0 + 1000) for _ in range(5)][-1] == pytest.approx(12)


async def test_tokens_per_minute_and_both_limits_together(store):
    ledger = store()
    for _ in range(3):
        assert await take(ledger, rpm=10, tpm=1000, tokens=300) is None
    # 100 more tokens fit, 300 do not: wait until 200 have drained (12 s at 1000/min)
    assert await take(ledger, rpm=10, tpm=1000, tokens=300) == pytest.approx(12.0)
    # a refusal counts nothing: the request limit still has 7 of 10 left
    for _ in range(7):
        assert await take(ledger, rpm=10, tpm=1000, tokens=0) is None
    assert await take(ledger, rpm=10, tpm=1000, tokens=0) == pytest.approx(6.0)
    # one request bigger than the whole token limit passes only on a full bucket
    assert await take(ledger, tpm=1000, tokens=5000, team="big") is None
    assert await take(ledger, tpm=1000, tokens=1, team="big") == pytest.approx(240.0 + 0.06)
    assert await take(ledger, tpm=1000, tokens=5000, team="big", now=T0 + 300) is None
    # no limits: allowed, nothing stored
    assert await take(ledger, tokens=10**9) is None


async def test_bad_rate_arguments_are_refused(store):
    ledger = store()
    for kwargs in ({"rpm": 0}, {"tpm": -5}, {"rpm": 1.5}, {"rpm": 1, "tokens": -1}):
        with pytest.raises(ValueError):
            await take(ledger, **kwargs)


async def test_two_instances_never_exceed_the_limit(store):
    """Concurrent takers through two ledger instances on one file / one Redis prefix."""
    one, two = store(), store()
    results = await asyncio.gather(
        *(take(one if i % 2 else two, rpm=30, tpm=100_000, tokens=10) for i in range(100))
    )
    assert sum(r is None for r in results) == 30
    assert all(r is None or r > 0 for r in results)
    # a minute later, a full bucket again, and no more
    later = await asyncio.gather(*(take(two, rpm=30, now=T0 + 120) for _ in range(40)))
    assert sum(r is None for r in later) == 30


_WORKER = textwrap.dedent(
    """
    import asyncio, sys
    from router.ledger import create_ledger

    async def main(url):
        ledger = create_ledger(url)
        ok = 0
        for _ in range(60):
            wait = await ledger.take_rate("t", requests_per_minute=50, tokens_per_minute=None,
                                          tokens=0, now=1e9)
            ok += wait is None
        await ledger.close()
        print(ok)

    asyncio.run(main(sys.argv[1]))
    """
)


def test_two_processes_share_one_rate_limit(tmp_path):
    """Real processes on one SQLite file: the limit holds across them."""
    url = f"sqlite:///{tmp_path / 'rate.db'}"
    counts = run_processes(_WORKER, url, 2)
    assert sum(counts) == 50


@pytest.mark.parametrize("store", [pytest.param("redis", marks=needs_redis)], indirect=True)
async def test_redis_rate_keys_expire_when_the_bucket_is_full(store):
    import redis.asyncio as aioredis

    ledger = store()
    for _ in range(3):
        await take(ledger, rpm=6, tpm=600, tokens=100)  # 30 s of each bucket used
    client = aioredis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=0)
    try:
        for kind in ("req", "tok"):
            ttl_ms = await client.pttl(f"{ledger.prefix}rate:t:{kind}")
            assert 30_000 < ttl_ms <= 31_000
    finally:
        await client.aclose()
