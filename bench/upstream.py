"""Upstream HTTP clients side by side, against the echo server on loopback.

Two tables, each non-streaming (a JSON answer, read whole) and streaming (SSE, read as it
comes), at concurrency 1 and 32:

- ``library``: each maintained async client alone, one POST per request. The clients
  that keep the httpx transport seam our code uses (``transport.handle_async_request(
  httpx.Request)``, router/upstream/client.py) are driven through that seam, the others
  through their own API: aiohttp directly, aiosonic, niquests, curl_cffi;
  httpx over aiohttp (httpx-aiohttp, today's default), httpx's own transport (httpcore),
  pyreqwest's and pyqwest's httpx transports (Rust: reqwest / hyper), httpx-curl-cffi.
- ``router``: the seam-keeping transports under the router's real ``UpstreamClient``
  (``complete`` / ``open_stream``), i.e. what a switch would change.

Layout on a 2-core machine: the echo server (uvicorn, httptools, uvloop) pinned to core 1,
this client pinned to core 0 on uvloop (as the router runs). Per scenario: requests per
second, CPU µs per request in this process (the client side only: what the router pays)
and P50 latency; medians over ``--runs`` runs (the machine is shared and noisy). A client
whose package is not installed is skipped, saying so (only httpx and aiohttp are
dependencies of the router; install the others to compare, e.g. into a ``--target``
folder on ``PYTHONPATH``).

    .venv/bin/python bench/upstream.py [--duration 2] [--runs 3] [--tables library,router]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvloop
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from router.config import load_providers  # noqa: E402
from router.jsonio import dumps  # noqa: E402
from router.upstream import TRANSPORT_ENV, UpstreamClient  # noqa: E402
from router.upstream.transport import create_transport  # noqa: E402

PRICE = {"input_usd_per_mtok": 1.0, "output_usd_per_mtok": 2.0}
BODY = {"model": "m", "messages": [{"role": "user", "content": "Summarise Hamlet in a line."}]}
HEADERS = {"content-type": "application/json", "authorization": "Bearer sk-bench"}
POOL = 64  # connections per client, as the router's providers default
EXTENSIONS = {"timeout": {"connect": 5.0, "read": 30.0, "write": 30.0, "pool": 30.0}}

Call = Callable[[bool], Awaitable[int]]  # stream? -> body bytes read


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_echo(port: int, core: str) -> subprocess.Popen:
    cmd = [
        "taskset", "-c", core, sys.executable, "-m", "uvicorn", "--factory",
        "router.offline.echo:create_echo_app", "--http", "httptools", "--loop", "uvloop",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log",
        "--backlog", "1024",
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


# ---------------------------------------------------------------- the clients


@dataclass
class Client:
    call: Call
    close: Callable[[], Awaitable[Any]]


def bodies() -> dict[bool, bytes]:
    return {False: dumps(BODY), True: dumps({**BODY, "stream": True})}


def seam(transport: httpx.AsyncBaseTransport, url: str) -> Client:
    """Through ``handle_async_request``, reading the body as UpstreamClient does."""
    content = bodies()

    async def call(stream: bool) -> int:
        request = httpx.Request(
            "POST", url, headers=HEADERS, content=content[stream], extensions=EXTENSIONS
        )
        resp = await transport.handle_async_request(request)
        n = 0
        try:
            async for part in resp.stream:  # type: ignore[union-attr]
                n += len(part)
        finally:
            await resp.stream.aclose()  # type: ignore[union-attr]
        assert resp.status_code == 200, resp.status_code
        return n

    return Client(call, transport.aclose)


def router_transport(kind: str, base_url: str) -> httpx.AsyncBaseTransport:
    """The router's own pool (router/upstream/transport.py) of ``kind``."""
    os.environ[TRANSPORT_ENV] = kind
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "providers.yaml"
        prov = {"base_url": base_url, "max_connections": POOL}
        doc = {"providers": {"echo": prov}, "models": {"m": {"provider": "echo", **PRICE}}}
        path.write_text(yaml.safe_dump(doc))
        cfg = load_providers(path, env={}).providers["echo"]
    return create_transport(cfg, ssl.create_default_context)


def httpx_aiohttp(base: str) -> httpx.AsyncBaseTransport:
    return router_transport("aiohttp", base)


def httpx_httpcore(base: str) -> httpx.AsyncBaseTransport:
    return router_transport("httpx", base)


def pyreqwest_httpx(base: str) -> httpx.AsyncBaseTransport:
    from pyreqwest.client import ClientBuilder
    from pyreqwest.compatibility.httpx import HttpxTransport

    return HttpxTransport(ClientBuilder().max_connections(POOL).http1_only().build())


def pyqwest_httpx(base: str) -> httpx.AsyncBaseTransport:
    from pyqwest import HTTPTransport, HTTPVersion
    from pyqwest.httpx import AsyncPyqwestTransport

    return AsyncPyqwestTransport(HTTPTransport(http_version=HTTPVersion.HTTP1))


def curl_cffi_httpx(base: str) -> httpx.AsyncBaseTransport:
    from httpx_curl_cffi import AsyncCurlTransport

    return AsyncCurlTransport(max_clients=POOL)


def aiohttp_direct(url: str) -> Client:
    import aiohttp

    content = bodies()
    holder: dict[str, aiohttp.ClientSession] = {}

    def session() -> aiohttp.ClientSession:  # inside the loop
        if "s" not in holder:
            holder["s"] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=POOL, keepalive_timeout=4.0),
                skip_auto_headers=("Accept-Encoding",),
                auto_decompress=False,
            )
        return holder["s"]

    async def call(stream: bool) -> int:
        async with session().post(url, data=content[stream], headers=HEADERS) as resp:
            assert resp.status == 200, resp.status
            if not stream:
                return len(await resp.read())
            n = 0
            async for part in resp.content.iter_any():
                n += len(part)
            return n

    async def close() -> None:
        if "s" in holder:
            await holder["s"].close()

    return Client(call, close)


def aiosonic_direct(url: str) -> Client:
    import aiosonic
    from aiosonic.pools import PoolConfig

    content = bodies()
    client = aiosonic.HTTPClient(
        aiosonic.TCPConnector(pool_configs={":default": PoolConfig(size=POOL)})
    )

    async def call(stream: bool) -> int:
        resp = await client.post(url, data=content[stream], headers=HEADERS)
        assert resp.status_code == 200, resp.status_code
        if not stream:
            return len(await resp.content())
        n = 0
        async for part in resp.read_chunks():
            n += len(part)
        return n

    async def close() -> None:
        await client.connector.cleanup()

    return Client(call, close)


def niquests_direct(url: str) -> Client:
    import niquests

    content = bodies()
    session = niquests.AsyncSession(pool_maxsize=POOL, disable_http2=True, disable_http3=True)

    async def call(stream: bool) -> int:
        resp = await session.post(url, data=content[stream], headers=HEADERS, stream=stream)
        assert resp.status_code == 200, resp.status_code
        if not stream:
            return len(resp.content or b"")
        n = 0
        async for part in await resp.iter_content(None):
            n += len(part)
        return n

    return Client(call, session.close)


def curl_cffi_direct(url: str) -> Client:
    from curl_cffi.requests import AsyncSession

    content = bodies()
    session = AsyncSession(max_clients=POOL)

    async def call(stream: bool) -> int:
        if not stream:
            resp = await session.post(url, data=content[False], headers=HEADERS)
            assert resp.status_code == 200, resp.status_code
            return len(resp.content)
        resp = await session.post(url, data=content[True], headers=HEADERS, stream=True)
        n = 0
        try:
            async for part in resp.aiter_content():
                n += len(part)
        finally:
            await resp.aclose()
        return n

    return Client(call, session.close)


# name -> (package that must be importable, factory of a transport over the root URL)
TRANSPORTS: dict[str, tuple[str, Callable[[str], httpx.AsyncBaseTransport]]] = {
    "httpx-aiohttp": ("httpx_aiohttp", httpx_aiohttp),
    "httpx": ("httpcore", httpx_httpcore),
    "pyreqwest-httpx": ("pyreqwest", pyreqwest_httpx),
    "pyqwest-httpx": ("pyqwest", pyqwest_httpx),
    "curl_cffi-httpx": ("httpx_curl_cffi", curl_cffi_httpx),
}
# name -> (package, factory of a client posting to the chat URL): their own API
NATIVE: dict[str, tuple[str, Callable[[str], Client]]] = {
    "aiohttp": ("aiohttp", aiohttp_direct),
    "aiosonic": ("aiosonic", aiosonic_direct),
    "niquests": ("niquests", niquests_direct),
    "curl_cffi": ("curl_cffi", curl_cffi_direct),
}
PACKAGES = {name: pkg for name, (pkg, _) in (TRANSPORTS | NATIVE).items()}


# ---------------------------------------------------------------- the runs


async def measure(request: Callable[[], Awaitable[Any]], conc: int, duration: float) -> dict:
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


async def library_run(name: str, base: str, stream: bool, conc: int, duration: float) -> dict:
    url = base + "/chat/completions"
    client = seam(TRANSPORTS[name][1](base), url) if name in TRANSPORTS else NATIVE[name][1](url)
    try:
        return await measure(lambda: client.call(stream), conc, duration)
    finally:
        await client.close()


async def router_run(name: str, base: str, stream: bool, conc: int, duration: float) -> dict:
    """Under UpstreamClient: the transport handed in as the provider's pool."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "providers.yaml"
        doc = {
            "providers": {"echo": {"base_url": base, "max_connections": POOL}},
            "models": {"m": {"provider": "echo", **PRICE}},
        }
        path.write_text(yaml.safe_dump(doc))
        catalog = load_providers(path, env={})
    transport = TRANSPORTS[name][1](base)
    model = catalog.models["m"]
    async with UpstreamClient(catalog, transports={"echo": transport}) as client:

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

        try:
            return await measure(request, conc, duration)
        finally:
            await transport.aclose()


def available(name: str) -> bool:
    return importlib.util.find_spec(PACKAGES[name]) is not None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=2.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--concurrency", default="1,32")
    ap.add_argument("--clients", default=",".join(PACKAGES))
    ap.add_argument("--tables", default="library,router")
    ap.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    ap.add_argument("--client-core", type=int, default=0)
    ap.add_argument("--server-core", default="1")
    args = ap.parse_args()
    os.sched_setaffinity(0, {args.client_core})
    names = [n for n in args.clients.split(",") if n]
    for n in names:
        if not available(n):
            print(f"skipped {n}: package {PACKAGES[n]!r} is not installed")
    names = [n for n in names if available(n)]
    port = free_port()
    server = start_echo(port, args.server_core)
    base = f"http://127.0.0.1:{port}/v1"
    runner = uvloop.run if args.loop == "uvloop" else asyncio.run
    runs = {"library": library_run, "router": router_run}
    try:
        print(f"client loop {args.loop}, core {args.client_core}; medians of {args.runs} runs")
        for table in args.tables.split(","):
            print(f"\n[{table}]")
            print(f"{'scenario':<30} {'req/s':>8} {'cpu µs/req':>11} {'p50 ms':>8} {'cpu %':>6}")
            for stream in (False, True):
                for conc in (int(c) for c in args.concurrency.split(",")):
                    for name in names:
                        if table == "router" and name not in TRANSPORTS:
                            continue
                        label = f"{name} {'stream' if stream else 'json'} c={conc}"
                        try:
                            results = [
                                runner(runs[table](name, base, stream, conc, args.duration))
                                for _ in range(args.runs)
                            ]
                        except Exception as exc:  # a client that cannot do this: say why
                            print(f"{label:<30} failed: {type(exc).__name__}: {exc}"[:160])
                            continue
                        med = {k: statistics.median(r[k] for r in results) for k in results[0]}
                        print(
                            f"{label:<30} {med['rps']:>8.0f} {med['cpu_us']:>11.0f} "
                            f"{med['p50_ms']:>8.3f} {med['cpu_share'] * 100:>6.0f}",
                            flush=True,
                        )
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
