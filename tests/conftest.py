"""Shared fixtures: a tiny real P2L checkpoint, a real fake upstream on loopback, and the
real router served by uvicorn on a free port in a thread."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

from fake_upstream import FakeUpstream  # noqa: E402

# Real arena names; "gpt-4o-mini-2024-07-18" is cheap, "claude-3-5-sonnet-20241022" dear.
TINY_MODELS = (
    "claude-3-5-haiku-20241022",
    "claude-3-5-sonnet-20241022",
    "deepseek-v3",
    "gemini-1.5-flash-002",
    "gpt-4o-2024-08-06",
    "gpt-4o-mini-2024-07-18",
    "llama-3.1-8b-instruct",
    "o1-mini",
)
PRICES = {  # input, output USD per 1M tokens
    "claude-3-5-haiku-20241022": (0.80, 4.00),
    "claude-3-5-sonnet-20241022": (3.00, 15.00),
    "deepseek-v3": (0.27, 1.10),
    "gemini-1.5-flash-002": (0.075, 0.30),
    "gpt-4o-2024-08-06": (2.50, 10.00),
    "gpt-4o-mini-2024-07-18": (0.15, 0.60),
    "llama-3.1-8b-instruct": (0.18, 0.18),
    "o1-mini": (3.00, 12.00),
    "off-list-model": (1.00, 2.00),  # served, but not in the P2L model list
}
TEAM_KEY = "sk-team-research"
OTHER_KEY = "sk-team-other"
PROVIDER_KEY = "sk-provider-secret-123"
ADMIN_KEY = "sk-admin-ops"


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from router.scoring import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("p2l") / "tiny", list(TINY_MODELS))


@pytest.fixture(scope="session")
def p2l_model(tiny_checkpoint: Path) -> Any:
    from router.scoring import load_p2l

    return load_p2l(str(tiny_checkpoint), device="cpu")


@pytest.fixture(scope="session")
def fake_upstream_server() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture
def fake(fake_upstream_server: FakeUpstream) -> Iterator[FakeUpstream]:
    fake_upstream_server.clear()
    yield fake_upstream_server
    fake_upstream_server.clear()


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis ledger URL with a prefix of this test's own, its keys deleted afterwards."""
    import uuid

    import redis

    client = redis.Redis(host="127.0.0.1", port=6379)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip("no Redis on 127.0.0.1:6379 (.ci/run starts one)")
    prefix = f"p2l-test-{uuid.uuid4().hex[:8]}:"
    yield f"redis://127.0.0.1:6379/0?prefix={prefix}"
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)
    client.close()


class RedisServer:
    """A redis-server of one test's own on a free loopback port, keeping nothing on disk
    (like a Redis run without persistence): freezing it (SIGSTOP), FLUSHALL or a restart
    there disturbs no other test, nor the shared Redis at 6379."""

    def __init__(self, folder: Path) -> None:
        import redis

        exe = shutil.which("redis-server")
        if exe is None:
            pytest.skip("redis-server is not installed")
        sock = free_socket()
        self.port = sock.getsockname()[1]
        sock.close()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.args = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "no", "--dir", str(folder)]  # fmt: skip
        self.client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)
        self.proc = self.start()

    def start(self) -> subprocess.Popen:
        import redis

        self.proc = subprocess.Popen(
            self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )  # fmt: skip
        deadline = time.monotonic() + 15
        while True:
            assert self.proc.poll() is None, "redis-server exited at start"
            try:
                if self.client.ping():
                    return self.proc
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server never answered"
                time.sleep(0.02)

    def kill(self) -> None:
        """Gone at once, like a crash: what it held is lost (it keeps nothing on disk)."""
        os.kill(self.proc.pid, signal.SIGCONT)  # a frozen one could not die
        self.proc.kill()
        self.proc.wait(10)

    def restart(self) -> None:
        """Killed and started again on the same port, empty."""
        self.kill()
        self.start()

    def close(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A :class:`RedisServer` of this test's own."""
    server = RedisServer(tmp_path)
    try:
        yield server
    finally:
        server.close()


def run_processes(code: str, url: str, n: int) -> list[int]:
    """``code`` (a script taking the ledger URL, printing one integer) in ``n`` real
    processes at once; the integers they printed."""
    root = Path(__file__).resolve().parents[1]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, url], cwd=root, stdout=subprocess.PIPE, text=True
        )
        for _ in range(n)
    ]
    counts = [int(p.communicate(timeout=60)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    return counts


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


@pytest.fixture(scope="session")
def event_loop_policy() -> Any:
    """Async tests run on uvloop, as the router does in production."""
    import uvloop

    return uvloop.EventLoopPolicy()


class ThreadServer:
    """uvicorn serving an ASGI app on a free loopback port, in a background thread."""

    def __init__(self, app: Any, **config_kw: Any) -> None:
        from router.api.server import uvicorn_config

        self.sock = free_socket()
        self.port = self.sock.getsockname()[1]
        # The production settings: uvloop, httptools with head deadlines, keep-alive bound.
        self.server = uvicorn.Server(uvicorn_config(app, log_level="warning", **config_kw))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("router server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()


@dataclass
class RouterHandle:
    base_url: str  # ends in /v1
    root: str
    service: Any
    log_path: Path
    tmp: Path

    def run(self, coro: Any, timeout: float = 10) -> Any:
        """Run a coroutine on the router's own event loop (where its ledger lives)."""
        return asyncio.run_coroutine_threadsafe(coro, self.service.loop).result(timeout)

    def decisions(self) -> list[dict[str, Any]]:
        self.service.decisions.flush(10)  # lines are written by the log's own thread
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]

    def openai(self, key: str = TEAM_KEY, **kw: Any) -> Any:
        import openai

        return openai.OpenAI(base_url=self.base_url, api_key=key, max_retries=0, **kw)

    def async_openai(self, key: str = TEAM_KEY, **kw: Any) -> Any:
        import openai

        return openai.AsyncOpenAI(base_url=self.base_url, api_key=key, max_retries=0, **kw)

    def preferred(self, messages: list[dict[str, Any]], among: list[str]) -> list[str]:
        """``among`` ordered as P2L ranks them for ``messages`` (best first), so a test can
        make the model the router will choose be the one it needs."""
        board = self.http().post("/v1/leaderboard", json={"messages": messages}).json()
        rank = {row["model"]: i for i, row in enumerate(board["models"])}
        return sorted(among, key=rank.__getitem__)

    def http(self, key: str | None = TEAM_KEY) -> httpx.Client:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.root, headers=headers, timeout=30)


def default_models() -> dict[str, dict[str, Any]]:
    """The test catalog: every model of ``PRICES`` on the fake provider, as ``up-<name>``."""
    return {
        name: {
            "provider": "fake",
            "upstream_model": f"up-{name}",
            "input_usd_per_mtok": i,
            "output_usd_per_mtok": o,
            "supports": ["tools", "vision"],
        }
        for name, (i, o) in PRICES.items()
    }


def write_config(
    tmp: Path,
    fake_url: str,
    *,
    team: dict[str, Any] | None = None,
    other_team: dict[str, Any] | None = None,
    provider: dict[str, Any] | None = None,
    models: dict[str, Any] | None = None,
    provider_key: str = PROVIDER_KEY,
    more_providers: dict[str, dict[str, Any]] | None = None,
) -> tuple[Path, Path, dict[str, str]]:
    """``more_providers``: further providers (name -> fields) on the same fake, with the
    fake's key (a catalog mixing protocols: ``{"claude": {"api": "anthropic-messages"}}``)."""
    prov = {
        "base_url": fake_url,
        "api_key_env": "FAKE_PROVIDER_KEY",
        "timeouts": {"connect": 2, "first_byte": 5, "idle": 5, "total": 20},
        "max_retries": 1,
        **(provider or {}),
    }
    model_cfg = models or default_models()
    providers = tmp / "providers.yaml"
    providers.write_text(
        yaml.safe_dump(
            {
                "providers": {
                    "fake": prov,
                    **{name: {**prov, **fields} for name, fields in (more_providers or {}).items()},
                    "nokey": {
                        "base_url": "http://127.0.0.1:9/v1",
                        "api_key_env": "UNSET_PROVIDER_KEY",
                    },
                },
                "models": {
                    **model_cfg,
                    "unkeyed-model": {
                        "provider": "nokey",
                        "input_usd_per_mtok": 1,
                        "output_usd_per_mtok": 1,
                    },
                },
            }
        )
    )
    policies = tmp / "policies"
    policies.mkdir(exist_ok=True)
    (policies / "research.yaml").write_text(
        yaml.safe_dump({"api_keys_env": ["RESEARCH_KEY"], "budget": {"usd": 100.0}, **(team or {})})
    )
    (policies / "other.yaml").write_text(
        yaml.safe_dump(
            {
                "api_keys_env": ["OTHER_KEY"],
                "budget": "none",
                "allow": ["gpt-4o-mini*"],
                **(other_team or {}),
            }
        )
    )
    env = {
        "FAKE_PROVIDER_KEY": provider_key,
        "RESEARCH_KEY": TEAM_KEY,
        "OTHER_KEY": OTHER_KEY,
        "P2L_ROUTER_ADMIN_KEY": ADMIN_KEY,
    }
    return providers, policies, env


def launch_router(
    root: Path,
    fake: FakeUpstream,
    p2l_model: Any,
    servers: list[ThreadServer],
    *,
    ledger: str | None = None,
    wait_ready: bool = True,
    clock: Callable[[], float] | None = None,
    service_kw: dict[str, Any] | None = None,
    server_kw: dict[str, Any] | None = None,
    engine_kw: dict[str, Any] | None = None,
    **config_kw: Any,
) -> RouterHandle:
    """A real router in ``root`` (a new folder) against ``fake``, its server appended to
    ``servers`` (the caller stops them); options as :func:`make_router`'s."""
    from router.api.app import create_app
    from router.config import load_config
    from router.scoring import ScoringEngine
    from router.serving.service import RouterService

    root.mkdir()
    providers, policies, env = write_config(root, fake.base_url, **config_kw)
    config = load_config(providers, policies, env)
    log_path = root / "decisions.jsonl"
    kw: dict[str, Any] = {"clock": clock} if clock else {}
    service = RouterService(
        config,
        ledger_url=ledger or f"sqlite:///{root / 'ledger.db'}",
        decision_log=str(log_path),
        engine=ScoringEngine(p2l_model, **(engine_kw or {})),
        **kw,
        **(service_kw or {}),
    )
    app = create_app(service, reload_config=lambda: load_config(providers, policies, env))
    srv = ThreadServer(app, **(server_kw or {})).__enter__()
    servers.append(srv)
    root_url = f"http://127.0.0.1:{srv.port}"
    if wait_ready:
        deadline = time.monotonic() + 30
        while httpx.get(root_url + "/readyz").status_code != 200:
            assert time.monotonic() < deadline, "router never became ready"
            time.sleep(0.02)
    return RouterHandle(root_url + "/v1", root_url, service, log_path, root)


@pytest.fixture
def make_router(
    tmp_path: Path, p2l_model: Any, fake: FakeUpstream
) -> Iterator[Callable[..., RouterHandle]]:
    """Start a real router against the fake upstream; options shape the team and catalog."""
    servers: list[ThreadServer] = []

    def start(**kw: Any) -> RouterHandle:
        return launch_router(tmp_path / f"router{len(servers)}", fake, p2l_model, servers, **kw)

    yield start
    for srv in servers:
        srv.__exit__(None, None, None)


def stalled_post(port: int, path: str, headers: str, partial: bytes) -> bytes:
    """POST to ``path`` with a declared 1,000-byte body of which only ``partial`` is ever
    sent; returns what the router answered (it must answer without the rest)."""

    async def stall() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n".encode()
            + f"{headers}content-length: 1000\r\n\r\n".encode()
            + partial
        )
        await writer.drain()
        data = await asyncio.wait_for(reader.read(4096), 30)
        writer.close()
        return data

    return asyncio.run(stall())
