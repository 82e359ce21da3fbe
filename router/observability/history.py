"""Decision history writer: hands decision-log lines to the ledger in batches, off the
request path.

``offer`` is called on the event loop once per request and only appends to a bounded
list; a background task writes what is queued every ``flush_interval_s`` (or sooner,
once ``batch_size`` lines wait) with one ``Ledger.record_decisions`` call. When the list
is full (the ledger is slow or down), new lines are dropped and counted
(``router_decision_history_dropped_total``), never waited for; a batch the ledger
refuses is put back while there is room, else dropped and counted. The decision-log
file keeps every line either way. The same task purges lines older than the retention
once every ``purge_every_s``.

Why not a queue library: the loop needs a non-blocking, counted drop and batched
hand-off on one event loop, which a list and an ``asyncio.Event`` do directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from router.ledger import Ledger, LedgerError

log = logging.getLogger("router")

MAX_PENDING = 10_000
BATCH_SIZE = 500
FLUSH_INTERVAL_S = 0.2
PURGE_EVERY_S = 3600.0


class DecisionHistory:
    def __init__(
        self,
        ledger: Ledger,
        *,
        retention_s: float,
        clock: Callable[[], float] = time.time,
        on_drop: Callable[[int], None] | None = None,
        max_pending: int = MAX_PENDING,
        batch_size: int = BATCH_SIZE,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        purge_every_s: float = PURGE_EVERY_S,
    ) -> None:
        if not retention_s > 0:
            raise ValueError(f"decision retention must be > 0 (got {retention_s!r})")
        self.ledger = ledger
        self.retention_s = retention_s
        ledger.decision_retention_s = retention_s
        self.clock = clock
        self.on_drop = on_drop
        self.max_pending = max_pending
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.purge_every_s = purge_every_s
        self.dropped = 0
        self.written = 0
        self._buf: list[dict[str, Any]] = []
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._next_purge = 0.0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="decision-history")

    @property
    def pending(self) -> int:
        return len(self._buf)

    def offer(self, line: dict[str, Any]) -> None:
        """Queue one line; never waits. Dropped (and counted) when the queue is full."""
        if len(self._buf) >= self.max_pending:
            self._drop(1, "queue full")
            return
        self._buf.append(line)
        if len(self._buf) >= self.batch_size:
            self._wake.set()

    def _drop(self, n: int, why: str) -> None:
        before = self.dropped
        self.dropped += n
        if self.on_drop is not None:
            self.on_drop(n)
        if before == 0 or before // 1000 != self.dropped // 1000:
            log.error("decision history: %d line(s) dropped so far (%s)", self.dropped, why)

    async def flush(self) -> None:
        """Write everything queued so far (and wait for a write in progress)."""
        async with self._lock:
            while self._buf:
                batch, self._buf = self._buf[: self.batch_size], self._buf[self.batch_size :]
                try:
                    await self.ledger.record_decisions(batch)
                except LedgerError as exc:
                    room = self.max_pending - len(self._buf)
                    keep = batch[: max(room, 0)]
                    self._buf[:0] = keep
                    if len(keep) < len(batch):
                        self._drop(len(batch) - len(keep), f"ledger: {exc}")
                    log.warning("decision history: ledger refused a batch: %s", exc)
                    return
                self.written += len(batch)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval_s)
            self._wake.clear()
            try:
                await self.flush()
                now = self.clock()
                if now >= self._next_purge:
                    self._next_purge = now + self.purge_every_s
                    n = await self.ledger.purge_decisions(now - self.retention_s)
                    if n:
                        log.info("decision history: purged %d line(s) past retention", n)
            except LedgerError as exc:
                log.warning("decision history: %s", exc)

    async def close(self) -> None:
        """Stop the task and write out what is queued (one try)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
        if self._buf:
            self._drop(len(self._buf), "ledger unavailable at shutdown")
            self._buf.clear()
