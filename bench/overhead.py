"""Router overhead: the same requests sent to the echo upstream directly and through the
router, non-stream and stream, concurrency 1 and 32, direct-model and ``p2l`` requests.

``--front``: which front the router is measured on (``chat``, ``messages``,
``responses`` or ``all``); the provider is OpenAI chat (the echo upstream) for every
front, so only the front differs: a Messages or Responses request is decoded by its
codec, sent upstream as chat, and its answer (or events) encoded back in its protocol.
The direct baseline is the same chat request to the upstream for every front.

Layout on a 2-core machine: the router alone on core 0 (taskset); the upstream and this
load generator (raw asyncio + httptools + uvloop) on core 1. Prints P50/P99 latency,
added latency, added time to first streamed byte, requests/s, and P2L scoring time.

    .venv/bin/python bench/overhead.py [--duration 5] [--quick] [--no-decision-history]
                                       [--front chat|messages|responses|all]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
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

sys.path.insert(0, str(Path(__file__).parent))
from loadgen import Result, build_request, run_load  # noqa: E402

PY = sys.executable
KEY = "bench-key"
MODEL = "gpt-4o-mini-2024-07-18"
MODELS = [
    "claude-3-5-haiku-20241022",
    "deepseek-v3",
    "gpt-4o-2024-08-06",
    MODEL,
    "llama-3.1-8b-instruct",
]
PROMPT = [{"role": "user", "content": "Summarise the plot of Hamlet in two sentences."}]
FRONTS = ("chat", "messages", "responses")
STORE = True  # --responses-store
PATHS = {"chat": "/v1/chat/completions", "messages": "/v1/messages", "responses": "/v1/responses"}


def front_request(
    front: str, model: str, stream: bool, store: bool = True
) -> tuple[str, dict, dict[str, str]]:
    """(path, body, headers) of the same question on ``front``, as that protocol's
    clients send it (Anthropic's: ``x-api-key`` and ``anthropic-version``); ``store``:
    a Responses request keeps its response (OpenAI's default) or not."""
    if front == "messages":
        body = {"model": model, "max_tokens": 256, "messages": PROMPT, "stream": stream}
        return PATHS[front], body, {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    auth = {"authorization": f"Bearer {KEY}"}
    if front == "responses":
        body = {"model": model, "input": PROMPT[0]["content"], "stream": stream}
        if not store:
            body["store"] = False
        return PATHS[front], body, auth
    return PATHS[front], {"model": model, "messages": PROMPT, "stream": stream}, auth


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {url}")


def setup(tmp: Path, up_port: int) -> tuple[Path, Path, Path]:
    ckpt = tmp / "tiny"
    subprocess.run(
        [PY, "-m", "router", "tiny-checkpoint", str(ckpt), "--models", ",".join(MODELS)],
        check=True,
        capture_output=True,
    )
    providers = tmp / "providers.yaml"
    providers.write_text(
        yaml.safe_dump(
            {
                "providers": {"echo": {"base_url": f"http://127.0.0.1:{up_port}/v1"}},
                "models": {
                    m: {"provider": "echo", "input_usd_per_mtok": 1.0, "output_usd_per_mtok": 2.0}
                    for m in MODELS
                },
            }
        )
    )
    policies = tmp / "policies"
    policies.mkdir()
    (policies / "bench.yaml").write_text(
        yaml.safe_dump({"api_keys_env": ["BENCH_KEY"], "budget": {"usd": 1e9}})
    )
    return ckpt, providers, policies


def cpu_seconds(pid: int) -> float:
    """The CPU time (user + system, every thread) process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def summarise(name: str, res, base=None, stream: bool = False, cpu_s: float | None = None) -> dict:  # type: ignore[no-untyped-def]
    row = {
        "scenario": name,
        "n": len(res.samples),
        "errors": res.errors,
        "rps": res.rps,
        "p50_ms": res.pct("latency_s", 50) * 1000,
        "p99_ms": res.pct("latency_s", 99) * 1000,
        "ttfb_p50_ms": res.pct("ttfb_s", 50) * 1000,
    }
    scoring = [
        float(s.headers["x-router-scoring-ms"])
        for s in res.samples
        if "x-router-scoring-ms" in s.headers
    ]
    row["scoring_p50_ms"] = statistics.median(scoring) if scoring else 0.0
    overhead = [
        float(s.headers["x-router-overhead-ms"])
        for s in res.samples
        if "x-router-overhead-ms" in s.headers
    ]
    row["self_overhead_p50_ms"] = statistics.median(overhead) if overhead else 0.0
    if cpu_s is not None and res.sent:
        row["cpu_ms_per_req"] = cpu_s / res.sent * 1000
    if base is not None:
        row["added_p50_ms"] = row["p50_ms"] - base["p50_ms"]
        row["added_p99_ms"] = row["p99_ms"] - base["p99_ms"]
        row["added_ttfb_p50_ms"] = row["ttfb_p50_ms"] - base["ttfb_p50_ms"]
    return row


async def sliced(
    port: int, raw: bytes, conc: int, duration: float, rounds: int, pid: int | None, keep=()
) -> tuple[Result, float]:
    """One slice of a scenario's load (a ``rounds``-th of its duration) and the CPU
    seconds process ``pid`` used meanwhile (0 without one)."""
    cpu0 = cpu_seconds(pid) if pid else 0.0
    warmup = 0.5 if rounds == 1 else 0.2
    res = await run_load(
        "127.0.0.1",
        port,
        raw,
        concurrency=conc,
        duration_s=duration / rounds,
        warmup_s=warmup,
        keep_headers=keep,
    )
    return res, (cpu_seconds(pid) - cpu0 if pid else 0.0)


def merge(into: Result | None, res: Result) -> Result:
    if into is None:
        return res
    into.samples += res.samples
    into.wall_s += res.wall_s
    into.errors += res.errors
    into.sent += res.sent
    return into


async def scenarios(
    up_port: int,
    rt_port: int,
    duration: float,
    concurrencies: list[int],
    fronts: list[str],
    router_pid: int,
    rounds: int = 1,
) -> list[dict]:
    """Each scenario's figures; ``cpu_ms_per_req`` is the router process's CPU time per
    request (warm-up included). With ``rounds`` > 1 the scenarios of one (stream,
    concurrency) take turns in that many slices, so that a machine whose load drifts
    disturbs them alike."""
    rows = []
    keep = ("x-router-scoring-ms", "x-router-overhead-ms")
    for stream in (False, True):
        for conc in concurrencies:
            kind = "stream" if stream else "json"
            body = {"model": MODEL, "messages": PROMPT, "stream": stream}
            loads: dict[str, tuple[int, bytes, int | None]] = {
                f"upstream direct      {kind} c={conc}": (
                    up_port,
                    build_request("127.0.0.1", up_port, "/v1/chat/completions", body, {}),
                    None,
                )
            }
            for front in fronts:
                for model, label in ((MODEL, "name"), ("p2l", "p2l ")):
                    path, fbody, headers = front_request(front, model, stream, STORE)
                    via = build_request("127.0.0.1", rt_port, path, fbody, headers)
                    loads[f"{front:<9} model={label} {kind} c={conc}"] = (rt_port, via, router_pid)
            results: dict[str, Result | None] = dict.fromkeys(loads)
            cpu = dict.fromkeys(loads, 0.0)
            for _ in range(rounds):
                for name, (port, raw, pid) in loads.items():
                    res, used = await sliced(port, raw, conc, duration, rounds, pid, keep)
                    results[name] = merge(results[name], res)
                    cpu[name] += used
            base = None
            for name, (_, _, pid) in loads.items():
                res = results[name]
                assert res is not None
                if pid is None:
                    base = summarise(name, res)
                    rows.append(base)
                else:
                    row = summarise(name, res, base, stream, cpu[name])
                    rows.append(row | {"front": name.split()[0]})
    return rows


def print_ratios(rows: list[dict]) -> None:
    """Each front's added P50/P99 (model=name) as a multiple of what chat adds."""
    chat = {r["scenario"][9:]: r for r in rows if r.get("front") == "chat"}
    if not chat:
        return
    print("\nadded latency vs the chat front (model=name; goal: at most 1.3x)")
    for r in rows:
        front = r.get("front")
        if front in (None, "chat") or "model=name" not in r["scenario"]:
            continue
        c = chat[r["scenario"][9:]]
        ratios = []
        for key in ("added_p50_ms", "added_p99_ms"):
            ratios.append(f"{key[6:9]} {r[key] / c[key]:.2f}x" if c[key] > 0 else f"{key[6:9]} -")
        rps = r["rps"] / c["rps"] if c["rps"] else float("nan")
        cpu = r.get("cpu_ms_per_req", 0) / c["cpu_ms_per_req"] if c.get("cpu_ms_per_req") else 0
        print(
            f"  {r['scenario']:<33} {'  '.join(ratios)}  req/s {rps:.2f}x  "
            f"router CPU/request {cpu:.2f}x chat's"
        )


def print_rows(rows: list[dict]) -> None:
    cols = [
        "scenario",
        "n",
        "errors",
        "rps",
        "p50_ms",
        "p99_ms",
        "ttfb_p50_ms",
        "added_p50_ms",
        "added_p99_ms",
        "added_ttfb_p50_ms",
        "scoring_p50_ms",
        "self_overhead_p50_ms",
        "cpu_ms_per_req",
    ]
    print(" | ".join(f"{c:>12}" if c != "scenario" else f"{c:<33}" for c in cols))
    for r in rows:
        out = []
        for c in cols:
            v = r.get(c, "")
            if c == "scenario":
                out.append(f"{v:<33}")
            elif isinstance(v, float):
                out.append(f"{v:>12.3f}" if c != "rps" else f"{v:>12.1f}")
            else:
                out.append(f"{v!s:>12}")
        print(" | ".join(out))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--quick", action="store_true", help="2 s per scenario")
    ap.add_argument(
        "--front",
        choices=[*FRONTS, "all"],
        default="chat",
        help="the front(s) measured; the provider is OpenAI chat for each",
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="split each scenario into this many slices, the scenarios taking turns "
        "(fairer comparisons on a busy machine)",
    )
    ap.add_argument("--router-core", default="0")
    ap.add_argument("--client-core", default="1")
    ap.add_argument(
        "--profile",
        metavar="OUT",
        help="sample the router with py-spy (pip install py-spy) into OUT (raw folded stacks)",
    )
    ap.add_argument(
        "--workers",
        type=int,
        default=1,
        help="router processes (serve --workers N --force); with N > 1 the router runs on "
        "every core, sharing them with the load generator",
    )
    ap.add_argument(
        "--decision-history",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the router also stores each decision in the ledger (the default)",
    )
    ap.add_argument(
        "--responses-store",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Responses requests keep their response in the ledger (OpenAI's default)",
    )
    args = ap.parse_args()
    global STORE
    STORE = args.responses_store
    duration = 2.0 if args.quick else args.duration
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        up_port, rt_port = free_port(), free_port()
        ckpt, providers, policies = setup(tmp, up_port)
        env = {**os.environ, "BENCH_KEY": KEY, "HF_HUB_OFFLINE": "1"}
        upstream = subprocess.Popen(
            [
                "taskset",
                "-c",
                args.client_core,
                PY,
                "-m",
                "uvicorn",
                "--factory",
                "router.offline.echo:create_echo_app",
                "--port",
                str(up_port),
                "--http",
                "httptools",
                "--loop",
                "uvloop",
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            env=env,
        )
        cores = {args.router_core, args.client_core}
        router_cores = args.router_core if args.workers == 1 else ",".join(sorted(cores))
        router = subprocess.Popen(
            [
                "taskset",
                "-c",
                router_cores,
                PY,
                "-m",
                "router",
                "serve",
                "--port",
                str(rt_port),
                "--providers",
                str(providers),
                "--policies",
                str(policies),
                "--p2l-model",
                str(ckpt),
                "--device",
                "cpu",
                "--ledger",
                f"sqlite:///{tmp / 'ledger.db'}",
                "--decision-log",
                str(tmp / "decisions.jsonl"),
                "--log-level",
                "warning",
                "--decision-history" if args.decision_history else "--no-decision-history",
                *(["--workers", str(args.workers), "--force"] if args.workers > 1 else []),
            ],
            env=env,
        )
        try:
            wait_http(f"http://127.0.0.1:{up_port}/v1/models")
            wait_http(f"http://127.0.0.1:{rt_port}/readyz")
            os.sched_setaffinity(0, {int(args.client_core)})
            spy = None
            if args.profile:
                spy = subprocess.Popen(
                    ["py-spy", "record", "--pid", str(router.pid), "--rate", "250"]
                    + ["--format", "raw", "--output", args.profile, "--nonblocking"]
                )
            uvloop.install()
            fronts = list(FRONTS) if args.front == "all" else [args.front]
            rows = asyncio.run(
                scenarios(up_port, rt_port, duration, [1, 32], fronts, router.pid, args.rounds)
            )
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(30)
        finally:
            router.terminate()
            upstream.terminate()
            router.wait(10)
            upstream.wait(10)
    print(
        f"router ({args.workers} worker(s)) on core(s) {router_cores}; upstream + load generator "
        f"on core {args.client_core}; "
        f"{duration:g} s per scenario in {args.rounds} round(s); decision history "
        f"{'on' if args.decision_history else 'off'}"
    )
    print_rows(rows)
    print_ratios(rows)


if __name__ == "__main__":
    main()
