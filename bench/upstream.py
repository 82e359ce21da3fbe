"""Upstream leg alone: UpstreamClient.complete and open_stream against the echo server,
httpx's own AsyncHTTPTransport vs httpx-aiohttp's AiohttpTransport (the default),
concurrency 1 and 32.

Layout on a 2-core machine: the echo server (uvicorn, httptools, uvloop) pinned to core 1,
this client pinned to core 0 on uvloop (as the router runs). For each scenario: requests
per second, CPU µs per request in this process (the client side only: what the router
pays), and P50 latency; medians over ``--runs`` runs (the machine is shared and noisy).

    .venv/bin/python bench/upstream.py [--duration 3] [--runs 3] [--loop asyncio]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import uvloop
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from router.config import load_providers  # noqa: E402
from router.upstream import TRANSPORT_ENV, UpstreamClient  # noqa: E402

PRICE = {"input_usd_per_mtok": 1.0, "output_usd_per_mtok": 2.0}
BODY = {"model": "m", "messages": [{"role": "user", "content": "Summarise Hamlet in a line."}]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_echo(port: int, core: str) -> subprocess.Popen:
    cmd = [
        "taskset", "-c", core, sys.executable, "-m", "uvicorn", "--factory",
        "router.offline.echo:create_echo_app", "--http", "httptools", "--loop", "uvloop",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parent.parent)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("echo server did not start")


async def one_run(
    catalog, transport: str, stream: bool, conc: int, duration: float
) -> dict[str, float]:
    os.environ[TRANSPORT_ENV] = transport  # read when the client builds its pools
    model = catalog.models["m"]
    async with UpstreamClient(catalog) as client:

        async def request() -> None:
            if stream:
                s = await client.open_stream(model, BODY)
                async with s:
                    async for _ in s:
                        pass
                assert s.completed
            else:
                out, _ = await client.complete(model, BODY)
                assert out["choices"]

        for _ in range(50):  # warm the pool and the code paths
            await request()
        latencies: list[float] = []
        stop = time.perf_counter() + duration

        async def worker() -> None:
            while (t0 := time.perf_counter()) < stop:
                await request()
                latencies.append(time.perf_counter() - t0)

        w0, c0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(conc)))
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    n = len(latencies)
    return {
        "rps": n / wall,
        "cpu_us": cpu / n * 1e6,
        "p50_ms": statistics.median(latencies) * 1000,
        "cpu_share": cpu / wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--concurrency", default="1,32")
    ap.add_argument("--transports", default="httpx,aiohttp")
    ap.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    ap.add_argument("--client-core", type=int, default=0)
    ap.add_argument("--server-core", default="1")
    args = ap.parse_args()
    os.sched_setaffinity(0, {args.client_core})
    port = free_port()
    server = start_echo(port, args.server_core)
    try:
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "providers.yaml"
            prov = {"base_url": f"http://127.0.0.1:{port}/v1", "max_connections": 64}
            doc = {"providers": {"echo": prov}, "models": {"m": {"provider": "echo", **PRICE}}}
            path.write_text(yaml.safe_dump(doc))
            catalog = load_providers(path, env={})
        runner = uvloop.run if args.loop == "uvloop" else asyncio.run
        print(f"client loop {args.loop}, core {args.client_core}; medians of {args.runs} runs")
        print(f"{'scenario':<24} {'req/s':>8} {'cpu µs/req':>11} {'p50 ms':>8} {'cpu %':>6}")
        for stream in (False, True):
            for conc in (int(c) for c in args.concurrency.split(",")):
                for transport in args.transports.split(","):
                    runs = [
                        runner(one_run(catalog, transport, stream, conc, args.duration))
                        for _ in range(args.runs)
                    ]
                    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                    name = f"{transport} {'stream' if stream else 'json'} c={conc}"
                    print(
                        f"{name:<24} {med['rps']:>8.0f} {med['cpu_us']:>11.0f} "
                        f"{med['p50_ms']:>8.3f} {med['cpu_share'] * 100:>6.0f}",
                        flush=True,
                    )
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
