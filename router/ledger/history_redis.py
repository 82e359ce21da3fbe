"""The Redis ledger's decision history.

Keys (under the ledger's prefix), each bounded:

  {p}decisions       STREAM  one entry per decision: id, ts, team, model, status, line
                             (XADD MAXLEN ~ stream_maxlen; XTRIM MINID at purge)
  {p}decision:{id}   STR     the line, for GET /v1/admin/decisions/{id}
                             (EX decision_retention_s)

A page is read newest first with XREVRANGE from the cursor (an exclusive stream id) and
filtered here; the stream id is the time Redis took the entry, a little after the
decision's ``ts``, so ``since`` bounds the range with ``SINCE_SLACK_S`` to spare (for
clocks that differ between hosts) and the exact ``ts`` filter is applied to each entry.

A cursor is a stream id (``<ms>-<seq>``, each below 2**64) checked before it reaches
Redis: a forged one is a 400 naming ``cursor``, not a Redis error. The stats read
(``_stat_rows``) takes the newest entries chunk by chunk, then parses their lines in a
worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from typing import Any
from urllib.parse import quote

from router.ledger.base import LedgerError
from router.ledger.history import (
    DecisionQuery,
    StatRow,
    StoredLine,
    bad_cursor,
    decode_cursor,
    encode_cursor,
    stat_row,
    status_matches,
    stored_line,
)

SINCE_SLACK_S = 300.0
SCAN_CHUNK = 500  # entries read per XREVRANGE while filling a page
_STREAM_ID = re.compile(r"^([0-9]{1,20})-([0-9]{1,20})$")


def _page_cursor(cursor: str) -> str:
    """A page cursor's stream id, checked as Redis would (each part below 2**64)."""
    (sid,) = decode_cursor(cursor, 1)
    m = _STREAM_ID.match(sid)
    if m is None or any(int(part) >= 2**64 for part in m.groups()):
        raise bad_cursor("not a stream id")
    return sid


def _entry(row: StoredLine) -> dict[str, str]:
    return {
        "id": row.decision_id,
        "ts": repr(row.ts),
        "team": row.team or "",
        "model": row.model or "",
        "status": str(row.status),
        "line": row.text,
    }


class RedisDecisionSink:
    """Stores decisions from the decision history's own thread (never the event loop's),
    with a synchronous client of its own. Raises LedgerError."""

    def __init__(self, ledger: RedisDecisions, client: Any) -> None:
        self._ledger = ledger
        self._client = client

    def write(self, rows: list[StoredLine]) -> None:
        import redis

        d = self._ledger
        ttl = max(1, math.ceil(d.decision_retention_s))
        try:
            pipe = self._client.pipeline(transaction=False)
            for row in rows:
                # SET NX: a replayed batch neither duplicates nor re-adds to the stream.
                pipe.set(d._key(row.decision_id), row.text, ex=ttl, nx=True)
            fresh = pipe.execute()
            pipe = self._client.pipeline(transaction=False)
            for row, new in zip(rows, fresh, strict=True):
                if new:
                    pipe.xadd(d._stream(), _entry(row), maxlen=d.stream_maxlen, approximate=True)
            pipe.execute()
        except redis.RedisError as exc:
            raise LedgerError(f"Redis ledger {d.url}: {exc}") from exc

    def close(self) -> None:
        self._client.close()


class RedisDecisions:
    """Decision-history methods of :class:`router.ledger.RedisLedger`."""

    prefix: str
    url: str
    stream_maxlen: int
    decision_retention_s: float

    def sync_client(self) -> Any:
        """A new synchronous client of the same server; implemented by the ledger."""
        raise NotImplementedError

    def decision_sink(self) -> RedisDecisionSink:
        """A writer for one thread of the caller's (the decision history's)."""
        return RedisDecisionSink(self, self.sync_client())

    async def redis_call(self, coro: Any) -> Any:
        """Await ``coro``, mapping Redis errors to LedgerError; implemented by the ledger."""
        raise NotImplementedError

    @property
    def redis_client(self) -> Any:
        raise NotImplementedError

    def _stream(self) -> str:
        return f"{self.prefix}decisions"

    def _key(self, decision_id: str) -> str:
        return f"{self.prefix}decision:{quote(decision_id, safe='')}"

    async def record_decisions(self, lines: list[dict[str, Any]]) -> None:
        if not lines:
            return
        ttl = max(1, math.ceil(self.decision_retention_s))
        entries = [_entry(stored_line(line)) for line in lines]
        pipe = self.redis_client.pipeline(transaction=False)
        for e in entries:
            # SET NX: a replayed batch neither duplicates nor re-adds to the stream.
            pipe.set(self._key(e["id"]), e["line"], ex=ttl, nx=True)
        fresh = await self.redis_call(pipe.execute())
        pipe = self.redis_client.pipeline(transaction=False)
        for e, new in zip(entries, fresh, strict=True):
            if new:
                pipe.xadd(self._stream(), e, maxlen=self.stream_maxlen, approximate=True)
        await self.redis_call(pipe.execute())

    async def _scan(
        self, since: float | None, cursor: str | None, want: int, keep: Any
    ) -> tuple[list[tuple[str, dict[str, str]]], bool]:
        """Entries newest first from ``cursor`` that ``keep(fields)``, up to ``want``;
        and whether more may follow."""
        top = f"({cursor}" if cursor else "+"
        low = "-" if since is None else f"{max(0, int((since - SINCE_SLACK_S) * 1000))}-0"
        out: list[tuple[str, dict[str, str]]] = []
        while len(out) < want:
            chunk = await self.redis_call(
                self.redis_client.xrevrange(self._stream(), top, low, count=SCAN_CHUNK)
            )
            for sid, fields in chunk:
                if since is not None and float(fields["ts"]) < since:
                    continue
                if keep(fields):
                    out.append((sid, fields))
                    if len(out) == want:
                        return out, True
            if len(chunk) < SCAN_CHUNK:
                return out, False
            top = f"({chunk[-1][0]}"
        return out, True

    async def _query_decisions(self, q: DecisionQuery) -> tuple[list[dict[str, Any]], str | None]:
        team, model, since, limit, cursor = q.team, q.model, q.since, q.limit, q.cursor
        wanted = q.status
        start = _page_cursor(cursor) if cursor else None

        def keep(f: dict[str, str]) -> bool:
            return (
                (team is None or f["team"] == team)
                and (model is None or f["model"] == model)
                and status_matches(int(f["status"]), wanted)
            )

        rows, more = await self._scan(since, start, limit + 1, keep)
        page = rows[:limit]
        nxt = encode_cursor(page[-1][0]) if more and len(rows) > limit else None
        return [json.loads(f["line"]) for _, f in page], nxt

    async def get_decision(self, decision_id: str) -> dict[str, Any] | None:
        text = await self.redis_call(self.redis_client.get(self._key(decision_id)))
        return None if text is None else json.loads(text)

    async def decisions_since(self, since: float | None, team: str | None) -> list[dict[str, Any]]:
        rows, _ = await self._scan(
            since, None, math.inf, lambda f: team is None or f["team"] == team
        )  # type: ignore[arg-type]
        lines = [json.loads(f["line"]) for _, f in rows]
        lines.reverse()
        return lines

    async def _stat_rows(self, since: float | None, team: str | None, limit: int) -> list[StatRow]:
        entries, _ = await self._scan(
            since, None, limit, lambda f: team is None or f["team"] == team
        )
        return await asyncio.to_thread(
            lambda: [stat_row(json.loads(f["line"])) for _, f in entries]
        )

    async def purge_decisions(self, before_ts: float) -> int:
        minid = f"{max(0, int(before_ts * 1000))}-0"
        return int(await self.redis_call(self.redis_client.xtrim(self._stream(), minid=minid)))
