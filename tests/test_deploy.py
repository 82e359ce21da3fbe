"""docker-compose.yaml's structure (no Docker engine runs here): the services, the
engine's pooling flags the router's probe relies on, the router's remote-scorer flags and
image target; the Dockerfile's two targets. The Dockerfile is linted by hadolint in
.ci/run; tests/test_torchfree_install.py installs what the remote target installs."""

from __future__ import annotations

import json
import re
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
    assert router["build"] == {"context": ".", "target": "remote"}  # no torch, no CUDA
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


def _stages(dockerfile: str) -> dict[str, tuple[str, str]]:
    """Each ``FROM base AS name`` stage: name -> (base image, the stage's text)."""
    heads = list(re.finditer(r"^FROM\s+(\S+)\s+AS\s+(\S+)\s*$", dockerfile, re.M))
    ends = [h.start() for h in heads[1:]] + [len(dockerfile)]
    return {h[2]: (h[1], dockerfile[h.end() : end]) for h, end in zip(heads, ends, strict=True)}


def test_dockerfile_targets() -> None:
    text = (REPO / "Dockerfile").read_text()
    stages = _stages(text)
    assert list(stages) == ["remote", "gpu"]  # gpu last: the default `docker build` target

    base, remote = stages["remote"]
    assert base.startswith("python:3.11-") and "cuda" not in base
    installs = [ln for ln in remote.splitlines() if "pip install" in ln]
    assert any('pip install "./[redis]"' in ln for ln in installs), installs  # compose: Redis
    assert not any("torch" in ln or "local" in ln for ln in installs), installs
    assert "find_spec('torch') is None" in remote  # the build checks torch stayed out

    base, gpu = stages["gpu"]
    assert base.startswith("nvidia/cuda:")
    assert '"./[local,redis]"' in gpu and "--index-url" in gpu
