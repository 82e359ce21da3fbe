"""A bounded soak: the real router (``python -m router serve``, a subprocess) in front of
the fake upstream (tests/fake_upstream.py) on loopback, a fixed request rate with bounded
concurrency for ``--duration`` seconds, 20 % of requests meeting an upstream fault, and
one long ledger lock (another SQLite connection holding ``BEGIN IMMEDIATE``) mid-run.

    python bench/soak.py                  # 5 minutes, 50 req/s
    python bench/soak.py --duration 60 --lock-s 15

Each logical request carries a unique marker (``soak-0000042``) in its user message, so
the fake's arrivals, the router's decision log (``log_prompts: true``) and the client's
outcome can be joined per request. A fault is applied to the *first* arrival of a
marker only; retries and fallbacks then meet a healthy upstream.

Accounting, and why "billed" and "charged" differ only where they must:
the fake bills an answer whose ``usage`` it sent in full (a non-streamed body, or a
stream's usage chunk), at the prices the bench writes in providers.yaml. The router
(``ChatFlow.charge``) charges the upstream's usage when it got it; for a stream cut short
(no usage chunk) it charges an *estimate* (prompt and relayed text counted with the P2L
tokenizer; the fake counts words); for an answer it gave up on before the headers
(a timeout, then a fallback) it charges nothing for that attempt. So per request:
faults the two sides see alike (statuses, drops, resets, huge answers, slow-but-in-time
chunks) must agree to 1e-9; a stream the router cut (total deadline) is charged an
estimate the fake never billed; an answer the fake sent after the router's first-byte
deadline is billed by the fake and not charged. The report shows each group apart.

The report: requests sent, client-visible errors by status/code, bodies the upstream
saw twice per marker (goal: 0 beyond retries after a 429/503, which say "not processed"),
ledger spend vs per-decision costs (each settled exactly once) vs the fake's bill,
P50/P99 latency, the router's RSS at start and end, the machine's load.

Reading ``circuit_open``: while the ledger is locked no new call reaches the upstream, so
the slow faulty calls still in flight are the only ones to finish; five in a row open a
provider's circuit, and after the cooldown one probe at a time is let through while every
other call fails at once. Those 502s follow from the injected faults and the breaker's
design (consecutive count, single probe), not from a dead provider. The record and the
report are in bench/soak_report.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).parent))

from conftest import PRICES as TEST_PRICES  # noqa: E402
from conftest import TINY_MODELS  # noqa: E402
from fake_upstream import Behaviour, FakeUpstream  # noqa: E402
from router_process import wait_http_ok  # noqa: E402
from soak_report import MARK, Outcome, Plan, read_ledger, reconcile, report  # noqa: E402

# The tests' catalog: the tiny checkpoint's models at their real prices (per 1M tokens),
# cache reads at half the input price. Every third model's upstream id names a reasoner,
# so the fake adds reasoning tokens (billed as output) to its answers.
PRICES = {m: (*TEST_PRICES[m], TEST_PRICES[m][0] / 2) for m in TINY_MODELS}
UPSTREAM = {
    name: f"up-{name}-reasoner" if i % 3 == 0 else f"up-{name}"
    for i, name in enumerate(sorted(PRICES))
}
# A system prompt long enough for the fake's automatic prefix cache (1,024 words), sent
# with SHARED_SHARE of the requests: after the first per model they read it from cache.
SHARED = " ".join(f"rule {i}: keep the ledger exact." for i in range(220))
SHARED_SHARE = 0.4
TIMEOUTS = {"connect": 2, "first_byte": 4, "idle": 4, "total": 10}
# Five failed calls in a row open a provider's circuit for 10 s (the default is 30 s).
CIRCUIT = {"failures": 5, "cooldown_s": 10}
LIMITS = {"max_sse_event_bytes": 256 << 10, "max_response_bytes": 1 << 20}
FAULTS = {  # kind: (streamed behaviour, non-streamed behaviour), first arrival only
    "status_500": (Behaviour(status=500),) * 2,
    "status_503": (Behaviour(status=503),) * 2,
    "status_429_retry_after": (Behaviour(status=429, retry_after=1),) * 2,
    "drop_after_read": (Behaviour(drop_after_read=True),) * 2,  # = drop_once here
    "reset": (Behaviour(reset=True),) * 2,
    "slow_headers": (Behaviour(delay_s=6.0),) * 2,  # past first_byte (4 s)
    # Streamed: 1 s per chunk (within idle) until the 10 s total cuts it mid-stream;
    # non-streamed: the body's second half 6 s late (past idle).
    "slow_chunks": (Behaviour(chunk_delay_s=1.0), Behaviour(body_delay_s=6.0)),
    "huge": (Behaviour(huge_line=2 << 20), Behaviour(huge_body=4 << 20)),
}
NOT_PROCESSED = {"status_503", "status_429_retry_after"}
KEY = "sk-soak-team"
WORDS = tuple(
    [
        "the",
        "sea",
        "and",
        "sky",
        "meet",
        "where",
        "ships",
        "sail",
        "past",
        "old",
        "towers",
        "of",
        "stone",
        "under",
        "grey",
    ]
)


# ------------------------------------------------------------------ set-up


def write_config(work: Path, fake_url: str) -> tuple[Path, Path]:
    prov = {"base_url": fake_url, "api_key_env": "SOAK_PROVIDER_KEY", "timeouts": TIMEOUTS,
            "limits": LIMITS, "circuit": CIRCUIT, "max_retries": 2}  # fmt: skip
    names = sorted(PRICES)
    models = {
        name: {"provider": "fake_a" if i % 2 else "fake_b", "upstream_model": UPSTREAM[name],
               "input_usd_per_mtok": p[0], "output_usd_per_mtok": p[1],
               "cached_input_usd_per_mtok": p[2]}
        for i, (name, p) in enumerate((n, PRICES[n]) for n in names)
    }  # fmt: skip
    providers = work / "providers.yaml"
    doc = {"providers": {"fake_a": prov, "fake_b": prov}, "models": models}
    providers.write_text(yaml.safe_dump(doc))
    policies = work / "policies"
    policies.mkdir(exist_ok=True)
    team = {"api_keys_env": ["SOAK_KEY"], "budget": {"usd": 1e6}, "log_prompts": True}
    (policies / "soak.yaml").write_text(yaml.safe_dump(team))
    return providers, policies


def start_router(work: Path, providers: Path, policies: Path, ckpt: Path, port: int, busy: float):
    ledger = work / "ledger.db"
    args = [sys.executable, "-m", "router", "serve", "--port", str(port),
            "--providers", str(providers), "--policies", str(policies),
            "--p2l-model", str(ckpt), "--device", "cpu",
            "--ledger", f"sqlite:///{ledger}?busy_timeout={busy:g}",
            "--decision-log", str(work / "decisions.jsonl")]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "SOAK_KEY": KEY, "SOAK_PROVIDER_KEY": "sk-provider-soak"}  # fmt: skip
    err = (work / "router.log").open("w")
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=err, stderr=err), ledger


def wait_ready(root: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    wait_http_ok(root + "/readyz", proc, what="the router (see its log)", timeout=timeout)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hold_ledger_lock(
    path: Path, start_in: float, hold_s: float, log: list[str]
) -> threading.Thread:
    """Another connection takes the ledger's write lock for ``hold_s`` seconds."""

    def run() -> None:
        time.sleep(start_in)
        db = sqlite3.connect(path, timeout=30, isolation_level=None)
        db.execute("BEGIN IMMEDIATE")
        log.append(f"ledger locked at t={time.monotonic():.1f}")
        time.sleep(hold_s)
        db.execute("COMMIT")
        db.close()
        log.append(f"ledger unlocked at t={time.monotonic():.1f}")

    t = threading.Thread(target=run, daemon=True, name="ledger-lock")
    t.start()
    return t


# ------------------------------------------------------------------ load


def make_plans(n: int, fault_rate: float, rng: random.Random) -> list[Plan]:
    kinds = sorted(FAULTS)
    return [
        Plan(
            f"soak-{i:07d}",
            routed=rng.random() < 0.5,
            stream=rng.random() < 0.5,
            fault=rng.choice(kinds) if rng.random() < fault_rate else None,
        )
        for i in range(n)
    ]


def body_for(plan: Plan, rng: random.Random) -> dict[str, Any]:
    words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 24)))
    model = "p2l" if plan.routed else rng.choice(sorted(PRICES))
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": f"{plan.marker} {words}"}],
        "stream": plan.stream,
    }
    if rng.random() < SHARED_SHARE:
        body["messages"].insert(0, {"role": "system", "content": SHARED})
    if rng.random() < 0.3:
        body["max_tokens"] = rng.randint(3, 30)
    return body


async def one(client: httpx.AsyncClient, plan: Plan, body: dict, lag: float) -> Outcome:
    t0 = time.perf_counter()
    status, code = 0, None
    try:
        if plan.stream:
            async with client.stream("POST", "/v1/chat/completions", json=body) as resp:
                status = resp.status_code
                if status != 200:
                    code = _code(json.loads(await resp.aread()))
                else:
                    code = await _stream_error(resp)
        else:
            resp = await client.post("/v1/chat/completions", json=body)
            status = resp.status_code
            code = None if status == 200 else _code(resp.json())
    except (httpx.HTTPError, ValueError) as exc:
        code = f"client:{type(exc).__name__}"
    return Outcome(plan, status, code, time.perf_counter() - t0, lag)


def _code(body: Any) -> str | None:
    err = body.get("error") if isinstance(body, dict) else None
    return str(err.get("code") or err.get("type")) if isinstance(err, dict) else "no-error-body"


async def _stream_error(resp: httpx.Response) -> str | None:
    """The in-band error code of a stream (None when clean); 'no-done' without [DONE]."""
    code, done = None, False
    async for line in resp.aiter_lines():
        if line == "data: [DONE]":
            done = True
        elif line.startswith("data: ") and '"error"' in line:
            chunk = json.loads(line[6:])
            if "error" in chunk:
                code = "in-band:" + str(_code(chunk))
    return code if done else (code or "no-done")


async def drive(root: str, plans: list[Plan], rate: float, conc: int, seed: int) -> list[Outcome]:
    rng = random.Random(seed)
    limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
    headers = {"authorization": f"Bearer {KEY}"}
    out: list[Outcome] = []
    sem = asyncio.Semaphore(conc)
    async with httpx.AsyncClient(base_url=root, headers=headers, limits=limits, timeout=120) as c:
        tasks = []
        t0 = time.monotonic()

        async def run(plan: Plan, body: dict, due: float) -> None:
            try:
                out.append(await one(c, plan, body, time.monotonic() - due))
            finally:
                sem.release()

        for i, plan in enumerate(plans):
            due = t0 + i / rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            await sem.acquire()
            tasks.append(asyncio.create_task(run(plan, body_for(plan, rng), due)))
        await asyncio.gather(*tasks)
    return out


# ------------------------------------------------------------------ report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=300)
    ap.add_argument("--rate", type=float, default=50)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--fault-rate", type=float, default=0.2)
    ap.add_argument("--lock-s", type=float, default=40, help="ledger lock mid-run (0: none)")
    ap.add_argument("--busy-timeout", type=float, default=2, help="the ledger's busy_timeout")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir", default=None)
    a = ap.parse_args()
    from router.scoring import write_tiny_checkpoint

    work = Path(a.workdir or tempfile.mkdtemp(prefix="p2l-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    ckpt = write_tiny_checkpoint(work / "tiny", sorted(PRICES))
    rng = random.Random(a.seed)
    plans = make_plans(int(a.duration * a.rate), a.fault_rate, rng)
    by_marker = {p.marker: p for p in plans}
    seen: Counter[str] = Counter()

    def choose(body: dict) -> Behaviour | None:
        m = MARK.search(json.dumps(body.get("messages")))
        if m is None:
            return None
        seen[m.group()] += 1
        plan = by_marker.get(m.group())
        if plan is None or plan.fault is None or seen[m.group()] > 1:
            return None
        return FAULTS[plan.fault][0 if body.get("stream") else 1]

    notes: list[str] = []
    with FakeUpstream() as fake:
        fake.choose = choose
        providers, policies = write_config(work, fake.base_url)
        port = free_port()
        root = f"http://127.0.0.1:{port}"
        proc, ledger_path = start_router(work, providers, policies, ckpt, port, a.busy_timeout)
        try:
            wait_ready(root, proc)
            warm = {"model": "p2l", "messages": [{"role": "user", "content": "warm up"}]}
            for _ in range(5):
                httpx.post(root + "/v1/chat/completions", json=warm,
                           headers={"authorization": f"Bearer {KEY}"}, timeout=30)  # fmt: skip
            fake.clear()
            rss0, load0 = rss_mb(proc.pid), os.getloadavg()
            if a.lock_s > 0:
                hold_ledger_lock(
                    ledger_path, max(0.0, (a.duration - a.lock_s) / 2), a.lock_s, notes
                )
            notes.append(f"load started at t={time.monotonic():.1f}")
            t0 = time.monotonic()
            out = asyncio.run(drive(root, plans, a.rate, a.concurrency, a.seed))
            wall = time.monotonic() - t0
            drained = wait_journal(root)
            log_text = (work / "router.log").read_text()
            notes.append(
                f"settlements journaled (ledger locked at settle): {log_text.count('journaled in')}"
                f", reservations whose release failed (they lapse after their TTL): "
                f"{log_text.count('could not release')}; the journal was empty {drained:.1f} s "
                "after the load ended"
            )
            rss1, load1 = rss_mb(proc.pid), os.getloadavg()
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(60)
    ledger_usd, rows = read_ledger(ledger_path)
    decisions = [json.loads(ln) for ln in (work / "decisions.jsonl").read_text().splitlines() if ln]
    rec = reconcile(fake.requests, plans, decisions, rows, PRICES, NOT_PROCESSED, UPSTREAM)
    load = (tuple(round(x, 2) for x in load0), tuple(round(x, 2) for x in load1))
    report(a, out, rec, ledger_usd, (rss0, rss1), load, notes, wall, CIRCUIT)
    print(f"work folder (config, ledger, decision log, router log): {work}")


def wait_journal(root: str, timeout: float = 300) -> float:
    """Poll /readyz until no settlement waits in the router's journal."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        body = httpx.get(root + "/readyz", timeout=10).json()
        if "journaled_settlements" not in body:
            return time.monotonic() - t0
        time.sleep(0.5)
    raise SystemExit("the journal did not drain")


if __name__ == "__main__":
    main()
