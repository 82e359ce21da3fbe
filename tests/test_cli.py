"""The command line as a user runs it: real subprocesses, real ports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
import yaml
from conftest import TINY_MODELS, write_config
from router_process import free_port, wait_http_ok

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "router", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**ENV, **(env or {})},
        timeout=timeout,
    )


def wait_ready(root: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    wait_http_ok(
        root + "/readyz", proc, what="the router", timeout=timeout,
        log=lambda: proc.stderr.read() if proc.stderr else "",
    )  # fmt: skip


def stop(proc: subprocess.Popen) -> tuple[str, str]:
    """Interrupt the router; its (stdout, stderr)."""
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return out or "", err or ""


def test_check_config_on_shipped_files():
    env = {k: v for k, v in ENV.items() if not k.endswith("_API_KEY")}
    res = subprocess.run(
        [sys.executable, "-m", "router", "check-config"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**env, "OPENAI_API_KEY": "sk-x", "RESEARCH_KEY": "r", "P2L_ROUTER_DEFAULT_KEY": "d"},
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert "providers:" in res.stdout and "teams:" in res.stdout
    assert "skipped (ANTHROPIC_API_KEY unset)" in res.stdout
    assert "openai" in res.stdout and "ok" in res.stdout
    assert "sk-x" not in res.stdout + res.stderr
    assert "auth: on" in res.stdout and "admin: closed" in res.stdout


def serve_args(providers: Path, policies: Path, *extra: str) -> list[str]:
    """``serve`` against files that fail before the P2L model is loaded (none is given)."""
    return [
        "serve",
        "--providers",
        str(providers),
        "--policies",
        str(policies),
        "--p2l-model",
        "/nonexistent/p2l",
        "--port",
        str(free_port()),
        *extra,
    ]


def test_serve_refuses_to_start_when_a_named_key_is_unset(tmp_path):
    providers, policies, env = write_config(tmp_path, "http://127.0.0.1:9/v1")
    del env["OTHER_KEY"]
    res = cli(*serve_args(providers, policies), env={**env, "OTHER_KEY": ""})
    assert res.returncode == 1
    assert f"{policies / 'other.yaml'}: api_keys_env[0]: OTHER_KEY is unset" in res.stderr
    assert env["RESEARCH_KEY"] not in res.stderr


def keyless_policies(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    providers, policies, env = write_config(tmp_path, "http://127.0.0.1:9/v1")
    (policies / "research.yaml").write_text("budget: {usd: 5}\n")
    (policies / "other.yaml").unlink()
    (policies / "default.yaml").write_text("budget: {usd: 2, period: week}\n")
    return providers, policies, env


@pytest.mark.parametrize(("flag", "env_flag"), [((), None), (("--no-allow-unauthenticated",), "1")])
def test_serve_without_any_client_key_is_refused(tmp_path, flag, env_flag):
    providers, policies, env = keyless_policies(tmp_path)
    extra = {"P2L_ROUTER_ALLOW_UNAUTHENTICATED": env_flag} if env_flag else {}
    res = cli(*serve_args(providers, policies, *flag), env={**env, **extra})
    assert res.returncode == 1  # the command line wins over the variable
    assert f"{policies}: api_keys_env: no team file names a client key" in res.stderr
    assert "--allow-unauthenticated" in res.stderr


@pytest.mark.parametrize(("flag", "env_flag"), [(("--allow-unauthenticated",), None), ((), "true")])
def test_no_client_key_is_accepted_when_allowed(tmp_path, flag, env_flag):
    """check-config loads exactly as serve does (serve would go on to load the model)."""
    providers, policies, env = keyless_policies(tmp_path)
    extra = {"P2L_ROUTER_ALLOW_UNAUTHENTICATED": env_flag} if env_flag else {}
    args = ("check-config", "--providers", str(providers), "--policies", str(policies), *flag)
    res = cli(*args, env={**env, **extra})
    assert res.returncode == 0, res.stderr
    assert "auth: off (--allow-unauthenticated)" in res.stdout
    assert "auth is off (allow_unauthenticated)" in res.stdout and "$2 per week" in res.stdout


@pytest.mark.parametrize(
    ("argv", "env", "allow", "docs"),
    [
        (["serve"], {}, False, False),
        (["serve", "--allow-unauthenticated", "--docs"], {}, True, True),
        (
            ["serve"],
            {"P2L_ROUTER_ALLOW_UNAUTHENTICATED": "1", "P2L_ROUTER_DOCS": "yes"},
            True,
            True,
        ),
        (["serve", "--no-docs"], {"P2L_ROUTER_DOCS": "1"}, False, False),
    ],
)
def test_serve_flags(monkeypatch, argv, env, allow, docs):
    from router.cli import build_parser

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    args = build_parser().parse_args(argv)
    assert (args.allow_unauthenticated, args.docs) == (allow, docs)


def test_check_config_refuses_a_team_without_budget(tmp_path):
    providers, policies, env = write_config(tmp_path, "http://127.0.0.1:9/v1")
    (policies / "other.yaml").write_text("api_keys_env: [OTHER_KEY]\n")
    res = cli("check-config", "--providers", str(providers), "--policies", str(policies), env=env)
    assert res.returncode == 1
    assert f"{policies / 'other.yaml'}: budget: required field is missing" in res.stderr
    assert "budget: none" in res.stderr


def test_check_config_errors_name_file_and_field(tmp_path):
    providers, policies, _ = write_config(tmp_path, "http://127.0.0.1:9/v1")
    (policies / "broken.yaml").write_text("budget: {usd: -3, period: fortnight}\nstrategy: yolo\n")
    res = cli("check-config", "--providers", str(providers), "--policies", str(policies))
    assert res.returncode == 1
    assert f"{policies / 'broken.yaml'}: budget.usd:" in res.stderr
    assert f"{policies / 'broken.yaml'}: budget.period:" in res.stderr
    assert f"{policies / 'broken.yaml'}: strategy:" in res.stderr


def test_tiny_checkpoint_and_leaderboard(tmp_path, capsys, monkeypatch):
    from router.cli import main

    ckpt = tmp_path / "ck"
    assert main(["tiny-checkpoint", str(ckpt), "--models", ",".join(TINY_MODELS)]) == 0
    assert json.loads((ckpt / "model_list.json").read_text()) == sorted(TINY_MODELS)
    providers, _, env = write_config(tmp_path, "http://127.0.0.1:9/v1")
    monkeypatch.setenv("FAKE_PROVIDER_KEY", env["FAKE_PROVIDER_KEY"])
    capsys.readouterr()
    args = [
        "leaderboard",
        "What is 2+2?",
        "--p2l-model",
        str(ckpt),
        "--providers",
        str(providers),
        "--device",
        "cpu",
    ]
    assert main([*args, "--json", "--top", "0"]) == 0
    board = json.loads(capsys.readouterr().out)
    assert board["head"] == "grk"
    coefs = [m["coef"] for m in board["models"]]
    assert coefs == sorted(coefs, reverse=True) and len(coefs) == len(TINY_MODELS)
    assert all(0 < m["p_not_bad"] < 1 for m in board["models"])
    assert all(m["routable"] and m["expected_cost_usd"] > 0 for m in board["models"])
    assert main([*args, "--top", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 + 2 + 3  # title, header + rule, three rows
    assert lines[3].split()[1] == board["models"][0]["model"]


def test_leaderboard_missing_model_offline_is_clear(tmp_path):
    res = cli(
        "leaderboard",
        "hi",
        "--p2l-model",
        "lmarena-ai/p2l-does-not-exist",
        "--device",
        "cpu",
        "--providers",
        str(tmp_path / "none.yaml"),
    )
    assert res.returncode == 1
    assert "--p2l-model" in res.stderr and "demo" in res.stderr


def test_demo_serves_the_sdk(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "router",
            "demo",
            "--port",
            str(port),
            "--cache-dir",
            str(tmp_path / "demo"),
            "--decision-log",
            str(tmp_path / "decisions.jsonl"),
        ],
        cwd=REPO,
        env={k: v for k, v in ENV.items() if k != "P2L_ROUTER_ADMIN_KEY"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    root = f"http://127.0.0.1:{port}"
    try:
        wait_ready(root, proc)
        # The console is served, and the demo's well-known admin key opens the admin endpoints.
        page = httpx.get(root + "/console", follow_redirects=True)
        assert page.status_code == 200 and "p2l-router console" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        admin = {"authorization": "Bearer demo-admin"}
        assert httpx.get(root + "/metrics", headers=admin).status_code == 200
        client = openai.OpenAI(base_url=root + "/v1", api_key="demo", max_retries=0)
        resp = client.chat.completions.create(
            model="p2l", messages=[{"role": "user", "content": "Write a haiku about routers"}]
        )
        assert "echo: Write a haiku about routers" in resp.choices[0].message.content
        pieces = [
            c.choices[0].delta.content
            for c in client.chat.completions.create(
                model="p2l", stream=True, messages=[{"role": "user", "content": "stream me please"}]
            )
            if c.choices
        ]
        assert "".join(p for p in pieces if p).endswith("stream me please")
        assert "p2l" in [m.id for m in client.models.list()]
        budget = httpx.get(root + "/v1/budget", headers={"authorization": "Bearer demo"}).json()
        assert budget["team"] == "default" and budget["spent_usd"] > 0
    finally:
        out, _ = stop(proc)
    assert f'base_url="{root}/v1"' in out
    assert "auth: OFF (--allow-unauthenticated)" in out
    assert f"console: {root}/console/    sign in with the admin key: demo-admin" in out
    lines = (tmp_path / "decisions.jsonl").read_text().splitlines()
    assert len(lines) == 2


def test_serve_reloads_config_on_sighup(tmp_path, fake_upstream_server):
    ckpt = tmp_path / "ck"
    assert cli("tiny-checkpoint", str(ckpt), "--models", ",".join(TINY_MODELS)).returncode == 0
    providers, policies, env = write_config(tmp_path, fake_upstream_server.base_url)
    port = free_port()
    err_log = tmp_path / "stderr.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "router",
            "serve",
            "--port",
            str(port),
            "--providers",
            str(providers),
            "--policies",
            str(policies),
            "--p2l-model",
            str(ckpt),
            "--device",
            "cpu",
            "--ledger",
            f"sqlite:///{tmp_path / 'ledger.db'}",
            "--decision-log",
            "off",
        ],
        cwd=REPO,
        env={**ENV, **env},
        stdout=subprocess.PIPE,
        stderr=err_log.open("w"),
        text=True,
    )
    root = f"http://127.0.0.1:{port}"
    headers = {"authorization": f"Bearer {env['RESEARCH_KEY']}"}
    body = {"model": "gpt-4o-mini-2024-07-18", "messages": [{"role": "user", "content": "hi"}]}
    try:
        wait_ready(root, proc)
        assert (
            httpx.post(root + "/v1/chat/completions", json=body, headers=headers).status_code == 200
        )
        spent = httpx.get(root + "/v1/budget", headers=headers).json()["spent_usd"]
        assert spent > 0
        research = policies / "research.yaml"
        cfg = yaml.safe_load(research.read_text())
        research.write_text(yaml.safe_dump({**cfg, "deny": ["gpt-4o-mini*"]}))
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while (
            httpx.post(root + "/v1/chat/completions", json=body, headers=headers).status_code != 404
        ):
            assert time.monotonic() < deadline, "reload did not take effect"
            time.sleep(0.1)
        assert httpx.get(root + "/v1/budget", headers=headers).json()["spent_usd"] == pytest.approx(
            spent
        )
        research.write_text("budget: [this is not a mapping\n")  # a bad edit is refused
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "config reload refused" not in err_log.read_text():
            assert time.monotonic() < deadline, "the bad reload was never reported"
            time.sleep(0.1)
        assert proc.poll() is None
        assert (
            httpx.post(root + "/v1/chat/completions", json=body, headers=headers).status_code == 404
        )
        other = {**body, "model": "deepseek-v3"}
        assert (
            httpx.post(root + "/v1/chat/completions", json=other, headers=headers).status_code
            == 200
        )
    finally:
        stop(proc)
    assert "research.yaml" in err_log.read_text().split("config reload refused", 1)[1]


def test_simulate_prints_shares_and_plots_frontier(tmp_path, capsys, monkeypatch):
    from router.cli import main

    ckpt = tmp_path / "ck"
    assert main(["tiny-checkpoint", str(ckpt), "--models", ",".join(TINY_MODELS)]) == 0
    providers, policies, env = write_config(tmp_path, "http://127.0.0.1:9/v1")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    prompts = tmp_path / "prompts.jsonl"
    lines = [
        json.dumps({"prompt": f"question number {i} about {'physics' if i % 2 else 'poetry'}"})
        for i in range(24)
    ]
    lines.append(json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 50}))
    prompts.write_text("\n".join(lines) + "\n")
    png = tmp_path / "frontier.png"
    capsys.readouterr()
    args = [
        "simulate",
        str(prompts),
        "--team",
        "research",
        "--providers",
        str(providers),
        "--policies",
        str(policies),
        "--p2l-model",
        str(ckpt),
        "--device",
        "cpu",
    ]
    assert main([*args, "--frontier", str(png), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["prompts"] == 25 and out["routed"] == 25
    assert sum(out["shares"].values()) == pytest.approx(1.0)
    assert set(out["shares"]) <= set(TINY_MODELS) and out["spend_usd"] > 0
    lams = [p["cost_sensitivity"] for p in out["frontier"]]
    assert 0 in lams and 20.0 in lams
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    assert main([*args, "--strategy", "max-quality"]) == 0
    assert "25/25 prompts routed" in capsys.readouterr().out
    assert main([*args[:3], "nobody", *args[4:]]) == 1
