"""The Redis ledger's epoch: how a router notices that Redis lost its memory.

Why: a Redis that keeps nothing on disk (no AOF, ``--save ""``) comes back empty after a
restart, and so does any Redis after ``FLUSHALL`` or a failover to an empty replica. An
empty ledger reads as "$0 spent" for every team, with no live reservations, no rate-limit
state and no decision history: without this module every budget silently starts over in
the middle of its period. Budgets need Redis with AOF persistence (``appendonly yes``,
``appendfsync everysec`` or ``always``); this module makes a loss loud instead of silent.

The sentinel ``{prefix}epoch`` is a string holding a JSON document: a random ``id``,
``kind``, ``created_at`` (Unix seconds by Redis's own clock, so that every process
compares one clock) and ``by`` (host:pid, or user@host for an operator). Kinds:

  fresh     written by the first process to find neither a sentinel nor data
  adopted   the same, in a store that held data already (the first start of a router
            that has epochs, on an existing ledger)
  lost      written by a process that knew an epoch and found it gone or replaced
  ack       written by ``p2l-router ledger ack-reset``: an operator accepted the loss

Each :class:`EpochGuard` (one per ``RedisLedger``) remembers the sentinel it adopted, as
the exact string. Every reserve, settle and usage script starts with :data:`GUARD`, which
compares the stored string with that one and refuses (``{-1, what is stored}``) when they
differ: in the same atomic script, so no money moves in a store that lost its memory, not
even between the wipe and a check. On a refusal the guard looks at what is stored now:

- an ``ack`` newer than the epoch it knew (by ``created_at``): adopt it, log it, retry;
- anything else (nothing, a ``lost`` marker, a ``fresh`` sentinel that a newly started
  process wrote into the empty store, an older sentinel brought back by a restored
  snapshot): the ledger is lost. The first process to see it replaces what is stored by a
  ``lost`` marker (compare-and-set), so that a process started later refuses too instead
  of beginning a new epoch; :class:`LedgerLost` is raised (503 ``ledger_unavailable``,
  a settlement goes to the journal) until an ``ack`` appears. While lost, each money
  operation (and ``/readyz``) re-reads the sentinel first, so an ``ack`` is picked up on
  the next request or probe.

A process that knows no epoch yet (starting) adopts the stored sentinel, creates one when
there is none, and is lost from the start when it finds a ``lost`` marker.

What it cannot see: a wipe while no router runs, followed by routers starting, looks like
a first start (nothing outside Redis remembers the epoch); and a snapshot restored with
the same epoch loses the spend since the snapshot unnoticed. Persistence is the remedy.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from router.ledger.base import LedgerError, LedgerLost

log = logging.getLogger("router.ledger")

FRESH, ADOPTED, LOST, ACK = "fresh", "adopted", "lost", "ack"
# Long-lived keys whose presence means the store holds a ledger already.
DATA_KEYS = ("teams", "spend", "decisions", "tokens")
MAX_NOTE_CHARS = 200

# Prepended to every money script: KEYS[#KEYS] is the sentinel, ARGV[#ARGV] the sentinel
# this process knows. GET of a missing key is false in Lua, and false ~= any string.
GUARD = """
local epoch = redis.call('GET', KEYS[#KEYS])
if epoch ~= ARGV[#ARGV] then return {-1, epoch or ''} end
"""

_STAMP = """
local t = redis.call('TIME')
doc['created_at'] = tonumber(t[1]) + tonumber(t[2]) / 1000000
local v = cjson.encode(doc)
redis.call('SET', KEYS[1], v)
return v
"""

# First use: return the stored sentinel, or store ARGV[1] stamped (fresh, or adopted when
# one of KEYS[2..] exists).
_CREATE = (
    """
local cur = redis.call('GET', KEYS[1])
if cur then return cur end
local doc = cjson.decode(ARGV[1])
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then doc['kind'] = 'adopted' end
end
"""
    + _STAMP
)

# Compare-and-set: replace ARGV[1] ('' = no sentinel) by ARGV[2], stamped; return what is
# stored afterwards (the new one, or whatever another process put there meanwhile).
_REPLACE = (
    """
local cur = redis.call('GET', KEYS[1]) or ''
if cur ~= ARGV[1] then return cur end
local doc = cjson.decode(ARGV[2])
"""
    + _STAMP
)


def _iso(ts: float | None) -> str:
    if not isinstance(ts, int | float):
        return "?"
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def summary(doc: dict[str, Any] | None, *, depth: int = 1) -> dict[str, Any] | None:
    """A sentinel's identity, with one level of what it replaced: sentinels that embed
    their predecessor stay small however many resets a store has been through."""
    if not isinstance(doc, dict):
        return None
    out = {k: doc.get(k) for k in ("id", "kind", "created_at", "by")}
    if depth > 0:
        for k in ("lost", "acknowledges"):
            if isinstance(doc.get(k), dict):
                out[k] = summary(doc[k], depth=depth - 1)
    return out


@dataclass(frozen=True)
class Sentinel:
    """A stored sentinel: its exact string (what the scripts compare) and its fields."""

    raw: str
    doc: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: str) -> Sentinel:
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        return cls(raw, doc if isinstance(doc, dict) else {"kind": "invalid"})

    @property
    def id(self) -> str:
        return str(self.doc.get("id", "?"))

    @property
    def kind(self) -> str:
        return str(self.doc.get("kind", "invalid"))

    @property
    def created_at(self) -> float:
        t = self.doc.get("created_at")
        return float(t) if isinstance(t, int | float) else float("-inf")

    def describe(self) -> str:
        return f"{self.kind} epoch {self.id[:12]} of {_iso(self.doc.get('created_at'))}"


def describe_doc(doc: dict[str, Any] | None) -> str:
    return "an unknown epoch" if doc is None else Sentinel("", doc).describe()


class AckRefused(LedgerError):
    """``ack-reset`` found nothing to acknowledge (the epoch is healthy) or lost a race."""


class EpochGuard:
    """One ledger instance's memory of the epoch; see the module docstring."""

    def __init__(
        self, client: Any, prefix: str, url: str, call: Callable[[Any], Awaitable[Any]]
    ) -> None:
        self.key = f"{prefix}epoch"
        self.url = url
        self._client = client
        self._call = call
        self._data_keys = [f"{prefix}{k}" for k in DATA_KEYS]
        self._create = client.register_script(_CREATE)
        self._replace = client.register_script(_REPLACE)
        self.known: Sentinel | None = None
        self.lost: LedgerLost | None = None
        self.acknowledged: Sentinel | None = None  # the last reset this process accepted

    # ------------------------------------------------------------ guarded scripts

    async def run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """Run a script that starts with :data:`GUARD`, passing the sentinel's key and the
        sentinel this process knows last; on a refusal re-read it (adopting an ``ack``
        and retrying once) or raise :class:`LedgerLost`."""
        for _ in range(2):
            expected = await self.expected()
            res = await self._call(script(keys=[*keys, self.key], args=[*args, expected]))
            if not (isinstance(res, list) and res and res[0] == -1):
                return res
            await self._evaluate(res[1] or "", expected)
        raise self.lost or LedgerError(f"the epoch of the Redis ledger {self.url} keeps changing")

    async def expected(self) -> str:
        """The sentinel the scripts must find; raises LedgerLost while the store is lost."""
        if self.known is None or self.lost is not None:
            await self.check()
        if self.lost is not None:
            raise self.lost
        assert self.known is not None
        return self.known.raw

    async def check(self) -> None:
        """Read the stored sentinel: adopt or create one at first use, notice a loss, accept
        an acknowledged reset. Sets :attr:`lost`; raises only LedgerError (unreachable)."""
        if self.known is None:
            await self._open()
            return
        expected = self.known.raw
        raw = await self._call(self._client.get(self.key)) or ""
        if raw == expected:
            if self.lost is not None:
                log.warning("the epoch sentinel of the Redis ledger %s is back", self.url)
                self.lost = None
            return
        await self._evaluate(raw, expected)

    def acknowledgement(self) -> dict[str, Any] | None:
        """The last reset this process accepted, for /readyz."""
        a = self.acknowledged
        if a is None:
            return None
        return {"by": a.doc.get("by"), "at": _iso(a.doc.get("created_at")), "epoch": a.id,
                "note": a.doc.get("note") or None}  # fmt: skip

    async def read(self) -> Sentinel | None:
        raw = await self._call(self._client.get(self.key))
        return Sentinel.parse(raw) if raw else None

    # ------------------------------------------------------------ decisions

    async def _open(self) -> None:
        mine = {"id": uuid.uuid4().hex, "kind": FRESH, "by": _process()}
        keys = [self.key, *self._data_keys]
        found = Sentinel.parse(await self._call(self._create(keys=keys, args=[json.dumps(mine)])))
        if found.kind == LOST:
            self._set_lost(self._reason(found))
        elif self.lost is not None:  # started lost; an operator acknowledged it since
            self._adopt(found)
        else:
            self.known = found
            if found.id != mine["id"]:
                log.debug("Redis ledger %s: %s", self.url, found.describe())
            elif found.kind == ADOPTED:
                log.warning(
                    "the Redis ledger %s held data but no epoch sentinel (the first start of "
                    "a router that has one): adopted as %s", self.url, found.describe(),
                )  # fmt: skip
            else:
                log.info(
                    "the Redis ledger %s is new and empty: started %s (Redis must persist "
                    "it: appendonly yes)", self.url, found.describe(),
                )  # fmt: skip

    async def _evaluate(self, raw: str, expected: str) -> None:
        """The store held ``raw`` ('' = nothing), not ``expected``, the sentinel this
        process knew when it looked."""
        known = self.known
        assert known is not None
        if known.raw != expected:  # another task adopted a newer one meanwhile: use that
            return
        found = Sentinel.parse(raw) if raw else None
        if found is not None and self._acknowledges(found):
            self._adopt(found)
            return
        reason = self._reason(found)
        if found is None or found.kind != LOST:  # tell every process, started later too
            marker = {"id": uuid.uuid4().hex, "kind": LOST, "by": _process(),
                      "lost": summary(known.doc), "found": summary(found.doc if found else None)}  # fmt: skip
            now = await self._call(self._replace(keys=[self.key], args=[raw, json.dumps(marker)]))
            current = Sentinel.parse(now) if now else None
            if current is not None and self._acknowledges(current):
                self._adopt(current)
                return
        self._set_lost(reason)

    def _acknowledges(self, found: Sentinel) -> bool:
        """An operator's ``ack`` written after the epoch this process knew."""
        return found.kind == ACK and (
            self.known is None or found.created_at > self.known.created_at
        )

    def _reason(self, found: Sentinel | None) -> str:
        knew = f"this process knew {self.known.describe()}" if self.known else ""
        if found is None:
            return f"its epoch sentinel {self.key} is gone ({knew})"
        if found.kind == LOST:
            return (
                f"{found.doc.get('by', '?')} found {describe_doc(found.doc.get('lost'))} lost "
                f"at {_iso(found.doc.get('created_at'))}"
            )
        if found.kind == ACK:
            return (
                f"its epoch went back to an older {found.describe()} ({knew}): a restored snapshot?"
            )
        return f"its epoch sentinel was replaced by {found.describe()} ({knew})"

    def _set_lost(self, reason: str) -> None:
        if self.lost is not None:
            return
        self.lost = LedgerLost(
            f"the Redis ledger {self.url} lost its data: {reason}. The spend, reservations "
            "and rate limits it held are gone, so budgets cannot be enforced: every request "
            "that needs the ledger is refused until an operator runs "
            f"'p2l-router ledger ack-reset --ledger {self.url}' (and Redis must persist: "
            "appendonly yes)",
            reason=reason,
        )
        log.error("LEDGER LOST: %s", self.lost)

    def _adopt(self, found: Sentinel) -> None:
        self.known, self.lost, self.acknowledged = found, None, found
        note = found.doc.get("note")
        log.warning(
            "ledger reset acknowledged by %s at %s%s: the Redis ledger %s serves again, from "
            "%s; spend recorded before the loss is not in it (journaled settlements are "
            "replayed)", found.doc.get("by", "?"), _iso(found.doc.get("created_at")),
            f" ({note})" if note else "", self.url, found.describe(),
        )  # fmt: skip

    # ------------------------------------------------------------ the operator's side

    async def acknowledge(self, *, note: str = "", force: bool = False) -> Sentinel:
        """Write an ``ack`` sentinel over a lost (or missing) one; refuses a healthy epoch
        unless ``force``. Running routers adopt it at their next request or probe."""
        before = await self.read()
        if before is not None and before.kind != LOST and not force:
            raise AckRefused(
                f"the Redis ledger {self.url} is not marked lost ({before.describe()}): "
                "nothing to acknowledge (--force writes a new epoch anyway)"
            )
        doc = {
            "id": uuid.uuid4().hex, "kind": ACK, "by": f"{getpass.getuser()}@{socket.gethostname()}",
            "note": note[:MAX_NOTE_CHARS], "acknowledges": summary(before.doc if before else None),
        }  # fmt: skip
        raw = before.raw if before else ""
        after = Sentinel.parse(
            await self._call(self._replace(keys=[self.key], args=[raw, json.dumps(doc)]))
        )
        if after.id != doc["id"]:
            raise AckRefused(
                f"the epoch of the Redis ledger {self.url} changed meanwhile "
                f"({after.describe()}); look again and rerun"
            )
        return after
