"""``p2l-router demo``: the whole router, offline — no keys, no GPU, no network.

A tiny random P2L checkpoint is written once into a cache folder, an in-process echo
provider serves every model in it, and the team ``default`` gets a small daily budget on a
SQLite ledger. The demo runs unauthenticated on purpose (``allow_unauthenticated``; any
api_key is accepted) and its banner says so; the echo provider costs nothing. So that the
web console can be tried, the demo opens the admin endpoints with ``P2L_ROUTER_ADMIN_KEY``
or, when that is unset, the well-known key ``demo-admin`` (the demo only; ``serve`` keeps
them closed without the variable). The router code path is the real one; only the
provider and the checkpoint's weights are stand-ins.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from router.api.console import console_url
from router.config import ADMIN_KEY_ENV, DEFAULT_TEAM, RouterConfig, load_config

# Arena names (as in the real P2L model list) with early-2025 list prices, USD per 1M tokens.
DEMO_MODELS: dict[str, tuple[float, float]] = {
    "chatgpt-4o-latest-20241120": (5.00, 15.00),
    "claude-3-5-haiku-20241022": (0.80, 4.00),
    "claude-3-5-sonnet-20241022": (3.00, 15.00),
    "deepseek-v3": (0.27, 1.10),
    "gemini-1.5-flash-002": (0.075, 0.30),
    "gemini-1.5-pro-002": (1.25, 5.00),
    "gemma-2-9b-it": (0.20, 0.20),
    "gpt-4o-2024-08-06": (2.50, 10.00),
    "gpt-4o-mini-2024-07-18": (0.15, 0.60),
    "llama-3.1-405b-instruct-fp8": (3.50, 3.50),
    "llama-3.1-70b-instruct": (0.88, 0.88),
    "llama-3.1-8b-instruct": (0.18, 0.18),
    "mistral-large-2407": (2.00, 6.00),
    "o1-mini": (3.00, 12.00),
    "qwen2.5-72b-instruct": (1.20, 1.20),
}
DEMO_KEY = "demo"  # any key works: the demo is unauthenticated
DEMO_ADMIN_KEY = "demo-admin"  # the console's sign-in key when P2L_ROUTER_ADMIN_KEY is unset
DEMO_BUDGET_USD = 1.0
DEMO_BASE_URL = "http://echo.invalid/v1"  # never dialled: the echo transport answers in-process


@dataclass
class Demo:
    root: Path
    checkpoint: Path
    providers: Path
    policies: Path
    ledger_url: str
    config: RouterConfig
    transports: dict[str, Any]

    def reload(self) -> RouterConfig:
        return load_config(self.providers, self.policies, demo_env(), allow_unauthenticated=True)

    def banner(self, host: str, port: int) -> str:
        url = f"http://{host}:{port}/v1"
        return "\n".join(
            [
                "p2l-router demo: offline, tiny random P2L checkpoint, built-in echo provider",
                f"  base_url: {url}    api_key: any (e.g. {DEMO_KEY})",
                f"  auth: OFF (--allow-unauthenticated): every request is team "
                f"'{DEFAULT_TEAM}', budget ${DEMO_BUDGET_USD:g}/day",
                "  try it:",
                "    from openai import OpenAI",
                f'    client = OpenAI(base_url="{url}", api_key="{DEMO_KEY}")',
                '    print(client.chat.completions.create(model="p2l", messages=[{"role": "user", '
                '"content": "Write a haiku about routers"}]).choices[0].message.content)',
                f"  decisions: response headers x-router-*, GET {url}/budget, POST {url}/leaderboard",
                f"  console: {console_url(host, port)}    sign in with the admin key: "
                f"{demo_admin_key()}",
            ]
        )


def demo_admin_key(env: Mapping[str, str] | None = None) -> str:
    """``P2L_ROUTER_ADMIN_KEY`` when set, else the demo's well-known key."""
    return (os.environ if env is None else env).get(ADMIN_KEY_ENV) or DEMO_ADMIN_KEY


def demo_env() -> dict[str, str]:
    """The environment the demo's config is read from: the process's, with the admin key."""
    return {**os.environ, ADMIN_KEY_ENV: demo_admin_key()}


def prepare_demo(root: Path) -> Demo:
    """Write (once) the checkpoint and config files the demo serves from."""
    from router.offline.echo import StreamingASGITransport, create_echo_app
    from router.scoring import write_tiny_checkpoint

    root.mkdir(parents=True, exist_ok=True)
    ckpt = root / "p2l-tiny"
    if not (ckpt / "model_list.json").exists():
        write_tiny_checkpoint(ckpt, sorted(DEMO_MODELS))
    providers = root / "providers.yaml"
    providers.write_text(
        yaml.safe_dump(
            {
                "providers": {"echo": {"base_url": DEMO_BASE_URL}},
                "models": {
                    name: {"provider": "echo", "input_usd_per_mtok": i, "output_usd_per_mtok": o}
                    for name, (i, o) in DEMO_MODELS.items()
                },
            },
            sort_keys=True,
        )
    )
    policies = root / "policies"
    policies.mkdir(exist_ok=True)
    for old in [*policies.glob("*.yaml"), *policies.glob("*.yml")]:
        old.unlink()  # the demo's own folder: files from an older demo would change the team
    (policies / f"{DEFAULT_TEAM}.yaml").write_text(
        yaml.safe_dump(
            {
                "budget": {"usd": DEMO_BUDGET_USD, "period": "day", "timezone": "UTC"},
                "strategy": "cost-aware",
                "cost_sensitivity": 20,
            }
        )
    )
    config = load_config(providers, policies, demo_env(), allow_unauthenticated=True)
    transports = {"echo": StreamingASGITransport(create_echo_app(tuple(sorted(DEMO_MODELS))))}
    return Demo(
        root, ckpt, providers, policies, f"sqlite:///{root / 'ledger.db'}", config, transports
    )
