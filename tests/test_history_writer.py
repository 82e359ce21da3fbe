"""The decision history's writer thread: lines are encoded and stored off the event loop
(a real SQLite file held locked by another connection, a real Redis frozen with
SIGSTOP), drops are counted in the metric, and a graceful close loses no line."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time

from test_history import line
from test_ledger import needs_redis, store  # noqa: F401  (the fixture: both backends)

from router.ledger import SqliteLedger, create_ledger
from router.observability.history import DecisionHistory
from router.observability.metrics import RouterMetrics


async def loop_stays_free(seconds: float) -> float:
    """The longest the event loop went without running this task, over ``seconds``."""
    worst, end = 0.0, time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.monotonic()
        await asyncio.sleep(0.005)
        worst = max(worst, time.monotonic() - t)
    return worst


async def test_sqlite_a_locked_store_holds_up_the_writer_not_the_event_loop(tmp_path):
    path = tmp_path / "l.db"
    ledger = SqliteLedger(path)
    h = DecisionHistory(ledger, retention_s=86400, flush_interval_s=0.01)
    h.start()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # the history's insert waits for this lock
    try:
        now = time.time()
        for i in range(50):
            h.offer(line(i, now))
        assert await loop_stays_free(0.3) < 0.1  # the writer thread waits, the loop does not
        assert h.written == 0 and h.pending == 0  # taken by the writer, stuck on the lock
    finally:
        other.execute("ROLLBACK")
        other.close()
    await h.flush()
    assert h.written == 50
    assert len((await ledger.query_decisions(limit=100))[0]) == 50
    await h.close()
    await ledger.close()


@needs_redis
async def test_redis_a_frozen_store_holds_up_the_writer_not_the_event_loop(private_redis):
    ledger = create_ledger(f"{private_redis.url}?prefix=h:&socket_timeout=5")
    h = DecisionHistory(ledger, retention_s=86400, flush_interval_s=0.01)
    h.start()
    await ledger.check()
    os.kill(private_redis.proc.pid, signal.SIGSTOP)
    try:
        now = time.time()
        for i in range(50):
            h.offer(line(i, now))
        assert await loop_stays_free(0.3) < 0.1
        assert h.written == 0
    finally:
        os.kill(private_redis.proc.pid, signal.SIGCONT)
    await h.flush()
    assert h.written == 50
    assert len((await ledger.query_decisions(limit=100))[0]) == 50
    await h.close()
    await ledger.close()


async def test_drops_are_counted_in_the_metric(store):  # noqa: F811
    ledger = store()
    metrics = RouterMetrics()
    h = DecisionHistory(
        ledger, retention_s=86400, max_pending=10, on_drop=metrics.count_history_dropped
    )  # not started: nothing is taken off the queue yet
    now = time.time()
    for i in range(9):
        h.offer(line(i, now))
    h.offer({"no": "decision id"})  # cannot be stored: the writer drops it, counted
    for i in range(9, 12):
        h.offer(line(i, now))  # over the bound: dropped at once, never waited for
    assert h.dropped == 3
    assert "router_decision_history_dropped_total 3.0" in metrics.render()[0].decode()
    await h.close()
    assert h.written == 9 and h.dropped == 4
    assert "router_decision_history_dropped_total 4.0" in metrics.render()[0].decode()


async def test_a_graceful_close_writes_every_queued_line(store):  # noqa: F811
    ledger = store()
    h = DecisionHistory(ledger, retention_s=86400, flush_interval_s=30.0, batch_size=64)
    h.start()
    now = time.time()
    offered = [line(i, now + i / 1000) for i in range(1000)]
    for x in offered:
        h.offer(x)
    await h.close()  # at once: no flush interval has passed
    assert (h.written, h.dropped, h.pending) == (1000, 0, 0)
    stored = []
    cursor = None
    while True:
        page, cursor = await ledger.query_decisions(limit=1000, cursor=cursor)
        stored += page
        if cursor is None:
            break
    assert sorted(x["decision_id"] for x in stored) == sorted(x["decision_id"] for x in offered)
    assert stored[0] == max(offered, key=lambda x: x["ts"])  # the line itself, round-tripped
