"""The SQLite ledger's decision history: the ``decisions`` table (router/ledger/sqlite_schema.py).

Every call runs on the ledger's own thread and connection, never inline on the event
loop like the budget calls: a batch of history rows or a page of the admin API is work
the requests must not wait behind. Each batch is one short transaction, so a reserve on
the inline connection waits at most that long for the write lock.

The stats read (``_stat_rows``, up to ``MAX_STATS_DECISIONS`` rows) is the exception: it
runs on a read-only connection of its own in a worker thread, so it holds up neither
the event loop nor the ledger thread, which keeps writing the history meanwhile (in WAL
mode a reader does not block the writer). SQLite extracts the few fields a summary
needs (``STAT_COLUMNS``) in C, without the GIL; no line is parsed in Python.
"""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from router.ledger.base import LedgerError
from router.ledger.history import (
    DecisionQuery,
    StatRow,
    StoredLine,
    bad_cursor,
    decode_cursor,
    encode_cursor,
    stored_line,
)
from router.ledger.sqlite_schema import transaction

T = TypeVar("T")

_INSERT = (
    "INSERT OR IGNORE INTO decisions (id, ts, team, model, status, line) VALUES (?, ?, ?, ?, ?, ?)"
)


def insert_decisions(db: sqlite3.Connection, rows: list[StoredLine]) -> None:
    """One short write transaction (a reserve on another connection waits that long)."""
    with transaction(db, "IMMEDIATE"):
        db.executemany(_INSERT, rows)


class SqliteDecisionSink:
    """Stores decisions from the decision history's own thread (never the event loop's),
    on a connection of its own; a ``:memory:`` ledger has one connection only, so there
    the rows go through the ledger thread. Raises LedgerError."""

    def __init__(self, ledger: SqliteDecisions) -> None:
        self._ledger = ledger
        self._db: sqlite3.Connection | None = None

    def write(self, rows: list[StoredLine]) -> None:
        ledger = self._ledger
        if ledger._closed:
            raise LedgerError("the ledger is closed")
        try:
            if ledger.path == ":memory:":
                ledger.on_ledger_thread(lambda db: insert_decisions(db, rows))
                return
            if self._db is None:
                self._db = sqlite3.connect(
                    ledger.path, timeout=ledger.busy_timeout_s, isolation_level=None,
                    check_same_thread=False,
                )  # fmt: skip
                self._db.execute("PRAGMA synchronous=NORMAL")
            insert_decisions(self._db, rows)
        except (sqlite3.Error, RuntimeError) as exc:  # RuntimeError: its thread has stopped
            raise LedgerError(f"SQLite ledger {ledger.path}: {exc}") from exc

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def _status_sql(wanted: str | int | None) -> tuple[str, list[Any]]:
    if wanted is None or wanted == "":
        return "", []
    if wanted == "ok":
        return "status < 400", []
    if wanted == "error":
        return "status >= 400", []
    return "status = ?", [int(wanted)]


def _page_cursor(cursor: str) -> tuple[float, str]:
    """A page cursor's (ts, id): ts a finite Unix time >= 0, id not empty."""
    ts_text, did = decode_cursor(cursor, 2)
    try:
        ts = float(ts_text)
    except ValueError:
        raise bad_cursor("its time is not a number") from None
    if not math.isfinite(ts) or ts < 0:
        raise bad_cursor("its time is not a Unix time")
    if not did:
        raise bad_cursor("no decision id")
    return ts, did


# history.stat_row's rules in SQL (tests hold the two equal). The status column is
# ``status or 0``; an ``attempts`` absent from the line counts as 1, a null as 0.
STAT_COLUMNS = """ts, team, model, status >= 400,
    coalesce(json_extract(line, '$.cost_usd'), 0.0),
    coalesce(json_array_length(line, '$.fallbacks'), 0),
    json_extract(line, '$.scoring_ms'),
    json_extract(line, '$.upstream_ms'),
    json_extract(line, '$.overhead_ms'),
    CASE WHEN json_type(line, '$.attempts') IS NULL THEN 1
         ELSE coalesce(json_extract(line, '$.attempts'), 0) END,
    coalesce(json_extract(line, '$.cache_saved_usd'), 0.0),
    json_extract(line, '$.session.id'),
    json_extract(line, '$.served_by') IS NOT NULL
        AND json_extract(line, '$.session.previous_model') IS NOT NULL
        AND NOT coalesce(json_extract(line, '$.session.kept'), 0),
    (SELECT coalesce(sum(max(0.0, json_extract(c.value, '$.uncached_cost_usd')
                              - coalesce(json_extract(c.value, '$.expected_cost_usd'), 0.0))), 0.0)
     FROM json_each(line, '$.candidates') AS c
     WHERE json_extract(c.value, '$.model') = json_extract(line, '$.served_by')
       AND json_extract(c.value, '$.uncached_cost_usd') IS NOT NULL)"""


def _stat_row(r: tuple[Any, ...]) -> StatRow:
    ts, team, model, error, cost, fallbacks, scoring, upstream, overhead, attempts, saved = r[:11]
    session, switched, session_saved = r[11:]
    return StatRow(
        ts=ts,
        team=team,
        model=model,
        error=bool(error),
        cost_usd=float(cost),
        fallbacks=int(fallbacks),
        scoring_ms=float(scoring) if scoring else None,
        upstream_ms=None if upstream is None or not attempts else float(upstream),
        overhead_ms=None if overhead is None else float(overhead),
        cache_saved_usd=float(saved),
        session=None if not session else str(session),
        switched=bool(switched) and bool(session),
        session_saved_usd=float(session_saved) if session else 0.0,
    )


def _since_team(since: float | None, team: str | None) -> tuple[str, list[Any]]:
    where, args = [], []
    if since is not None:
        where.append("ts >= ?")
        args.append(since)
    if team is not None:
        where.append("team = ?")
        args.append(team)
    return (" WHERE " + " AND ".join(where) if where else ""), args


class SqliteDecisions:
    """Decision-history methods of :class:`router.ledger.SqliteLedger`."""

    path: str
    _closed: bool
    busy_timeout_s: float

    def on_ledger_thread(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` on the ledger thread, from any other thread (blocking)."""
        raise NotImplementedError

    def decision_sink(self) -> SqliteDecisionSink:
        """A writer for one thread of the caller's (the decision history's)."""
        return SqliteDecisionSink(self)

    async def off_loop(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the ledger thread; implemented by the ledger."""
        raise NotImplementedError

    async def read_aside(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` on a read-only connection of its own, in a worker thread:
        for long reads, which must hold up neither the event loop nor the ledger thread.
        (``:memory:`` has one connection only: the ledger thread's.)"""
        if self.path == ":memory:":
            return await self.off_loop(fn)
        if self._closed:
            raise LedgerError("the ledger is closed")
        uri = f"{Path(self.path).absolute().as_uri()}?mode=ro"

        def run() -> T:
            db = sqlite3.connect(uri, uri=True, timeout=30.0)
            try:
                return fn(db)
            finally:
                db.close()

        try:
            return await asyncio.to_thread(run)
        except sqlite3.Error as exc:
            raise LedgerError(f"SQLite ledger {self.path}: {exc}") from exc

    async def record_decisions(self, lines: list[dict[str, Any]]) -> None:
        if not lines:
            return

        def write(db: sqlite3.Connection) -> None:
            # Serialised here, on the ledger thread, not on the event loop.
            insert_decisions(db, [stored_line(line) for line in lines])

        await self.off_loop(write)

    async def _query_decisions(self, q: DecisionQuery) -> tuple[list[dict[str, Any]], str | None]:
        team, model, since, limit, cursor = q.team, q.model, q.since, q.limit, q.cursor
        where, args = [], []
        for column, value in (("team", team), ("model", model)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        clause, extra = _status_sql(q.status)
        if clause:
            where.append(clause)
            args += extra
        if since is not None:
            where.append("ts >= ?")
            args.append(since)
        if cursor:
            ts, did = _page_cursor(cursor)
            where.append("(ts < ? OR (ts = ? AND id < ?))")
            args += [ts, ts, did]
        sql = "SELECT id, ts, line FROM decisions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY ts DESC, id DESC LIMIT ?"
        args.append(limit + 1)
        rows = await self.off_loop(lambda db: db.execute(sql, args).fetchall())
        page = rows[:limit]
        nxt = encode_cursor(repr(page[-1][1]), page[-1][0]) if len(rows) > limit else None
        return [json.loads(r[2]) for r in page], nxt

    async def get_decision(self, decision_id: str) -> dict[str, Any] | None:
        row = await self.off_loop(
            lambda db: db.execute(
                "SELECT line FROM decisions WHERE id = ?", (decision_id,)
            ).fetchone()
        )
        return None if row is None else json.loads(row[0])

    async def decisions_since(self, since: float | None, team: str | None) -> list[dict[str, Any]]:
        where, args = _since_team(since, team)
        sql = f"SELECT line FROM decisions{where} ORDER BY ts, id"
        rows = await self.off_loop(lambda db: db.execute(sql, args).fetchall())
        return [json.loads(r[0]) for r in rows]

    async def _stat_rows(self, since: float | None, team: str | None, limit: int) -> list[StatRow]:
        where, args = _since_team(since, team)
        sql = f"SELECT {STAT_COLUMNS} FROM decisions{where} ORDER BY ts DESC, id DESC LIMIT ?"
        args.append(limit)
        return await self.read_aside(
            lambda db: [_stat_row(r) for r in db.execute(sql, args).fetchall()]
        )

    async def purge_decisions(self, before_ts: float) -> int:
        def purge(db: sqlite3.Connection) -> int:
            return db.execute("DELETE FROM decisions WHERE ts < ?", (before_ts,)).rowcount

        return await self.off_loop(purge)
