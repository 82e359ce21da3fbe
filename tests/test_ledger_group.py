"""Group commit (router/ledger/group.py): the writes of one event-loop turn committed as
one SQLite transaction / one Redis pipeline, each caller with its own outcome.

Against a real SQLite file and the real Redis at 127.0.0.1:6379 (``store`` from
test_ledger.py); failures are real too: another connection holding the SQLite write lock,
a private redis-server killed under the ledger.
"""

from __future__ import annotations

import asyncio
import sqlite3
import textwrap

import pytest
from conftest import run_processes
from test_ledger import T0, P, needs_redis, store  # noqa: F401 - store is a fixture

from router.ledger import (
    LedgerError,
    Reservation,
    SettlementJournal,
    SqliteLedger,
    Usage,
    create_ledger,
)


async def hold(ledger, amount: float, *, limit: float | None = 1.0, ref: str = "") -> Reservation:
    return await ledger.reserve(
        "t", amount, limit_usd=limit, period_key=P, ttl_s=600, now=T0, ref=ref
    )


async def test_a_reserve_refused_for_budget_is_refused_alone_in_its_batch(store):  # noqa: F811
    ledger = store()
    await hold(ledger, 0.0)  # the Redis epoch is adopted before the batch
    before = (ledger._group.batches, ledger._group.ops)
    amounts = [0.2, 0.9, 0.3, 0.1, 0.45]  # in this order: 0.9 and then 0.45 do not fit
    got = await asyncio.gather(
        *(hold(ledger, a, ref=f"d{i}") for i, a in enumerate(amounts)), return_exceptions=True
    )
    # One batch held all five ...
    assert (ledger._group.batches, ledger._group.ops) == (before[0] + 1, before[1] + 5)
    # ... and each learned its own outcome.
    assert [type(x).__name__ for x in got] == [
        "Reservation", "InsufficientBudget", "Reservation", "Reservation", "InsufficientBudget",
    ]  # fmt: skip
    assert got[1].usage.reserved_usd == pytest.approx(0.2)  # what it saw: the writes before it
    assert got[4].usage.reserved_usd == pytest.approx(0.6)
    assert (await ledger.usage("t", P, now=T0)).reserved_usd == pytest.approx(0.6)
    # Settles and releases batch the same way; a repeated settle in the batch charges nothing.
    ok = [x for x in got if isinstance(x, Reservation)]
    await asyncio.gather(
        ledger.settle(ok[0], 0.15, now=T0),
        ledger.settle(ok[0], 0.15, now=T0),
        ledger.settle(ok[1], 0.25, now=T0),
        ledger.release(ok[2]),
    )
    assert await ledger.usage("t", P, now=T0) == Usage(pytest.approx(0.4), 0.0)
    assert len(await ledger.spend_rows()) == 2


async def test_a_settle_whose_caller_is_cancelled_is_still_committed(store):  # noqa: F811
    """The provider has billed the answer: a settle queued for its batch reaches the ledger
    even if the request's task is cancelled while it waits."""
    ledger = store()
    r = await hold(ledger, 0.3, ref="d1")
    task = asyncio.create_task(ledger.settle(r, 0.25, now=T0))
    await asyncio.sleep(0)  # queued, not committed yet
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await ledger._group.drain()
    await asyncio.gather(*getattr(ledger, "_orphans", ()))  # Redis: the one left to it
    assert await ledger.usage("t", P, now=T0) == Usage(pytest.approx(0.25), 0.0)


async def test_sqlite_a_batch_that_cannot_commit_fails_each_caller_and_they_journal(tmp_path):
    """Another process holds the write lock past the busy timeout: every write in the
    batch fails with the ledger error (its own instance); a settler journals, as the
    serving layer does, and the replay charges each exactly once."""
    path = tmp_path / "ledger.db"
    ledger = SqliteLedger(path, busy_timeout_s=0.3)
    held = [await hold(ledger, 0.1, ref=f"s{i}") for i in range(3)]
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    journal = SettlementJournal(tmp_path / "j")
    try:
        got = await asyncio.gather(
            *(ledger.settle(r, 0.08, now=T0) for r in held),
            hold(ledger, 0.1, ref="new-1"),
            hold(ledger, 0.1, ref="new-2"),
            return_exceptions=True,
        )
        assert all(isinstance(x, LedgerError) for x in got), got
        assert "locked" in str(got[0]) and len({id(x) for x in got}) == len(got)
        for r in held:  # what Accounts.settle does with a LedgerError
            await journal.append(r, 0.08, now=T0)
        other.execute("ROLLBACK")
        assert await ledger.usage("t", P, now=T0) == Usage(0.0, pytest.approx(0.3))
        assert await journal.replay(ledger) == 3
        assert await journal.replay(ledger) == 0
        assert await ledger.usage("t", P, now=T0) == Usage(pytest.approx(0.24), 0.0)
        assert len(await ledger.spend_rows()) == 3
    finally:
        journal.close()
        other.close()
        await ledger.close()


@needs_redis
async def test_redis_a_pipeline_that_fails_fails_each_caller_with_the_ledger_error(
    private_redis, tmp_path
):
    ledger = create_ledger(f"{private_redis.url}?prefix=g:&socket_timeout=2")
    try:
        held = [await hold(ledger, 0.1, ref=f"s{i}") for i in range(3)]
        private_redis.kill()
        got = await asyncio.gather(
            *(ledger.settle(r, 0.08, now=T0) for r in held),
            hold(ledger, 0.1, ref="new-1"),
            return_exceptions=True,
        )
        assert all(isinstance(x, LedgerError) for x in got), got
        assert len({id(x) for x in got}) == len(got)
        assert ledger._group.ops - ledger._group.batches >= 3  # they went as one pipeline
    finally:
        await ledger.close()


_WORKER = textwrap.dedent(
    """
    import asyncio, os, sys
    from router.ledger import InsufficientBudget, create_ledger

    async def one(ledger, i):  # a ref of its own: a repeated ref would settle nothing
        try:
            r = await ledger.reserve("t", 0.01, limit_usd=1.0, period_key="p", ttl_s=600,
                                     now=1e9, ref=f"{os.getpid()}-{i}")
        except InsufficientBudget:
            return 0
        await ledger.settle(r, 0.01, now=1e9)
        return 1

    async def main(url):
        ledger = create_ledger(url)
        ok = 0
        for n in range(3):
            ok += sum(await asyncio.gather(*(one(ledger, n * 1000 + i) for i in range(50))))
        assert ledger._group.ops > 2 * ledger._group.batches, "no batches formed"
        await ledger.close()
        print(ok)

    asyncio.run(main(sys.argv[1]))
    """
)


def test_two_processes_batching_on_one_sqlite_file_never_overspend(tmp_path):
    """Each process commits its concurrent reserves and settles in batches; the batches
    of the two interleave on the file's write lock, and the limit holds exactly."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    counts = run_processes(_WORKER, url, 2)
    assert sum(counts) == 100  # 1.0 / 0.01: exactly the limit, whoever won the races
    with sqlite3.connect(tmp_path / "shared.db") as db:
        (spent,) = db.execute("SELECT SUM(amount) FROM spend").fetchone()
        (open_holds,) = db.execute(
            "SELECT COUNT(*) FROM reservations WHERE status = 'open'"
        ).fetchone()
    assert spent == pytest.approx(1.0) and open_holds == 0
