"""The SQLite ledger: one file, safe across threads and processes, survives restarts.

Calls run inline on the event loop's thread, on a connection with a short busy timeout
(``INLINE_BUSY_S``): with WAL and ``synchronous=NORMAL`` a commit is tens of
microseconds, far less than handing the call to another thread and back (profiled:
the thread hop cost more than the SQL). Only when that connection finds the file locked
(another process holding the write lock) does the call move to one dedicated thread with
its own connection and the long ``busy_timeout_s``, so the loop never waits on a lock.
Calls queue on that thread one behind another, so ``busy_timeout_s`` runs from the moment
a call joins the queue: the k-th call behind a lock fails after ``busy_timeout_s``, not
k times it (found by bench/soak.py: with ``busy_timeout=2`` a 40 s lock held requests
for up to the whole 40 s instead of refusing each after 2 s).

The money writes (reserve, settle, release, rate-limit takes, learned lengths, state) are
group-committed (router/ledger/group.py): those queued in one event-loop turn run in one
``BEGIN IMMEDIATE`` transaction, each operation's own outcome handed back (``_commit``),
inline or, when the file is locked, on the ledger thread as above.
The file is in WAL mode with ``synchronous=NORMAL``: a commit is durable against a
process crash (the WAL is written before the call returns) and only a power loss can
drop the last few commits; readers never block the writer. Each change is one
transaction (a batch's); ``reserve`` runs in ``BEGIN IMMEDIATE`` so its check-then-insert
holds the write lock, which makes it atomic against other connections, including other processes (they
wait on the lock up to ``busy_timeout_s``).

Tables and schema upgrades: ``router/ledger/sqlite_schema.py``.

Expired open reservations are excluded from every sum at once and deleted lazily (at
most once a minute, by ``reserve``); ``released`` markers are deleted after
``CLOSED_RETENTION_S``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import router.ledger.rate as rate
from router.ledger.base import (
    CLOSED_RETENTION_S,
    EPSILON_USD,
    InsufficientBudget,
    Ledger,
    LedgerError,
    Observation,
    Reservation,
    Usage,
    ewma,
)
from router.ledger.group import GroupCommit
from router.ledger.history_sqlite import SqliteDecisions
from router.ledger.sessions import SqliteSessions
from router.ledger.sqlite_schema import is_busy, prepare, transaction
from router.ledger.stored_responses import SqliteResponses

log = logging.getLogger("router.ledger")
T = TypeVar("T")
INLINE_BUSY_S = 0.002
PURGE_EVERY_S = 60.0
CHECKPOINT_EVERY = 1000  # inline calls between background WAL checkpoints


@dataclass(frozen=True)
class _Write:
    """A money write waiting for its batch: ``fn`` runs inside the batch's transaction."""

    fn: Callable[[], Any]
    queued_at: float  # by the ledger's wait clock: the busy timeout runs from here


class _Busy(Exception):
    """The batch found the file locked by another connection."""

    def __init__(self, cause: sqlite3.OperationalError) -> None:
        super().__init__(str(cause))
        self.cause = cause


class SqliteLedger(SqliteSessions, SqliteResponses, SqliteDecisions, Ledger):
    """Ledger in a SQLite file (``":memory:"`` works too, for one instance only)."""

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout_s: float = 30.0,
        url: str = "",
        wait_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``wait_clock`` times a call's wait for a lock (tests move it by hand)."""
        self.path = str(path)
        self._wait_clock = wait_clock
        self.url = url or f"sqlite:///{self.path}"
        self._busy_timeout_s = busy_timeout_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._inline: sqlite3.Connection | None = None
        self._tls = threading.local()
        self._calls = 0
        self._closed = False
        self._last_purge = float("-inf")
        self._group: GroupCommit[_Write] = GroupCommit(self._batch_inline, self._batch_slow)
        try:
            # Synchronous on purpose: a bad path fails at start-up, not on the first request.
            self._executor.submit(self._open).result()
        except BaseException:
            self._executor.shutdown(wait=False)
            raise

    # ------------------------------------------------------------ plumbing

    def _open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout_s,
                isolation_level=None,
                check_same_thread=False,
            )
            prepare(conn, self.path, self._busy_timeout_s)
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot open the SQLite ledger {self.path}: {exc}") from exc
        self._conn = conn
        if self.path != ":memory:":  # a second :memory: connection would be another database
            inline = sqlite3.connect(
                self.path, timeout=INLINE_BUSY_S, isolation_level=None, check_same_thread=False
            )
            inline.execute("PRAGMA synchronous=NORMAL")
            # Checkpoints (copying the WAL back into the database, with an fsync) would run
            # inside some request's COMMIT; the ledger thread runs them instead.
            inline.execute("PRAGMA wal_autocheckpoint=0")
            self._inline = inline

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """A read (or a write outside the money path) on its own: inline, or on the ledger
        thread when the file is locked."""
        if self._closed:
            raise LedgerError("the ledger is closed")
        if self._inline is not None:
            self._tls.conn = self._inline
            self._tick(1)
            try:
                return fn(*args)
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise LedgerError(f"SQLite ledger {self.path}: {exc}") from exc
                # Locked by another process: wait for it off the loop, below.
                if self._inline.in_transaction:
                    self._inline.execute("ROLLBACK")
            except sqlite3.Error as exc:
                raise LedgerError(f"SQLite ledger {self.path}: {exc}") from exc
            finally:
                self._tls.conn = None
        loop = asyncio.get_running_loop()
        deadline = self._wait_clock() + self._busy_timeout_s
        try:
            return await loop.run_in_executor(self._executor, self._before, deadline, fn, *args)
        except sqlite3.Error as exc:
            raise LedgerError(f"SQLite ledger {self.path}: {exc}") from exc

    def _tick(self, n: int) -> None:
        before, self._calls = self._calls, self._calls + n
        if before // CHECKPOINT_EVERY != self._calls // CHECKPOINT_EVERY:
            self._executor.submit(self._checkpoint)

    # ------------------------------------------------------------ group commit

    async def _write(self, fn: Callable[[], T]) -> T:
        """``fn`` (one money write, on ``self._db``) committed in the next batch: one
        ``BEGIN IMMEDIATE`` transaction for every write queued in this event-loop turn."""
        if self._closed:
            raise LedgerError("the ledger is closed")
        return await self._group.submit(_Write(fn, self._wait_clock()))

    def _batch_inline(self, ops: list[_Write]) -> list[Any] | None:
        """The batch on the inline connection; None when the file is locked (or there is
        no inline connection): then ``_batch_slow`` runs it on the ledger thread."""
        if self._closed:
            return [LedgerError("the ledger is closed") for _ in ops]
        if self._inline is None:
            return None
        if self._late(ops, self._wait_clock()):
            return None
        self._tls.conn = self._inline
        try:
            return self._commit(ops)
        except _Busy:
            if self._inline.in_transaction:
                self._inline.execute("ROLLBACK")
            return None
        finally:
            self._tls.conn = None

    async def _batch_slow(self, ops: list[_Write]) -> list[Any]:
        """The batch on the ledger thread, waiting for the lock what is left of the oldest
        operation's busy timeout. An operation queued longer than its busy timeout (behind
        a batch that waited out another process's lock) fails without a try."""
        if self._closed:
            return [LedgerError("the ledger is closed") for _ in ops]
        late = self._late(ops, self._wait_clock())
        rest = [op for op, x in zip(ops, late, strict=True) if not x] if late else ops
        done: list[Any] = []
        if rest:
            loop = asyncio.get_running_loop()
            deadline = min(op.queued_at for op in rest) + self._busy_timeout_s
            try:
                done = await loop.run_in_executor(
                    self._executor, self._before, deadline, self._commit_waiting, rest
                )
            except sqlite3.Error as exc:
                done = self._all_failed(rest, exc)
        if not late:
            return done
        it = iter(done)
        return [self._waited_in_line() if x else next(it) for x in late]

    def _late(self, ops: list[_Write], now: float) -> list[bool]:
        """Per operation, whether its busy timeout is spent; [] when none is."""
        late = [now - op.queued_at >= self._busy_timeout_s for op in ops]
        return late if any(late) else []

    def _commit_waiting(self, ops: list[_Write]) -> list[Any]:
        try:
            return self._commit(ops)
        except _Busy as exc:  # waited the whole busy timeout
            raise exc.cause from None

    def _commit(self, ops: list[_Write]) -> list[Any]:
        """One transaction for ``ops``, one outcome each. An InsufficientBudget is that
        operation's alone (a reserve decides before it writes). Any other exception raised
        by an operation is its own too: the transaction is rolled back and the others run
        again without it. A failure of the transaction itself (BEGIN, COMMIT) is every
        operation's: each gets a LedgerError. _Busy: the file is locked."""
        out: list[Any] = [None] * len(ops)
        todo = list(range(len(ops)))
        db = self._db
        while todo:
            culprit = None
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if is_busy(exc):
                    raise _Busy(exc) from exc
                return self._failed(out, todo, exc)
            except sqlite3.Error as exc:
                return self._failed(out, todo, exc)
            for i in todo:
                try:
                    out[i] = ops[i].fn()
                except InsufficientBudget as exc:
                    out[i] = exc
                except Exception as exc:  # handed to its caller
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    if isinstance(exc, sqlite3.OperationalError) and is_busy(exc):
                        raise _Busy(exc) from exc
                    culprit = i
                    out[i] = self._error(exc)
                    break
            if culprit is not None:
                todo.remove(culprit)
                continue
            try:
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.OperationalError) and is_busy(exc):
                    raise _Busy(exc) from exc
                return self._failed(out, todo, exc)
            self._tick(len(todo))
            return out
        return out

    def _all_failed(self, ops: list[_Write], exc: sqlite3.Error) -> list[Any]:
        return [self._error(exc) for _ in ops]

    def _failed(self, out: list[Any], todo: list[int], exc: sqlite3.Error) -> list[Any]:
        """The transaction failed: each operation still in it gets the ledger error."""
        for i in todo:
            out[i] = self._error(exc)
        return out

    def _error(self, exc: Exception) -> Exception:
        if not isinstance(exc, sqlite3.Error):
            return exc
        err = LedgerError(f"SQLite ledger {self.path}: {exc}")
        err.__cause__ = exc
        return err

    def _waited_in_line(self) -> LedgerError:
        return LedgerError(
            f"SQLite ledger {self.path}: database is locked (waited "
            f"{self._busy_timeout_s:g} s in line behind other ledger calls)"
        )

    def _before(self, deadline: float, fn: Callable[..., T], *args: Any) -> T:
        """On the ledger thread: wait for a lock only for what is left of this call's
        busy timeout (the rest went waiting in line behind other calls)."""
        left = deadline - self._wait_clock()
        if left <= 0:
            raise sqlite3.OperationalError(
                f"database is locked (waited {self._busy_timeout_s:g} s in line behind "
                "other ledger calls)"
            )
        self._db.execute(f"PRAGMA busy_timeout = {max(1, int(left * 1000))}")
        return fn(*args)

    @property
    def busy_timeout_s(self) -> float:
        return self._busy_timeout_s

    def on_ledger_thread(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return self._executor.submit(lambda: fn(self._conn)).result()  # type: ignore[arg-type]

    async def off_loop(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` on the ledger thread (the decision history's calls)."""
        if self._closed:
            raise LedgerError("the ledger is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, lambda: fn(self._conn))  # type: ignore[arg-type]
        except sqlite3.Error as exc:
            raise LedgerError(f"SQLite ledger {self.path}: {exc}") from exc

    def _checkpoint(self) -> None:
        """PASSIVE: copies what it can without waiting on, or blocking, any writer."""
        if self._conn is not None:
            try:
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error as exc:  # retried at the next one; the WAL just grows meanwhile
                log.warning("SQLite ledger %s: checkpoint failed: %s", self.path, exc)

    @property
    def _db(self) -> sqlite3.Connection:
        conn = getattr(self._tls, "conn", None) or self._conn
        assert conn is not None
        return conn

    # ------------------------------------------------------------ budget

    def _usage(self, team: str, period_key: str, now: float) -> Usage:
        db = self._db
        row = db.execute(
            "SELECT spent FROM period_totals WHERE team = ? AND period_key = ?", (team, period_key)
        ).fetchone()
        (reserved,) = db.execute(
            "SELECT COALESCE(SUM(amount), 0.0) FROM reservations"
            " WHERE team = ? AND period_key = ? AND expires_at > ? AND status = 'open'",
            (team, period_key, now),
        ).fetchone()
        return Usage(spent_usd=row[0] if row else 0.0, reserved_usd=float(reserved))

    def _insert_hold(self, r: Reservation, limit: float | None, now: float) -> None:
        """Inside a write transaction (a batch's): decides before it writes, so a refusal
        leaves the batch's other operations as they are."""
        db = self._db
        if now - self._last_purge >= PURGE_EVERY_S:
            self._purge(now)
        usage = self._usage(r.team, r.period_key, now)
        if limit is not None and usage.committed_usd + r.amount_usd > limit + EPSILON_USD:
            raise InsufficientBudget(usage, limit, r.amount_usd)
        db.execute(
            "INSERT INTO reservations (id, team, period_key, amount, expires_at, ref, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (r.id, r.team, r.period_key, r.amount_usd, r.expires_at, r.ref, now),
        )

    def _purge(self, now: float) -> None:
        self._db.execute(
            "DELETE FROM reservations WHERE (status = 'open' AND expires_at <= ?)"
            " OR (status = 'released' AND expires_at <= ?)",
            (now, now - CLOSED_RETENTION_S),
        )
        self._last_purge = now

    def _settle_in(self, r: Reservation, actual: float, now: float, ref: str) -> bool:
        """True if this call charged; False if the reservation or the ref was settled."""
        db = self._db
        # OR IGNORE covers both keys: reservation_id, and ref where it is not ''.
        cur = db.execute(
            "INSERT OR IGNORE INTO spend (reservation_id, team, period_key, amount, reserved, ref, ts)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (r.id, r.team, r.period_key, actual, r.amount_usd, ref or r.ref, now),
        )
        if cur.rowcount == 0:  # already settled: this request holds nothing any more
            db.execute("DELETE FROM reservations WHERE id = ? AND status = 'open'", (r.id,))
            return False
        db.execute(
            "INSERT INTO period_totals (team, period_key, spent, requests) VALUES (?, ?, ?, 1)"
            " ON CONFLICT (team, period_key)"
            " DO UPDATE SET spent = spent + excluded.spent, requests = requests + 1",
            (r.team, r.period_key, actual),
        )
        db.execute("DELETE FROM reservations WHERE id = ?", (r.id,))  # open or released
        return True

    def _release(self, r: Reservation) -> None:
        db = self._db
        if db.execute("SELECT 1 FROM spend WHERE reservation_id = ?", (r.id,)).fetchone():
            return
        # Upsert: the row may already be gone (expired and purged); the marker makes a
        # later settle of this reservation a no-op.
        db.execute(
            "INSERT INTO reservations"
            " (id, team, period_key, amount, expires_at, ref, created_at, status)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 'released')"
            " ON CONFLICT (id) DO UPDATE SET status = 'released'",
            (r.id, r.team, r.period_key, r.amount_usd, r.expires_at, r.ref, r.expires_at),
        )

    async def _hold(self, r: Reservation, limit_usd: float | None, now: float) -> None:
        await self._write(lambda: self._insert_hold(r, limit_usd, now))

    async def _charge(
        self, r: Reservation, actual: float, now: float, ref: str, learn: Observation | None
    ) -> float | None:
        """Settled and learned in one transaction (the batch's)."""

        def charge() -> float | None:
            charged = self._settle_in(r, actual, now, ref)
            if learn is None:
                return None
            if charged:
                return self._observe_in(learn.model, learn.tokens, learn.alpha, learn.prior)
            # A replay: the answer was learned when it was first settled.
            row = self._db.execute(
                "SELECT ewma FROM output_tokens WHERE model = ?", (learn.model,)
            ).fetchone()
            return row[0] if row else ewma(None, learn.tokens, learn.alpha, learn.prior)

        return await self._write(charge)

    async def release(self, r: Reservation) -> None:
        await self._write(lambda: self._release(r))

    async def _take_rate(
        self, team: str, limits: list[tuple[str, float, float]], now: float
    ) -> float | None:
        return await self._write(lambda: rate.take_sqlite(self._db, team, limits, now))

    async def usage(self, team: str, period_key: str, *, now: float) -> Usage:
        def read() -> Usage:
            with transaction(self._db, "DEFERRED"):  # one snapshot for both sums
                return self._usage(team, period_key, now)

        return await self._run(read)

    async def total_spent(self, team: str | None = None) -> float:
        def read() -> float:
            # The running totals (one row per team and period); ``spend_rows`` is the
            # per-request audit trail they can be checked against.
            if team is None:
                row = self._db.execute("SELECT COALESCE(SUM(spent), 0.0) FROM period_totals")
            else:
                row = self._db.execute(
                    "SELECT COALESCE(SUM(spent), 0.0) FROM period_totals WHERE team = ?", (team,)
                )
            return float(row.fetchone()[0])

        return await self._run(read)

    async def spend_rows(self, team: str | None = None) -> list[dict[str, Any]]:
        """Every settled request (audit): reservation_id, team, period_key, amount, reserved,
        ref, ts, oldest first."""

        def read() -> list[dict[str, Any]]:
            sql = "SELECT reservation_id, team, period_key, amount, reserved, ref, ts FROM spend"
            cur = (
                self._db.execute(sql + " ORDER BY ts, rowid")
                if team is None
                else self._db.execute(sql + " WHERE team = ? ORDER BY ts, rowid", (team,))
            )
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

        return await self._run(read)

    # ------------------------------------------------------------ state and learned tokens

    async def get_state(self, key: str) -> dict | None:
        def read() -> str | None:
            row = self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
            return row[0] if row else None

        text = await self._run(read)
        return None if text is None else json.loads(text)

    async def set_state(self, key: str, value: dict) -> None:
        if not isinstance(value, dict):
            raise TypeError(f"state must be a dict (got {type(value).__name__})")
        text = json.dumps(value, separators=(",", ":"))

        def write() -> None:
            self._db.execute(
                "INSERT INTO state (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, text),
            )

        await self._write(write)

    async def _observe(self, learn: Observation) -> float:
        return await self._write(
            lambda: self._observe_in(learn.model, learn.tokens, learn.alpha, learn.prior)
        )

    def _observe_in(self, model: str, tokens: int, alpha: float, prior: float | None) -> float:
        db = self._db
        row = db.execute("SELECT ewma FROM output_tokens WHERE model = ?", (model,)).fetchone()
        value = ewma(row[0] if row else None, tokens, alpha, prior)
        db.execute(
            "INSERT INTO output_tokens (model, ewma, observations) VALUES (?, ?, 1)"
            " ON CONFLICT (model)"
            " DO UPDATE SET ewma = excluded.ewma, observations = observations + 1",
            (model, value),
        )
        return value

    async def expected_output_tokens(self, model: str) -> float | None:
        def read() -> float | None:
            row = self._db.execute(
                "SELECT ewma FROM output_tokens WHERE model = ?", (model,)
            ).fetchone()
            return row[0] if row else None

        return await self._run(read)

    async def check(self) -> None:
        await self._run(lambda: self._db.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        if self._closed:
            return
        await self._group.drain()  # what is queued is committed before the files close
        self._closed = True

        if self._inline is not None:
            self._inline.close()
            self._inline = None

        def shut() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, shut)
        self._executor.shutdown(wait=True)
