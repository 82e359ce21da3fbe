"""Journal slots: one settlement journal per live router process at a shared base path,
what the other slots hold, and the adoption of slots whose process died.

Router processes sharing a ledger (``serve --workers N``, or several routers on one
host) each need a journal of their own: two processes rewriting one file would lose each
other's lines. Slot 0 is the file ``BASE``, slot i the file ``BASE.i``; each has a lock
file (``BASE.lock``, ``BASE.i.lock``), and the process holding the exclusive ``flock`` on
it owns the slot. The kernel drops a flock when its process dies, ``kill -9`` included,
so a free lock on a slot whose file holds entries means: settlements of a dead process.

The protocol, and the fault each rule closes (found by racing real processes):

- Lock files are never unlinked. A process could open a lock file, another unlink it,
  and a third create a new one at the path: two owners of one slot, each flocking a
  different inode. Data files are never unlinked either, and change only under their
  slot's lock (appends, and rewrites by rename): a process that claimed a slot whose file
  another had just unlinked failed with FileNotFoundError, or appended settlements to a
  file no longer on disk, lost when it died.
- Claiming takes the lowest slot whose flock is free (``open_journal``); entries a dead
  owner left there become the new owner's, replayed at start.
- Adoption: every live process, in its drain loop, tries the flock of every other slot
  whose file is not empty (``JournalPeers.adopt``). If it gets it, it replays the entries
  into the ledger, compacts the file and lets the slot go. The ledger's settle is
  idempotent by ref, so an adopter dying half-way, or two adopting one after the other,
  charges nothing twice. Without this an orphan waited for some later restart to land in
  the lowest free slot, and meanwhile no process counted it.
- Counting: a budget must count every slot's pending spend, not only the process's own
  (workers answered $6 and $12 in turn against a true $18). A process counts its own
  entries from memory and the other slots from their files (``JournalPeers``), one
  ``stat`` each per look when nothing changed. The files only grow by whole appended
  lines and are replaced by rename, so the same inode and a larger size means "parse the
  new lines" (after checking the last line read is still where it was: a rewrite may get
  the old inode number back), anything else "read it again". Slot files created since
  are found within ``SCAN_EVERY_S``. An entry stops counting when it leaves its file,
  which its replayer does only after the ledger has it: for that moment it counts twice,
  never zero times. ``pending_count`` (``/readyz``, the livesum gauge) stays per process.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from router.ledger.base import Ledger
from router.ledger.journal import JournalEntry, JournalError, SettlementJournal

log = logging.getLogger("router.ledger.journal")

JOURNAL_SLOTS = 64
SCAN_EVERY_S = 1.0  # how often a process looks for slot files it does not know yet


def slot_path(base: str | Path, i: int) -> Path:
    return Path(base if i == 0 else f"{base}.{i}")


def open_journal(base: str | Path, *, slots: int = JOURNAL_SLOTS) -> SettlementJournal:
    """Claim the lowest journal slot no live process holds; the journal it returns counts
    the other slots' pending spend and adopts the orphaned ones (``journal.peers``)."""
    for i in range(slots):
        try:
            journal = SettlementJournal(slot_path(base, i))
        except JournalError:
            continue  # a live process holds it
        journal.peers = JournalPeers(base, i, slots)
        return journal
    raise JournalError(f"all {slots} journal slots at {base} are in use")


@dataclass
class _FileView:
    """The entries of one other slot's file, as far as it has been read."""

    path: str
    file_id: tuple[int, int] = (0, 0)  # st_dev, st_ino
    offset: int = 0  # bytes parsed: up to the end of the last whole line
    last_line: bytes = b""  # that line, to check the prefix is still the one parsed
    stat: tuple[int, int, int, int] = (0, 0, 0, 0)  # dev, ino, size, mtime_ns last seen
    by_period: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)

    def changed(self) -> bool:
        try:
            st = os.stat(self.path)
            now = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            now = (0, 0, 0, 0)
        if now == self.stat:
            return False
        self.stat = now
        return True

    def read(self) -> tuple[bool, list[JournalEntry]]:
        """Parse what was appended since the last read; ``(True, all)`` when the file
        was replaced (a rewrite, or it is gone) and the old entries no longer hold."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            self._reset((0, 0))
            return True, []
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(fd)
            reset = (st.st_dev, st.st_ino) != self.file_id or st.st_size < self.offset
            if not reset and self.offset:
                # A rewrite that got the old inode number back has another prefix.
                f.seek(self.offset - len(self.last_line))
                reset = f.read(len(self.last_line)) != self.last_line
            if reset:
                self._reset((st.st_dev, st.st_ino))
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a line still being written is read next time
        lines = data[:end].splitlines(keepends=True)
        new: list[JournalEntry] = []
        for line in lines:
            try:
                e = JournalEntry.from_line(line)
            except (ValueError, TypeError):
                continue  # its owner (or adopter) logs and drops it
            self.by_period.setdefault((e.team, e.period_key), {})[e.ref] = e.cost_usd
            new.append(e)
        if lines:
            self.offset += end
            self.last_line = lines[-1]
        return reset, new

    def _reset(self, file_id: tuple[int, int]) -> None:
        self.file_id, self.offset, self.last_line = file_id, 0, b""
        self.by_period.clear()


class JournalPeers:
    """The slots at ``base`` other than ``own``: their pending spend, and adoption of
    those whose process died. See the module docstring."""

    def __init__(self, base: str | Path, own: int, slots: int = JOURNAL_SLOTS) -> None:
        self.base, self.own, self.slots = str(base), own, slots
        self._views: dict[int, _FileView] = {}
        # All views' entries per (team, period), each ref once, and their sums: updated
        # by appends, rebuilt when a file was replaced (rare: after a replay).
        self._merged: dict[tuple[str, str], dict[str, float]] = {}
        self._sums: dict[tuple[str, str], float] = {}
        self._scanned_at = -float("inf")

    def pending_usd(self, team: str, period_key: str, skip: Mapping[str, object]) -> float:
        """The pending spend of the team's period in the other slots' files, each ref
        once and none of ``skip`` (the caller's own entries of that period)."""
        self._refresh()
        key = (team, period_key)
        group = self._merged.get(key)
        if not group:
            return 0.0
        counted_by_caller = [group[ref] for ref in skip if ref in group]
        return self._sums[key] - math.fsum(counted_by_caller)

    async def adopt(self, ledger: Ledger) -> int:
        """Replay the slots whose process died (their flock is free and their file holds
        entries) into ``ledger``; returns how many settlements were taken off."""
        self._scan()
        taken = 0
        for view in list(self._views.values()):
            try:
                if os.stat(view.path).st_size == 0:
                    continue
            except FileNotFoundError:
                continue
            try:  # loading may repair a torn line: a rewrite, off the loop
                orphan = await asyncio.to_thread(SettlementJournal, view.path)
            except JournalError:
                continue  # its process lives and replays it itself
            try:
                if orphan.pending_count():
                    log.warning(
                        "journal %s: its process is gone; adopting %d settlement(s)",
                        view.path, orphan.pending_count(),
                    )  # fmt: skip
                    taken += await orphan.replay(ledger)
            finally:
                orphan.close()
        return taken

    def _scan(self) -> None:
        """Start watching every slot file that exists (at most every ``SCAN_EVERY_S``)."""
        now = time.monotonic()
        if now - self._scanned_at < SCAN_EVERY_S:
            return
        self._scanned_at = now
        for i in range(self.slots):
            path = str(slot_path(self.base, i))
            if i != self.own and i not in self._views and os.path.exists(path):
                self._views[i] = _FileView(path)

    def _refresh(self) -> None:
        """Bring the views up to date: one ``stat`` per watched file when none changed."""
        self._scan()
        rebuild = False
        for view in self._views.values():
            if not view.changed():
                continue
            reset, new = view.read()
            rebuild = rebuild or reset
            for e in new if not rebuild else ():
                key = (e.team, e.period_key)
                group = self._merged.setdefault(key, {})
                if e.ref not in group:
                    group[e.ref] = e.cost_usd
                    self._sums[key] = self._sums.get(key, 0.0) + e.cost_usd
        if rebuild:
            self._merged.clear()
            for view in self._views.values():
                for key, costs in view.by_period.items():
                    group = self._merged.setdefault(key, {})
                    for ref, cost in costs.items():
                        group.setdefault(ref, cost)
            self._sums = {key: math.fsum(g.values()) for key, g in self._merged.items()}
