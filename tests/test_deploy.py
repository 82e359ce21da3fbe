"""docker-compose.yaml's structure (no Docker engine runs here): the services, the
engine's pooling flags the router's probe relies on, and the router's remote-scorer
flags. The Dockerfile is linted by hadolint in .ci/run."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _flag(command: list[str], name: str) -> str:
    assert name in command, f"{name} missing from {command}"
    return command[command.index(name) + 1]


def test_compose_file_structure() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"vllm", "redis", "router", "lb"}

    vllm = services["vllm"]
    assert vllm["image"].startswith("vllm/vllm-openai:")
    cmd = vllm["command"]
    assert _flag(cmd, "--runner") == "pooling" and _flag(cmd, "--convert") == "embed"
    assert json.loads(_flag(cmd, "--pooler-config")) == {
        "pooling_type": "LAST",
        "use_activation": False,
    }
    assert int(_flag(cmd, "--max-num-batched-tokens")) >= int(_flag(cmd, "--max-model-len"))
    gpu = vllm["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]

    router = services["router"]
    rcmd = router["command"]
    assert rcmd[:2] == ["p2l-router", "serve"]
    assert _flag(rcmd, "--scorer-url") == "http://vllm:8000"
    assert _flag(rcmd, "--p2l-model") == _flag(cmd, "--model")  # the same exported folder
    assert _flag(rcmd, "--scorer-dtype") == _flag(cmd, "--dtype")
    assert _flag(rcmd, "--ledger").startswith("redis://redis:")
    assert "P2L_ROUTER_SCORER_KEY" in router["environment"]
    assert router["deploy"]["replicas"] == 2
    assert set(router["depends_on"]) == {"vllm", "redis"}

    lb = services["lb"]
    assert lb["ports"] == ["8000:8000"]
    nginx = compose["configs"][lb["configs"][0]["source"]]["content"]
    assert "server router:8000" in nginx and "proxy_buffering off" in nginx
