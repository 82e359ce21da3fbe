"""The settlement journal against a real SQLite ledger held locked by another connection,
the real Redis (a failing instance points at a port nothing listens on), and real files:
torn lines, crashed processes, a second opener."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import sqlite3
import subprocess
import sys
import textwrap
import uuid

import pytest
from test_ledger import REDIS_HOST, REDIS_PORT, ROOT, T0, P, needs_redis

from router.ledger import (
    JournalError,
    LedgerError,
    Reservation,
    SettlementJournal,
    SqliteLedger,
    Usage,
    create_ledger,
)


def spend_sum(db_path) -> tuple[float, int]:
    with sqlite3.connect(db_path) as conn:
        total, rows = conn.execute(
            "SELECT COALESCE(SUM(amount), 0), COUNT(*) FROM spend"
        ).fetchone()
    return total, rows


async def test_sqlite_locked_past_busy_timeout_then_replayed_once(tmp_path):
    db = tmp_path / "ledger.db"
    ledger = create_ledger(f"sqlite:///{db}?busy_timeout=0.05")
    journal = SettlementJournal(tmp_path / "journal.jsonl")
    try:
        r = await ledger.reserve("t", 0.5, limit_usd=1.0, period_key=P, ttl_s=60, now=T0,
                                 ref="dec-1", period_ends_at=T0 + 86400)  # fmt: skip
        blocker = sqlite3.connect(db, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # another process holding the write lock
        try:
            with pytest.raises(LedgerError, match="locked"):
                await ledger.settle_observed(
                    r, 0.123456789, now=T0 + 1, ref="dec-1", model="m", output_tokens=40
                )
            await journal.append(
                r, 0.123456789, now=T0 + 1, ref="dec-1", model="m", output_tokens=40, prior=100
            )
            assert journal.pending_count() == 1
            assert journal.pending_usd("t", P) == 0.123456789
            assert journal.pending_usd("t", "other") == 0.0
            assert await journal.replay(ledger) == 0  # still locked: the entry stays
            assert journal.pending_count() == 1
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert await journal.replay(ledger) == 1
        assert journal.pending_count() == 0 and journal.pending_usd("t", P) == 0.0
        assert await journal.replay(ledger) == 0
        # a stale copy of the entry (a crash before the rewrite) replays as a no-op
        stale = SettlementJournal(tmp_path / "stale.jsonl")
        await stale.append(r, 0.123456789, now=T0 + 1, ref="dec-1", model="m", output_tokens=40)
        assert await stale.replay(ledger) == 1
        stale.close()
        total, rows = spend_sum(db)
        assert abs(total - 0.123456789) < 1e-9 and rows == 1
        assert await ledger.usage("t", P, now=T0 + 2) == Usage(0.123456789, 0.0)
        # the journaled answer was learned once, from the prior
        assert await ledger.expected_output_tokens("m") == pytest.approx(0.9 * 100 + 0.1 * 40)
        assert (tmp_path / "journal.jsonl").read_bytes() == b""
    finally:
        journal.close()
        await ledger.close()


@needs_redis
async def test_redis_down_then_replayed_once(tmp_path):
    prefix = f"test-{uuid.uuid4().hex[:12]}:"
    good = create_ledger(f"redis://{REDIS_HOST}:{REDIS_PORT}/0?prefix={prefix}")
    dead = create_ledger(f"redis://127.0.0.1:1/0?prefix={prefix}")  # nothing listens there
    journal = SettlementJournal(tmp_path / "journal.jsonl")
    try:
        rs = [
            await good.reserve(
                "t", 0.2, limit_usd=None, period_key=P, ttl_s=1, now=T0, ref=f"dec-{i}"
            )  # fmt: skip
            for i in range(3)
        ]
        for r in rs:
            with pytest.raises(LedgerError, match="Redis ledger"):
                await dead.settle(r, 0.1, now=T0 + 5, ref=r.ref)
            await journal.append(r, 0.1, now=T0 + 5, ref=r.ref)
        await good.release(rs[2])  # released (and expired) before the replay: still counts
        assert journal.pending_usd("t", P) == pytest.approx(0.3)
        assert await journal.replay(dead) == 0 and journal.pending_count() == 3
        assert await journal.replay(good) == 3
        assert await journal.replay(good) == 0
        again = SettlementJournal(tmp_path / "again.jsonl")  # the same entries, once more
        for r in rs:
            await again.append(r, 0.1, now=T0 + 5, ref=r.ref)
        assert await again.replay(good) == 3
        again.close()
        assert await good.usage("t", P, now=T0 + 6) == Usage(pytest.approx(0.3), 0.0)
        rows = await good.spend_rows()
        assert sorted(row["ref"] for row in rows) == ["dec-0", "dec-1", "dec-2"]
        assert abs(math.fsum(row["amount"] for row in rows) - 0.3) < 1e-9
    finally:
        journal.close()
        await dead.close()
        import redis.asyncio as aioredis

        client = aioredis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=0)
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        await good.close()


def _reservation(i: int) -> Reservation:
    return Reservation(f"res-{i}", "t", P, 0.5, T0 + 60, f"dec-{i}", T0 + 86400)


async def test_torn_last_line_is_skipped_and_the_file_repaired(tmp_path, caplog):
    path = tmp_path / "journal.jsonl"
    journal = SettlementJournal(path)
    for i in range(2):
        await journal.append(_reservation(i), 0.25, now=T0, model="m", output_tokens=7)
    journal.close()
    with open(path, "ab") as f:
        f.write(b'{"v":1,"ref":"dec-torn","team":"t","cost_u')  # the crash, mid-write
    with caplog.at_level(logging.WARNING, logger="router.ledger.journal"):
        reopened = SettlementJournal(path)
    assert "torn" in caplog.text
    assert [e.ref for e in reopened.entries()] == ["dec-0", "dec-1"]
    assert reopened.pending_usd("t", P) == 0.5
    await reopened.append(_reservation(2), 0.25, now=T0)  # starts on a clean line
    lines = path.read_bytes().splitlines()
    assert [json.loads(line)["ref"] for line in lines] == ["dec-0", "dec-1", "dec-2"]
    ledger = SqliteLedger(tmp_path / "ledger.db")
    try:
        assert await reopened.replay(ledger) == 3
        assert await ledger.total_spent() == 0.75
        assert await ledger.expected_output_tokens("m") == pytest.approx(7.0)
    finally:
        reopened.close()
        await ledger.close()


_CRASHER = textwrap.dedent(
    """
    import asyncio, os, sys
    from router.ledger import Reservation, SettlementJournal

    async def main(path):
        journal = SettlementJournal(path)
        for i in range(3):
            r = Reservation(f"res-{i}", "t", "p", 0.5, float("inf"), f"dec-{i}")
            await journal.append(r, 0.1 * (i + 1), now=1e9)
        print("appended", flush=True)
        os._exit(9)  # no close, no flush of anything else: a crash

    asyncio.run(main(sys.argv[1]))
    """
)


async def test_journal_of_a_crashed_process_replays(tmp_path):
    path = tmp_path / "journal.jsonl"
    proc = subprocess.run(
        [sys.executable, "-c", _CRASHER, str(path)], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 9 and "appended" in proc.stdout, proc.stderr
    journal = SettlementJournal(path)  # the dead process's lock went with it
    ledger = SqliteLedger(tmp_path / "ledger.db")
    try:
        assert journal.pending_count() == 3
        assert journal.pending_usd("t", "p") == pytest.approx(0.6)
        assert await journal.replay(ledger) == 3
        assert await journal.replay(ledger) == 0
        total, rows = spend_sum(tmp_path / "ledger.db")
        assert abs(total - 0.6) < 1e-9 and rows == 3
    finally:
        journal.close()
        await ledger.close()


async def test_one_journal_per_process_and_refs_required(tmp_path):
    journal = SettlementJournal(tmp_path / "j.jsonl")
    try:
        with pytest.raises(JournalError, match="in use"):
            SettlementJournal(tmp_path / "j.jsonl")
        with pytest.raises(ValueError, match="ref"):
            await journal.append(Reservation("r", "t", P, 0.1), 0.1, now=T0)
        with pytest.raises(ValueError, match="cost_usd"):
            await journal.append(_reservation(0), math.nan, now=T0)
        await journal.append(_reservation(0), 0.1, now=T0)
        await journal.append(_reservation(0), 0.1, now=T0)  # the same ref: kept once
        assert journal.pending_count() == 1
        assert len((tmp_path / "j.jsonl").read_bytes().splitlines()) == 1
    finally:
        journal.close()


async def test_appends_during_a_replay_are_kept_and_drained(tmp_path):
    """A replay's rewrite must not drop lines appended while it ran; the background drain
    settles them later."""
    path = tmp_path / "journal.jsonl"
    journal = SettlementJournal(path)
    ledger = SqliteLedger(tmp_path / "ledger.db")
    try:
        for i in range(20):
            await journal.append(_reservation(i), 0.01, now=T0)
        results = await asyncio.gather(
            journal.replay(ledger),
            *(journal.append(_reservation(i), 0.01, now=T0) for i in range(20, 40)),
        )
        on_file = {json.loads(line)["ref"] for line in path.read_bytes().splitlines()}
        assert on_file == {e.ref for e in journal.entries()}
        assert results[0] + journal.pending_count() == 40
        drain = asyncio.create_task(journal.drain_forever(ledger, interval_s=0.001))
        try:
            while journal.pending_count():
                await asyncio.sleep(0.001)  # waits on a condition, bounded by the test timeout
            # A replay waits for the drain's own to finish its rewrite.
            assert await journal.replay(ledger) == 0
        finally:
            drain.cancel()
        assert path.read_bytes() == b""
        total, rows = spend_sum(tmp_path / "ledger.db")
        assert abs(total - 0.4) < 1e-9 and rows == 40
    finally:
        journal.close()
        await ledger.close()
