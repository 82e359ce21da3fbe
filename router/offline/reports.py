"""``p2l-router decisions summarize``: the per team × model table of a decision log file or
of a ledger's decision history, and with ``--plot`` a PNG of spend over time and model
share. The numbers come from ``summarize_decisions``, the same code as
``GET /v1/admin/stats``; the sessions line (conversations, switches per session, expected
cache savings) from ``session_summary``, the same in both.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from router.ledger.history import (
    line_ts,
    parse_duration,
    parse_since,
    summarize_decisions,
)

__all__ = ["cmd_decisions", "format_summary", "read_log"]


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The JSON lines of a decision log; lines that are not decisions (other log output on
    the same stderr) are skipped."""
    out = []
    with Path(path).open(encoding="utf-8") as fh:
        for raw in fh:
            raw = raw.strip()
            if not raw.startswith("{"):
                continue
            try:
                line = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if isinstance(line, dict) and "decision_id" in line and "ts" in line:
                out.append(line)
    return out


async def _from_ledger(url: str, since: float | None, team: str | None) -> list[dict[str, Any]]:
    from router.ledger import create_ledger

    ledger = create_ledger(url)
    try:
        return await ledger.decisions_since(since, team)
    finally:
        await ledger.close()


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def format_summary(summary: dict[str, Any]) -> str:
    head = (
        f"{'team':<12} {'model':<28} {'reqs':>6} {'share':>6} {'spend $':>12} {'cache saved $':>13} "
        f"{'score p50/p99 ms':>17} {'upstr p50/p99 ms':>17} {'ovh p50/p99 ms':>15} "
        f"{'fb':>4} {'err':>4}"
    )
    rows = [head, "-" * len(head)]
    for g in summary["groups"]:
        rows.append(
            f"{str(g['team']):<12.12} {str(g['model']):<28.28} {g['requests']:>6} "
            f"{g['share']:>6.1%} {g['spend_usd']:>12.6f} {g.get('cache_saved_usd', 0.0):>13.6f} "
            f"{_ms(g['scoring_ms_p50']) + '/' + _ms(g['scoring_ms_p99']):>17} "
            f"{_ms(g['upstream_ms_p50']) + '/' + _ms(g['upstream_ms_p99']):>17} "
            f"{_ms(g['overhead_ms_p50']) + '/' + _ms(g['overhead_ms_p99']):>15} "
            f"{g['fallbacks']:>4} {g['errors']:>4}"
        )
    total = sum(g["requests"] for g in summary["groups"])
    spend = sum(g["spend_usd"] for g in summary["groups"])
    saved = sum(g.get("cache_saved_usd", 0.0) for g in summary["groups"])
    rows.append(
        f"total: {total} requests, ${spend:.6f}; caching saved ${saved:.6f} "
        f"(the cost at the full input price minus the cost paid)"
    )
    ss = summary.get("sessions")
    if ss and ss["sessions"]:
        rows.append(
            f"sessions: {ss['sessions']} ({ss['turns']} turns), {ss['switches']} switches "
            f"({ss['switches_per_session']:.2f} per session, at most "
            f"{ss['max_switches_in_a_session']}), expected cache savings "
            f"${ss['expected_cache_savings_usd']:.6f}"
        )
    return "\n".join(rows)


def cmd_decisions(args: argparse.Namespace) -> int:
    if (args.log is None) == (args.ledger is None):
        print("p2l-router: give a decision LOG file or --ledger URL (one)", file=sys.stderr)
        return 2
    try:
        since = parse_since(args.since, time.time())
        bucket_s = parse_duration(args.bucket)
    except ValueError as exc:
        print(f"p2l-router: {exc}", file=sys.stderr)
        return 2
    if args.log is not None:
        lines = [
            x
            for x in read_log(args.log)
            if (args.team is None or x.get("team") == args.team)
            and (since is None or line_ts(x) >= since)
        ]
    else:
        lines = asyncio.run(_from_ledger(args.ledger, since, args.team))
    summary = summarize_decisions(lines, bucket_s=bucket_s, since=since)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_summary(summary))
    if args.plot:
        from router.offline.plot import plot_decisions

        print(f"wrote {plot_decisions(summary, args.plot)}")
    return 0


def add_decisions_parser(sub: Any) -> None:
    d = sub.add_parser("decisions", help="reports over the decision history")
    dsub = d.add_subparsers(dest="decisions_command", required=True)
    s = dsub.add_parser("summarize", help="per team × model table (and --plot)")
    s.add_argument("log", nargs="?", default=None, help="a decision log file (JSON lines)")
    s.add_argument("--ledger", default=None, help="read the ledger's history instead")
    s.add_argument("--since", default=None, help="ISO time or a duration: 30m, 24h, 7d")
    s.add_argument("--team", default=None)
    s.add_argument("--bucket", default="1h", help="time bucket of the plot: 5m, 1h, 1d")
    s.add_argument("--plot", default=None, help="write spend over time and model share here")
    s.add_argument("--json", action="store_true", help="print the summary as JSON")
