"""``GET /v1/admin/stats`` over a large decision history: how long one call takes, and how
long the router's event loop stalls meanwhile.

The stats route summarises every stored decision since ``since``; if that runs on the
event loop, every other request waits behind it. This fills a real ledger with
``--decisions`` decision-log lines (spread over the last week), starts a real
``p2l-router serve`` on it, and while a thread polls ``/healthz`` back to back, calls
the stats route ``--calls`` times. Printed per backend: the stats call time (P50, max),
the decisions it summarised, and the slowest ``/healthz`` answer seen with no stats call
running and during the stats calls (the event loop's longest stall, give or take a
loopback round trip).

    python bench/admin_stats.py [--decisions 100000] [--calls 5] [--no-redis]
                                [--repo PATH]   # the router code to run (default: here)
                                [--sqlite-cache FILE]  # reuse one filled SQLite ledger

``--repo`` runs another checkout's router (say an export of main) against the same
generated history, for a before/after figure; Redis runs under a throw-away key prefix
whose keys are deleted at the end (never a FLUSH).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

ADMIN_KEY = "bench-admin-key"
MODELS = ["gpt-4o-2024-08-06", "gpt-4o-mini-2024-07-18", "claude-3-5-haiku-20241022",
          "deepseek-v3", "llama-3.1-8b-instruct"]  # fmt: skip
TEAMS = ["research", "support", "growth", "infra"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def decision_line(i: int, ts: float, rng: random.Random) -> dict[str, Any]:
    """A line shaped like router/observability/decisions.py's ``log_line``."""
    chosen = rng.choice(MODELS)
    status = 200 if rng.random() > 0.02 else 502
    cost = round(rng.uniform(1e-5, 3e-3), 12)
    return {
        "ts": datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds"),
        "decision_id": f"bench-{i:07d}-{uuid.uuid4().hex[:8]}",
        "team": TEAMS[i % len(TEAMS)],
        "requested_model": "p2l",
        "strategy": "cost_aware",
        "cost_sensitivity": 0.5,
        "candidates": [
            {
                "model": m,
                "coef": round(rng.gauss(0, 1), 6),
                "score": round(rng.random(), 6),
                "expected_cost_usd": round(rng.uniform(1e-5, 3e-3), 9),
            }
            for m in MODELS
        ],  # fmt: skip
        "chosen": chosen,
        "reason": "best score per dollar at λ=0.5",
        "fallbacks": [] if rng.random() > 0.05 else [{"model": MODELS[0], "error": "502"}],
        "served_by": chosen if status == 200 else None,
        "attempts": 1,
        "stream": rng.random() < 0.3,
        "prompt_tokens": rng.randint(10, 2000),
        "completion_tokens": rng.randint(10, 800),
        "expected_cost_usd": cost,
        "cost_usd": cost if status == 200 else None,
        "usage_source": "upstream",
        "budget_remaining_usd": 100.0,
        "scoring_ms": round(rng.uniform(2, 20), 3),
        "upstream_ms": round(rng.uniform(100, 3000), 3),
        "ttft_ms": None,
        "overhead_ms": round(rng.uniform(0.3, 2), 3),
        "status": status,
    }


async def fill(url: str, n: int) -> None:
    from router.ledger import create_ledger

    rng = random.Random(7)
    now = time.time()
    ledger = create_ledger(url)
    try:
        batch = 5000
        for start in range(0, n, batch):
            lines = [
                decision_line(i, now - 7 * 86400 * (n - i) / n, rng)
                for i in range(start, min(n, start + batch))
            ]
            await ledger.record_decisions(lines)
    finally:
        await ledger.close()


def write_config(tmp: Path) -> tuple[Path, Path]:
    tmp.mkdir(parents=True, exist_ok=True)
    providers = tmp / "providers.yaml"
    providers.write_text(
        yaml.safe_dump(
            {
                "providers": {"dead": {"base_url": "http://127.0.0.1:9/v1"}},
                "models": {
                    m: {"provider": "dead", "input_usd_per_mtok": 1.0, "output_usd_per_mtok": 2.0}
                    for m in MODELS
                },
            }
        )
    )
    policies = tmp / "policies"
    policies.mkdir()
    for team in TEAMS:
        (policies / f"{team}.yaml").write_text(
            yaml.safe_dump({"api_keys_env": [f"KEY_{team.upper()}"], "budget": {"usd": 1e9}})
        )
    return providers, policies


class Poller(threading.Thread):
    """``GET /healthz`` back to back; each answer's latency, tagged with the phase."""

    def __init__(self, root: str) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.phase = "idle"
        self.samples: dict[str, list[float]] = {"idle": [], "stats": []}
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.root, timeout=60) as client:
            while not self.stop.is_set():
                phase = self.phase
                t0 = time.perf_counter()
                client.get("/healthz").raise_for_status()
                self.samples[phase].append(time.perf_counter() - t0)


def measure(root: str, calls: int) -> dict[str, Any]:
    poller = Poller(root)
    poller.start()
    time.sleep(2.0)  # the idle baseline
    times, body = [], {}
    with httpx.Client(base_url=root, timeout=300) as client:
        auth = {"authorization": f"Bearer {ADMIN_KEY}"}
        poller.phase = "stats"
        for _ in range(calls):
            t0 = time.perf_counter()
            resp = client.get("/v1/admin/stats", params={"since": "30d"}, headers=auth)
            times.append(time.perf_counter() - t0)
            resp.raise_for_status()
            body = resp.json()
        poller.phase = "idle"
    poller.stop.set()
    poller.join(60)
    return {
        "stats_p50_s": statistics.median(times),
        "stats_max_s": max(times),
        "summarised": sum(g["requests"] for g in body.get("groups", [])),
        "truncated": body.get("truncated", "-"),
        "healthz_idle_max_ms": max(poller.samples["idle"]) * 1e3,
        "healthz_stats_max_ms": max(poller.samples["stats"], default=0.0) * 1e3,
        "healthz_stats_n": len(poller.samples["stats"]),
    }


def run_backend(name: str, url: str, repo: Path, tmp: Path, args: argparse.Namespace) -> None:
    cache = args.sqlite_cache
    if name == "sqlite" and cache is not None and cache.exists():
        shutil.copy(cache, url.removeprefix("sqlite:///"))
        print(f"[{name}] copied the filled ledger {cache}")
    else:
        t0 = time.perf_counter()
        asyncio.run(fill(url, args.decisions))
        print(f"[{name}] filled {args.decisions} decisions in {time.perf_counter() - t0:.1f} s")
        if name == "sqlite" and cache is not None:
            shutil.copy(url.removeprefix("sqlite:///"), cache)
    providers, policies = write_config(tmp / name)
    port = free_port()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(repo),
        "P2L_ROUTER_ADMIN_KEY": ADMIN_KEY,
        **{f"KEY_{t.upper()}": f"sk-{t}" for t in TEAMS},
    }
    router = subprocess.Popen(
        [sys.executable, "-m", "router", "serve", "--port", str(port),
         "--providers", str(providers), "--policies", str(policies),
         "--p2l-model", str(tmp / "tiny"), "--device", "cpu", "--ledger", url,
         "--decision-log", "off", "--log-level", "warning",
         "--journal", str(tmp / name / "journal")],
        cwd=repo, env=env,
    )  # fmt: skip
    root = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert router.poll() is None, "the router exited"
            try:
                if httpx.get(root + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the router never became ready"
            time.sleep(0.2)
        r = measure(root, args.calls)
    finally:
        router.terminate()
        router.wait(60)
    print(
        f"[{name}] stats since=30d: p50 {r['stats_p50_s']:.3f} s, max {r['stats_max_s']:.3f} s,"
        f" {r['summarised']} decisions summarised (truncated: {r['truncated']})\n"
        f"[{name}] /healthz slowest: {r['healthz_idle_max_ms']:.1f} ms idle, "
        f"{r['healthz_stats_max_ms']:.1f} ms during stats calls "
        f"({r['healthz_stats_n']} polls)"
    )


def main() -> None:
    here = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser()
    ap.add_argument("--decisions", type=int, default=100_000)
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--repo", type=Path, default=here, help="the router code to run")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--no-redis", action="store_true")
    ap.add_argument(
        "--sqlite-cache",
        type=Path,
        help="a filled SQLite ledger to copy instead of filling one (written if missing)",
    )
    args = ap.parse_args()
    repo = args.repo.resolve()
    sys.path.insert(0, str(repo))
    print(f"router code: {repo}; {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        subprocess.run(
            [sys.executable, "-m", "router", "tiny-checkpoint", str(tmp / "tiny"),
             "--models", ",".join(MODELS)],
            check=True, capture_output=True, cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)},
        )  # fmt: skip
        run_backend("sqlite", f"sqlite:///{tmp / 'ledger.db'}", repo, tmp, args)
        if args.no_redis:
            return
        import redis

        client = redis.Redis.from_url(args.redis)
        try:
            client.ping()
        except redis.ConnectionError:
            print(f"[redis] skipped: no Redis at {args.redis}")
            return
        prefix = f"bench-admin-{uuid.uuid4().hex[:8]}:"
        try:
            run_backend("redis", f"{args.redis}?prefix={prefix}", repo, tmp, args)
        finally:
            for key in client.scan_iter(f"{prefix}*", count=1000):
                client.delete(key)
            client.close()


if __name__ == "__main__":
    main()
