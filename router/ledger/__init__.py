"""The spend ledger: reserve a request's expected cost, settle its actual cost.

Public surface: ``create_ledger(url)``, ``Ledger`` (the abstract API; its semantics are in
``router/ledger/base.py``), ``Reservation``, ``Usage``, ``InsufficientBudget``,
``LedgerError`` and ``LedgerLost`` (the store forgot its data: router/ledger/epoch.py), the
two backends ``SqliteLedger`` and ``RedisLedger``, and ``SettlementJournal`` (settlements
the ledger could not take, replayed later).
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from router.ledger.base import (
    CLOSED_RETENTION_S,
    PERIOD_GRACE_S,
    InsufficientBudget,
    Ledger,
    LedgerError,
    LedgerLost,
    Reservation,
    Usage,
    redacted,
)
from router.ledger.journal import JournalEntry, JournalError, SettlementJournal
from router.ledger.sqlite import SqliteLedger

__all__ = [
    "CLOSED_RETENTION_S",
    "InsufficientBudget",
    "JournalEntry",
    "JournalError",
    "Ledger",
    "LedgerError",
    "LedgerLost",
    "PERIOD_GRACE_S",
    "RedisLedger",
    "Reservation",
    "SettlementJournal",
    "SqliteLedger",
    "Usage",
    "create_ledger",
]

ACCEPTED_URLS = (
    "sqlite:///relative/path.db, sqlite:////absolute/path.db, sqlite:///:memory:"
    " (optionally ?busy_timeout=SECONDS, how long to wait for another process's lock),"
    " redis://host:port/db (optionally ?prefix=KEY_PREFIX&stream_maxlen=N; rediss:// for TLS)"
)


def create_ledger(url: str) -> Ledger:
    """The ledger named by ``url`` (SQLAlchemy-style SQLite URLs: three slashes and a
    relative path, four for an absolute one). A SQLite file and its folder are created if
    missing. Raises ValueError naming the URL (password hidden) and the accepted forms."""
    if not isinstance(url, str):
        raise ValueError(f"ledger URL must be a string (got {url!r}); accepted: {ACCEPTED_URLS}")
    scheme, _, rest = url.partition("://")
    if scheme == "sqlite" and rest.startswith("/") and len(rest) > 1:
        path, _, query = rest[1:].partition("?")
        options = parse_qs(query, keep_blank_values=True)
        if path and not path.endswith("/") and set(options) <= {"busy_timeout"}:
            try:
                timeout = float(options.get("busy_timeout", ["30"])[-1])
            except ValueError:
                timeout = -1.0
            if timeout > 0:
                return SqliteLedger(path, busy_timeout_s=timeout, url=url)
    elif scheme in ("redis", "rediss") and urlsplit(url).hostname:
        from router.ledger.redis import RedisLedger

        return RedisLedger.from_url(url)
    raise ValueError(f"unsupported ledger URL {redacted(url)!r}; accepted: {ACCEPTED_URLS}")


def __getattr__(name: str) -> object:
    # RedisLedger is imported on first use, so that the redis package stays optional.
    if name == "RedisLedger":
        from router.ledger.redis import RedisLedger

        return RedisLedger
    raise AttributeError(name)
