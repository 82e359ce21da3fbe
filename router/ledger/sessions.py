"""Session state in the ledger's store: what the last turn of a conversation was served by.

One record per session id (a digest made by router/serving/sessions.py; the store never
sees a client's own identifier): the model that served the last turn, when it settled,
that turn's prompt and output tokens, and how many turns the session has had. Every
replica reads and writes the same records, so a conversation keeps its model (or its
cache price) whichever replica takes the next turn.

Bounded twice: a record unseen for its team's ``session.ttl_s`` is gone (SQLite: a row
past ``expires_at`` reads as absent and is purged at the next write; Redis: the hash's
TTL), and at most ``SESSION_CAP`` records are kept (the oldest go first; SQLite counts
its rows only when a new session arrives, not on every turn).

  SQLite   sessions          one row per session, ``expires_at`` indexed
  Redis    {p}session:{id}   HASH model, at, prompt_tokens, output_tokens, turns,
                             expires_at                                     PX ttl_s
           {p}sessions       ZSET id -> expires_at (the cap's index, trimmed per write)

A turn is recorded with one statement / one Lua script, so ``turns`` counts every turn
once even when two replicas settle turns of one session at the same moment.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

# The most sessions the store keeps; beyond it the least recently seen are dropped.
SESSION_CAP = 100_000

SESSIONS_SQL = """
CREATE TABLE IF NOT EXISTS sessions (
    id             TEXT PRIMARY KEY,
    model          TEXT NOT NULL,
    at             REAL NOT NULL,
    prompt_tokens  INTEGER NOT NULL,
    output_tokens  INTEGER NOT NULL,
    turns          INTEGER NOT NULL,
    expires_at     REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sessions_expiry ON sessions (expires_at);
"""


@dataclass(frozen=True, slots=True)
class SessionState:
    """The last settled turn of a session."""

    model: str
    at: float  # Unix seconds the turn settled
    prompt_tokens: int
    output_tokens: int
    turns: int


def check_turn(model: str, prompt_tokens: int, output_tokens: int, ttl_s: float) -> None:
    if not model:
        raise ValueError("a session turn needs the model that served it")
    if prompt_tokens < 0 or output_tokens < 0:
        raise ValueError(f"token counts must be >= 0 (got {prompt_tokens}, {output_tokens})")
    if not ttl_s > 0:
        raise ValueError(f"ttl_s must be > 0 (got {ttl_s!r})")


class SqliteSessions:
    """Session methods of :class:`router.ledger.SqliteLedger`."""

    session_cap: int = SESSION_CAP

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        raise NotImplementedError  # the ledger's

    async def _write(self, fn: Callable[[], T]) -> T:
        raise NotImplementedError  # the ledger's group commit

    @property
    def _db(self) -> sqlite3.Connection:
        raise NotImplementedError  # the ledger's

    async def get_session(self, session_id: str, *, now: float) -> SessionState | None:
        def read() -> tuple[Any, ...] | None:
            return self._db.execute(
                "SELECT model, at, prompt_tokens, output_tokens, turns FROM sessions"
                " WHERE id = ? AND expires_at > ?",
                (session_id, now),
            ).fetchone()

        row = await self._run(read)
        return None if row is None else SessionState(*row)

    async def record_session_turn(
        self, session_id: str, *, model: str, prompt_tokens: int, output_tokens: int,
        now: float, ttl_s: float,
    ) -> SessionState:  # fmt: skip
        """Store this turn as the session's last one and count it; the new state."""
        check_turn(model, prompt_tokens, output_tokens, ttl_s)

        def write() -> tuple[Any, ...]:
            # Inside the ledger's group-commit transaction (with the settles of the same
            # event-loop turn): no commit of its own. An expired row restarts its count.
            db = self._db
            new = not db.execute("SELECT 1 FROM sessions WHERE id = ?", (session_id,)).fetchone()
            row = db.execute(
                "INSERT INTO sessions (id, model, at, prompt_tokens, output_tokens, turns,"
                " expires_at) VALUES (?, ?, ?, ?, ?, 1, ?)"
                " ON CONFLICT (id) DO UPDATE SET model = excluded.model, at = excluded.at,"
                " prompt_tokens = excluded.prompt_tokens,"
                " output_tokens = excluded.output_tokens,"
                " turns = CASE WHEN sessions.expires_at > excluded.at"
                " THEN sessions.turns + 1 ELSE 1 END,"
                " expires_at = excluded.expires_at"
                " RETURNING model, at, prompt_tokens, output_tokens, turns",
                (session_id, model, now, prompt_tokens, output_tokens, now + ttl_s),
            ).fetchone()
            if new:  # only a new session adds a row: expired ones and any over the cap go
                db.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))
                db.execute(
                    "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions"
                    " ORDER BY expires_at LIMIT max(0, (SELECT COUNT(*) FROM sessions) - ?))",
                    (self.session_cap,),
                )
            return row

        return SessionState(*await self._write(write))


# KEYS: session hash, index zset. ARGV: id, model, now, prompt, output, ttl_s, cap.
_RECORD_TURN = """
local now = tonumber(ARGV[3])
local ttl = tonumber(ARGV[6])
local live_until = tonumber(redis.call('HGET', KEYS[1], 'expires_at') or '0')
local turns = 1
if live_until > now then turns = tonumber(redis.call('HGET', KEYS[1], 'turns') or '0') + 1 end
redis.call('HSET', KEYS[1], 'model', ARGV[2], 'at', ARGV[3], 'prompt_tokens', ARGV[4],
           'output_tokens', ARGV[5], 'turns', turns,
           'expires_at', string.format('%.17g', now + ttl))
redis.call('PEXPIRE', KEYS[1], math.max(1, math.floor(ttl * 1000)))
redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[7])
if over > 0 then
  local gone = redis.call('ZPOPMIN', KEYS[2], over)
  for i = 1, #gone, 2 do redis.call('DEL', ARGV[8] .. gone[i]) end
end
return turns
"""


class RedisSessions:
    """Session methods of :class:`router.ledger.RedisLedger`."""

    prefix: str
    session_cap: int = SESSION_CAP

    @property
    def redis_client(self) -> Any:
        raise NotImplementedError  # the ledger's

    async def redis_call(self, coro: Any) -> Any:
        raise NotImplementedError  # the ledger's

    def _session_key(self, session_id: str) -> str:
        return f"{self.prefix}session:{session_id}"

    async def get_session(self, session_id: str, *, now: float) -> SessionState | None:
        # Expired by the caller's clock (like SQLite), and by the hash's TTL for good.
        h = await self.redis_call(self.redis_client.hgetall(self._session_key(session_id)))
        if not h or "model" not in h or float(h.get("expires_at", "inf")) <= now:
            return None
        return SessionState(
            h["model"],
            float(h["at"]),
            int(h["prompt_tokens"]),
            int(h["output_tokens"]),
            int(h.get("turns", 1)),
        )

    async def record_session_turn(
        self, session_id: str, *, model: str, prompt_tokens: int, output_tokens: int,
        now: float, ttl_s: float,
    ) -> SessionState:  # fmt: skip
        check_turn(model, prompt_tokens, output_tokens, ttl_s)
        script = getattr(self, "_record_turn_lua", None)
        if script is None:
            script = self._record_turn_lua = self.redis_client.register_script(_RECORD_TURN)
        keys = [self._session_key(session_id), f"{self.prefix}sessions"]
        args = [session_id, model, repr(now), prompt_tokens, output_tokens, repr(ttl_s),
                self.session_cap, f"{self.prefix}session:"]  # fmt: skip
        turns = await self.redis_call(script(keys=keys, args=args))
        return SessionState(model, now, prompt_tokens, output_tokens, int(turns))
