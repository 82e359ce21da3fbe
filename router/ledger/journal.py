"""A durable local journal of settlements the ledger could not take, replayed later.

When ``settle`` raises LedgerError (SQLite locked past its busy timeout, Redis down), the
money was still spent upstream. Serving appends the settlement here instead: one JSON
line, written with ``O_APPEND`` and fsync'd before ``append`` returns, so it survives a
process crash or a power loss. ``replay(ledger)`` settles every pending entry, oldest
first, and then rewrites the file without them (write a new file, fsync it, rename it
over the old one, fsync the folder: a crash leaves either the old or the new file, never
a half). Replaying twice, or crashing between a settle and the rewrite, charges nothing
twice because the ledger's settle is idempotent by ``ref`` (the decision id) and by
reservation id.

Pending spend is held in memory (rebuilt from the file at open), so ``/v1/budget`` and the
budget header can count it: ``pending_usd(team, period_key)``; ``pending_count()`` is for
``/readyz``. A torn last line (a crash mid-write) or any line that does not parse is
skipped with a warning, and the file is rewritten without it at open.

Writes run in a worker thread (``asyncio.to_thread``): appends happen only while the
ledger is failing, often because storage is slow, and an fsync then can take tens of
milliseconds that must not stall every other request on the event loop. A thread lock
orders appends and rewrites, and the set of entries the file holds is kept under that
lock, so a rewrite never drops a line appended while a replay ran. The readers' view
(``pending_usd``) is changed only on the event loop, so it needs no lock.

One journal file per process: an exclusive ``flock`` on ``PATH.lock`` refuses a second
opener (two processes rewriting one file would lose each other's lines). Router processes
sharing a ledger each claim a slot of their own and see each other's through ``peers``:
the pending spend of every slot counts in ``pending_usd``, and the drain loop adopts the
slots of processes that died (:mod:`router.ledger.journal_slots`). The journal sees those
slots only through the small :class:`Peers` protocol defined here: the slots build on the
journal (they open and replay other processes' journals), not the journal on them.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import math
import os
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from router.ledger.base import Ledger, LedgerError, Reservation, check_alpha, check_amount

log = logging.getLogger("router.ledger.journal")
FORMAT_VERSION = 1


class Peers(Protocol):
    """The other journal slots at this journal's base path, as the journal uses them
    (implemented by :class:`router.ledger.journal_slots.JournalPeers`)."""

    def pending_usd(self, team: str, period_key: str, skip: Mapping[str, object]) -> float:
        """Their pending spend of the team's period, none of ``skip`` (ours)."""
        ...

    async def adopt(self, ledger: Ledger) -> int:
        """Replay the slots whose process died into ``ledger``; how many were taken."""
        ...


class JournalError(RuntimeError):
    """The journal file cannot be opened (held by another process, unreadable)."""


@dataclass(frozen=True)
class JournalEntry:
    """One settlement the ledger did not take. Times are Unix seconds; ``ts`` is the
    original settle time, which the replayed spend row keeps."""

    ref: str
    team: str
    period_key: str
    reservation_id: str
    reserved_usd: float
    cost_usd: float
    ts: float
    expires_at: float = math.inf
    period_ends_at: float = math.inf
    model: str | None = None
    output_tokens: int | None = None
    prior: float | None = None
    alpha: float = 0.1

    def reservation(self) -> Reservation:
        return Reservation(
            self.reservation_id, self.team, self.period_key, self.reserved_usd,
            self.expires_at, self.ref, self.period_ends_at,
        )  # fmt: skip

    def to_line(self) -> bytes:
        doc: dict[str, Any] = {"v": FORMAT_VERSION, **asdict(self)}
        for k in ("expires_at", "period_ends_at"):  # JSON has no infinity
            if math.isinf(doc[k]):
                doc[k] = None
        return (json.dumps(doc, separators=(",", ":"), allow_nan=False) + "\n").encode()

    @classmethod
    def from_line(cls, line: bytes) -> JournalEntry:
        doc = json.loads(line)
        if not isinstance(doc, dict) or doc.pop("v", None) != FORMAT_VERSION:
            raise ValueError("not a version-1 journal entry")
        for k in ("expires_at", "period_ends_at"):
            if doc.get(k) is None:
                doc[k] = math.inf
        entry = cls(**doc)
        if not isinstance(entry.ref, str) or not entry.ref:
            raise ValueError("entry without a ref")
        check_amount("cost_usd", entry.cost_usd)
        check_amount("reserved_usd", entry.reserved_usd)
        check_alpha(entry.alpha)
        return entry


class SettlementJournal:
    """Append-only, fsync'd settlements waiting for the ledger; see the module docstring."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            raise JournalError(f"journal {self.path} is in use by another process") from exc
        self._file_lock = asyncio.Lock()  # replay runs one at a time
        self._write_lock = threading.Lock()
        # Entries the file holds (changed under _write_lock, in worker threads) ...
        self._on_file: dict[str, JournalEntry] = {}
        # ... and the readers' view of what is still pending (changed on the event loop).
        self._pending: dict[str, JournalEntry] = {}
        self._by_period: dict[tuple[str, str], dict[str, JournalEntry]] = {}
        self._fd = -1
        self.peers: Peers | None = None  # the other slots (set by open_journal)
        try:
            self._load()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------ reading

    def pending_usd(self, team: str, period_key: str) -> float:
        """Journaled spend of the team's period that the ledger does not count yet: this
        journal's, and with ``peers`` every other slot's too."""
        group = self._by_period.get((team, period_key), {})
        own = math.fsum(e.cost_usd for e in group.values()) if group else 0.0
        if self.peers is None:
            return own
        return own + self.peers.pending_usd(team, period_key, skip=group)

    def pending_count(self) -> int:
        """This journal's own entries (each process reports its own, for ``/readyz``)."""
        return len(self._pending)

    def entries(self) -> list[JournalEntry]:
        """The pending entries, oldest first."""
        return list(self._pending.values())

    # ------------------------------------------------------------ writing

    async def append(
        self, r: Reservation, cost_usd: float, *, now: float, ref: str = "",
        model: str | None = None, output_tokens: int | None = None,
        prior: float | None = None, alpha: float = 0.1,
    ) -> JournalEntry:  # fmt: skip
        """Record a settlement of ``r`` (as ``Ledger.settle`` / ``settle_observed`` would
        take it) durably; returns once it is on disk. A ref already pending is kept once."""
        ref = ref or r.ref
        if not ref:
            raise ValueError("a journaled settlement needs a ref (the decision id)")
        check_alpha(alpha)
        entry = JournalEntry(
            ref=ref, team=r.team, period_key=r.period_key, reservation_id=r.id,
            reserved_usd=r.amount_usd, cost_usd=check_amount("cost_usd", cost_usd), ts=now,
            expires_at=r.expires_at, period_ends_at=r.period_ends_at, model=model,
            output_tokens=None if output_tokens is None else int(output_tokens),
            prior=prior, alpha=alpha,
        )  # fmt: skip
        await asyncio.to_thread(self._write, entry)
        self._add(entry)
        return entry

    async def replay(self, ledger: Ledger) -> int:
        """Settle every pending entry (idempotently, by ref) and drop them from the file;
        returns how many were taken off. Stops at the first LedgerError (the rest stay
        pending for the next replay)."""
        async with self._file_lock:
            done: list[str] = []
            try:
                for entry in list(self._pending.values()):
                    await _settle(ledger, entry)
                    self._remove(entry)
                    done.append(entry.ref)
            except LedgerError as exc:
                log.warning(
                    "journal %s: replay stopped after %d of %d: %s",
                    self.path, len(done), len(done) + len(self._pending), exc,
                )  # fmt: skip
            finally:  # even if cancelled: what was settled leaves the file
                if done:
                    await asyncio.to_thread(self._compact, done)
                    log.info("journal %s: replayed %d settlements", self.path, len(done))
            return len(done)

    async def drain_forever(self, ledger: Ledger, interval_s: float = 5.0) -> None:
        """Replay whenever entries are pending, and adopt the slots of dead processes
        (with ``peers``), every ``interval_s``; run it as a background task and cancel it
        at shutdown."""
        while True:
            if self._pending:
                try:
                    await self.replay(ledger)
                except Exception:  # a rewrite that failed (disk): entries stay, retried
                    log.exception("journal %s: replay failed", self.path)
            # While the ledger refuses our own entries it would refuse an orphan's too.
            if self.peers is not None and not self._pending:
                try:
                    await self.peers.adopt(ledger)
                except Exception:
                    log.exception("journal %s: adopting other slots failed", self.path)
            await asyncio.sleep(interval_s)

    def close(self) -> None:
        """Close the file and release the process lock (entries stay on disk)."""
        with self._write_lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1

    # ------------------------------------------------------------ internals

    def _add(self, entry: JournalEntry) -> None:
        if entry.ref in self._pending:
            return
        self._pending[entry.ref] = entry
        self._by_period.setdefault((entry.team, entry.period_key), {})[entry.ref] = entry

    def _remove(self, entry: JournalEntry) -> None:
        self._pending.pop(entry.ref, None)
        key = (entry.team, entry.period_key)
        group = self._by_period.get(key, {})
        group.pop(entry.ref, None)
        if not group:
            self._by_period.pop(key, None)

    def _load(self) -> None:
        data = self.path.read_bytes() if self.path.exists() else b""
        bad = 0
        for n, line in enumerate(data.splitlines(keepends=True), 1):
            try:
                if not line.endswith(b"\n"):
                    raise ValueError("torn last line (no newline)")
                entry = JournalEntry.from_line(line)
            except (ValueError, TypeError) as exc:
                bad += 1
                log.warning("journal %s: skipping line %d: %s: %r", self.path, n, exc, line[:200])
                continue
            self._on_file.setdefault(entry.ref, entry)
            self._add(entry)
        if bad or not self.path.exists():
            self._rewrite()  # a clean file, so that the next append starts on a fresh line
        else:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)

    def _write(self, entry: JournalEntry) -> None:
        line = entry.to_line()
        with self._write_lock:
            if self._fd < 0:
                raise JournalError(f"journal {self.path} is closed")
            if entry.ref in self._on_file:
                return
            _write_all(self._fd, line)
            os.fsync(self._fd)
            self._on_file[entry.ref] = entry

    def _compact(self, done: list[str]) -> None:
        with self._write_lock:
            for ref in done:
                self._on_file.pop(ref, None)
            self._rewrite()

    def _rewrite(self) -> None:
        """Replace the file by one holding exactly ``_on_file`` (caller holds the lock, or
        is ``__init__``)."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write_all(fd, b"".join(e.to_line() for e in self._on_file.values()))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)


async def _settle(ledger: Ledger, e: JournalEntry) -> None:
    r = e.reservation()
    if e.model is not None and e.output_tokens is not None:
        await ledger.settle_observed(
            r, e.cost_usd, now=e.ts, ref=e.ref, model=e.model,
            output_tokens=e.output_tokens, alpha=e.alpha, prior=e.prior,
        )  # fmt: skip
    else:
        await ledger.settle(r, e.cost_usd, now=e.ts, ref=e.ref)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:  # os.write may write less than asked (a signal, a nearly full disk)
        view = view[os.write(fd, view) :]
