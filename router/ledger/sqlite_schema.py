"""The SQLite ledger's tables, schema upgrades and transaction helper.

Tables (created if missing; ``PRAGMA user_version`` is the schema version):
  reservations   open holds, and ``released`` markers kept for idempotency
  spend          one row per settled request (audit): reservation_id is the key and
                 ``ref`` (the decision id) is unique when set, so a second settle of the
                 same reservation or the same decision cannot insert a second row
  period_totals  running spend per (team, period_key), read by every reserve and by
                 ``total_spent``
  state          JSON documents (the pacer's state)
  output_tokens  EWMA of completion tokens per model
  rate           GCRA state of the team rate limits (router/ledger/rate.py)
  decisions      the decision history: one decision-log line per request (JSON in
                 ``line``), indexed by ts, team, model, status (router/ledger/history.py)
  responses      stored Responses-API responses (router/ledger/stored_responses.py)
  sessions       the last turn of each conversation (router/ledger/sessions.py)

Amounts are REAL (binary floats): a running float sum of n costs is off by about
n * 1e-16 of the total, far inside the 1e-9 USD to which totals must match the decision
log, while integer nano-dollars would round every cost by up to 5e-10. The tables have
no secondary index beyond the one the reserve check reads and the one that makes a ref
settle once, and ``reservations`` is WITHOUT ROWID, to keep the pages written per commit
few; ``spend`` keeps its rowid, which is the audit trail's insertion order.

Schema 2 added the unique index on ``spend.ref`` (where set) and the ``rate`` table;
schema 3 the ``decisions`` table; schema 4 (this version) the ``responses`` and
``sessions`` tables. An older file is upgraded in place when first opened.

Opening a fresh file from many processes at once (``serve --workers N``, a fleet
starting together) races on the switch to WAL: SQLite answers ``PRAGMA journal_mode=WAL``
with SQLITE_BUSY at once, without calling the busy handler, whenever another connection
holds any lock on the still rollback-journal file (seen: 1-4 of 200 concurrent opens
failed with "database is locked"). ``prepare`` therefore retries the switch and the
schema set-up on a busy answer, for ``OPEN_RETRY_S`` at least. A file already in WAL at
the current schema needs neither, so this never waits on a lock another process holds.
"""

from __future__ import annotations

import random
import sqlite3
import time

from router.ledger.base import LedgerError
from router.ledger.sessions import SESSIONS_SQL
from router.ledger.stored_responses import RESPONSES_SQL

# How long opening a file may keep retrying a busy WAL switch or schema set-up (at least;
# a longer busy timeout is used when the ledger has one).
OPEN_RETRY_S = 10.0

SCHEMA_VERSION = 4  # 2: spend.ref unique when set; rate. 3: decisions. 4: responses, sessions

SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS reservations (
    id          TEXT PRIMARY KEY,
    team        TEXT NOT NULL,
    period_key  TEXT NOT NULL,
    amount      REAL NOT NULL,
    expires_at  REAL NOT NULL,
    ref         TEXT NOT NULL DEFAULT '',
    created_at  REAL NOT NULL,
    status      TEXT NOT NULL DEFAULT 'open'    -- open | released
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS reservations_live
    ON reservations (team, period_key, expires_at);
CREATE TABLE IF NOT EXISTS spend (
    reservation_id TEXT PRIMARY KEY,
    team           TEXT NOT NULL,
    period_key     TEXT NOT NULL,
    amount         REAL NOT NULL,
    reserved       REAL NOT NULL,
    ref            TEXT NOT NULL DEFAULT '',
    ts             REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS period_totals (
    team        TEXT NOT NULL,
    period_key  TEXT NOT NULL,
    spent       REAL NOT NULL,
    requests    INTEGER NOT NULL,
    PRIMARY KEY (team, period_key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS state (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS output_tokens (
    model         TEXT PRIMARY KEY,
    ewma          REAL NOT NULL,
    observations  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS rate (
    team  TEXT NOT NULL,
    kind  TEXT NOT NULL,
    tat   REAL NOT NULL,
    PRIMARY KEY (team, kind)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS spend_ref ON spend (ref) WHERE ref <> '';
CREATE TABLE IF NOT EXISTS decisions (
    id      TEXT PRIMARY KEY,
    ts      REAL NOT NULL,
    team    TEXT,
    model   TEXT,
    status  INTEGER NOT NULL,
    line    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_ts ON decisions (ts);
CREATE INDEX IF NOT EXISTS decisions_team ON decisions (team, ts);
CREATE INDEX IF NOT EXISTS decisions_model ON decisions (model, ts);
CREATE INDEX IF NOT EXISTS decisions_status ON decisions (status, ts);
"""
    + RESPONSES_SQL
    + SESSIONS_SQL
)


def prepare(conn: sqlite3.Connection, path: str, busy_timeout_s: float) -> None:
    """WAL, ``synchronous=NORMAL`` and the current schema on a new connection, retried
    while another opener holds the file (see the module docstring)."""
    deadline = time.monotonic() + max(busy_timeout_s, OPEN_RETRY_S)
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            migrate(conn, path)
            return
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or time.monotonic() > deadline:
                raise
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        time.sleep(random.uniform(0.001, 0.01))  # jitter: the openers do not retry in step


def migrate(conn: sqlite3.Connection, path: str) -> None:
    """Create the tables, or bring an older file up to ``SCHEMA_VERSION``, in one write
    transaction (another process opening the file at the same time waits). A file already
    at ``SCHEMA_VERSION`` needs no write, so a router starts while another process holds
    the write lock (its settlements then go to the journal until the lock is gone)."""
    if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
        return
    with transaction(conn, "IMMEDIATE"):
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise LedgerError(
                f"{path}: ledger schema version {version} is newer than this"
                f" router's ({SCHEMA_VERSION}); upgrade the router"
            )
        if version == 1:
            check_unique_refs(conn, path)
        for stmt in SCHEMA.split(";"):
            if stmt.strip():
                conn.execute(stmt)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


class transaction:
    """``BEGIN <mode>`` ... ``COMMIT``, or ``ROLLBACK`` on any exception (including the
    InsufficientBudget that ends a refused reserve)."""

    def __init__(self, conn: sqlite3.Connection, mode: str) -> None:
        self.conn = conn
        self.mode = mode

    def __enter__(self) -> None:
        self.conn.execute(f"BEGIN {self.mode}")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        elif self.conn.in_transaction:
            self.conn.execute("ROLLBACK")


def check_unique_refs(conn: sqlite3.Connection, path: str) -> None:
    """Schema 1 -> 2 makes a non-empty ``spend.ref`` unique. A decision settled twice
    under schema 1 would be a double charge that the operator must look at: refuse to guess
    which row is right."""
    dupes = conn.execute(
        "SELECT ref, COUNT(*) FROM spend WHERE ref <> '' GROUP BY ref HAVING COUNT(*) > 1 LIMIT 5"
    ).fetchall()
    if dupes:
        raise LedgerError(
            f"{path}: the spend table settles some refs more than once ({dupes}); resolve"
            " them (SELECT * FROM spend WHERE ref = ...) before upgrading to schema 2"
        )


def is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)
