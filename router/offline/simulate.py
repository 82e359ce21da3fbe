"""Offline what-if: route a sample of prompts through a team's policy without calling anyone.

Answers "what would this team's settings do to our traffic?" before they go live: which
models would serve it, at what projected spend, and how quality trades against cost as
the cost sensitivity λ moves (the frontier, with the team's current λ marked).

The scorer is passed in as a plain function (``score_fn(messages) -> (coefs,
model_list)``, or anything returning an object with ``.coefs`` and ``.models``), so this
module needs neither torch nor a GPU; the CLI hands it the loaded P2L model's function.
Scoring is done once (``score_prompts``); strategies and λ grids reuse those numbers.

Prompts file: JSON Lines, each line ``{"messages": [...]}`` or ``{"prompt": "text"}``,
optionally with ``"max_tokens"``.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from router.config import Catalog, TeamPolicy
from router.errors import NoCandidateError
from router.policy import (
    Candidate,
    FrontierPoint,
    ScoredPrompts,
    decide,
    default_cap,
    eligible_models,
    expected_cost_usd,
    expected_output_tokens,
    frontier_scored,
    request_needs,
    route_scores,
)

ScoreFn = Callable[[list[dict]], Any]


@dataclass(frozen=True)
class Prompt:
    messages: list[dict]
    max_tokens: int | None = None


def jsonl_rows(path: str | Path) -> Iterator[tuple[str, Any]]:
    """Each non-blank line of a JSONL file as (``path:line``, the parsed value); a line
    that is not JSON raises ValueError naming it."""
    with Path(path).open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield f"{path}:{n}", json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: not JSON ({exc.msg})") from exc


def load_prompts(path: str | Path) -> list[Prompt]:
    """Read a JSONL prompts file; a bad line raises ValueError naming the line."""
    out = [_prompt(row, where) for where, row in jsonl_rows(path)]
    if not out:
        raise ValueError(f"{path}: no prompts")
    return out


def _prompt(row: Any, where: str) -> Prompt:
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected an object with 'messages' or 'prompt'")
    max_tokens = row.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens <= 0):
        raise ValueError(f"{where}: max_tokens must be a positive integer")
    if isinstance(row.get("messages"), list) and row["messages"]:
        return Prompt(row["messages"], max_tokens)
    if isinstance(row.get("prompt"), str) and row["prompt"]:
        return Prompt([{"role": "user", "content": row["prompt"]}], max_tokens)
    raise ValueError(f"{where}: expected a non-empty 'messages' list or 'prompt' string")


def _text_len(messages: list[dict]) -> int:
    n = 0
    for m in messages:
        c = m.get("content")
        if isinstance(c, str):
            n += len(c)
        elif isinstance(c, list):
            n += sum(len(p.get("text", "")) for p in c if isinstance(p, dict))
    return n


def rough_prompt_tokens(messages: list[dict]) -> int:
    """About four characters a token, plus a few per message: a stand-in when no
    tokenizer is at hand (the server counts with the scorer's tokenizer)."""
    return max(1, math.ceil(_text_len(messages) / 4) + 4 * len(messages))


# ---------------------------------------------------------------- scoring once


def score_prompts(
    score_fn: ScoreFn,
    prompts: Sequence[Prompt],
    *,
    team: TeamPolicy,
    catalog: Catalog,
    head: str,
    model_list: Sequence[str] | None = None,
    prompt_tokens_fn: Callable[[list[dict]], int] | None = None,
    learned_output_tokens: Mapping[str, float] | None = None,
) -> ScoredPrompts:
    """Score each prompt once and price every eligible model for it."""
    if not prompts:
        raise ValueError("no prompts to simulate")
    count = prompt_tokens_fn or rough_prompt_tokens
    learned = learned_output_tokens or {}
    rows, tokens = [], []
    models: tuple[str, ...] | None = tuple(model_list) if model_list is not None else None
    for p in prompts:
        out = score_fn(p.messages)
        coefs, names = (out.coefs, out.models) if hasattr(out, "coefs") else out
        names = tuple(names)
        if models is None:
            models = names
        elif names != models:
            raise ValueError("the scorer's model list differs from model_list")
        rows.append(np.asarray(coefs, dtype=np.float64))
        tokens.append(int(count(p.messages)))
    assert models is not None
    coefs = np.vstack(rows)
    n, m = coefs.shape
    if m != len(models):
        raise ValueError(f"the scorer returned {m} coefs for {len(models)} models")
    costs = np.full((n, m), np.inf)
    eligible = np.zeros((n, m), dtype=bool)
    by_needs: dict[frozenset[str], list[str]] = {}
    index = {name: j for j, name in enumerate(models)}
    for i, p in enumerate(prompts):
        needs = request_needs({"messages": p.messages})
        if needs not in by_needs:
            try:
                by_needs[needs] = eligible_models(models, catalog, team, None, needs)
            except NoCandidateError:
                if not needs:
                    raise
                by_needs[needs] = []
        for name in by_needs[needs]:
            j = index[name]
            cfg = catalog.models[name]
            out_tokens = expected_output_tokens(cfg, p.max_tokens, learned.get(name))
            costs[i, j] = expected_cost_usd(cfg, tokens[i], out_tokens)
            eligible[i, j] = True
    scores = route_scores(head, coefs)
    return ScoredPrompts(models, coefs, scores, costs, eligible, np.array(tokens), head)


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class SimulationResult:
    strategy: str
    cost_sensitivity: float | None
    cap_usd: float | None
    prompts: int
    routed: int
    refused: int  # prompts no candidate could serve (cap below all, or needs unmet)
    shares: dict[str, float]  # model -> share of routed prompts, largest first
    spend_usd: float  # expected spend over the sample
    mean_cost_usd: float
    mean_score: float  # mean route score of the chosen models
    projected_period_usd: float | None  # mean cost × requests_per_period, when given
    budget_usd: float | None
    period: str
    frontier: tuple[FrontierPoint, ...] | None = None

    def summary(self) -> str:
        lam = f" λ={self.cost_sensitivity:g}" if self.cost_sensitivity is not None else ""
        cap = f" cap=${self.cap_usd:g}" if self.cap_usd is not None else ""
        lines = [
            f"{self.strategy}{lam}{cap}: {self.routed}/{self.prompts} prompts routed"
            + (
                f", {self.refused} refused (no candidate under the cap or with the needed support)"
                if self.refused
                else ""
            ),
            f"mean score {self.mean_score:.4f}; spend ${self.spend_usd:.4g} over the sample "
            f"(${self.mean_cost_usd:.3g} a request)",
        ]
        if self.projected_period_usd is not None:
            budget = f" vs budget ${self.budget_usd:g}" if self.budget_usd is not None else ""
            lines.append(f"projected ${self.projected_period_usd:.4g} per {self.period}{budget}")
        lines += [f"  {share:6.1%}  {m}" for m, share in self.shares.items()]
        return "\n".join(lines)


# ---------------------------------------------------------------- simulate


def candidates_at(sp: ScoredPrompts, i: int) -> list[Candidate]:
    return [
        Candidate(
            sp.models[j], float(sp.coefs[i, j]), float(sp.scores[i, j]), float(sp.costs[i, j])
        )
        for j in np.flatnonzero(sp.eligible[i])
    ]


def simulate_scored(
    sp: ScoredPrompts,
    *,
    team: TeamPolicy,
    strategy: str | None = None,
    cost_sensitivity: float | None = None,
    cap_usd: float | None = None,
    seed: int = 0,
    requests_per_period: float | None = None,
    lambdas: Sequence[float] | None = None,
) -> SimulationResult:
    """Route every scored prompt with ``decide`` (the server's own function); lp draws
    use seeds ``seed, seed+1, ...`` so a run is reproducible. No budget wall: the point is
    to see the spend the settings would produce."""
    strategy = strategy or team.strategy
    lam = team.cost_sensitivity if cost_sensitivity is None else cost_sensitivity
    cap = default_cap(team, cap_usd)
    chosen: Counter[str] = Counter()
    spend = total = 0.0
    refused = 0
    for i in range(len(sp.prompt_tokens)):
        cands = candidates_at(sp, i)
        try:
            d = decide(
                cands,
                strategy=strategy,
                cost_sensitivity=lam,
                cap_usd=cap,
                seed=seed + i,
                opponent_mix=team.opponent_mix,
                coefs=dict(zip(sp.models, sp.coefs[i].tolist(), strict=True)),
            )
        except NoCandidateError:
            refused += 1
            continue
        c = d.ranking[0]
        chosen[c.model] += 1
        spend += c.expected_cost_usd
        total += c.score
    routed = sum(chosen.values())
    n = len(sp.prompt_tokens)
    mean_cost = spend / routed if routed else 0.0
    return SimulationResult(
        strategy=strategy,
        cost_sensitivity=lam if strategy == "cost-aware" else None,
        cap_usd=cap,
        prompts=n,
        routed=routed,
        refused=refused,
        shares={m: k / routed for m, k in chosen.most_common()} if routed else {},
        spend_usd=spend,
        mean_cost_usd=mean_cost,
        mean_score=total / routed if routed else float("nan"),
        projected_period_usd=mean_cost * requests_per_period if requests_per_period else None,
        budget_usd=team.budget.usd,
        period=team.budget.period,
        frontier=tuple(frontier_scored(sp, team=team, lambdas=lambdas, cap_usd=cap_usd))
        if lambdas is not None
        else None,
    )


def simulate(
    score_fn: ScoreFn,
    prompts: Sequence[Prompt],
    *,
    team: TeamPolicy,
    catalog: Catalog,
    model_list: Sequence[str] | None = None,
    head: str,
    strategy: str | None = None,
    lambdas: Sequence[float] | None = None,
    prompt_tokens_fn: Callable[[list[dict]], int] | None = None,
    cost_sensitivity: float | None = None,
    cap_usd: float | None = None,
    seed: int = 0,
    requests_per_period: float | None = None,
) -> SimulationResult:
    """Score the prompts and route them with the team's policy (or ``strategy`` /
    ``cost_sensitivity`` overrides). With ``lambdas`` (e.g. ``lambda_grid(...)``) the
    result also carries the cost-aware frontier over that grid."""
    sp = score_prompts(
        score_fn,
        prompts,
        team=team,
        catalog=catalog,
        head=head,
        model_list=model_list,
        prompt_tokens_fn=prompt_tokens_fn,
    )
    return simulate_scored(
        sp,
        team=team,
        strategy=strategy,
        cost_sensitivity=cost_sensitivity,
        cap_usd=cap_usd,
        seed=seed,
        requests_per_period=requests_per_period,
        lambdas=lambdas,
    )
