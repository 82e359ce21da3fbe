"""``p2l-router``: serve, demo, leaderboard, simulate, decisions, ledger, tiny-checkpoint,
export-backbone, check-config.

Every flag can also be set by an environment variable ``P2L_ROUTER_<FLAG>``
(``--p2l-model`` -> ``P2L_ROUTER_P2L_MODEL``); a flag on the command line wins.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from router.api.workers import check_workers, is_worker, supervise
from router.errors import ConfigError
from router.offline.commands import (
    cmd_check_config,
    cmd_export_backbone,
    cmd_leaderboard,
    cmd_simulate,
    cmd_tiny_checkpoint,
)
from router.offline.ledger_admin import add_ledger_parser, cmd_ledger
from router.offline.reports import add_decisions_parser, cmd_decisions
from router.scoring.local import require_local_scorer
from router.scoring.types import DEFAULT_P2L_MODEL, ModelLoadError, Scorer

log = logging.getLogger("router")

SCORER_KEY_ENV = "P2L_ROUTER_SCORER_KEY"  # the engine's --api-key; never a flag (argv is public)
# Commands that run (or write) the P2L network in process: torch, the `local` extra.
LOCAL_COMMANDS = ("demo", "leaderboard", "simulate", "export-backbone", "tiny-checkpoint")


def _env(flag: str, default: Any, cast: Callable[[str], Any] = str) -> Any:
    var = "P2L_ROUTER_" + flag.upper().replace("-", "_")
    raw = os.environ.get(var)
    if raw is None or raw == "":
        return default
    try:
        return cast(raw)
    except ValueError:
        raise SystemExit(f"p2l-router: {var}={raw!r} is not a valid value for --{flag}") from None


def _bool(raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def _add(
    p: argparse.ArgumentParser, flag: str, default: Any, cast: Callable[[str], Any] = str, **kw: Any
) -> None:
    if cast is _bool:
        p.add_argument(
            f"--{flag}",
            action=argparse.BooleanOptionalAction,
            default=_env(flag, default, _bool),
            **kw,
        )
    else:
        p.add_argument(f"--{flag}", type=cast, default=_env(flag, default, cast), **kw)


def _server_flags(p: argparse.ArgumentParser, *, port: int = 8000) -> None:
    _add(p, "host", "127.0.0.1", help="address to listen on")
    _add(p, "port", port, int, help="port to listen on")
    _add(p, "device", "auto", help="auto (CUDA bf16 if available, else CPU fp32) | cpu | cuda")
    _add(p, "p2l-head", None, help="override the head type: bt | rk | grk")
    _add(p, "decision-log", "-", help="file for the JSON decision log; '-' = stderr, 'off' = none")
    _add(p, "log-prompts", False, _bool, help="include prompt text in the decision log")
    _add(p, "decision-history", True, _bool, help="also keep each decision in the ledger")
    _add(p, "decision-retention-days", 30.0, float, help="how long the ledger keeps decisions")
    _add(
        p,
        "response-retention-days",
        30.0,
        float,
        help="how long stored /v1/responses answers are kept (a team's response_retention_s wins)",
    )
    _add(p, "max-body-mb", 8.0, float, help="largest request body accepted (413 above)")
    _add(p, "max-n", 16, int, help="largest 'n' accepted (400 above)")
    _add(
        p,
        "max-prompt-tokens",
        None,
        int,
        help="most prompt tokens one request may carry (400 above; default 2,000,000)",
    )
    _add(p, "max-batch-size", 32, int, help="P2L prompts scored in one forward at most")
    _add(p, "max-wait-ms", 2.0, float, help="how long the scorer waits to fill a batch")
    _add(p, "max-queue", 256, int, help="prompts waiting for the scorer before 503 overloaded")
    _add(p, "compile", False, _bool, help="torch.compile the P2L backbone (GPU)")
    _add(p, "log-level", "info", help="debug | info | warning | error")
    _add(
        p,
        "shutdown-grace-s",
        120.0,
        float,
        help="on SIGTERM, how long requests and streams in flight may run before they are ended",
    )
    _add(p, "docs", False, _bool, help="serve the API docs at /docs and /openapi.json")


def _auth_flag(p: argparse.ArgumentParser) -> None:
    _add(
        p,
        "allow-unauthenticated",
        False,
        _bool,
        help="with no team key configured, serve every request as team 'default' "
        "(refused otherwise)",
    )


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="p2l-router", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="serve the OpenAI-compatible router")
    _server_flags(s)
    _add(s, "providers", "providers.yaml", help="providers and models with prices")
    _add(s, "policies", "policies", help="folder of team policy files")
    _add(s, "p2l-model", DEFAULT_P2L_MODEL, help="hub id or local folder of a P2L checkpoint")
    _add(s, "ledger", "sqlite:///p2l-router.db", help="sqlite:///PATH or redis://HOST:PORT/DB")
    _add(
        s,
        "journal",
        None,
        help="settlements the ledger could not take wait here (default: beside a SQLite "
        "ledger, else ./p2l-router.journal)",
    )
    _add(
        s,
        "scorer-url",
        None,
        help="score on a remote engine (vLLM, e.g. http://vllm:8000); --p2l-model then names "
        f"the folder export-backbone wrote; the engine's key is read from {SCORER_KEY_ENV}",
    )
    _add(
        s,
        "scorer-dtype",
        "float32",
        help="the engine's dtype; sets the start-up probe's tolerance (float32 1e-3, "
        "bfloat16 5e-2)",
    )
    _add(s, "scorer-timeout-s", 30.0, float, help="bound on one call to the scoring engine")
    _add(s, "workers", 1, int, help="router processes sharing the port (needs --scorer-url)")
    _add(s, "force", False, _bool, help="allow --workers > 1 with an in-process P2L model")
    _auth_flag(s)

    d = sub.add_parser("demo", help="serve fully offline: tiny checkpoint + built-in echo provider")
    _server_flags(d)
    _add(
        d,
        "cache-dir",
        str(Path.home() / ".cache" / "p2l-router" / "demo"),
        help="where the demo keeps its files",
    )

    lb = sub.add_parser("leaderboard", help="this prompt's ranked models")
    lb.add_argument("prompt", help="the prompt text ('-' reads stdin)")
    _add(lb, "p2l-model", DEFAULT_P2L_MODEL, help="hub id or local folder of a P2L checkpoint")
    _add(lb, "providers", "providers.yaml", help="prices come from here (optional)")
    _add(lb, "device", "auto")
    _add(lb, "p2l-head", None)
    lb.add_argument("--top", type=int, default=20, help="rows to show (0 = all)")
    lb.add_argument(
        "--max-tokens", type=int, default=None, help="output tokens for the expected cost"
    )
    lb.add_argument("--json", action="store_true", help="print JSON instead of a table")

    ex = sub.add_parser(
        "export-backbone", help="write a P2L checkpoint as a folder a vLLM engine serves"
    )
    ex.add_argument("src", help="hub id or folder of a P2L checkpoint")
    ex.add_argument("out", help="the folder to write")
    _add(ex, "device", "cpu", help="where the float32 probe is computed (cpu | cuda)")
    ex.add_argument("--max-length", type=int, default=8192, help="the P2L max input length")
    ex.add_argument("--force", action="store_true", help="overwrite a non-empty OUT")

    tc = sub.add_parser("tiny-checkpoint", help="write a random tiny P2L checkpoint")
    tc.add_argument("dir")
    tc.add_argument("--models", default=None, help="comma-separated model names")
    tc.add_argument("--head", default="grk", choices=["bt", "rk", "grk"])
    tc.add_argument("--backbone", default="qwen2", choices=["qwen2", "llama"])
    tc.add_argument("--seed", type=int, default=0)

    cc = sub.add_parser(
        "check-config", help="validate providers.yaml and policies/, print a summary"
    )
    _add(cc, "providers", "providers.yaml")
    _add(cc, "policies", "policies")
    _auth_flag(cc)

    sim = sub.add_parser("simulate", help="route a prompt file without calling upstream")
    sim.add_argument(
        "prompts",
        nargs="?",
        default=None,
        help="JSONL: {'messages': [...]} or {'prompt': '...'} per line; with --sessions, "
        "{'turns': [[messages], ...]} per session (default: the shipped agent traces)",
    )
    sim.add_argument(
        "--sessions",
        action="store_true",
        help="route agent conversations turn by turn under each session affinity "
        "(off, sticky, cache-aware), the prompt cache billed",
    )
    sim.add_argument(
        "--whole-prompt",
        action="store_true",
        help="with --sessions: add the row off/whole, P2L scoring every turn's whole prompt "
        "(tool results included, as Anthropic clients were scored before it took only the "
        "user's words); one P2L pass per turn",
    )
    sim.add_argument("--team", required=True)
    sim.add_argument("--strategy", default=None)
    sim.add_argument("--frontier", default=None, help="write a score-vs-spend PNG here")
    _add(sim, "providers", "providers.yaml")
    _add(sim, "policies", "policies")
    _add(sim, "p2l-model", DEFAULT_P2L_MODEL)
    _add(sim, "device", "auto")
    _add(sim, "p2l-head", None)
    sim.add_argument("--json", action="store_true")
    add_decisions_parser(sub)
    add_ledger_parser(sub)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=getattr(logging, str(getattr(args, "log_level", "info")).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler = {
        "serve": cmd_serve,
        "demo": cmd_demo,
        "leaderboard": cmd_leaderboard,
        "tiny-checkpoint": cmd_tiny_checkpoint,
        "export-backbone": cmd_export_backbone,
        "check-config": cmd_check_config,
        "simulate": cmd_simulate,
        "decisions": cmd_decisions,
        "ledger": cmd_ledger,
    }[args.command]
    try:
        if args.command in LOCAL_COMMANDS or (args.command == "serve" and not args.scorer_url):
            require_local_scorer(f"p2l-router {args.command}")
        return handler(args)
    except ModelLoadError as exc:
        print(f"p2l-router: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"p2l-router: configuration error:\n{exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


# ---------------------------------------------------------------- serve / demo


def load_engine(args: argparse.Namespace, model: str) -> Scorer:
    if getattr(args, "scorer_url", None):
        return load_remote_engine(args, model)
    from router.scoring import ModelLoadError, ScoringEngine, load_p2l

    log.info("loading P2L model %s on %s ...", model, args.device)
    try:
        m = load_p2l(model, device=args.device, head=args.p2l_head, compile=args.compile)
    except ModelLoadError as exc:
        raise SystemExit(f"p2l-router: {exc}") from None
    return ScoringEngine(
        m,
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
    )


def load_remote_engine(args: argparse.Namespace, folder: str) -> Scorer:
    """The exported folder's tokenizer and head, scoring on the engine at --scorer-url
    (no torch imported)."""
    from router.scoring.exported import load_exported
    from router.scoring.remote import RemoteScorerConfig, RemoteScoringEngine
    from router.scoring.types import ModelLoadError

    try:
        model = load_exported(folder)
    except ModelLoadError as exc:
        raise SystemExit(f"p2l-router: {exc}") from None
    log.info("scoring on the engine at %s with the head of %s", args.scorer_url, folder)
    return RemoteScoringEngine(
        model,
        RemoteScorerConfig(
            url=args.scorer_url,
            api_key=os.environ.get(SCORER_KEY_ENV) or None,
            dtype=args.scorer_dtype,
            timeout_s=args.scorer_timeout_s,
            max_batch_size=args.max_batch_size,
            max_wait_ms=args.max_wait_ms,
            max_queue=args.max_queue,
        ),
    )


def run_server(
    args: argparse.Namespace, service: Any, reload_config: Callable[[], Any] | None
) -> int:
    from router.api.app import create_app
    from router.api.server import serve

    app = create_app(service, reload_config=reload_config, docs=args.docs)
    serve(
        app,
        service,
        host=args.host,
        port=args.port,
        log_level=str(args.log_level),
        grace_s=args.shutdown_grace_s,
        reuse_port=is_worker(),
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from router.config import ADMIN_KEY_ENV, load_config
    from router.serving.service import RouterService

    def reload() -> Any:
        return load_config(
            args.providers, args.policies, allow_unauthenticated=args.allow_unauthenticated
        )

    config = reload()
    if args.workers > 1 and not is_worker():
        check_workers(args.workers, remote_scorer=bool(args.scorer_url), force=args.force)
        return supervise(args.argv, args.workers)
    for w in config.warnings:
        log.warning("%s", w)
    if not config.admin_enabled:
        log.info("%s is unset: the admin endpoints are closed", ADMIN_KEY_ENV)
    engine = load_engine(args, args.p2l_model)
    _warn_unscored(config, engine.model.model_list)
    service = RouterService(
        config,
        ledger_url=args.ledger,
        decision_log=args.decision_log,
        engine=engine,
        limits=request_limits(args),
        log_prompts=args.log_prompts,
        journal_path=args.journal,
        **history_options(args),
    )
    return run_server(args, service, reload)


def request_limits(args: argparse.Namespace) -> Any:
    from router.serving.service import DEFAULT_LIMITS, RequestLimits

    return RequestLimits(
        max_body_bytes=int(args.max_body_mb * 2**20),
        max_n=args.max_n,
        max_prompt_tokens=args.max_prompt_tokens or DEFAULT_LIMITS.max_prompt_tokens,
    )


def history_options(args: argparse.Namespace) -> dict[str, Any]:
    from router.serving.stored import StoreConfig

    return {
        "decision_history": args.decision_history,
        "decision_retention_days": args.decision_retention_days,
        "response_store": StoreConfig(retention_s=args.response_retention_days * 86400.0),
    }


def _warn_unscored(config: Any, model_list: Sequence[str]) -> None:
    missing = sorted(set(config.catalog.models) - set(model_list))
    if missing:
        log.warning(
            "%d model(s) in %s are not in the P2L checkpoint's model list, so they are callable "
            "by name but never routed to: %s",
            len(missing),
            config.catalog.source,
            ", ".join(missing),
        )


def cmd_demo(args: argparse.Namespace) -> int:
    from router.offline.demo import prepare_demo

    demo = prepare_demo(Path(args.cache_dir))
    engine = load_engine(args, str(demo.checkpoint))
    from router.serving.service import RouterService

    service = RouterService(
        demo.config,
        ledger_url=demo.ledger_url,
        decision_log=args.decision_log,
        engine=engine,
        transports=demo.transports,
        limits=request_limits(args),
        log_prompts=args.log_prompts,
        **history_options(args),
    )
    print(demo.banner(args.host, args.port), flush=True)
    return run_server(args, service, demo.reload)


if __name__ == "__main__":
    raise SystemExit(main())
