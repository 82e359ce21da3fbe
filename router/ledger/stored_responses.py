"""Stored Responses (``store: true`` on ``POST /v1/responses``) in the ledger's store.

One record per response the router answered: its id (minted by the router, so the id a
client holds is the key), the owning team, the request's own input items (wire form,
without what ``previous_response_id`` prepended: a chain is walked record by record,
so a long conversation is not stored quadratically), the id of the response it
continued, the whole ``Response`` object the client got (output items, usage, model,
created_at), and the session and decision it belongs to. Every replica reads and writes
the same records, so ``previous_response_id`` and ``GET /v1/responses/{id}`` work
whichever replica takes the request.

Bounded: a record lives ``expires_at`` (the router's or the team's retention; SQLite: a
row past it reads as absent and expired rows are purged by a write at most a minute later; Redis: the
key's TTL), and the serving layer refuses to store one past its byte cap
(router/serving/stored.py).

  SQLite   responses            one row per response, ``expires_at`` indexed
  Redis    {p}response:{id}     the record as JSON                     EX retention
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

from router.jsonio import dumps, loads

T = TypeVar("T")

PURGE_EVERY_S = 60.0  # SQLite: how often a write also deletes the expired rows

RESPONSES_SQL = """
CREATE TABLE IF NOT EXISTS responses (
    id          TEXT PRIMARY KEY,
    team        TEXT NOT NULL,
    created_at  REAL NOT NULL,
    expires_at  REAL NOT NULL,
    record      TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS responses_expiry ON responses (expires_at);
"""


@dataclass(slots=True)
class StoredResponse:
    """One stored response (see the module docstring)."""

    id: str
    team: str
    created_at: float
    expires_at: float
    response: dict[str, Any]  # the Response object as the client got it
    input: list[dict[str, Any]] = field(default_factory=list)  # this request's own items
    previous_response_id: str | None = None
    session: str | None = None
    decision_id: str | None = None

    def to_json(self) -> str:
        # orjson over a shallow dict: ``asdict`` deep-copies the response first, and the
        # stdlib encoder is several times slower (profiled on the Responses front).
        return dumps({name: getattr(self, name) for name in self.__slots__}).decode()

    @classmethod
    def from_json(cls, text: str) -> StoredResponse:
        return cls(**loads(text))


class SqliteResponses:
    """Stored-response methods of :class:`router.ledger.SqliteLedger`."""

    _responses_purge_at: float = 0.0  # when the next write also purges expired rows

    async def _write(self, fn: Callable[[], T]) -> T:
        raise NotImplementedError  # the ledger's group commit

    @property
    def _db(self) -> sqlite3.Connection:
        raise NotImplementedError  # the ledger's

    async def off_loop(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError  # implemented by the ledger

    async def put_response(self, stored: StoredResponse, text: str | None = None) -> None:
        """Store ``stored`` (``text``: its JSON when the caller has it already)."""
        body = text if text is not None else stored.to_json()

        now = time.time()
        purge = now >= self._responses_purge_at

        def write() -> None:
            # In the ledger's group-commit transaction (with the settles of the same
            # event-loop turn); expired rows are purged once a minute, not per write.
            db = self._db
            if purge:
                db.execute("DELETE FROM responses WHERE expires_at < ?", (now,))
            db.execute(
                "INSERT OR REPLACE INTO responses (id, team, created_at, expires_at, record)"
                " VALUES (?, ?, ?, ?, ?)",
                (stored.id, stored.team, stored.created_at, stored.expires_at, body),
            )

        if purge:
            self._responses_purge_at = now + PURGE_EVERY_S
        await self._write(write)

    async def get_response(self, response_id: str, *, now: float) -> StoredResponse | None:
        def read(db: sqlite3.Connection) -> StoredResponse | None:
            row = db.execute(
                "SELECT record FROM responses WHERE id = ? AND expires_at >= ?",
                (response_id, now),
            ).fetchone()
            return None if row is None else StoredResponse.from_json(row[0])

        return await self.off_loop(read)

    async def delete_response(self, response_id: str, team: str) -> bool:
        def delete(db: sqlite3.Connection) -> bool:
            cur = db.execute("DELETE FROM responses WHERE id = ? AND team = ?", (response_id, team))
            return cur.rowcount > 0

        return await self.off_loop(delete)


class RedisResponses:
    """Stored-response methods of :class:`router.ledger.RedisLedger`."""

    prefix: str

    async def redis_call(self, coro: Any) -> Any:
        raise NotImplementedError  # implemented by the ledger

    @property
    def redis_client(self) -> Any:
        raise NotImplementedError

    def _response_key(self, response_id: str) -> str:
        return f"{self.prefix}response:{quote(response_id, safe='')}"

    async def put_response(self, stored: StoredResponse, text: str | None = None) -> None:
        ttl = max(1, math.ceil(stored.expires_at - time.time()))
        body = text if text is not None else stored.to_json()
        await self.redis_call(self.redis_client.set(self._response_key(stored.id), body, ex=ttl))

    async def get_response(self, response_id: str, *, now: float) -> StoredResponse | None:
        text = await self.redis_call(self.redis_client.get(self._response_key(response_id)))
        if text is None:
            return None
        stored = StoredResponse.from_json(text)
        return stored if stored.expires_at >= now else None

    async def delete_response(self, response_id: str, team: str) -> bool:
        stored = await self.get_response(response_id, now=0.0)
        if stored is None or stored.team != team:
            return False
        return bool(await self.redis_call(self.redis_client.delete(self._response_key(stored.id))))
