"""The SQLite ledger's decision history: the ``decisions`` table (router/ledger/sqlite_schema.py).

Every call runs on the ledger's own thread and connection, never inline on the event
loop like the budget calls: a batch of history rows or a page of the admin API is work
the requests must not wait behind. Each batch is one short transaction, so a reserve on
the inline connection waits at most that long for the write lock.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from router.ledger.history import (
    DecisionQuery,
    bad_cursor,
    decode_cursor,
    encode_cursor,
    line_model,
    line_ts,
)
from router.ledger.sqlite_schema import transaction

T = TypeVar("T")


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


class SqliteDecisions:
    """Decision-history methods of :class:`router.ledger.SqliteLedger`."""

    async def off_loop(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the ledger thread; implemented by the ledger."""
        raise NotImplementedError

    async def record_decisions(self, lines: list[dict[str, Any]]) -> None:
        if not lines:
            return

        def write(db: sqlite3.Connection) -> None:
            # Serialised here, on the ledger thread, not on the event loop.
            rows = [
                (
                    str(line["decision_id"]),
                    line_ts(line),
                    line.get("team"),
                    line_model(line),
                    int(line.get("status") or 0),
                    json.dumps(line, separators=(",", ":"), ensure_ascii=False),
                )
                for line in lines
            ]
            with transaction(db, "IMMEDIATE"):
                db.executemany(
                    "INSERT OR IGNORE INTO decisions (id, ts, team, model, status, line)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )

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
        where, args = [], []
        if since is not None:
            where.append("ts >= ?")
            args.append(since)
        if team is not None:
            where.append("team = ?")
            args.append(team)
        sql = "SELECT line FROM decisions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY ts, id"
        rows = await self.off_loop(lambda db: db.execute(sql, args).fetchall())
        return [json.loads(r[0]) for r in rows]

    async def purge_decisions(self, before_ts: float) -> int:
        def purge(db: sqlite3.Connection) -> int:
            return db.execute("DELETE FROM decisions WHERE ts < ?", (before_ts,)).rowcount

        return await self.off_loop(purge)
