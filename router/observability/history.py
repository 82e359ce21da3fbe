"""Decision history writer: stores decision-log lines in the ledger from a thread of its
own, so that neither their encoding nor the store's I/O runs on the request's event loop.

``offer`` is called on the event loop once per request and only appends the line to a
bounded list (under a lock, never waiting on the writer). The writer thread takes what
is queued every ``flush_interval_s`` (or sooner, once ``batch_size`` lines wait), encodes
each line once, and stores the batch with the ledger's ``decision_sink`` (its own SQLite
connection, or a synchronous Redis client). When the list is full (the ledger is slow or
down), new lines are dropped and counted (``router_decision_history_dropped_total``,
``dropped``), never waited for; a batch the ledger refuses is put back while there is
room, else dropped and counted. The decision-log file keeps every line either way.
``close`` (a graceful stop) writes out what is queued before the thread ends. A task on
the loop purges lines older than the retention once every ``purge_every_s``.

Why not a queue library: the loop needs a non-blocking, counted drop and batched
hand-off, which a list under a ``threading.Condition`` does directly (``queue.Queue``
would hand lines over one by one and cannot put a refused batch back at the front).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from router.jsonio import dumps
from router.ledger import Ledger, LedgerError
from router.ledger.history import stored_line

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
        self.on_drop = on_drop  # called from the writer thread too: must be thread-safe
        self.max_pending = max_pending
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.purge_every_s = purge_every_s
        self.dropped = 0
        self.written = 0
        self._buf: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._rounds = 0  # writer rounds finished (each one tried everything queued)
        self._wanted = 0  # rounds asked for by flush()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._purger: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the writer thread and the purge task (on the running loop)."""
        self._start_thread()
        self._purger = asyncio.create_task(self._purge_forever(), name="decision-history-purge")

    def _start_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="decision-history", daemon=True)
            self._thread.start()

    @property
    def pending(self) -> int:
        return len(self._buf)

    def offer(self, line: dict[str, Any]) -> None:
        """Queue one line (handed over: not to be changed afterwards); never waits.
        Dropped (and counted) when the queue is full."""
        with self._cond:
            if len(self._buf) < self.max_pending:
                self._buf.append(line)
                if len(self._buf) >= self.batch_size:
                    self._cond.notify_all()
                return
        self._drop(1, "queue full")

    def _drop(self, n: int, why: str) -> None:
        with self._cond:
            before = self.dropped
            self.dropped += n
        if self.on_drop is not None:
            self.on_drop(n)
        if before == 0 or before // 1000 != (before + n) // 1000:
            log.error("decision history: %d line(s) dropped so far (%s)", before + n, why)

    async def flush(self) -> None:
        """Have the writer try everything queued so far (once), and wait for it."""
        await asyncio.to_thread(self._flush_blocking)

    def _flush_blocking(self) -> None:
        self._start_thread()
        with self._cond:
            self._wanted = target = self._rounds + 2  # the round in progress may have begun
            self._cond.notify_all()  # before the last line came: wait for the next one too
            self._cond.wait_for(lambda: self._rounds >= target or self._thread is None)

    # ------------------------------------------------------------ the writer thread

    def _run(self) -> None:
        sink = None
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(
                        lambda: (
                            self._stopping
                            or self._wanted > self._rounds
                            or len(self._buf) >= self.batch_size
                        ),
                        self.flush_interval_s,
                    )
                    stopping = self._stopping
                if sink is None:
                    sink = self._sink()
                if sink is not None:
                    self._write_all(sink)
                with self._cond:
                    self._rounds += 1
                    self._cond.notify_all()
                if stopping:
                    return
        finally:
            if sink is not None:
                with contextlib.suppress(Exception):
                    sink.close()
            with self._cond:
                self._thread = None
                self._cond.notify_all()

    def _sink(self) -> Any:
        try:
            return self.ledger.decision_sink()  # type: ignore[attr-defined]
        except Exception as exc:  # retried at the next round
            log.warning("decision history: cannot reach the ledger: %s", exc)
            return None

    def _write_all(self, sink: Any) -> None:
        """Everything queued, batch by batch, until the ledger refuses one."""
        while True:
            with self._cond:
                batch = self._buf[: self.batch_size]
                del self._buf[: self.batch_size]
            if not batch:
                return
            rows, good = [], []
            for x in batch:
                try:
                    rows.append(stored_line(x, dumps(x).decode()))
                    good.append(x)
                except (TypeError, ValueError, KeyError) as exc:  # no id, or not JSON
                    self._drop(1, f"a line cannot be stored: {exc!r}")
            batch = good
            try:
                if rows:
                    sink.write(rows)
            except LedgerError as exc:
                with self._cond:
                    room = self.max_pending - len(self._buf)
                    keep = batch[: max(room, 0)]
                    self._buf[:0] = keep
                if len(keep) < len(batch):
                    self._drop(len(batch) - len(keep), f"ledger: {exc}")
                log.warning("decision history: ledger refused a batch: %s", exc)
                return
            with self._cond:
                self.written += len(batch)

    # ------------------------------------------------------------ purge and close

    async def _purge_forever(self) -> None:
        next_purge = 0.0
        while True:
            now = self.clock()
            if now >= next_purge:
                next_purge = now + self.purge_every_s
                try:
                    n = await self.ledger.purge_decisions(now - self.retention_s)
                    if n:
                        log.info("decision history: purged %d line(s) past retention", n)
                except LedgerError as exc:
                    log.warning("decision history: %s", exc)
            await asyncio.sleep(min(self.purge_every_s, 60.0))

    async def close(self) -> None:
        """Write out what is queued (one try), then stop the thread; what the ledger
        would not take is dropped and counted."""
        if self._purger is not None:
            self._purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purger
            self._purger = None
        await asyncio.to_thread(self._stop_blocking)
        if self._buf:
            n = len(self._buf)
            self._buf.clear()
            self._drop(n, "ledger unavailable at shutdown")

    def _stop_blocking(self) -> None:
        self._start_thread()
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._thread is None)
