"""Ledger throughput: reserve+settle pairs per second under concurrent asyncio tasks.

Each operation is what one routed request costs the ledger: ``reserve`` (atomic check and
insert, with a period end so Redis sets its expiries) then ``settle`` (spend row + totals,
idempotent by ref), two transactions. A second line times ``take_rate`` (the team rate
limit, one transaction) alone. SQLite runs on a file in a
temporary folder (WAL, synchronous=NORMAL: the production settings); Redis runs against
127.0.0.1:6379 (or ``--redis URL``) under a throw-away key prefix, skipped if unreachable.

    python bench/ledger.py [--tasks 1 32] [--ops 5000] [--redis redis://127.0.0.1:6379/0]

Each backend runs once per ``--tasks`` figure (concurrency). Where the ledger group-commits
(router/ledger/group.py) the line also says how many operations a batch held on average.
To time another checkout's ledger with this script, copy it out of the tree (it puts its
own checkout first on ``sys.path``) and run it with ``PYTHONPATH=<that checkout>``.

A second section replays a simulated day with pacing on and prints final spend and mean
score against the best fixed λ in hindsight (``--only pacing`` runs just that).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from router.ledger import Ledger, LedgerError, create_ledger  # noqa: E402


async def reserve_settle(ledger: Ledger, *, tasks: int, ops: int) -> dict[str, float]:
    """Run ``ops`` reserve+settle pairs from ``tasks`` concurrent tasks; return figures."""
    per_task = ops // tasks
    latencies: list[float] = []
    now = time.time()

    async def worker(i: int) -> None:
        for j in range(per_task):
            t0 = time.perf_counter()
            r = await ledger.reserve(
                f"team-{i % 4}",
                0.001,
                limit_usd=1e9,
                period_key="bench",
                ttl_s=60,
                now=now,
                period_ends_at=now + 86400,
            )
            await ledger.settle(r, 0.0009, now=now, ref=f"{i}-{j}")
            latencies.append(time.perf_counter() - t0)

    # warm-up (connections, script cache, page cache) outside the timing
    await asyncio.gather(*(ledger.reserve("warm", 0.0, limit_usd=None, period_key="w", ttl_s=1,
                                          now=now) for _ in range(tasks)))  # fmt: skip
    start = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(tasks)))
    elapsed = time.perf_counter() - start
    done = per_task * tasks
    total = await ledger.total_spent()
    assert abs(total - done * 0.0009) < 1e-6, (total, done)  # every settle counted once
    latencies.sort()
    group = getattr(ledger, "_group", None)
    return {
        "per_batch": group.ops / group.batches if group is not None and group.batches else 1.0,
        "pairs": done,
        "seconds": elapsed,
        "pairs_per_s": done / elapsed,
        "p50_ms": statistics.median(latencies) * 1e3,
        "p99_ms": latencies[int(0.99 * (len(latencies) - 1))] * 1e3,
    }


async def take_rate(ledger: Ledger, *, tasks: int, ops: int) -> dict[str, float]:
    """``ops`` take_rate calls (both limits, never refused) from ``tasks`` tasks."""
    per_task = ops // tasks
    now = time.time()

    async def worker(i: int) -> None:
        for _ in range(per_task):
            wait = await ledger.take_rate(
                f"team-{i % 4}", requests_per_minute=10**9, tokens_per_minute=10**12,
                tokens=500, now=now,
            )  # fmt: skip
            assert wait is None

    start = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(tasks)))
    elapsed = time.perf_counter() - start
    return {"calls": per_task * tasks, "seconds": elapsed}


def _print(name: str, f: dict[str, float], tasks: int) -> None:
    print(
        f"{name:<8} {tasks:>3} tasks  {f['pairs']:>6.0f} reserve+settle in {f['seconds']:.2f}s"
        f"  -> {f['pairs_per_s']:>8.0f} pairs/s ({2 * f['pairs_per_s']:.0f} transactions/s)"
        f"  latency p50 {f['p50_ms']:.2f} ms, p99 {f['p99_ms']:.2f} ms"
        f"  ({f['per_batch']:.1f} ops/batch)"
    )


def _print_rate(name: str, f: dict[str, float]) -> None:
    print(
        f"{name:<8} take_rate {f['calls']:>6.0f} calls in {f['seconds']:.2f}s"
        f"  -> {f['calls'] / f['seconds']:>8.0f} calls/s"
    )


async def ledger_section(args: argparse.Namespace) -> None:
    import router.ledger

    print(f"== ledger: reserve+settle throughput ({Path(router.ledger.__file__).parents[2]})")
    for tasks in args.tasks:
        with tempfile.TemporaryDirectory() as tmp:
            ledger = create_ledger(f"sqlite:///{Path(tmp) / 'bench.db'}")
            try:
                _print("sqlite", await reserve_settle(ledger, tasks=tasks, ops=args.ops), tasks)
                _print_rate("sqlite", await take_rate(ledger, tasks=tasks, ops=args.ops))
            finally:
                await ledger.close()

    for tasks in args.tasks:
        prefix = f"bench-{uuid.uuid4().hex[:8]}:"
        sep = "&" if "?" in args.redis else "?"
        ledger = create_ledger(f"{args.redis}{sep}prefix={prefix}")
        try:
            await ledger.check()
        except LedgerError as exc:
            print(f"redis    skipped: {exc}")
            await ledger.close()
            return
        try:
            _print("redis", await reserve_settle(ledger, tasks=tasks, ops=args.ops), tasks)
            _print_rate("redis", await take_rate(ledger, tasks=tasks, ops=args.ops))
        finally:
            client = ledger._redis  # type: ignore[attr-defined]  # clean our keys up
            keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
            if keys:
                await client.delete(*keys)
            await ledger.close()


# Sections run in order by ``main``; the pacing benchmark adds its own entry here.
async def pacing_section(args: argparse.Namespace) -> None:
    """A simulated day of cost-aware routing with pacing on: final spend and mean score
    against the best fixed λ chosen in hindsight (router/pacing.py's replay, the same
    ``paced_lambda`` the server calls per request)."""
    from router.policy.pacing import fixed_lambda, hindsight_lambda, replay, synthetic_day

    print("\npacing: one simulated day, 2,000 requests, 8 models, ~6x afternoon peak")
    print(f"{'seed':>4} {'budget':>9} {'start λ':>10} {'day':>6} {'spend/budget':>13} "
          f"{'score/hindsight':>16} {'fixed-λ spend/budget':>21}")  # fmt: skip
    for seed in range(args.pacing_seeds):
        stream = synthetic_day(2000, seed=seed)
        full, _ = fixed_lambda(stream, 0.0)
        for share in (0.2, 0.5):
            budget = share * full
            lam_h, _, score_h = hindsight_lambda(stream, budget)
            for factor in (0.3, 3.0):
                base = lam_h * factor
                state = None
                for day in (1, 2):  # day 2 starts with what day 1 learned
                    res = replay(stream, budget, base, state=state)
                    state = res.state
                    fixed_spend, _ = fixed_lambda(stream, base)
                    print(f"{seed:>4} {budget:>9.3f} {base:>10.4g} {day:>6} "
                          f"{res.spent_usd / budget:>13.3f} {res.mean_score / score_h:>16.3f} "
                          f"{fixed_spend / budget:>21.2f}")  # fmt: skip


SECTIONS: list[tuple[str, Callable[[argparse.Namespace], object]]] = [
    ("ledger", ledger_section),
    ("pacing", pacing_section),
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tasks", type=int, nargs="+", default=[1, 32], help="concurrent asyncio tasks (each)"
    )
    parser.add_argument("--ops", type=int, default=5000, help="reserve+settle pairs in all")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--pacing-seeds", type=int, default=3, help="simulated days per setting")
    parser.add_argument(
        "--loop", choices=["uvloop", "asyncio"], default="uvloop",
        help="event loop (the server runs uvloop)",
    )  # fmt: skip
    parser.add_argument("--only", choices=[n for n, _ in SECTIONS], help="run one section")
    args = parser.parse_args(argv)
    for name, section in SECTIONS:
        if args.only in (None, name):
            factory = None
            if args.loop == "uvloop":
                import uvloop

                factory = uvloop.new_event_loop
            with asyncio.Runner(loop_factory=factory) as runner:
                runner.run(section(args))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
