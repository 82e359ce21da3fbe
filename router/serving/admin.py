"""What the admin API answers: teams against their budgets, a prompt's routes for every
team, and what-if runs over a team's logged decisions.

Nothing here reserves, forwards or moves the pacer: these are reads. Decision pages are
read straight from the ledger by the routes. Stats are CPU work over up to
``MAX_STATS_DECISIONS`` decisions (done off the event loop by the ledger), and any key
may ask for them: at most ``MAX_CONCURRENT_STATS`` run at once, the rest wait their turn
without holding anything.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from router.config import TeamPolicy
from router.errors import BudgetExceededError, NoCandidateError
from router.ledger.history import MAX_QUERY_LIMIT
from router.policy import ScoredPrompts, decide, frontier_scored, price_table
from router.protocol import ChatRequest
from router.scoring.types import Scorer

MAX_WHATIF_DECISIONS = 5000
MAX_CONCURRENT_STATS = 2


class AdminQueries:
    """Reads over a running :class:`router.serving.service.RouterService`."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self._stats_slots = asyncio.Semaphore(MAX_CONCURRENT_STATS)

    async def stats(self, since: float | None, bucket_s: float, scope: str | None) -> dict:
        """The ledger's ``decision_stats`` (newest ``MAX_STATS_DECISIONS`` decisions)."""
        async with self._stats_slots:
            return await self.service.ledger.decision_stats(
                since=since, bucket_s=bucket_s, team=scope
            )

    def teams_in(self, scope: str | None) -> list[TeamPolicy]:
        teams = self.service.config.teams
        return [t for name, t in sorted(teams.items()) if scope is None or name == scope]

    async def teams(self, scope: str | None) -> list[dict[str, Any]]:
        accounts = self.service.accounts
        now = self.service.clock()
        out = []
        for team in self.teams_in(scope):
            report = await accounts.budget_report(team)
            period = accounts.period(team)
            share = None
            if math.isfinite(period.end_ts) and period.end_ts > period.start_ts:
                share = min(
                    1.0, max(0.0, (now - period.start_ts) / (period.end_ts - period.start_ts))
                )
            spent = report["spent_usd"]
            usage = await accounts.read_usage(team.name, period)
            lam = await accounts.cost_sensitivity(team, usage, period, save=False)
            out.append(
                {
                    "team": team.name,
                    "limit_usd": report["limit_usd"],
                    "spent_usd": spent,
                    "reserved_usd": report["reserved_usd"],
                    "journaled_usd": report["journaled_usd"],
                    "period": report["period"],
                    "period_start": report["period_start"],
                    "period_end": report["resets_at"],
                    "elapsed_share": share,
                    "projected_spend_usd": spent / share if share else None,
                    "strategy": team.strategy,
                    "cost_sensitivity": team.cost_sensitivity,
                    "cost_sensitivity_now": lam,
                }
            )
        return out

    async def route_preview(self, messages: list[dict[str, Any]], scope: str | None) -> dict:
        """The prompt's leaderboard and each team's pick: the planner's candidates and the
        team's strategy at its λ now and its budget left, without reserving anything."""
        from router.scoring.leaderboard import leaderboard_rows

        svc = self.service
        engine: Scorer = svc.require_ready()
        req = ChatRequest(model="p2l", messages=messages)
        teams = self.teams_in(scope)
        prompt_tokens = await svc.admit(teams[0] if scope is not None else None, messages)
        scores = await engine.score(messages)
        catalog = svc.config.catalog
        shown = [
            m
            for m in scores.models
            if catalog.available(m) and (scope is None or teams[0].allows(m))
        ]
        prices = price_table(catalog, shown, prompt_tokens, None, svc.accounts.learned_output)
        planner = svc.planner
        rows = []
        for team in teams:
            try:
                cands, coefs = planner.candidates(svc.config, team, req, scores, prompt_tokens)
                period = svc.accounts.period(team)
                usage, _ = await svc.accounts.usage(team.name, period)
                lam = await svc.accounts.cost_sensitivity(team, usage, period, save=False)
                d = decide(
                    cands,
                    strategy=team.strategy,
                    cost_sensitivity=lam,
                    cap_usd=team.max_cost_per_request_usd,
                    budget_remaining_usd=usage.remaining(team.budget.usd),
                    on_exhausted=team.budget.on_exhausted,
                    coefs=coefs,
                    opponent_mix=team.opponent_mix,
                )
            except (NoCandidateError, BudgetExceededError) as exc:
                rows.append({"team": team.name, "error": exc.message})
                continue
            rows.append(
                {
                    "team": team.name,
                    "chosen": d.chosen,
                    "expected_cost_usd": d.ranking[0].expected_cost_usd,
                    "strategy": team.strategy,
                    "reason": d.reason,
                }
            )
        return {"head": scores.head, "models": leaderboard_rows(scores, prices), "teams": rows}

    async def whatif(self, team: TeamPolicy, lambdas: Sequence[float], limit: int) -> dict:
        """Cost-aware routing at each λ over the team's last ``limit`` routed decisions,
        re-deciding among each one's logged top candidates (score and expected cost as
        logged), with the simulation's frontier code (router/policy/frontier.py).
        ``spend_usd`` is expected cost over that sample."""
        lines: list[dict[str, Any]] = []
        cursor = None
        while len(lines) < limit:
            page, cursor = await self.service.ledger.query_decisions(
                team=team.name, limit=min(MAX_QUERY_LIMIT, limit - len(lines)), cursor=cursor
            )
            lines += [x for x in page if x.get("candidates")]
            if cursor is None:
                break
        # The frontier is numpy work over up to MAX_WHATIF_DECISIONS rows: off the loop.
        points = await asyncio.to_thread(_frontier_points, lines[:limit], team, lambdas)
        return {"team": team.name, "points": points}


def _frontier_points(
    lines: Sequence[dict[str, Any]], team: TeamPolicy, lambdas: Sequence[float]
) -> list[dict[str, Any]]:
    sp = scored_from_lines(lines)
    if sp is None:
        return []
    return [
        {
            "cost_sensitivity": p.cost_sensitivity,
            "spend_usd": p.spend_usd,
            "mean_score": p.mean_score,
            "requests": p.routed,
        }
        for p in frontier_scored(sp, team=team, lambdas=lambdas)
    ]


def scored_from_lines(lines: Sequence[dict[str, Any]]) -> ScoredPrompts | None:
    """The logged candidates of decision lines as the simulator's arrays (None if none)."""
    if not lines:
        return None
    models = sorted({c["model"] for x in lines for c in x["candidates"]})
    index = {m: j for j, m in enumerate(models)}
    n, m = len(lines), len(models)
    coefs, scores = np.zeros((n, m)), np.zeros((n, m))
    costs = np.full((n, m), np.inf)
    eligible = np.zeros((n, m), dtype=bool)
    for i, x in enumerate(lines):
        for c in x["candidates"]:
            j = index[c["model"]]
            coefs[i, j] = c.get("coef") or 0.0
            scores[i, j] = c.get("score") or 0.0
            costs[i, j] = c.get("expected_cost_usd") or 0.0
            eligible[i, j] = True
    tokens = np.array([x.get("prompt_tokens") or 0 for x in lines])
    return ScoredPrompts(tuple(models), coefs, scores, costs, eligible, tokens, "logged")
