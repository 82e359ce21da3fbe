"""The spend ledger against a real SQLite file and the real Redis at 127.0.0.1:6379.

Every semantic test runs on both backends (``store`` fixture). Redis tests use a unique
key prefix per test and delete their keys afterwards; they are skipped only when no Redis
server answers there (CI starts one).
"""

from __future__ import annotations

import asyncio
import math
import random
import socket
import sqlite3
import textwrap
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from conftest import run_processes

from router.ledger import (
    InsufficientBudget,
    Ledger,
    LedgerError,
    Reservation,
    SqliteLedger,
    Usage,
    create_ledger,
)
from router.ledger.sqlite_schema import SCHEMA_VERSION

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
ROOT = Path(__file__).resolve().parents[1]
P = "day:2026-11-28"
T0 = 1_800_000_000.0  # a fixed "now"; tests move the clock by hand


def _redis_up() -> bool:
    try:
        with socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


REDIS_UP = _redis_up()
needs_redis = pytest.mark.skipif(
    not REDIS_UP, reason=f"no Redis server at {REDIS_HOST}:{REDIS_PORT} (CI starts one)"
)


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=needs_redis)])
async def store(request, tmp_path) -> AsyncIterator[Callable[[], Ledger]]:
    """A factory of ledgers on one store: each call is a new instance (a new process, or a
    restart) on the same file / Redis prefix."""
    opened: list[Ledger] = []
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger.db'}"  # absolute path: four slashes
    else:
        prefix = f"test-{uuid.uuid4().hex[:12]}:"
        url = f"redis://{REDIS_HOST}:{REDIS_PORT}/0?prefix={prefix}"

    def make() -> Ledger:
        ledger = create_ledger(url)
        opened.append(ledger)
        return ledger

    yield make
    for ledger in opened:
        await ledger.close()
    if request.param == "redis":
        import redis.asyncio as aioredis

        client = aioredis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=0)
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture
async def ledger(store) -> Ledger:
    return store()


async def reserve(ledger: Ledger, amount: float, *, limit: float | None = 1.0, team="t",
                  period=P, ttl=60.0, now=T0, ref="") -> Reservation:  # fmt: skip
    return await ledger.reserve(
        team, amount, limit_usd=limit, period_key=period, ttl_s=ttl, now=now, ref=ref
    )


# ---------------------------------------------------------------- semantics


async def test_reserve_settle_release(ledger):
    assert await ledger.usage("t", P, now=T0) == Usage(0.0, 0.0)
    a = await reserve(ledger, 0.30, ref="req-a")
    b = await reserve(ledger, 0.20)
    assert (a.team, a.period_key, a.amount_usd, a.expires_at) == ("t", P, 0.30, T0 + 60)
    assert a.id != b.id
    u = await ledger.usage("t", P, now=T0)
    assert u.spent_usd == 0 and u.reserved_usd == pytest.approx(0.50)
    await ledger.settle(a, 0.25, now=T0 + 1)
    u = await ledger.usage("t", P, now=T0 + 1)
    assert u.spent_usd == pytest.approx(0.25) and u.reserved_usd == pytest.approx(0.20)
    assert u.remaining(1.0) == pytest.approx(0.55) and u.remaining(None) is None
    await ledger.release(b)
    assert await ledger.usage("t", P, now=T0 + 2) == Usage(0.25, 0.0)
    assert await ledger.total_spent("t") == 0.25
    rows = await ledger.spend_rows()
    assert [(r["reservation_id"], r["amount"], r["reserved"], r["ref"]) for r in rows] == [
        (a.id, 0.25, 0.30, "req-a")
    ]


async def test_settle_and_release_are_idempotent(ledger):
    a = await reserve(ledger, 0.1)
    await ledger.settle(a, 0.1, now=T0)
    await ledger.settle(a, 0.1, now=T0)  # twice
    await ledger.settle(a, 0.5, now=T0)  # a different amount changes nothing either
    await ledger.release(a)  # release after settle
    b = await reserve(ledger, 0.2)
    await ledger.release(b)
    await ledger.release(b)
    assert await ledger.usage("t", P, now=T0) == Usage(0.1, 0.0)
    # A settle after a release still counts (the money was spent upstream), once.
    await ledger.settle(b, 0.2, now=T0)
    await ledger.settle(b, 0.2, now=T0)
    await ledger.release(b)
    assert await ledger.usage("t", P, now=T0) == Usage(pytest.approx(0.3), 0.0)
    assert await ledger.total_spent() == pytest.approx(0.3)
    assert len(await ledger.spend_rows()) == 2


async def test_settle_is_idempotent_by_ref(store):
    """A journal replay may settle a decision again, from another instance, with the
    reservation already settled, expired or released: the ref charges once."""
    one, two = store(), store()
    a = await reserve(one, 0.4, ref="dec-1", ttl=5)
    await one.settle(a, 0.3, now=T0 + 1, ref="dec-1")
    await two.settle(a, 0.3, now=T0 + 100, ref="dec-1")  # same reservation and ref
    # same ref on a copy of the reservation under another id: still once
    await two.settle(Reservation("other-id", "t", P, 0.4, T0 + 5), 0.3, now=T0, ref="dec-1")
    # the ref defaults to the reservation's; a duplicate still drops its own hold
    dup = await reserve(two, 0.4, ref="dec-1", ttl=5)
    await one.settle(dup, 0.3, now=T0)
    assert await one.usage("t", P, now=T0) == Usage(pytest.approx(0.3), 0.0)
    b = await reserve(one, 0.2, ref="dec-2", ttl=5)
    await one.release(b)
    await two.settle(b, 0.1, now=T0 + 1000, ref="dec-2")  # released and expired: counts
    await one.settle(b, 0.1, now=T0 + 1001, ref="dec-2")
    assert await two.usage("t", P, now=T0 + 1001) == Usage(pytest.approx(0.4), 0.0)
    rows = await one.spend_rows()
    assert sorted((r["ref"], r["amount"]) for r in rows) == [("dec-1", 0.3), ("dec-2", 0.1)]
    # empty refs never collide
    for _ in range(3):
        await one.settle(await reserve(one, 0.01), 0.01, now=T0)
    assert len(await two.spend_rows()) == 5


async def test_refusal_at_the_limit(ledger):
    holds = [await reserve(ledger, 0.1) for _ in range(10)]  # 10 x 0.1 fits 1.0 exactly
    with pytest.raises(InsufficientBudget) as info:
        await reserve(ledger, 0.01)
    err = info.value
    assert err.limit_usd == 1.0 and err.requested_usd == 0.01
    assert err.usage.spent_usd == 0 and err.usage.reserved_usd == pytest.approx(1.0)
    assert "budget exceeded" in str(err)
    # the refused reserve left nothing behind
    assert (await ledger.usage("t", P, now=T0)).reserved_usd == pytest.approx(1.0)
    await ledger.settle(holds[0], 0.05, now=T0)
    await reserve(ledger, 0.05)  # what the settle freed is usable again
    with pytest.raises(InsufficientBudget):
        await reserve(ledger, 0.001)
    # spend counts like holds: a settled period at the limit refuses everything
    with pytest.raises(InsufficientBudget):
        await reserve(ledger, 2.0, team="other")


async def test_unlimited_and_zero_limits(ledger):
    r = await reserve(ledger, 1e6, limit=None)
    assert (await ledger.usage("t", P, now=T0)).reserved_usd == 1e6
    await ledger.settle(r, 123.456, now=T0)
    assert (await ledger.usage("t", P, now=T0)).spent_usd == 123.456
    await reserve(ledger, 0.0, limit=0.0, team="zero")  # a free request fits a zero budget
    with pytest.raises(InsufficientBudget):
        await reserve(ledger, 1e-9, limit=0.0, team="zero")


async def test_expiry_with_a_controlled_clock(ledger):
    r = await reserve(ledger, 0.8, ttl=10)
    assert (await ledger.usage("t", P, now=T0 + 9.9)).reserved_usd == 0.8
    assert (await ledger.usage("t", P, now=T0 + 10)).reserved_usd == 0.0  # expired at T0+ttl
    with pytest.raises(InsufficientBudget):
        await reserve(ledger, 0.5, now=T0 + 5)
    late = await reserve(ledger, 0.5, now=T0 + 11)  # the dead hold no longer counts
    # The crashed request's money was spent after all: a late settle still records it.
    await ledger.settle(r, 0.7, now=T0 + 100)
    u = await ledger.usage("t", P, now=T0 + 12)
    assert u.spent_usd == 0.7 and u.reserved_usd == 0.5
    await ledger.settle(r, 0.7, now=T0 + 101)  # still idempotent
    assert await ledger.total_spent("t") == 0.7
    # a released expired reservation that is settled later counts once
    await ledger.release(late)
    await ledger.settle(late, 0.5, now=T0 + 200)
    await ledger.settle(late, 0.5, now=T0 + 201)
    assert await ledger.total_spent("t") == pytest.approx(1.2)


async def test_purge_keeps_late_settles_correct(ledger):
    # Many expired holds, then a reserve far later (which purges), then their late settles.
    rs = [await reserve(ledger, 0.01, ttl=1, limit=None) for _ in range(30)]
    await reserve(ledger, 0.01, now=T0 + 3600, limit=None)
    assert (await ledger.usage("t", P, now=T0 + 3600)).reserved_usd == 0.01
    for r in rs[:10]:
        await ledger.settle(r, 0.02, now=T0 + 3601)
    for r in rs[10:20]:
        await ledger.release(r)
    for r in rs[:20]:
        await ledger.settle(r, 0.02, now=T0 + 3602)
    assert await ledger.total_spent() == pytest.approx(0.4, abs=1e-12)
    assert len(await ledger.spend_rows()) == 20


async def test_period_rollover_starts_from_zero(ledger):
    r = await reserve(ledger, 1.0)
    await ledger.settle(r, 1.0, now=T0)
    with pytest.raises(InsufficientBudget):
        await reserve(ledger, 0.1)
    nxt = "day:2026-11-29"
    assert await ledger.usage("t", nxt, now=T0) == Usage(0.0, 0.0)
    r2 = await reserve(ledger, 0.9, period=nxt)
    await ledger.settle(r2, 0.9, now=T0)
    assert (await ledger.usage("t", P, now=T0)).spent_usd == 1.0
    assert (await ledger.usage("t", nxt, now=T0)).spent_usd == 0.9
    assert await ledger.total_spent("t") == pytest.approx(1.9)


async def test_teams_are_separate_and_totals_add_up(ledger):
    for team, cost in [("a", 0.1), ("b", 0.2), ("a:b", 0.4), ("a", 0.8)]:
        await ledger.settle(await reserve(ledger, cost, team=team), cost, now=T0)
    # "a:b" with "day:..." must not collide with "a" and "b:day:..."
    assert (await ledger.usage("a", P, now=T0)).spent_usd == pytest.approx(0.9)
    assert (await ledger.usage("a:b", P, now=T0)).spent_usd == 0.4
    assert (await ledger.usage("a", "b:" + P, now=T0)).spent_usd == 0.0
    assert await ledger.total_spent("b") == 0.2
    assert await ledger.total_spent("nobody") == 0.0
    assert await ledger.total_spent() == pytest.approx(1.5, abs=1e-12)


async def test_bad_amounts_are_refused(ledger):
    for bad in (-0.01, math.nan, math.inf):
        with pytest.raises(ValueError, match="amount_usd"):
            await reserve(ledger, bad)
    with pytest.raises(ValueError, match="ttl_s"):
        await reserve(ledger, 0.1, ttl=0)
    r = await reserve(ledger, 0.1)
    with pytest.raises(ValueError, match="actual_usd"):
        await ledger.settle(r, -1.0, now=T0)
    with pytest.raises(ValueError, match="alpha"):
        await ledger.observe_output_tokens("m", 10, alpha=0)


async def test_state_and_learned_output_tokens(ledger):
    assert await ledger.get_state("pacing:t") is None
    doc = {"lambda": 20.5, "updated": T0, "history": [1, 2.5], "note": "é"}
    await ledger.set_state("pacing:t", doc)
    assert await ledger.get_state("pacing:t") == doc
    await ledger.set_state("pacing:t", {"lambda": 3.0})
    assert await ledger.get_state("pacing:t") == {"lambda": 3.0}
    with pytest.raises(TypeError):
        await ledger.set_state("x", [1, 2])  # type: ignore[arg-type]

    assert await ledger.expected_output_tokens("m") is None
    assert await ledger.observe_output_tokens("m", 100, alpha=0.5) == 100.0  # first seeds
    assert await ledger.observe_output_tokens("m", 200, alpha=0.5) == 150.0
    want = 0.9 * 150.0 + 0.1 * 400
    assert await ledger.observe_output_tokens("m", 400) == want
    assert await ledger.expected_output_tokens("m") == want
    assert await ledger.expected_output_tokens("other") is None


async def test_concurrent_reserve_and_settle_hold_the_limit(ledger):
    """200 tasks against a limit that covers about 20: spend never passes the limit by
    more than what settles added over their reservations, and every figure agrees."""
    rng = random.Random(7)
    limit, max_cost = 0.60, 0.04
    plans = []
    for i in range(200):
        reserved = rng.uniform(0.01, max_cost)
        # most requests cost less than reserved; one in ten costs up to 10% more
        actual = reserved * (rng.uniform(1.0, 1.1) if i % 10 == 0 else rng.uniform(0.3, 1.0))
        plans.append((reserved, actual, rng.random() < 0.1))  # 10% fail before upstream

    async def one(i: int) -> tuple[str, float, float]:
        reserved, actual, fails = plans[i]
        await asyncio.sleep(rng.random() * 0.01)
        try:
            r = await reserve(ledger, reserved, limit=limit, ref=f"req-{i}")
        except InsufficientBudget as exc:
            assert exc.usage.committed_usd + reserved > limit
            return "refused", 0.0, 0.0
        await asyncio.sleep(rng.random() * 0.01)
        if fails:
            await ledger.release(r)
            return "released", 0.0, 0.0
        await ledger.settle(r, actual, now=T0 + 1, ref=f"req-{i}")
        return "settled", actual, max(0.0, actual - reserved)

    results = await asyncio.gather(*(one(i) for i in range(200)))
    settled = [(a, over) for kind, a, over in results if kind == "settled"]
    refused = sum(kind == "refused" for kind, _, _ in results)
    assert refused > 50 and len(settled) >= 15  # the limit really was contended
    spent = sum(a for a, _ in settled)
    assert spent <= limit + sum(over for _, over in settled) + 1e-12
    assert spent <= limit + max_cost
    u = await ledger.usage("t", P, now=T0 + 1)
    assert u.reserved_usd == 0.0
    assert abs(u.spent_usd - spent) < 1e-9
    assert abs(await ledger.total_spent() - spent) < 1e-9
    rows = await ledger.spend_rows()
    assert len(rows) == len(settled)
    assert len({r["reservation_id"] for r in rows}) == len(rows)
    assert abs(math.fsum(r["amount"] for r in rows) - spent) < 1e-9  # audit trail = totals


# ---------------------------------------------------------------- restarts, many processes


async def test_restart_keeps_spend_state_and_idempotency(store):
    first = store()
    a = await reserve(first, 0.3)
    b = await reserve(first, 0.4)  # still open at the "crash"
    await first.settle(a, 0.25, now=T0)
    await first.set_state("pacing:t", {"lambda": 7.0})
    await first.observe_output_tokens("m", 321)
    await first.close()

    again = store()
    u = await again.usage("t", P, now=T0 + 1)
    assert u.spent_usd == 0.25 and u.reserved_usd == 0.4  # the open hold survives until expiry
    assert await again.total_spent() == 0.25
    assert await again.get_state("pacing:t") == {"lambda": 7.0}
    assert await again.expected_output_tokens("m") == 321.0
    await again.settle(a, 0.25, now=T0 + 1)  # settled before the restart: no double count
    await again.settle(b, 0.35, now=T0 + 1)
    assert await again.usage("t", P, now=T0 + 2) == Usage(0.6, 0.0)


async def test_two_instances_on_one_store_stay_atomic(store):
    one, two = store(), store()
    results = await asyncio.gather(
        *(reserve(one if i % 2 else two, 0.01, limit=0.5, ttl=600) for i in range(120)),
        return_exceptions=True,
    )
    ok = [r for r in results if isinstance(r, Reservation)]
    assert all(isinstance(r, InsufficientBudget) for r in results if r not in ok)
    assert len(ok) == 50
    assert (await one.usage("t", P, now=T0)).reserved_usd == pytest.approx(0.5)
    await asyncio.gather(*(one.settle(r, 0.01, now=T0) for r in ok[::2]))
    await asyncio.gather(*(two.settle(r, 0.01, now=T0) for r in ok))  # half are repeats
    assert await two.usage("t", P, now=T0) == Usage(pytest.approx(0.5), 0.0)
    assert len(await one.spend_rows()) == 50


_WORKER = textwrap.dedent(
    """
    import asyncio, sys
    from router.ledger import InsufficientBudget, create_ledger

    async def main(url):
        ledger = create_ledger(url)
        ok = 0
        for _ in range(150):
            try:
                await ledger.reserve("t", 0.01, limit_usd=1.0, period_key="p", ttl_s=600,
                                     now=1e9)
                ok += 1
            except InsufficientBudget:
                pass
        await ledger.close()
        print(ok)

    asyncio.run(main(sys.argv[1]))
    """
)


def test_two_processes_share_one_sqlite_file(tmp_path):
    """Real processes: BEGIN IMMEDIATE makes check-and-insert atomic across them."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    counts = run_processes(_WORKER, url, 3)
    assert sum(counts) == 100  # exactly the limit (1.0 / 0.01), whoever won the races


# ---------------------------------------------------------------- SQLite specifics and URLs


async def test_sqlite_file_is_wal_and_relative_urls_resolve(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ledger = create_ledger("sqlite:///data/nested/ledger.db")  # folder created
    assert isinstance(ledger, SqliteLedger)
    await ledger.settle(await reserve(ledger, 0.1), 0.1, now=T0)
    await ledger.close()
    path = tmp_path / "data" / "nested" / "ledger.db"
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT SUM(amount) FROM spend").fetchone()[0] == 0.1
    with pytest.raises(LedgerError, match="closed"):
        await ledger.usage("t", P, now=T0)


async def test_sqlite_busy_timeout_counts_the_wait_in_line(tmp_path):
    """Calls queued behind another process's lock fail once their own busy timeout is
    spent, counted from when they joined the queue, not after every call before them has
    had a whole one (bench/soak.py: a locked ledger stalled every request for the lock's
    whole length). The clock of those waits is moved by hand."""
    clock = [0.0]
    path = tmp_path / "ledger.db"
    ledger = SqliteLedger(path, busy_timeout_s=30, wait_clock=lambda: clock[0])
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    calls = [asyncio.create_task(reserve(ledger, 0.01, ref=f"r{i}")) for i in range(4)]
    await asyncio.sleep(0)  # each call finds the file locked and joins the ledger thread's queue
    clock[0] += 31  # the queued calls' 30 s are spent (the first may be in SQLite's own wait)
    other.execute("COMMIT")
    results = await asyncio.gather(*calls, return_exceptions=True)
    queued = results[1:]
    assert all(isinstance(r, LedgerError) and "in line" in str(r) for r in queued), results
    assert isinstance(await reserve(ledger, 0.01), Reservation)  # and the ledger still works
    other.close()
    await ledger.close()


async def test_sqlite_unwritable_path_fails_at_open(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises((LedgerError, OSError)):
        create_ledger(f"sqlite:///{blocker}/ledger.db")


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://relative.db",
        "sqlite:///",
        "postgres://user:hunter2@db/ledger",
        "redis://",
        "redis:///0",
        "ledger.db",
        "",
    ],
)
def test_bad_urls_name_the_url_and_the_accepted_forms(url):
    with pytest.raises(ValueError) as info:
        create_ledger(url)
    msg = str(info.value)
    assert "sqlite:////absolute/path.db" in msg and "redis://host:port/db" in msg
    assert "hunter2" not in msg
    assert (url.replace("hunter2", "***") in msg) if url else "''" in msg


@needs_redis
async def test_redis_url_prefix_and_unreachable_server():
    from router.ledger import RedisLedger

    ledger = create_ledger(f"redis://{REDIS_HOST}:{REDIS_PORT}/0?prefix=abc:")
    assert isinstance(ledger, RedisLedger) and ledger.prefix == "abc:"
    await ledger.check()
    await ledger.close()
    dead = create_ledger("redis://127.0.0.1:1/0")  # nothing listens on port 1
    with pytest.raises(LedgerError, match="Redis ledger"):
        await dead.usage("t", P, now=T0)
    await dead.close()


async def test_settle_observed_settles_and_learns_in_one_call(ledger):
    r = await reserve(ledger, 0.5)
    avg = await ledger.settle_observed(r, 0.25, now=T0, ref="x", model="m", output_tokens=100)
    assert avg == pytest.approx(100.0)
    assert await ledger.usage("t", P, now=T0) == Usage(0.25, 0.0)
    assert await ledger.expected_output_tokens("m") == pytest.approx(100.0)
    r2 = await reserve(ledger, 0.5)
    avg = await ledger.settle_observed(r2, 0.25, now=T0, ref="y", model="m", output_tokens=200)
    assert avg == pytest.approx(110.0)  # EWMA, alpha 0.1
    assert await ledger.usage("t", P, now=T0) == Usage(0.5, 0.0)


async def test_learned_output_tokens_start_from_the_prior(ledger):
    assert await ledger.observe_output_tokens("m", 10, alpha=0.1, prior=500) == pytest.approx(451.0)
    assert await ledger.observe_output_tokens("m", 10, alpha=0.1, prior=500) == pytest.approx(406.9)
    assert await ledger.observe_output_tokens("n", 10, alpha=0.1) == pytest.approx(10.0)


async def test_settle_observed_replayed_learns_once(store):
    one, two = store(), store()
    r = await reserve(one, 0.5, ref="dec-o")
    assert (
        await one.settle_observed(r, 0.2, now=T0, ref="dec-o", model="m", output_tokens=100) == 100
    )
    # a replay (another instance, same ref): no second charge, no second observation
    again = await two.settle_observed(r, 0.2, now=T0, ref="dec-o", model="m", output_tokens=300)
    assert again == 100.0 and await two.expected_output_tokens("m") == 100.0
    assert await two.usage("t", P, now=T0) == Usage(0.2, 0.0)


# ---------------------------------------------------------------- schema upgrade, Redis bounds

_SCHEMA_1 = """
CREATE TABLE reservations (id TEXT PRIMARY KEY, team TEXT NOT NULL, period_key TEXT NOT NULL,
    amount REAL NOT NULL, expires_at REAL NOT NULL, ref TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL, status TEXT NOT NULL DEFAULT 'open') WITHOUT ROWID;
CREATE TABLE spend (reservation_id TEXT PRIMARY KEY, team TEXT NOT NULL,
    period_key TEXT NOT NULL, amount REAL NOT NULL, reserved REAL NOT NULL,
    ref TEXT NOT NULL DEFAULT '', ts REAL NOT NULL);
CREATE TABLE period_totals (team TEXT NOT NULL, period_key TEXT NOT NULL, spent REAL NOT NULL,
    requests INTEGER NOT NULL, PRIMARY KEY (team, period_key)) WITHOUT ROWID;
CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE output_tokens (model TEXT PRIMARY KEY, ewma REAL NOT NULL,
    observations INTEGER NOT NULL);
PRAGMA user_version = 1;
"""


@pytest.mark.parametrize("duplicate", [False, True])
async def test_sqlite_schema_1_file_is_upgraded(tmp_path, duplicate):
    path = tmp_path / "v1.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(_SCHEMA_1)
        rows = [("r1", "t", P, 0.1, 0.1, "dec-1", T0), ("r2", "t", P, 0.2, 0.2, "", T0)]
        if duplicate:
            rows.append(("r3", "t", P, 0.1, 0.1, "dec-1", T0))
        conn.executemany("INSERT INTO spend VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        conn.execute("INSERT INTO period_totals VALUES ('t', ?, 0.3, 2)", (P,))
    if duplicate:  # a decision charged twice: the operator must look, the router won't guess
        with pytest.raises(LedgerError, match="dec-1"):
            SqliteLedger(path)
        return
    ledger = SqliteLedger(path)
    try:
        await ledger.settle(Reservation("r9", "t", P, 0.5), 0.5, now=T0, ref="dec-1")  # replay
        assert await ledger.total_spent() == pytest.approx(0.3)
        assert await ledger.take_rate(
            "t", requests_per_minute=1, tokens_per_minute=None, tokens=0, now=T0
        ) is None  # fmt: skip
        # Schema 4's sessions table is there too.
        await ledger.record_session_turn(
            "ses_1", model="m", prompt_tokens=5, output_tokens=2, now=T0, ttl_s=60
        )
        assert (await ledger.get_session("ses_1", now=T0 + 1)).turns == 1
    finally:
        await ledger.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4


@pytest.mark.parametrize("store", [pytest.param("redis", marks=needs_redis)], indirect=True)
async def test_redis_keys_are_bounded(store):
    """Per-period keys expire after the period (plus the grace), idempotency markers after
    the retention, the audit stream is capped, and ``total`` periods never expire."""
    import redis.asyncio as aioredis

    from router.ledger import CLOSED_RETENTION_S, PERIOD_GRACE_S, RedisLedger

    ledger = store()
    assert isinstance(ledger, RedisLedger)
    client = aioredis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=0, decode_responses=True)
    capped = RedisLedger(client, prefix=ledger.prefix, stream_maxlen=50)
    p = ledger.prefix
    try:
        ends = T0 + 3600.0
        r = await ledger.reserve("t", 0.1, limit_usd=1.0, period_key=P, ttl_s=60, now=T0,
                                 ref="dec-b", period_ends_at=ends)  # fmt: skip
        for key in (f"{p}res:t:{P}", f"{p}resamt:t:{P}"):
            assert 3600 + PERIOD_GRACE_S - 5 <= await client.ttl(key) <= 3600 + PERIOD_GRACE_S
        await ledger.settle(r, 0.1, now=T0 + 600, ref="dec-b")
        ttl = await client.ttl(f"{p}spent:t:{P}")
        assert 3000 + PERIOD_GRACE_S - 5 <= ttl <= 3000 + PERIOD_GRACE_S
        for key in (f"{p}closed:{r.id}", f"{p}ref:dec-b"):
            assert CLOSED_RETENTION_S - 5 <= await client.ttl(key) <= CLOSED_RETENTION_S
        # a settle long after the period still lives for the grace from then
        late = await ledger.reserve("t", 0.1, limit_usd=None, period_key="old", ttl_s=60,
                                    now=T0, period_ends_at=T0 + 1)  # fmt: skip
        await ledger.settle(late, 0.1, now=T0 + 10 * PERIOD_GRACE_S)
        assert PERIOD_GRACE_S - 5 <= await client.ttl(f"{p}spent:t:old") <= PERIOD_GRACE_S
        # a ``total`` budget (no period end) keeps its keys
        forever = await ledger.reserve("t", 0.1, limit_usd=None, period_key="total", ttl_s=60,
                                       now=T0)  # fmt: skip
        await ledger.settle(forever, 0.1, now=T0)
        assert await client.ttl(f"{p}spent:t:total") == -1
        # the audit stream stays near its cap (trimmed a macro node at a time)
        node = int((await client.config_get("stream-node-max-entries"))["stream-node-max-entries"])
        for i in range(300):
            await capped.settle(Reservation(f"s{i}", "t", P, 0.0), 0.0, now=T0, ref=f"s{i}")
        assert await client.xlen(f"{p}spend") <= 50 + node < 303
    finally:
        await client.aclose()


async def test_a_current_sqlite_file_opens_while_another_process_holds_the_write_lock(tmp_path):
    from router.ledger import LedgerError, create_ledger

    path = tmp_path / "busy.db"
    url = f"sqlite:///{path}?busy_timeout=0.2"
    await create_ledger(url).close()  # created at the current schema version
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        ledger = create_ledger(url)  # no write needed: a restart is not blocked
        try:
            assert (await ledger.usage("t", "p", now=0.0)).spent_usd == 0
            with pytest.raises(LedgerError):  # but writes wait for the lock, then fail
                await ledger.reserve(
                    "t", 0.1, limit_usd=1.0, period_key="p", ttl_s=60, now=0.0, ref="r"
                )
        finally:
            await ledger.close()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
