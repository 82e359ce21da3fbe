"""The soak's record and report (bench/soak.py): per-request plans and outcomes, the
join of the fake upstream's arrivals, the router's decision log and the ledger's settled
rows by each request's marker, and the printed figures."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARK = re.compile(r"soak-\d{7}")


@dataclass
class Plan:
    """One logical request, decided before the run (so the fake can look it up)."""

    marker: str
    routed: bool
    stream: bool
    fault: str | None


@dataclass
class Outcome:
    """What the client saw: status, error code (in-band for a stream), latency, and how
    late the request started against its schedule."""

    plan: Plan
    status: int
    code: str | None
    latency_s: float
    lag_s: float


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q / 100 * len(xs)))] if xs else float("nan")


def cost(prices: dict[str, tuple[float, float, float]], model: str, usage: dict) -> float:
    """What the provider bills: cached input at its price, reasoning inside the output."""
    i, o, c = prices[model]
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return (
        (usage["prompt_tokens"] - cached) * i + cached * c + usage["completion_tokens"] * o
    ) / 1e6


def reconcile(
    arrived: list[Any],
    plans: list[Plan],
    decisions: list[dict],
    spend_rows: list[dict],
    prices: dict[str, tuple[float, float, float]],
    not_processed: set[str],
    upstream: dict[str, str],
) -> dict[str, Any]:
    """Per marker: bodies seen twice, the fake's bill, the router's charge. ``arrived``:
    the fake's ``Recorded`` requests; ``not_processed``: faults after which one resend of
    the same body is allowed (429/503 say the request was not processed)."""
    by_marker = {p.marker: p for p in plans}
    up_to_name = {up: n for n, up in upstream.items()}
    arrivals: dict[str, list[Any]] = defaultdict(list)
    for r in arrived:
        if r.method == "POST" and isinstance(r.json, dict):
            m = MARK.search(json.dumps(r.json.get("messages")))
            if m:
                arrivals[m.group()].append(r)
    dup_ok = dup_bad = 0
    billed: dict[str, float] = defaultdict(float)
    for marker, recs in arrivals.items():
        hashes = Counter(hashlib.sha256(json.dumps(r.json, sort_keys=True).encode()).hexdigest()
                         for r in recs)  # fmt: skip
        extra = sum(k - 1 for k in hashes.values())
        # One resend after the injected 429/503 (which say "not processed") is allowed.
        allowed = 1 if by_marker[marker].fault in not_processed else 0
        dup_ok += min(extra, allowed)
        dup_bad += max(0, extra - allowed)
        for r in recs:
            if r.usage:
                billed[marker] += cost(prices, up_to_name[r.json["model"]], r.usage)
    charged: dict[str, float] = defaultdict(float)
    sources: dict[str, str] = {}
    circuit = sum(any(f.get("error") == "circuit_open" for f in d.get("fallbacks") or ())
                  for d in decisions)  # fmt: skip
    for d in decisions:
        m = MARK.search(json.dumps(d.get("prompt")))
        if m and d.get("cost_usd") is not None:
            charged[m.group()] += d["cost_usd"]
            sources[m.group()] = d.get("usage_source") or "?"
    groups: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0, 0])
    for p in plans:
        g = groups[f"{p.fault or 'none'}/{'stream' if p.stream else 'json'}"]
        b, c = billed.get(p.marker, 0.0), charged.get(p.marker, 0.0)
        g[0] += 1
        g[1] += b
        g[2] += c
        g[3] += abs(b - c) > 1e-9
    refs = Counter(r["ref"] for r in spend_rows)
    return {
        "dup_ok": dup_ok, "dup_bad": dup_bad, "billed": sum(billed.values()),
        "charged": sum(charged.values()), "groups": groups, "circuit_open": circuit,
        "decisions_usd": sum(d["cost_usd"] or 0.0 for d in decisions),
        "cached_tokens": sum(d.get("cached_prompt_tokens") or 0 for d in decisions),
        "reasoning_tokens": sum(d.get("reasoning_tokens") or 0 for d in decisions),
        "cache_saved_usd": sum(d.get("cache_saved_usd") or 0.0 for d in decisions),
        "sources": Counter(sources.values()), "refs_twice": sum(1 for v in refs.values() if v > 1),
        "settled_rows": len(spend_rows), "rows_usd": sum(r["amount"] for r in spend_rows),
    }  # fmt: skip


def read_ledger(path: Path) -> tuple[float, list[dict]]:
    from router.ledger import create_ledger

    async def read() -> tuple[float, list[dict]]:
        ledger = create_ledger(f"sqlite:///{path}")
        try:
            return await ledger.total_spent(), await ledger.spend_rows()
        finally:
            await ledger.close()

    return asyncio.run(read())


def report(a: argparse.Namespace, out: list[Outcome], rec: dict, ledger_usd: float,
           rss: tuple[float, float], load: tuple, notes: list[str], wall: float,
           circuit: dict) -> None:  # fmt: skip
    ok = [o for o in out if o.status == 200 and o.code is None]
    print(f"\n=== soak: {a.duration:g} s at {a.rate:g} req/s, concurrency {a.concurrency}, "
          f"faults {a.fault_rate:.0%}, ledger lock {a.lock_s:g} s, busy_timeout {a.busy_timeout:g} s")  # fmt: skip
    print(f"load average (1/5/15 min) at start {load[0]}, at end {load[1]}; wall {wall:.0f} s")
    for n in notes:
        print("  ", n)
    print(f"requests sent: {len(out)} (ok {len(ok)}); routed {sum(o.plan.routed for o in out)}, "
          f"streamed {sum(o.plan.stream for o in out)}, "
          f"with a fault {sum(o.plan.fault is not None for o in out)}")  # fmt: skip
    errs = Counter((o.status, o.code) for o in out if o not in ok)
    print("client-visible errors by (status, code):")
    for (s, c), k in errs.most_common():
        faults = Counter(o.plan.fault or "none" for o in out if (o.status, o.code) == (s, c))
        print(f"   {s} {c}: {k}   (fault plan: {dict(faults.most_common(4))})")
    print(f"bodies the upstream saw twice: {rec['dup_bad']} (goal 0); resends after an injected "
          f"429/503 ('not processed', allowed): {rec['dup_ok']}")  # fmt: skip
    print(f"ledger spend ${ledger_usd:.9f}; settled rows {rec['settled_rows']} "
          f"(${rec['rows_usd']:.9f}), refs settled twice {rec['refs_twice']} (goal 0)")  # fmt: skip
    print(f"decision-log costs ${rec['decisions_usd']:.9f} (ledger - decisions = "
          f"{ledger_usd - rec['decisions_usd']:+.3e}; warm-up included), of the soak's requests "
          f"${rec['charged']:.9f}, by usage source {dict(rec['sources'])}")  # fmt: skip
    print(f"fake upstream billed ${rec['billed']:.9f} (charged - billed = "
          f"{rec['charged'] - rec['billed']:+.3e}); per fault/shape: n, billed, charged, "
          "requests where they differ by > 1e-9:")  # fmt: skip
    for k, (n, b, c, d) in sorted(rec["groups"].items()):
        print(f"   {k:36s} {n:6d}  ${b:.9f}  ${c:.9f}  {d}")
    print(f"usage classes logged: {rec['cached_tokens']} cached prompt tokens, "
          f"{rec['reasoning_tokens']} reasoning tokens; caching saved "
          f"${rec['cache_saved_usd']:.9f}")  # fmt: skip
    lat = [o.latency_s * 1000 for o in out]
    lat_ok = [o.latency_s * 1000 for o in ok if o.plan.fault is None]
    print(f"latency ms, all: P50 {pct(lat, 50):.1f} P99 {pct(lat, 99):.1f}; fault-free ok: "
          f"P50 {pct(lat_ok, 50):.1f} P99 {pct(lat_ok, 99):.1f}; "
          f"max start lag {max((o.lag_s for o in out), default=0):.2f} s")  # fmt: skip
    print(f"decisions that met an open circuit: {rec['circuit_open']} (circuit {circuit})")
    print(f"router RSS: {rss[0]:.1f} MB at start, {rss[1]:.1f} MB at end")
