"""The Redis ledger: one shared store for many router processes or hosts.

Every change is one Lua script, which Redis runs atomically, so ``reserve``'s check and
insert cannot interleave with another process's. The scripts of concurrent requests go
out together, one pipeline of EVALSHAs per batch (router/ledger/group.py): one round trip
for many, each script still atomic on its own and each result its caller's. Times come from the caller (``now``)
like in every ledger; only the retention of closed-reservation markers uses Redis's own
clock (``SET ... EX``). Needs the optional extra ``p2l-router[redis]``.

Keys, under a configurable prefix (``redis://host:6379/0?prefix=team-a:``), with the team
URL-quoted so that it holds no ``:``, and how each is bounded (nothing grows without end):

  {p}res:{team}:{period}     ZSET  reservation id -> expires_at     } EXPIRE at period end
  {p}resamt:{team}:{period}  HASH  reservation id -> amount         } + PERIOD_GRACE_S
  {p}spent:{team}:{period}   STR   settled spend of the period      } (none for ``total``)
  {p}total:{team}            STR   settled spend over all periods    one per team
  {p}teams                   SET   teams that ever spent             one member per team
  {p}closed:{id}             STR   "settled" | "released"            EX CLOSED_RETENTION_S
  {p}ref:{ref}               STR   reservation id settled under ref  EX CLOSED_RETENTION_S
  {p}spend                   STREAM one entry per settled request   XADD MAXLEN ~ stream_maxlen
  {p}rate:{team}:req|tok     STR   GCRA state (rate.py)              PX until the bucket is full
  {p}state:{key}             STR   JSON document                     one per team
  {p}tokens, {p}tokens:n     HASH  model -> EWMA, observations       one field per model
  {p}decisions, {p}decision:{id}     the decision history (router/ledger/history_redis.py)
  {p}response:{id}                   stored responses (router/ledger/stored_responses.py)  EX
  {p}epoch                   STR   the epoch sentinel (router/ledger/epoch.py)  one
  {p}session:{id}, {p}sessions       session state (router/ledger/sessions.py)  EX ttl_s, cap

Reserve, settle and usage refuse to run in a store that lost its memory (a Redis without
persistence that restarted, a FLUSHALL): their scripts start with ``epoch.GUARD``.

The spend stream is therefore the *recent* audit trail (``?stream_maxlen=N``, default
``STREAM_MAXLEN``); the running totals are the authority. A settle is idempotent by
reservation id (``closed:``) and by ref (``ref:``), both kept ``CLOSED_RETENTION_S`` (a
week), longer than any journal replay waits.

Floats cross the Lua boundary as strings (``%.17g``, which round-trips a double): Redis
truncates Lua numbers to integers in replies.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import router.ledger.rate as rate
from router.ledger.base import (
    CLOSED_RETENTION_S,
    EPSILON_USD,
    PERIOD_GRACE_S,
    InsufficientBudget,
    Ledger,
    LedgerError,
    LedgerLost,
    Reservation,
    Usage,
    redacted,
)
from router.ledger.epoch import GUARD, EpochGuard
from router.ledger.group import GroupCommit

if TYPE_CHECKING:
    from router.ledger.base import Observation
from router.ledger.history_redis import RedisDecisions
from router.ledger.sessions import RedisSessions
from router.ledger.stored_responses import RedisResponses

log = logging.getLogger("router.ledger")

DEFAULT_PREFIX = "p2l-router:"
MAX_CONNECTIONS = 64
STREAM_MAXLEN = 1_000_000  # ~ entries kept in the spend stream (about 200 bytes each)

# Drops expired holds (HDEL in chunks: unpack() has a stack limit), then checks and inserts.
_RESERVE = """
local now = tonumber(ARGV[4])
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  for i = 1, #expired, 1000 do
    redis.call('HDEL', KEYS[2], unpack(expired, i, math.min(i + 999, #expired)))
  end
end
local reserved = 0
for _, v in ipairs(redis.call('HVALS', KEYS[2])) do reserved = reserved + tonumber(v) end
local spent = tonumber(redis.call('GET', KEYS[3]) or '0')
local amount = tonumber(ARGV[2])
if ARGV[3] ~= '' and spent + reserved + amount > tonumber(ARGV[3]) + tonumber(ARGV[6]) then
  return {0, string.format('%.17g', spent), string.format('%.17g', reserved)}
end
redis.call('ZADD', KEYS[1], ARGV[5], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
if ARGV[7] ~= '' then
  for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[7]) end
end
return {1, string.format('%.17g', spent), string.format('%.17g', reserved)}
"""

# Settles unless this reservation or this ref was settled (a release does not block it),
# then, when a model is given (ARGV[12]), folds the output tokens into its EWMA, only if it
# charged: a replay learns nothing twice. Returns {charged, ewma or ''}.
_SETTLE = """
local charged = 1
redis.call('ZREM', KEYS[1], ARGV[1])  -- settled now or before: the hold goes either way
redis.call('HDEL', KEYS[2], ARGV[1])
if redis.call('GET', KEYS[6]) == 'settled'
   or (ARGV[4] ~= '' and redis.call('EXISTS', KEYS[7]) == 1) then
  charged = 0
else
  redis.call('INCRBYFLOAT', KEYS[3], ARGV[2])
  if ARGV[10] ~= '' then redis.call('EXPIRE', KEYS[3], ARGV[10]) end
  redis.call('INCRBYFLOAT', KEYS[4], ARGV[2])
  redis.call('SADD', KEYS[5], ARGV[8])
  redis.call('SET', KEYS[6], 'settled', 'EX', ARGV[9])
  if ARGV[4] ~= '' then redis.call('SET', KEYS[7], ARGV[1], 'EX', ARGV[9]) end
  redis.call('XADD', KEYS[8], 'MAXLEN', '~', ARGV[11], '*', 'reservation_id', ARGV[1],
             'team', ARGV[5], 'period_key', ARGV[6], 'amount', ARGV[2], 'reserved', ARGV[7],
             'ref', ARGV[4], 'ts', ARGV[3])
end
if ARGV[12] == '' then return {charged, ''} end
local prev = redis.call('HGET', KEYS[9], ARGV[12])
local tokens = tonumber(ARGV[13])
if charged == 0 and prev then return {0, prev} end
local start = prev or ARGV[15]
local v = tokens
if start and start ~= '' then v = (1 - tonumber(ARGV[14])) * tonumber(start) + tonumber(ARGV[14]) * tokens end
local s = string.format('%.17g', v)
if charged == 1 then
  redis.call('HSET', KEYS[9], ARGV[12], s)
  redis.call('HINCRBY', KEYS[10], ARGV[12], 1)
end
return {charged, s}
"""

_RELEASE = """
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('SET', KEYS[3], 'released', 'EX', ARGV[2])
return 1
"""

_USAGE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf')
local reserved = 0
for i = 1, #ids, 1000 do
  local chunk = redis.call('HMGET', KEYS[2], unpack(ids, i, math.min(i + 999, #ids)))
  for _, v in ipairs(chunk) do if v then reserved = reserved + tonumber(v) end end
end
local spent = tonumber(redis.call('GET', KEYS[3]) or '0')
return {string.format('%.17g', spent), string.format('%.17g', reserved)}
"""

_EWMA = """
local prev = redis.call('HGET', KEYS[1], ARGV[1])
local tokens = tonumber(ARGV[2])
local alpha = tonumber(ARGV[3])
local start = prev or ARGV[4]
local v = tokens
if start and start ~= '' then v = (1 - alpha) * tonumber(start) + alpha * tokens end
local s = string.format('%.17g', v)
redis.call('HSET', KEYS[1], ARGV[1], s)
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
return s
"""


def _copy(exc: LedgerError | None) -> LedgerError:
    """One exception object per caller (each raise writes its own traceback)."""
    assert exc is not None
    if isinstance(exc, LedgerLost):
        return LedgerLost(str(exc), reason=exc.reason)
    out = LedgerError(str(exc))
    out.__cause__ = exc.__cause__
    return out


def _import_redis() -> Any:
    try:
        import redis.asyncio as aioredis
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise LedgerError(
            "the Redis ledger needs the redis package: pip install 'p2l-router[redis]'"
        ) from exc
    return aioredis


def _import_redis_exceptions() -> Any:
    import redis.exceptions

    return redis.exceptions


def _num(x: float) -> str:
    return repr(float(x))


def period_ttl(period_ends_at: float, now: float) -> str:
    """Seconds the period's keys live: to the period end plus the grace ('' = for good)."""
    if math.isinf(period_ends_at):
        return ""
    return str(math.ceil(max(period_ends_at - now, 0.0) + PERIOD_GRACE_S))


def _learn_args(learn: Observation) -> list[str]:
    prior = "" if learn.prior is None else _num(learn.prior)
    return [learn.model, _num(learn.tokens), _num(learn.alpha), prior]


def split_options(url: str) -> tuple[str, dict[str, str]]:
    """Remove our own query parameters (``prefix``, ``stream_maxlen``) from a Redis URL."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {k: v for k, v in query if k in OUR_OPTIONS}
    rest = urlencode([(k, v) for k, v in query if k not in OUR_OPTIONS])
    return urlunsplit(parts._replace(query=rest)), ours


OUR_OPTIONS = ("prefix", "stream_maxlen")


@dataclass(frozen=True)
class _Script:
    """A money script waiting for its pipeline; ``guarded``: it starts with ``GUARD``."""

    script: Any
    keys: list[str]
    args: list[Any]
    guarded: bool


# The outcome of an operation that must run again on its own, through the script object
# (NOSCRIPT: the server had not loaded it) or the epoch guard (it refused: the store may
# have lost its memory). Either way the script did nothing, so running it again is safe.
_ALONE = object()


class RedisLedger(RedisSessions, RedisResponses, RedisDecisions, Ledger):
    """Ledger in Redis; ``client`` is a ``redis.asyncio.Redis`` with ``decode_responses=True``."""

    def __init__(
        self, client: Any, *, prefix: str = DEFAULT_PREFIX, url: str = "",
        stream_maxlen: int = STREAM_MAXLEN,
    ) -> None:  # fmt: skip
        if stream_maxlen < 1:
            raise ValueError(f"stream_maxlen must be >= 1 (got {stream_maxlen!r})")
        self._redis = client
        self.prefix = prefix
        self.url = url
        self.stream_maxlen = stream_maxlen
        self._errors = _import_redis().RedisError
        self.epoch = EpochGuard(client, prefix, url or prefix, self._call)
        self._reserve_lua = client.register_script(GUARD + _RESERVE)
        self._settle_lua = client.register_script(GUARD + _SETTLE)
        self._release_lua = client.register_script(_RELEASE)
        self._usage_lua = client.register_script(GUARD + _USAGE)
        self._ewma_lua = client.register_script(_EWMA)
        self._rate_lua = client.register_script(rate.TAKE_RATE_LUA)
        # One operation alone goes out at once, by its caller (no hand-over to a task);
        # more go in one pipeline.
        self._group: GroupCommit[_Script] = GroupCommit(
            lambda ops: [_ALONE] if len(ops) == 1 else None, self._pipeline, orphan=self._orphan
        )
        self._orphans: set[asyncio.Task[Any]] = set()
        self._noscript = _import_redis_exceptions().NoScriptError

    @classmethod
    def from_url(cls, url: str) -> RedisLedger:
        aioredis = _import_redis()
        plain, options = split_options(url)
        prefix = options.get("prefix", DEFAULT_PREFIX)
        try:
            maxlen = int(options.get("stream_maxlen", STREAM_MAXLEN))
        except ValueError as exc:
            raise ValueError(f"invalid Redis ledger URL {redacted(url)!r}: {exc}") from exc
        try:
            # A blocking pool: a burst of requests waits for a free connection instead of
            # failing with "Too many connections" (the plain pool's behaviour at its cap).
            # ``?max_connections=N`` in the URL overrides the default.
            pool = aioredis.BlockingConnectionPool.from_url(
                plain, decode_responses=True, max_connections=MAX_CONNECTIONS, timeout=30
            )
            client = aioredis.Redis.from_pool(pool)  # owns the pool: aclose() closes it
        except ValueError as exc:
            raise ValueError(f"invalid Redis ledger URL {redacted(url)!r}: {exc}") from exc
        ledger = cls(client, prefix=prefix, url=redacted(url), stream_maxlen=maxlen)
        ledger._plain_url = plain
        return ledger

    # ------------------------------------------------------------ plumbing

    def _team(self, team: str) -> str:
        return quote(team, safe="")

    def _period_keys(self, team: str, period_key: str) -> list[str]:
        t, p = self._team(team), self.prefix
        return [
            f"{p}res:{t}:{period_key}",
            f"{p}resamt:{t}:{period_key}",
            f"{p}spent:{t}:{period_key}",
        ]

    @property
    def redis_client(self) -> Any:
        return self._redis

    _plain_url: str | None = None
    # What a synchronous client may take from the asyncio client's connection settings.
    _SYNC_KWARGS = ("host", "port", "db", "username", "password", "path", "socket_timeout",
                    "socket_connect_timeout", "client_name")  # fmt: skip

    def sync_client(self) -> Any:
        """A synchronous client of the same server (for the decision history's thread)."""
        import redis

        if self._plain_url is not None:
            return redis.Redis.from_url(self._plain_url, decode_responses=True)
        kw = self._redis.connection_pool.connection_kwargs
        keep = {k: kw[k] for k in self._SYNC_KWARGS if k in kw}
        if "path" in keep:
            keep.pop("host", None)
            keep.pop("port", None)
            pool = redis.ConnectionPool(connection_class=redis.UnixDomainSocketConnection,
                                        decode_responses=True, **keep)  # fmt: skip
            return redis.Redis(connection_pool=pool)
        return redis.Redis(decode_responses=True, **keep)

    async def redis_call(self, coro: Any) -> Any:
        return await self._call(coro)

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except self._errors as exc:
            raise LedgerError(f"Redis ledger {self.url}: {exc}") from exc

    # ------------------------------------------------------------ group commit

    async def _script(self, script: Any, keys: list[str], args: list[Any], *,
                      guarded: bool) -> Any:  # fmt: skip
        """Run a money script in the next pipeline (with the epoch sentinel's key and the
        sentinel this process knows appended when ``guarded``); its own result."""
        op = _Script(script, keys, args, guarded)
        out = await self._group.submit(op)
        return await self._alone(op) if out is _ALONE else out

    async def _alone(self, op: _Script) -> Any:
        if op.guarded:
            return await self.epoch.run(op.script, op.keys, op.args)
        return await self._call(op.script(keys=op.keys, args=op.args))

    def _orphan(self, op: _Script, outcome: Any) -> None:
        """A write left to a caller that was cancelled meanwhile still goes out (a settle
        must reach the ledger); ``close`` waits for it."""
        if outcome is not _ALONE:
            return
        task = asyncio.get_running_loop().create_task(self._alone(op))
        self._orphans.add(task)
        task.add_done_callback(self._orphan_done)

    def _orphan_done(self, task: asyncio.Task[Any]) -> None:
        self._orphans.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("Redis ledger %s: a write whose caller left failed: %s",
                      self.url, task.exception())  # fmt: skip

    async def _pipeline(self, ops: list[_Script]) -> list[Any]:
        """One round trip for ``ops``: a pipeline of EVALSHAs, each script atomic on its
        own, each result its caller's. A pipeline Redis did not take (connection lost,
        timeout) fails every caller with the ledger error."""
        expected: str | None = None
        refused: LedgerError | None = None
        if any(op.guarded for op in ops):
            try:
                expected = await self.epoch.expected()
            except LedgerError as exc:  # lost, or unreachable while looking
                refused = exc
        pipe = self._redis.pipeline(transaction=False)
        sent = []
        for op in ops:
            if op.guarded and refused is not None:
                continue
            keys = [*op.keys, self.epoch.key] if op.guarded else op.keys
            args = [*op.args, expected] if op.guarded else op.args
            pipe.evalsha(op.script.sha, len(keys), *keys, *args)
            sent.append(op)
        results: list[Any] = []
        if sent:
            try:
                results = await pipe.execute(raise_on_error=False)
            except self._errors as exc:
                return [LedgerError(f"Redis ledger {self.url}: {exc}") for _ in ops]
        by_op = dict(zip(map(id, sent), results, strict=True))
        out: list[Any] = []
        for op in ops:
            if id(op) not in by_op:
                out.append(_copy(refused))
                continue
            res = by_op[id(op)]
            if isinstance(res, self._noscript):
                out.append(_ALONE)
            elif isinstance(res, Exception):
                out.append(LedgerError(f"Redis ledger {self.url}: {res}"))
            elif op.guarded and isinstance(res, list) and res and res[0] == -1:
                out.append(_ALONE)
            else:
                out.append(res)
        return out

    # ------------------------------------------------------------ budget

    async def _hold(self, r: Reservation, limit_usd: float | None, now: float) -> None:
        amount = r.amount_usd
        limit = "" if limit_usd is None else _num(limit_usd)
        args = [r.id, _num(amount), limit, _num(now), _num(r.expires_at), _num(EPSILON_USD),
                period_ttl(r.period_ends_at, now)]  # fmt: skip
        keys = self._period_keys(r.team, r.period_key)
        ok, spent, reserved = await self._script(self._reserve_lua, keys, args, guarded=True)
        if not ok:
            usage = Usage(float(spent), float(reserved))
            raise InsufficientBudget(usage, float(limit_usd or 0.0), amount)

    async def _charge(
        self, r: Reservation, actual: float, now: float, ref: str, learn: Observation | None
    ) -> float | None:
        """One script: one round trip, and a replay learns nothing twice."""
        if learn is None:
            await self._settle(r, actual, now, ref, ["", "", "", ""])
            return None
        return float(await self._settle(r, actual, now, ref, _learn_args(learn)))

    async def _settle(
        self, r: Reservation, actual: float, now: float, ref: str, learn: list[str]
    ) -> str:
        p, t, ref = self.prefix, self._team(r.team), ref or r.ref
        keys = [
            *self._period_keys(r.team, r.period_key),
            f"{p}total:{t}",
            f"{p}teams",
            f"{p}closed:{r.id}",
            f"{p}ref:{quote(ref, safe='')}",
            f"{p}spend",
            f"{p}tokens",
            f"{p}tokens:n",
        ]
        args = [
            r.id, _num(actual), _num(now), ref, r.team, r.period_key, _num(r.amount_usd), t,
            int(CLOSED_RETENTION_S), period_ttl(r.period_ends_at, now), self.stream_maxlen,
            *learn,
        ]  # fmt: skip
        _, value = await self._script(self._settle_lua, keys, args, guarded=True)
        return value

    async def _take_rate(
        self, team: str, limits: list[tuple[str, float, float]], now: float
    ) -> float | None:
        t = self._team(team)
        keys = [f"{self.prefix}rate:{t}:{kind}" for kind, _, _ in limits]
        args: list[str] = [_num(now), _num(rate.SLACK_S)]
        for _, limit, cost in limits:
            args += [_num(limit), _num(cost)]
        wait = await self._script(self._rate_lua, keys, args, guarded=False)
        return float(wait) if wait else None

    async def release(self, r: Reservation) -> None:
        keys = [*self._period_keys(r.team, r.period_key)[:2], f"{self.prefix}closed:{r.id}"]
        await self._script(self._release_lua, keys, [r.id, int(CLOSED_RETENTION_S)], guarded=False)

    async def usage(self, team: str, period_key: str, *, now: float) -> Usage:
        keys = self._period_keys(team, period_key)
        spent, reserved = await self.epoch.run(self._usage_lua, keys, [_num(now)])
        return Usage(float(spent), float(reserved))

    async def total_spent(self, team: str | None = None) -> float:
        p = self.prefix
        if team is not None:
            value = await self._call(self._redis.get(f"{p}total:{self._team(team)}"))
            return float(value or 0.0)
        teams = await self._call(self._redis.smembers(f"{p}teams"))
        if not teams:
            return 0.0
        values = await self._call(self._redis.mget([f"{p}total:{t}" for t in sorted(teams)]))
        return sum(float(v or 0.0) for v in values)

    async def spend_rows(self, team: str | None = None) -> list[dict[str, Any]]:
        """Every settled request (audit), oldest first; same fields as the SQLite ledger's."""
        entries = await self._call(self._redis.xrange(f"{self.prefix}spend"))
        rows = []
        for _, f in entries:
            if team is not None and f["team"] != team:
                continue
            row: dict[str, Any] = dict(f)
            for k in ("amount", "reserved", "ts"):
                row[k] = float(row[k])
            rows.append(row)
        return rows

    # ------------------------------------------------------------ state and learned tokens

    async def get_state(self, key: str) -> dict | None:
        text = await self._call(self._redis.get(f"{self.prefix}state:{key}"))
        return None if text is None else json.loads(text)

    async def set_state(self, key: str, value: dict) -> None:
        if not isinstance(value, dict):
            raise TypeError(f"state must be a dict (got {type(value).__name__})")
        text = json.dumps(value, separators=(",", ":"))
        await self._call(self._redis.set(f"{self.prefix}state:{key}", text))

    async def _observe(self, learn: Observation) -> float:
        keys = [f"{self.prefix}tokens", f"{self.prefix}tokens:n"]
        value = await self._call(self._ewma_lua(keys=keys, args=_learn_args(learn)))
        return float(value)

    async def expected_output_tokens(self, model: str) -> float | None:
        value = await self._call(self._redis.hget(f"{self.prefix}tokens", model))
        return None if value is None else float(value)

    async def check(self) -> None:
        await self._call(self._redis.ping())

    async def check_epoch(self) -> None:
        await self.epoch.check()

    lost = property(lambda self: self.epoch.lost)
    reset_acknowledged = property(lambda self: self.epoch.acknowledgement())

    async def close(self) -> None:
        await self._group.drain()  # what is queued goes out before the pool closes
        if self._orphans:
            await asyncio.gather(*self._orphans, return_exceptions=True)
        await self._redis.aclose()
