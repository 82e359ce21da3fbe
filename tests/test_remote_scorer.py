"""The remote scorer without vLLM: no torch in its process, the CLI's refusals, and the
failure modes vLLM cannot be made to show (a garbage body, a slow answer), on a small
fake embeddings server over real loopback HTTP."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY_MODELS, ThreadServer, write_config
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from router.breaker import OPEN
from router.errors import ScorerUnavailableError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from router.scoring import write_tiny_checkpoint
    from router.scoring.export import export_backbone

    root = tmp_path_factory.mktemp("exp")
    src = write_tiny_checkpoint(root / "src", list(TINY_MODELS), hidden_size=64)
    return export_backbone(str(src), root / "out", max_length=256)


def test_remote_mode_imports_no_torch(exported: Path) -> None:
    code = f"""
import sys
from router.cli import build_parser, load_engine
from router.api.app import create_app
from router.serving.service import RouterService
args = build_parser().parse_args(["serve", "--scorer-url", "http://127.0.0.1:9/v1"])
engine = load_engine(args, {str(exported)!r})
assert engine.model.encode([engine.model.render([{{"role": "user", "content": "hi"}}])])[0]
print("torch" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_workers_refused_for_an_in_process_model(tmp_path: Path) -> None:
    import os

    providers, policies, env = write_config(tmp_path, "http://127.0.0.1:9/v1")
    out = subprocess.run(
        [sys.executable, "-m", "router", "serve", "--workers", "2",
         "--policies", str(policies), "--providers", str(providers)],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, **env},
    )  # fmt: skip
    assert out.returncode != 0
    assert "would load the model 2 times" in out.stderr and "--scorer-url" in out.stderr


def _fake_engine(mode: dict[str, str]) -> Starlette:
    async def models(request: Request) -> JSONResponse:
        return JSONResponse({"data": [{"id": "fake", "max_model_len": 8192}]})

    async def embeddings(request: Request) -> JSONResponse:
        if mode["kind"] == "slow":
            await asyncio.sleep(1)
        return JSONResponse({"data": [{"index": 0, "embedding": "not base64 at all!"}]})

    return Starlette(
        routes=[Route("/v1/models", models), Route("/v1/embeddings", embeddings, methods=["POST"])]
    )


async def test_garbage_and_slow_engines_fail_fast_and_open_the_breaker(exported: Path) -> None:
    from router.scoring.exported import load_exported
    from router.scoring.remote import RemoteScorerConfig, RemoteScoringEngine

    mode = {"kind": "garbage"}
    with ThreadServer(_fake_engine(mode)) as srv:
        engine = RemoteScoringEngine(
            load_exported(exported),
            RemoteScorerConfig(
                url=f"http://127.0.0.1:{srv.port}",
                timeout_s=0.3,
                breaker_failures=2,
                breaker_cooldown_s=60,
            ),
        )
        await engine.start()
        try:
            msgs: list[dict[str, Any]] = [{"role": "user", "content": "garbage please"}]
            with pytest.raises(ScorerUnavailableError, match="unusable"):
                await engine.score(msgs)
            mode["kind"] = "slow"
            with pytest.raises(ScorerUnavailableError, match="did not answer"):
                await engine.score([{"role": "user", "content": "slow please"}])
            assert engine.breaker.state == OPEN
            with pytest.raises(ScorerUnavailableError, match="circuit open"):
                await engine.score([{"role": "user", "content": "fails fast"}])
            assert engine.health()["scorer"]["state"] == "down"
        finally:
            await engine.close()
