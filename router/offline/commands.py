"""The commands of ``p2l-router`` that serve nothing: ``leaderboard``, ``simulate``,
``export-backbone``, ``tiny-checkpoint``, ``check-config``.

Kept out of ``router.cli`` (which parses flags and serves) so that each stays short; heavy
imports (the scorer, torch) happen inside the commands, not at import.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["SIMULATE_BATCH", "cmd_export_backbone", "cmd_leaderboard", "cmd_simulate"]


def cmd_leaderboard(args: argparse.Namespace) -> int:
    import time

    from router.config import load_providers
    from router.policy import price_table
    from router.scoring import ModelLoadError, Scores, format_table, leaderboard_rows, load_p2l
    from router.serving.tokens import message_text

    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    catalog = load_providers(args.providers) if Path(args.providers).exists() else None
    try:
        model = load_p2l(args.p2l_model, device=args.device, head=args.p2l_head)
    except ModelLoadError as exc:
        print(f"p2l-router: {exc}", file=sys.stderr)
        return 1
    messages = [{"role": "user", "content": prompt}]
    text = model.render(messages)
    t0 = time.perf_counter()
    coefs, eta = model.forward([text])
    scores = Scores(
        models=model.model_list,
        coefs=coefs[0],
        eta=None if eta is None else float(eta[0]),
        head=model.head,
        prompt_tokens=model.count_tokens(text),
        cached=False,
        scoring_ms=(time.perf_counter() - t0) * 1000,
    )
    prices = None
    if catalog is not None:
        routable = [m for m in model.model_list if catalog.available(m)]
        prices = price_table(
            catalog, routable, model.count_tokens(message_text(messages)), args.max_tokens
        )
    rows = leaderboard_rows(scores, prices)
    if args.json:
        board = {
            "head": scores.head,
            "eta": scores.eta,
            "models": rows[: args.top] if args.top else rows,
        }
        print(json.dumps(board, indent=2))
    else:
        print(f"P2L leaderboard ({model.head} head, {len(rows)} models) for: {prompt[:70]!r}")
        print(format_table(rows, top=args.top or None))
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from router.config import load_policies, load_providers
    from router.offline.plot import plot_frontier
    from router.offline.simulate import (
        load_prompts,
        score_prompts,
        simulate_scored,
    )
    from router.policy import lambda_grid
    from router.scoring import ModelLoadError, load_p2l
    from router.serving.tokens import message_text

    # Nothing is served, so no auth mode to settle: the catalog and the team files only.
    catalog = load_providers(args.providers)
    teams = load_policies(args.policies)
    team = teams.get(args.team)
    if team is None:
        print(
            f"p2l-router: no team {args.team!r} in {args.policies} "
            f"(teams: {', '.join(sorted(teams))})",
            file=sys.stderr,
        )
        return 1
    if args.sessions:
        return _simulate_sessions(args, team, catalog)
    if args.prompts is None:
        print("p2l-router: simulate needs a prompts file (or --sessions)", file=sys.stderr)
        return 2
    try:
        prompts = load_prompts(args.prompts)
        model = load_p2l(args.p2l_model, device=args.device, head=args.p2l_head)
    except (ValueError, OSError, ModelLoadError) as exc:
        print(f"p2l-router: {exc}", file=sys.stderr)
        return 1
    texts = [model.render(p.messages) for p in prompts]
    rows = []
    for i in range(0, len(texts), SIMULATE_BATCH):
        coefs, _ = model.forward(texts[i : i + SIMULATE_BATCH])
        rows.extend(coefs)
    scored = iter(rows)
    sp = score_prompts(
        lambda _messages: (next(scored), model.model_list),
        prompts,
        team=team,
        catalog=catalog,
        head=model.head,
        prompt_tokens_fn=lambda messages: model.count_tokens(message_text(messages)),
    )
    grid = lambda_grid(sp, team.cost_sensitivity) if args.frontier else None
    result = simulate_scored(sp, team=team, strategy=args.strategy, lambdas=grid)
    if args.json:
        print(json.dumps(_as_json(result), indent=2, default=str))
    else:
        print(result.summary())
    if args.frontier:
        current = (
            result
            if result.strategy == "cost-aware"
            else simulate_scored(sp, team=team, strategy="cost-aware")
        )
        out = plot_frontier(
            result.frontier or (),
            current,
            args.frontier,
            title=f"team {team.name}: {len(prompts)} prompts",
        )
        print(f"frontier ({len(result.frontier or ())} λ values) written to {out}", file=sys.stderr)
    return 0


SIMULATE_BATCH = 16


def _simulate_sessions(args: argparse.Namespace, team: Any, catalog: Any) -> int:
    from router.offline.sessions_sim import (
        agent_traces,
        format_table,
        load_traces,
        simulate_sessions,
        tool_results_as_user_text,
    )
    from router.scoring import ModelLoadError, load_p2l
    from router.serving.tokens import message_text

    try:
        traces = load_traces(args.prompts) if args.prompts else agent_traces()
        model = load_p2l(args.p2l_model, device=args.device, head=args.p2l_head)
    except (ValueError, OSError, ModelLoadError) as exc:
        print(f"p2l-router: {exc}", file=sys.stderr)
        return 1
    results = simulate_sessions(
        traces,
        team=team,
        catalog=catalog,
        model_list=model.model_list,
        head=model.head,
        score_fn=lambda messages: model.forward([model.render(messages)])[0][0],
        tokens_fn=lambda messages: model.count_tokens(message_text(messages)),
        user_key=model.render,
        whole_prompt=tool_results_as_user_text if args.whole_prompt else None,
    )
    if args.json:
        print(json.dumps([{**_as_json(r), "switches_per_session": r.switches_per_session}
                          for r in results], indent=2))  # fmt: skip
    else:
        turns = sum(len(s) for s in traces)
        print(f"{len(traces)} sessions, {turns} turns; team {team.name}: {team.strategy}")
        lam = team.cost_sensitivity if team.strategy == "cost-aware" else None
        print(format_table(results, lam))
    return 0


def _as_json(result: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(result)


def cmd_export_backbone(args: argparse.Namespace) -> int:
    from router.scoring.export import export_backbone
    from router.scoring.types import ModelLoadError

    try:
        out = export_backbone(
            args.src, args.out, device=args.device, max_length=args.max_length, force=args.force
        )
    except ModelLoadError as exc:
        raise SystemExit(f"p2l-router: {exc}") from None
    print(f"wrote {out}; serve it with vLLM (README, 'Scaling out'), then")
    print(f"  p2l-router serve --p2l-model {out} --scorer-url http://ENGINE:8000")
    return 0


def cmd_tiny_checkpoint(args: argparse.Namespace) -> int:
    from router.offline.demo import DEMO_MODELS
    from router.scoring import write_tiny_checkpoint

    models = (
        [m.strip() for m in args.models.split(",") if m.strip()]
        if args.models
        else list(DEMO_MODELS)
    )
    path = write_tiny_checkpoint(
        args.dir, models, head=args.head, backbone=args.backbone, seed=args.seed
    )
    print(
        f"wrote a random {args.backbone} {args.head} P2L checkpoint with {len(models)} models to {path}"
    )
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    from router.config import load_config

    cfg = load_config(
        args.providers, args.policies, allow_unauthenticated=args.allow_unauthenticated
    )
    cat = cfg.catalog
    avail = cat.available_models()
    print(f"providers: {len(cat.providers)} in {cat.source}")
    for name, p in sorted(cat.providers.items()):
        state = f"skipped ({cat.skipped[name]} unset)" if name in cat.skipped else "ok"
        n = sum(1 for m in cat.models.values() if m.provider == name)
        print(f"  {name:<12} {n:>3} models  {p.base_url}  {state}")
    print(f"models: {len(cat.models)} configured, {len(avail)} routable (provider key set)")
    print(f"auth: {'on' if cfg.auth_enabled else 'off (--allow-unauthenticated)'}")
    print(f"admin: {'on' if cfg.admin_enabled else 'closed (P2L_ROUTER_ADMIN_KEY unset)'}")
    print(f"teams: {len(cfg.teams)}")
    for t in sorted(cfg.teams.values(), key=lambda t: t.name):
        b = t.budget
        limit = "none" if b.usd is None else f"${b.usd:g}/{b.period} ({b.timezone})"
        rate = ""
        if t.rate_limit is not None:
            r = t.rate_limit
            rate = f" rate_limit={r.requests_per_minute or '-'}rpm/{r.tokens_per_minute or '-'}tpm"
        allowed = sum(1 for m in avail if t.allows(m))
        print(
            f"  {t.name:<12} keys={t.key_count} budget={limit} on_exhausted={b.on_exhausted} "
            f"strategy={t.strategy} λ={t.cost_sensitivity:g} allowed_routable={allowed}{rate}"
        )
    for w in cfg.warnings:
        print(f"warning: {w}")
    return 0
