"""``p2l-router ledger status|ack-reset``: look at a Redis ledger's epoch, and acknowledge
that it lost its data so that the routers serve again.

Why a command and not a flag of ``serve``: a lost ledger is refused by every router
process at once, and accepting the loss (budgets start over from what the ledger holds,
which is nothing before the wipe) is one decision for the whole deployment, made once by
a person, recorded in the new sentinel (who, when, ``--note``). The running routers pick
it up at their next request or ``/readyz`` probe; see ``router/ledger/epoch.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

__all__ = ["add_ledger_parser", "cmd_ledger"]

LEDGER_ENV = "P2L_ROUTER_LEDGER"  # the serve flag's variable: one setting for both


def add_ledger_parser(sub: Any) -> None:
    p = sub.add_parser("ledger", help="the Redis ledger's epoch: status, ack-reset")
    psub = p.add_subparsers(dest="ledger_command", required=True)
    default = os.environ.get(LEDGER_ENV) or None
    st = psub.add_parser("status", help="print the epoch sentinel (exit 1 when lost)")
    ack = psub.add_parser(
        "ack-reset", help="accept that the ledger lost its data; the routers serve again"
    )
    for q in (st, ack):
        q.add_argument(
            "--ledger", default=default, required=default is None,
            help=f"redis://HOST:PORT/DB?prefix=... as given to serve (default: ${LEDGER_ENV})",
        )  # fmt: skip
    ack.add_argument("--note", default="", help="why, for the record (kept in the sentinel)")
    ack.add_argument(
        "--force", action="store_true", help="write a new epoch even if none is marked lost"
    )


def cmd_ledger(args: argparse.Namespace) -> int:
    from router.ledger import LedgerError, RedisLedger, create_ledger
    from router.ledger.epoch import LOST

    if not str(args.ledger).startswith(("redis://", "rediss://")):
        print(
            "p2l-router: only a Redis ledger has an epoch (a SQLite file does not forget)",
            file=sys.stderr,
        )
        return 2
    try:
        ledger = create_ledger(args.ledger)
    except ValueError as exc:
        print(f"p2l-router: {exc}", file=sys.stderr)
        return 2
    assert isinstance(ledger, RedisLedger)

    async def run() -> int:
        try:
            if args.ledger_command == "status":
                s = await ledger.epoch.read()
                print(json.dumps(s.doc if s else None, indent=2))
                return 1 if s is not None and s.kind == LOST else 0
            s = await ledger.epoch.acknowledge(note=args.note, force=args.force)
            print(f"acknowledged: {ledger.url} is now {s.describe()}; running routers serve again")
            return 0
        finally:
            await ledger.close()

    try:
        return asyncio.run(run())
    except LedgerError as exc:
        print(f"p2l-router: {exc}", file=sys.stderr)
        return 1
