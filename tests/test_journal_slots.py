"""Router processes that start together and die together, for real: real processes racing
on the journal slots and on a fresh SQLite ledger, and a real router killed with
``kill -9`` while the ledger is locked, whose journal a live router adopts."""

from __future__ import annotations

import sqlite3
import textwrap

from conftest import run_processes

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
