"""Group commit: the ledger writes of one process, gathered and committed together.

Every reserve and settle used to be a transaction (SQLite) or a round trip (Redis) of its
own: two per routed request, the biggest cost the router had after parsing. Here each
write is queued with a future, and one writer per ledger commits what is queued as one
batch: one SQLite transaction, one Redis pipeline. Callers still learn their own outcome
(the backend returns one per operation: a value, or the exception that caller gets), so a
reserve refused for budget is refused alone while the others in its batch go through,
and a batch the store could not take fails each of its callers with the ledger's error,
which they handle as before (a settle is journaled, a reserve refused with a 503).

Batches form without waiting: the first write after an idle moment schedules the writer
for the end of the current event-loop turn (``call_soon``), so the writes of every task
that runs in that turn go in one batch; while a batch is in flight (a Redis round trip,
a SQLite lock held by another process) the next one gathers behind it. Nothing is
delayed on purpose, so one request alone pays only the hand-over (a future, one turn).

A queued write is committed even if its caller was cancelled meanwhile: a settle must
reach the ledger (the provider has billed it), and a reserve nobody will use expires
after its TTL, as one did before.

The writer is ``inline`` first (the SQLite ledger commits on the event loop's thread:
its commits are microseconds, less than a thread hop) and ``slow`` when that returns
None (the file is locked by another process, or the store is remote): then it awaits
the batch, and whatever is queued meanwhile waits for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

Op = TypeVar("Op")

MAX_BATCH = 256  # operations per transaction / pipeline: bounds one commit's length

# An outcome is the operation's value, or the exception its caller gets.
Outcomes = list[Any]


class GroupCommit(Generic[Op]):
    """Gathers operations submitted during one event-loop turn (or while a batch is in
    flight) and hands them to the backend as one batch; see the module docstring.

    ``inline(ops)``: commit now, on the loop's thread, and return one outcome per op,
    or None when it cannot (then ``slow(ops)`` is awaited instead). ``orphan(op,
    outcome)`` hears of an outcome whose caller was cancelled (the backend may have left
    the operation to its caller: it must run it then)."""

    def __init__(
        self,
        inline: Callable[[list[Op]], Outcomes | None],
        slow: Callable[[list[Op]], Awaitable[Outcomes]],
        *,
        orphan: Callable[[Op, Any], None] | None = None,
        max_batch: int = MAX_BATCH,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1 (got {max_batch})")
        self._inline = inline
        self._slow = slow
        self._orphan = orphan
        self.max_batch = max_batch
        self._queue: list[tuple[Op, asyncio.Future[Any]]] = []
        self._busy = False  # a flush is scheduled, or a batch is in flight
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: asyncio.Event | None = None
        # Figures for tests and the bench: batches committed, operations in them.
        self.batches = 0
        self.ops = 0

    def submit(self, op: Op) -> asyncio.Future[Any]:
        """Queue ``op``; the future resolves to its outcome once its batch is committed."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (tests, CLI): nothing carries over
            self._loop, self._queue, self._busy = loop, [], False
            self._idle = None
        fut = loop.create_future()
        self._queue.append((op, fut))
        if not self._busy:
            self._busy = True
            loop.call_soon(self._flush)
        return fut

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def drain(self) -> None:
        """Wait until everything queued so far is committed (or failed)."""
        while self._busy and self._loop is asyncio.get_running_loop():
            if self._idle is None:
                self._idle = asyncio.Event()
            await self._idle.wait()

    def _take(self) -> list[tuple[Op, asyncio.Future[Any]]]:
        batch = self._queue[: self.max_batch]
        del self._queue[: self.max_batch]
        return batch

    def _flush(self) -> None:
        while self._queue:
            batch = self._take()
            try:
                outcomes = self._inline([op for op, _ in batch])
            except Exception as exc:  # a bug in the backend: every caller hears of it
                outcomes = [exc] * len(batch)
            if outcomes is None:
                assert self._loop is not None
                self._loop.create_task(self._flush_slow(batch))
                return
            self._deliver(batch, outcomes)
        self._set_idle()

    async def _flush_slow(self, batch: list[tuple[Op, asyncio.Future[Any]]]) -> None:
        try:
            outcomes = await self._slow([op for op, _ in batch])
        except Exception as exc:
            outcomes = [exc] * len(batch)
        self._deliver(batch, outcomes)
        if self._queue:
            self._flush()  # the next batch: inline again, or slow again
        else:
            self._set_idle()

    def _set_idle(self) -> None:
        self._busy = False
        if self._idle is not None:
            self._idle.set()
            self._idle = None

    def _deliver(self, batch: list[tuple[Op, asyncio.Future[Any]]], outcomes: Outcomes) -> None:
        assert len(outcomes) == len(batch), (len(outcomes), len(batch))
        self.batches += 1
        self.ops += len(batch)
        for (op, fut), outcome in zip(batch, outcomes, strict=True):
            if fut.done():  # its caller was cancelled; the write happened all the same
                if self._orphan is not None:
                    self._orphan(op, outcome)
                continue
            if isinstance(outcome, BaseException):
                fut.set_exception(outcome)
            else:
                fut.set_result(outcome)
