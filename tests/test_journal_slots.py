"""Router processes that start together and die together, for real: real processes racing
on the journal slots and on a fresh SQLite ledger, and a real router killed with
``kill -9`` while the ledger is locked, whose journal a live router adopts."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import signal
import sqlite3
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from conftest import TEAM_KEY, RouterHandle, run_processes, write_config
from router_process import RouterProcess
from test_journal import _reservation
from test_ledger import T0, P
from test_trust import HELLO, MINI, spend_rows, wait_until, write_lock

from router.ledger import JournalEntry, SqliteLedger
from router.ledger.journal_slots import open_journal
from router.ledger.sqlite_schema import SCHEMA_VERSION

# Every process waits here until all ``n`` have started, so that they race for real.
_BARRIER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path

    def barrier(folder, name, n):
        Path(folder, f"{name}.{os.getpid()}").touch()
        deadline = time.monotonic() + 60
        while len(list(Path(folder).glob(f"{name}.*"))) < n:
            assert time.monotonic() < deadline, "the other processes never started"
            time.sleep(0.0005)
    """
)

_OPEN_LEDGERS = textwrap.dedent(
    """
    import threading
    from router.ledger import SqliteLedger

    folder, n, rounds, threads = sys.argv[1], {n}, {rounds}, {threads}
    failed, opened = [], []

    def open_one(path):
        try:
            opened.append(SqliteLedger(path))  # left open: the process exits soon
        except Exception as exc:
            failed.append(exc)
            print(repr(exc), file=sys.stderr)

    for r in range(rounds):
        barrier(folder, f"ready-{{r}}", n)  # then all open the same fresh file at once
        ts = [threading.Thread(target=open_one, args=(Path(folder, f"db{{r}}"),))
              for _ in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    print(len(failed))
    """
)


def test_a_fresh_sqlite_ledger_opened_200_times_at_once(tmp_path):
    """4 processes x 5 threads open each of 10 fresh files together: the WAL switch and
    the schema set-up race, and none may fail with "database is locked"."""
    code = _BARRIER + _OPEN_LEDGERS.format(n=4, rounds=10, threads=5)
    assert run_processes(code, str(tmp_path), 4) == [0, 0, 0, 0]
    for r in range(10):
        with sqlite3.connect(tmp_path / f"db{r}") as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


_CLAIM_SLOTS = textwrap.dedent(
    """
    import asyncio
    from router.ledger import Reservation, SqliteLedger
    from router.ledger.journal_slots import open_journal

    folder, n, starts = sys.argv[1], {n}, {starts}
    base = Path(folder, "router.journal")

    async def one_start(ledger, i):
        journal = open_journal(base)  # a worker starting up
        try:
            # Mine alone: a second owner of the slot finds the marker there.
            owner = os.open(f"{{journal.path}}.owner", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            try:
                # The files this process holds are the ones on disk, not unlinked ones.
                assert os.fstat(journal._fd).st_ino == os.stat(journal.path).st_ino
                lock = f"{{journal.path}}.lock"
                assert os.fstat(journal._lock_fd).st_ino == os.stat(lock).st_ino
                ref = f"dec-{{os.getpid()}}-{{i}}"
                r = Reservation(f"res-{{ref}}", "t", "p", 0.5, float("inf"), ref)
                await journal.append(r, 0.01, now=1e9)
                if i % 3 == 0:  # adopt the slots closed with entries, racing the claims
                    await journal.peers.adopt(ledger)
                if i % 4 == 0:
                    await journal.replay(ledger)
            finally:
                os.unlink(f"{{journal.path}}.owner")
                os.close(owner)
        finally:
            journal.close()  # entries left in the slot wait for an adopter

    async def main():
        barrier(folder, "ready", n)
        ledger = SqliteLedger(Path(folder, "ledger.db"))
        errors = 0
        for i in range(starts):
            try:
                await one_start(ledger, i)
            except Exception as exc:
                errors += 1
                print(repr(exc), file=sys.stderr)
        await ledger.close()
        print(errors)

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("n", [2, 4])
def test_processes_racing_for_journal_slots(tmp_path, n):
    """n processes claim a slot, append a settlement, adopt or replay, and let the slot
    go, 100 times each and all at once (2, then 4 processes: 600 starts): no start fails,
    no slot has two owners, nobody holds an unlinked file, and every settlement is either
    in the ledger or in a slot file, once."""
    starts = 100
    code = _BARRIER + _CLAIM_SLOTS.format(n=n, starts=starts)
    assert run_processes(code, str(tmp_path), n) == [0] * n
    with sqlite3.connect(tmp_path / "ledger.db") as conn:
        settled = [ref for (ref,) in conn.execute("SELECT ref FROM spend")]
    waiting = [
        json.loads(line)["ref"]
        for path in tmp_path.glob("router.journal*")
        if not path.name.endswith((".lock", ".tmp"))
        for line in path.read_bytes().splitlines()
    ]
    assert len(settled) + len(waiting) == len({*settled, *waiting}) == n * starts
    assert not list(tmp_path.glob("*.owner"))


async def test_each_slot_counts_once_until_it_leaves_its_file(tmp_path):
    """Two slots of one base: each journal counts the other's file as it grows (read
    incrementally), its own entries from memory only, a half-written line not at all,
    and an entry no more once a replay has taken it off the file."""
    base = tmp_path / "j.journal"
    mine, other = open_journal(base), open_journal(base)
    ledger = SqliteLedger(tmp_path / "ledger.db")
    try:
        assert (mine.path.name, other.path.name) == ("j.journal", "j.journal.1")
        await mine.append(_reservation(0), 0.25, now=T0)
        for i in range(1, 41):
            await other.append(_reservation(i), 0.01, now=T0)
            assert mine.pending_usd("t", P) == pytest.approx(0.25 + 0.01 * i)
        assert other.pending_usd("t", P) == pytest.approx(0.65)
        assert mine.pending_usd("t", "other-period") == 0.0
        assert await other.replay(ledger) == 40  # the ledger has them, then the file not
        assert mine.pending_usd("t", P) == other.pending_usd("t", P) == 0.25
        assert await ledger.total_spent() == pytest.approx(0.4)
        with open(other.path, "ab") as f:  # a line its writer has not finished
            f.write(_line(99)[:40])
        assert mine.pending_usd("t", P) == 0.25
        with open(other.path, "ab") as f:
            f.write(_line(99)[40:])
        assert mine.pending_usd("t", P) == pytest.approx(0.35)
        await other.append(_reservation(0), 0.25, now=T0)  # a ref both hold: counted once
        assert mine.pending_usd("t", P) == pytest.approx(0.35)
    finally:
        for j in (mine, other):
            j.close()
        await ledger.close()


def _line(i: int) -> bytes:
    r = _reservation(i)
    return JournalEntry(r.ref, r.team, r.period_key, r.id, r.amount_usd, 0.1, T0).to_line()


def test_a_killed_routers_journal_is_counted_then_adopted_by_a_live_one(
    tmp_path, tiny_checkpoint, fake, make_router, caplog
):
    """Routers A (a process of its own) and B share a SQLite ledger; another connection
    holds its write lock while both settle, so both journal, and both budgets count both
    journals. A is killed with ``kill -9``; B, which lives on, still counts A's journal
    and, once the lock is gone, replays it: every decision charged once, no restart."""
    db = tmp_path / "ledger.db"
    url = f"sqlite:///{db}?busy_timeout=0.2"
    asyncio.run(SqliteLedger(db).close())  # the schema in place before the routers start
    (tmp_path / "a").mkdir()
    providers, policies, env = write_config(tmp_path / "a", fake.base_url)
    a = RouterProcess(
        tmp_path / "a", checkpoint=tiny_checkpoint, providers=providers, policies=policies,
        env=env, ledger=url,
    )  # fmt: skip
    try:
        b = make_router(ledger=url)
        a.wait_ready()
        go = threading.Event()
        fake.behave(f"up-{MINI}", hold=go)
        body = {"model": MINI, "messages": HELLO}
        with ThreadPoolExecutor(6) as pool, caplog.at_level(logging.WARNING):
            answers = [
                pool.submit(httpx.post, f"{r.root}/v1/chat/completions", json=body,
                            headers={"authorization": f"Bearer {TEAM_KEY}"}, timeout=30)
                for r in (a, a, a, b, b, b)
            ]  # fmt: skip
            fake.wait_for_requests(6)  # all six reserved; none settled yet
            with write_lock(db):
                go.set()
                assert [f.result().status_code for f in answers] == [200] * 6
                wait_until(lambda: len(a.decisions()) == 3, "A to log its decisions")
                costs = {d["decision_id"]: d["cost_usd"] for r in (a, b) for d in r.decisions()}
                total = math.fsum(costs.values())
                assert len(costs) == 6 and total > 0 and spend_rows(db) == []
                for r in (a, b):  # each counts both journals, not its own alone
                    assert httpx.get(r.root + "/readyz").json()["journaled_settlements"] == 3
                    wait_until(
                        lambda r=r: budget_of(r) == pytest.approx((total, total)),
                        f"{r.root} to count both journals",
                    )
                a.proc.send_signal(signal.SIGKILL)
                assert a.wait_exit() == -signal.SIGKILL
                left = [p for p in tmp_path.glob("ledger.db.journal*") if p.stat().st_size]
                assert len(left) == 2  # A's journal and B's
                assert budget_of(b) == pytest.approx((total, total))  # A's still counts
            # The lock is gone: B drains its own journal and adopts A's.
            wait_until(lambda: len(spend_rows(db)) == 6, "B to replay both journals")
        assert dict(spend_rows(db)) == pytest.approx(costs, abs=1e-12)
        # The files are compacted after the ledger took their entries.
        wait_until(lambda: all(p.stat().st_size == 0 for p in left), "both journals to empty")
        assert "its process is gone; adopting 3 settlement(s)" in caplog.text
        assert budget_of(b) == pytest.approx((0.0, total))
    finally:
        a.stop()


def budget_of(r: RouterProcess | RouterHandle) -> tuple[float, float]:
    """(journaled, spent) USD of the team, as router ``r`` answers ``/v1/budget``."""
    got = httpx.get(r.root + "/v1/budget", headers={"authorization": f"Bearer {TEAM_KEY}"})
    return got.json()["journaled_usd"], got.json()["spent_usd"]
