"""Remote scoring (vLLM on CPU) against the in-process scorer, with the tiny model.

Closed loop: ``concurrency`` tasks score distinct prompts back to back through one
engine (ScoringEngine in-process, RemoteScoringEngine on a local vLLM). Each mode runs
in a process of its own, so its RSS is that mode's router process alone (the vLLM
engine's own memory is not counted: it is shared by every replica).

    python bench/remote_scorer.py [--prompts 200] [--concurrency 1,8,32]

Needs .venv-vllm (``make vllm-venv``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def run_mode(mode: str, folder: str, url: str, n: int, concurrency: int) -> dict:
    if mode == "in-process":
        from router.scoring import ScoringEngine, load_p2l

        engine = ScoringEngine(load_p2l(folder, device="cpu"), cache_size=0)
        await engine.warmup(calibrate=False)
    else:
        from router.scoring.exported import load_exported
        from router.scoring.remote import RemoteScorerConfig, RemoteScoringEngine

        engine = RemoteScoringEngine(
            load_exported(folder), RemoteScorerConfig(url=url, cache_size=0)
        )
        await engine.warmup()
    latencies: list[float] = []
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            words = " ".join(f"word{(i * 7 + k) % 97}" for k in range(20 + i % 40))
            t0 = time.perf_counter()
            await engine.score([{"role": "user", "content": f"prompt {i}: {words}"}])
            latencies.append((time.perf_counter() - t0) * 1000)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    await engine.close()
    latencies.sort()
    return {
        "mode": mode,
        "concurrency": concurrency,
        "prompts_per_s": n / elapsed,
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "rss_mb": rss_mb(),
        "torch_loaded": "torch" in sys.modules,
    }


def process_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def full_router_rss(tmp: Path, folder: Path, url: str, n: int) -> tuple[float, float]:
    """``p2l-router serve --scorer-url`` in a process of its own, against the fake
    upstream; its RSS once ready and after ``n`` routed chat requests."""
    import httpx
    from conftest import TEAM_KEY, write_config
    from fake_upstream import FakeUpstream
    from router_process import RouterProcess

    with FakeUpstream() as fake:
        root = tmp / "router"
        root.mkdir()
        providers, policies, env = write_config(root, fake.base_url)
        r = RouterProcess(
            root, checkpoint=folder, providers=providers, policies=policies, env=env,
            extra=("--scorer-url", url, "--decision-log", "off"),
        )  # fmt: skip
        try:
            r.wait_ready()
            ready = process_rss_mb(r.proc.pid)
            headers = {"authorization": f"Bearer {TEAM_KEY}"}
            with httpx.Client(base_url=r.root, headers=headers, timeout=30) as c:
                for i in range(n):
                    body = {"model": "p2l", "messages": [{"role": "user", "content": f"q {i}"}]}
                    c.post("/v1/chat/completions", json=body).raise_for_status()
            return ready, process_rss_mb(r.proc.pid)
        finally:
            r.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=200)
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--child", nargs=5, metavar=("MODE", "FOLDER", "URL", "N", "C"))
    ap.add_argument(
        "--router-requests",
        type=int,
        default=1000,
        help="then a full router with --scorer-url serves this many routed requests; its RSS",
    )
    args = ap.parse_args()
    if args.child:
        mode, folder, url, n, c = args.child
        print(json.dumps(asyncio.run(run_mode(mode, folder, url, int(n), int(c)))))
        return

    from conftest import TINY_MODELS, free_socket
    from vllm_engine import VllmEngine

    from router.scoring import write_tiny_checkpoint
    from router.scoring.export import export_backbone

    tmp = Path(tempfile.mkdtemp(prefix="bench-remote-"))
    src = write_tiny_checkpoint(tmp / "src", list(TINY_MODELS), hidden_size=128)
    out = export_backbone(str(src), tmp / "out")
    s = free_socket()
    port = s.getsockname()[1]
    s.close()
    engine = VllmEngine(out, port, tmp / "vllm.log").start().wait_up()
    rows = []
    try:
        for c in [int(x) for x in args.concurrency.split(",")]:
            for mode, folder in (("in-process", src), ("vllm-cpu", out)):
                child = [sys.executable, __file__, "--child", mode, str(folder), engine.url]
                res = subprocess.run(
                    [*child, str(args.prompts), str(c)],
                    capture_output=True,
                    text=True,
                    env={**os.environ, "HF_HUB_OFFLINE": "1"},
                    check=True,
                )
                rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
                print(json.dumps(rows[-1]), flush=True)
        if args.router_requests:
            router_rss = full_router_rss(tmp, out, engine.url, args.router_requests)
    finally:
        engine.stop()
    print(f"\n{'mode':<11} {'conc':>4} {'prompts/s':>10} {'P50 ms':>8} {'P99 ms':>8} {'RSS MB':>7}")
    for r in rows:
        print(
            f"{r['mode']:<11} {r['concurrency']:>4} {r['prompts_per_s']:>10.1f} "
            f"{r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['rss_mb']:>7.0f}"
        )
    if args.router_requests:
        print(
            f"\nfull router with --scorer-url: RSS {router_rss[0]:.0f} MB when ready, "
            f"{router_rss[1]:.0f} MB after {args.router_requests} routed requests"
        )


if __name__ == "__main__":
    main()
