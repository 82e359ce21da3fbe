"""Routing policy: candidates, expected cost, and the pick — numbers in, a decision out.

Pure on purpose (no torch, no httpx, no I/O, no clock): the server scores the prompt,
asks the ledger what is left, and hands both here; whatever this module decides can be
replayed offline (``router.offline.simulate``) and tested as a table.

Pipeline, as the server uses it::

    names = eligible_models(p2l.model_list, catalog, team, body_router_models, request_needs(body))
    cands = make_candidates(names, scores.coef_of(), head=..., catalog=..., prompt_tokens=...)
    d = decide(cands, strategy=team.strategy, cost_sensitivity=lam, cap_usd=cap, ...)
    # d.ranking is the fallback order, d.chosen first

Strategies (a registry by name, ``STRATEGIES``), all over the candidates' route score
(σ(β) for GRK heads, β for BT/RK, as in the P2L paper's public routing code):

- ``max-quality``: argmax score.
- ``strict``: argmax score among candidates whose expected cost is ≤ the cap.
- ``cost-aware``: argmax score − λ·expected cost (λ = ``cost_sensitivity``, score units/USD).
- ``lp``: the P2L paper's simple LP — maximise Σ pᵢsᵢ over distributions p with
  Σ pᵢcᵢ ≤ cap — solved exactly on the upper concave hull, then sampled with a seed.
- ``optimal-lp``: the same LP over wᵢ = Σⱼ qⱼ σ(βᵢ − βⱼ), the expected win rate against an
  opponent mix q (the paper's BT formulation; for RK/GRK heads it ignores ties).

The cap (``min(team max_cost_per_request_usd, request router.max_cost_usd)``, computed by
the caller) is a hard per-request filter for max-quality, strict and cost-aware; for lp and
optimal-lp it bounds the *expected* cost of the mix, as in the paper, so a single request
may be routed to a mix member above it. Ties are broken by lower cost, then name.
"""

from __future__ import annotations

import math
import random
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from router.config import DEFAULT_EXPECTED_OUTPUT_TOKENS, Catalog, ModelConfig, TeamPolicy
from router.errors import BudgetExceededError, InvalidRequestError, NoCandidateError
from router.policy.outcomes import route_scores, sigmoid

__all__ = [
    "STRATEGIES",
    "Candidate",
    "Decision",
    "decide",
    "eligible_models",
    "expected_cost_usd",
    "expected_output_tokens",
    "lp_mix",
    "make_candidates",
    "request_needs",
    "route_scores",  # re-exported from router.policy.outcomes: σ(β) for GRK, β for BT/RK
    "win_rates",
]

# ---------------------------------------------------------------- values


@dataclass(frozen=True)
class Candidate:
    model: str
    coef: float
    score: float
    expected_cost_usd: float


@dataclass(frozen=True)
class Decision:
    strategy: str
    chosen: str
    ranking: tuple[Candidate, ...]  # fallback order, chosen first, then by strategy value
    reason: str  # one line, human readable
    runner_up: str | None
    cost_sensitivity: float | None = None  # λ used (cost-aware / paced)
    seed: int | None = None  # lp / optimal-lp sampling seed
    mix: tuple[tuple[str, float], ...] | None = None  # lp optimum distribution


# ---------------------------------------------------------------- candidates


def request_needs(body: Mapping[str, Any]) -> frozenset[str]:
    """Capabilities a chat request needs from its model: ``tools`` when it sends tools or
    functions, ``vision`` when a message has an image part."""
    needs: set[str] = set()
    if body.get("tools") or body.get("functions"):
        needs.add("tools")
    for msg in body.get("messages") or ():
        content = msg.get("content") if isinstance(msg, Mapping) else None
        if isinstance(content, list) and any(
            isinstance(p, Mapping) and p.get("type") in ("image_url", "input_image")
            for p in content
        ):
            needs.add("vision")
    return frozenset(needs)


def _names(items: Iterable[str], limit: int = 8) -> str:
    items = list(items)
    shown = ", ".join(items[:limit])
    more = f", … (+{len(items) - limit})" if len(items) > limit else ""
    return f"[{shown}{more}]"


def eligible_models(
    model_list: Sequence[str],
    catalog: Catalog,
    team: TeamPolicy,
    requested: Sequence[str] | None,
    needs: frozenset[str] = frozenset(),
) -> list[str]:
    """The models this request may be routed to, in ``model_list`` order.

    P2L models ∩ models of a provider whose key is set ∩ the team's allow/deny globs ∩ the
    request's ``router.models`` ∩ models whose ``supports`` covers ``needs``. A model that
    declares no ``supports`` is taken to serve plain chat only. When a filter leaves
    nothing, NoCandidateError names that filter and what it was given.
    """
    team_file = team.file or f"team {team.name!r}"
    listed = [m for m in model_list if m in catalog.models]
    if not listed:
        raise NoCandidateError(
            f"none of the P2L model's {len(model_list)} models {_names(model_list)} is listed "
            f"in {catalog.source}; its `models:` keys must be names from model_list.json"
        )
    available = catalog.available_models()
    served = [m for m in listed if m in available]
    if not served:
        keys = sorted({catalog.skipped[catalog.models[m].provider] for m in listed})
        raise NoCandidateError(
            f"the P2L models listed in {catalog.source} {_names(listed)} are all served by "
            f"providers whose key is unset ({', '.join(keys)})"
        )
    allowed = [m for m in served if team.allows(m)]
    if not allowed:
        deny = f" deny {team.deny}" if team.deny else ""
        raise NoCandidateError(
            f"no model allowed by {team_file} allow {team.allow}{deny} is served by a "
            f"configured provider (served: {_names(served)})"
        )
    if requested is not None:
        wanted = set(requested)
        picked = [m for m in allowed if m in wanted]
        if not picked:
            raise NoCandidateError(
                f"none of router.models {_names(requested)} is a candidate for team "
                f"{team.name!r} (candidates: {_names(allowed)})",
                param="router.models",
            )
        allowed = picked
    if needs:
        capable = [m for m in allowed if needs <= available[m].supports]
        if not capable:
            raise NoCandidateError(
                f"the request needs {', '.join(sorted(needs))} and no candidate "
                f"{_names(allowed)} declares it under `supports` in {catalog.source} "
                "(a model without `supports` serves plain chat only)"
            )
        allowed = capable
    return allowed


def expected_output_tokens(
    model: ModelConfig, max_tokens: int | None, learned: float | None = None
) -> int:
    """Output tokens to price a request at before it runs: the caller's max_tokens (an
    upper bound, so the reservation cannot be short), else the model's learned average,
    else its configured figure, else a default."""
    if max_tokens is not None and max_tokens > 0:
        return int(max_tokens)
    if learned is not None and learned > 0:
        return max(1, round(learned))
    if model.expected_output_tokens:
        return model.expected_output_tokens
    return DEFAULT_EXPECTED_OUTPUT_TOKENS


def expected_cost_usd(model: ModelConfig, prompt_tokens: int, output_tokens: int) -> float:
    """Prompt × input price + output × output price (prices per 1M tokens)."""
    return model.cost_usd(prompt_tokens, output_tokens)


def make_candidates(
    models: Sequence[str],
    coefs: Mapping[str, float],
    *,
    head: str,
    catalog: Catalog,
    prompt_tokens: int,
    max_tokens: int | None = None,
    learned_output_tokens: Mapping[str, float] | None = None,
    choices: int = 1,
) -> list[Candidate]:
    """Candidates for ``models`` (eligible names) from the prompt's coefs by model name;
    ``choices`` (the request's ``n``) multiplies the expected output."""
    learned = learned_output_tokens or {}
    betas = [float(coefs[m]) for m in models]
    scores = route_scores(head, betas)
    out = []
    for m, b, s in zip(models, betas, scores, strict=True):
        cfg = catalog.models[m]
        tokens = expected_output_tokens(cfg, max_tokens, learned.get(m)) * choices
        out.append(Candidate(m, b, float(s), expected_cost_usd(cfg, prompt_tokens, tokens)))
    return out


def price_table(
    catalog: Catalog,
    models: list[str],
    prompt_tokens: int,
    max_tokens: int | None,
    learned: dict[str, float] | None = None,
) -> dict[str, tuple[float, float, float]]:
    """model -> (input $/1M, output $/1M, expected cost of this prompt) for routable models."""
    out = {}
    for name in models:
        cfg = catalog.models[name]
        tokens = expected_output_tokens(cfg, max_tokens, (learned or {}).get(name))
        out[name] = (
            cfg.input_usd_per_mtok,
            cfg.output_usd_per_mtok,
            expected_cost_usd(cfg, prompt_tokens, tokens),
        )
    return out


# ---------------------------------------------------------------- formatting


def _usd(x: float) -> str:
    return f"${x:.3g}" if x else "$0"


def _f(x: float) -> str:
    return f"{x:.3f}" if abs(x) < 100 else f"{x:.4g}"


# ---------------------------------------------------------------- strategies


@dataclass(frozen=True)
class _Pick:
    """What a strategy returns before budget handling."""

    ranking: tuple[Candidate, ...]
    reason: str
    seed: int | None = None
    mix: tuple[tuple[str, float], ...] | None = None


@dataclass(frozen=True)
class _Args:
    cost_sensitivity: float
    cap_usd: float | None
    seed: int | None
    coefs: Mapping[str, float] | None
    opponent_mix: Mapping[str, float] | None


def _ranked(cands: Iterable[Candidate], value: Callable[[Candidate], float]) -> list[Candidate]:
    """Best value first; ties to the cheaper model, then the name (deterministic). Values
    are rounded to 1e-12 so that float noise (0.9 - 0.1 vs 0.85 - 0.05) is a tie."""
    return sorted(cands, key=lambda c: (-round(value(c), 12), c.expected_cost_usd, c.model))


def _under_cap(cands: Sequence[Candidate], cap: float | None, strategy: str) -> list[Candidate]:
    if cap is None:
        return list(cands)
    fit = [c for c in cands if c.expected_cost_usd <= cap]
    if not fit:
        cheapest = min(cands, key=lambda c: (c.expected_cost_usd, c.model))
        raise NoCandidateError(
            f"{strategy}: the cost cap {_usd(cap)} is below every candidate's expected cost; "
            f"the cheapest is {cheapest.model} at {_usd(cheapest.expected_cost_usd)}",
            param="router.max_cost_usd",
        )
    return fit


def _cap_note(cap: float | None, total: int, fit: int) -> str:
    if cap is None:
        return ""
    over = f", {total - fit} over it" if total > fit else ""
    return f" (cap {_usd(cap)}{over})"


def _max_quality(cands: Sequence[Candidate], a: _Args, name: str = "max-quality") -> _Pick:
    fit = _under_cap(cands, a.cap_usd, name)
    ranking = _ranked(fit, lambda c: c.score)
    best = ranking[0]
    head = f"{name}: {best.model} score {_f(best.score)} ({_usd(best.expected_cost_usd)})"
    if len(ranking) > 1:
        ru = ranking[1]
        head += f" beats {ru.model} {_f(ru.score)} ({_usd(ru.expected_cost_usd)})"
    return _Pick(tuple(ranking), head + _cap_note(a.cap_usd, len(cands), len(fit)))


def _strict(cands: Sequence[Candidate], a: _Args) -> _Pick:
    pick = _max_quality(cands, a, "strict")
    if a.cap_usd is None:
        return replace(pick, reason=pick.reason + " (no cost cap set)")
    return pick


def _cost_aware(cands: Sequence[Candidate], a: _Args) -> _Pick:
    lam = a.cost_sensitivity
    fit = _under_cap(cands, a.cap_usd, "cost-aware")
    ranking = _ranked(fit, lambda c: c.score - lam * c.expected_cost_usd)

    def term(c: Candidate) -> str:
        v = c.score - lam * c.expected_cost_usd
        return f"{c.model} score {_f(c.score)} - {lam:g}×{_usd(c.expected_cost_usd)} = {_f(v)}"

    reason = "cost-aware: " + term(ranking[0])
    if len(ranking) > 1:
        reason += " beats " + term(ranking[1])
    return _Pick(tuple(ranking), reason + _cap_note(a.cap_usd, len(cands), len(fit)))


def lp_mix(scores: Sequence[float], costs: Sequence[float], cap: float | None) -> dict[int, float]:
    """Exact optimum of max Σ pᵢsᵢ s.t. Σ pᵢcᵢ ≤ cap, Σ pᵢ = 1, p ≥ 0, as {index: pᵢ}.

    With one cost constraint the optimum lies on the upper concave hull of the points
    (cᵢ, sᵢ): the best affordable model when the best overall is affordable, else a mix of
    the two hull vertices bracketing the cap. O(M log M); no solver. Raises ValueError when
    the cap is below every cost (infeasible). Ties: lower cost, then lower index.
    """
    s = [float(x) for x in scores]  # plain floats: M is small and numpy scalars are slow
    c = [float(x) for x in costs]
    if len(s) != len(c) or not s:
        raise ValueError("scores and costs must be equal-length non-empty vectors")
    m = len(s)
    top = min(range(m), key=lambda i: (-round(s[i], 12), c[i], i))
    if cap is None or c[top] <= cap:
        return {top: 1.0}
    if cap < min(c):
        raise ValueError("cap below every cost")
    # Points sorted by cost, best score first within a cost; keep one per cost.
    by_cost = sorted(range(m), key=lambda i: (c[i], -s[i], i))
    pts: list[int] = []
    for i in by_cost:
        if pts and c[i] == c[pts[-1]]:
            continue
        if c[i] > c[top]:
            break
        pts.append(i)
    # Upper concave hull (monotone chain) from the cheapest point to `top`; points below
    # the rising part never help, the chain drops them.
    hull: list[int] = []
    for i in pts:
        while len(hull) >= 2:
            o, a = hull[-2], hull[-1]
            cross = (c[a] - c[o]) * (s[i] - s[o]) - (s[a] - s[o]) * (c[i] - c[o])
            if cross >= 0:  # a is on or below the chord o→i
                hull.pop()
            else:
                break
        hull.append(i)
    # The hull from the cheapest point to `top` (the maximum) is concave with its maximum
    # at the right end, hence strictly rising: mixing the vertices around the cap is optimal.
    for lo, hi in zip(hull, hull[1:], strict=False):
        if c[lo] <= cap < c[hi]:
            if c[lo] == cap:
                return {lo: 1.0}
            w_hi = (cap - c[lo]) / (c[hi] - c[lo])
            return {lo: 1.0 - w_hi, hi: w_hi}
    return {hull[-1]: 1.0}  # unreachable: c[top] > cap ≥ c[hull[0]]


def _sample(mix: dict[int, float], seed: int) -> int:
    u = random.Random(seed).random()  # stable across Python versions for int seeds
    acc = 0.0
    items = sorted(mix.items())
    for i, p in items:
        acc += p
        if u < acc:
            return i
    return items[-1][0]


def _lp_common(
    cands: Sequence[Candidate],
    values: Sequence[float],
    a: _Args,
    name: str,
    what: str,
) -> _Pick:
    val = {c.model: v for c, v in zip(cands, values, strict=True)}
    if a.cap_usd is None:
        ranking = _ranked(cands, lambda c: val[c.model])
        best = ranking[0]
        reason = f"{name}: no cost cap, so the best {what}: {best.model} {_f(val[best.model])}"
        return _Pick(tuple(ranking), reason, a.seed, ((best.model, 1.0),))
    cap = a.cap_usd
    costs = [c.expected_cost_usd for c in cands]
    try:
        opt = lp_mix(values, costs, cap)
    except ValueError:
        _under_cap(cands, cap, name)  # raises with the cheapest cost named
        raise
    seed = a.seed
    if len(opt) > 1:
        seed = seed if seed is not None else secrets.randbits(32)
        chosen = _sample(opt, seed)
    else:
        chosen = next(iter(opt))
    members = sorted(opt, key=lambda i: (costs[i], cands[i].model))
    rest = _ranked(
        [c for i, c in enumerate(cands) if i not in opt and c.expected_cost_usd <= cap],
        lambda c: val[c.model],
    )
    others = [cands[i] for i in members if i != chosen]
    ranking = (cands[chosen], *others, *rest)
    mix = tuple((cands[i].model, float(opt[i])) for i in members)
    exp_cost = sum(opt[i] * costs[i] for i in opt)
    exp_val = sum(opt[i] * values[i] for i in opt)
    parts = " + ".join(f"{p:.2f}×{m}" for m, p in mix)
    reason = (
        f"{name}: mix {parts} has expected {what} {_f(exp_val)} at expected cost "
        f"{_usd(exp_cost)} (cap {_usd(cap)}); drew {cands[chosen].model} "
        f"({what} {_f(values[chosen])}, {_usd(costs[chosen])}"
        + (f", seed {seed})" if len(opt) > 1 else ", the cap does not bind)")
    )
    return _Pick(ranking, reason, seed, mix)


def _lp(cands: Sequence[Candidate], a: _Args) -> _Pick:
    return _lp_common(cands, [c.score for c in cands], a, "lp", "score")


def win_rates(
    cands: Sequence[Candidate],
    coefs: Mapping[str, float] | None,
    opponent_mix: Mapping[str, float] | None,
) -> tuple[np.ndarray, str]:
    """wᵢ = Σⱼ qⱼ σ(βᵢ − βⱼ): each candidate's expected BT win rate against the opponent
    mix q (default: uniform over the candidates). Opponents without a coef are dropped.
    Returns (w, a note for the reason)."""
    beta = {c.model: c.coef for c in cands}
    if coefs:
        beta = {**dict(coefs), **beta}
    note = "uniform opponents"
    q: dict[str, float] = {}
    if opponent_mix:
        q = {m: float(w) for m, w in opponent_mix.items() if m in beta and w > 0}
        dropped = [m for m in opponent_mix if m not in beta]
        note = f"opponent mix of {len(q)}"
        if dropped:
            note += f" ({len(dropped)} without a coef dropped)"
    if not q:
        if opponent_mix:
            note = "uniform opponents (no opponent_mix model has a coef)"
        q = {c.model: 1.0 for c in cands}
    names = list(q)
    qv = np.array([q[m] for m in names]) / sum(q.values())
    bj = np.array([beta[m] for m in names])
    bi = np.array([c.coef for c in cands])
    w = sigmoid(bi[:, None] - bj[None, :]) @ qv
    return w, note


def _optimal_lp(cands: Sequence[Candidate], a: _Args) -> _Pick:
    w, note = win_rates(cands, a.coefs, a.opponent_mix)
    pick = _lp_common(cands, [float(x) for x in w], a, "optimal-lp", "win rate")
    return replace(pick, reason=f"{pick.reason}; {note}")


STRATEGIES: dict[str, Callable[[Sequence[Candidate], _Args], _Pick]] = {
    "max-quality": _max_quality,
    "strict": _strict,
    "cost-aware": _cost_aware,
    "lp": _lp,
    "optimal-lp": _optimal_lp,
}


# ---------------------------------------------------------------- decide


def decide(
    candidates: Sequence[Candidate],
    *,
    strategy: str,
    cost_sensitivity: float,
    cap_usd: float | None = None,
    budget_remaining_usd: float | None = None,
    on_exhausted: str = "reject",
    seed: int | None = None,
    coefs: Mapping[str, float] | None = None,
    opponent_mix: Mapping[str, float] | None = None,
) -> Decision:
    """Pick a model and the fallback order for one request.

    Raises NoCandidateError when there is no candidate or the cap is below every one
    (400), BudgetExceededError when the remaining budget covers no candidate (429).
    Budget: candidates whose expected cost exceeds ``budget_remaining_usd`` are dropped
    from the ranking (their reservation would be refused). If the strategy's choice is
    among them, ``on_exhausted="reject"`` refuses the request (429) and ``"cheapest"``
    serves the cheapest candidate that fits instead, saying so in the reason.
    """
    fn = STRATEGIES.get(strategy)
    if fn is None:
        raise InvalidRequestError(
            f"unknown strategy {strategy!r} (expected one of {', '.join(STRATEGIES)})",
            param="router.strategy",
        )
    if not candidates:
        raise NoCandidateError("no candidate model to route to")
    if on_exhausted not in ("reject", "cheapest"):
        raise ValueError(f"on_exhausted must be 'reject' or 'cheapest' (got {on_exhausted!r})")
    if not math.isfinite(cost_sensitivity) or cost_sensitivity < 0:
        raise ValueError(f"cost_sensitivity must be a finite number >= 0 (got {cost_sensitivity})")
    cands = list(candidates)
    if budget_remaining_usd is not None:
        fits = [c for c in cands if c.expected_cost_usd <= budget_remaining_usd]
        if not fits:
            cheapest = min(cands, key=lambda c: (c.expected_cost_usd, c.model))
            raise BudgetExceededError(
                f"the team budget has {_usd(max(budget_remaining_usd, 0.0))} left, less than "
                f"the cheapest candidate's expected cost ({cheapest.model}, "
                f"{_usd(cheapest.expected_cost_usd)})"
            )
    args = _Args(cost_sensitivity, cap_usd, seed, coefs, opponent_mix)
    pick = fn(cands, args)
    ranking = list(pick.ranking)
    reason = pick.reason
    if budget_remaining_usd is not None:
        left = budget_remaining_usd
        first = ranking[0]
        fitting = [c for c in ranking if c.expected_cost_usd <= left]
        if first.expected_cost_usd > left:
            if on_exhausted == "reject" or not fitting:
                # Not even the capped ranking fits (the cheapest overall might, but it is
                # above the cap or outside the strategy): refuse rather than overspend.
                raise BudgetExceededError(
                    f"{strategy} chose {first.model} at {_usd(first.expected_cost_usd)} but the "
                    f"team budget has {_usd(max(left, 0.0))} left"
                    + ("" if on_exhausted == "cheapest" else " (on_exhausted: reject)")
                )
            cheap = min(fitting, key=lambda c: (c.expected_cost_usd, c.model))
            ranking = [cheap, *(c for c in fitting if c is not cheap)]
            reason = (
                f"budget: {first.model} ({_usd(first.expected_cost_usd)}) does not fit the "
                f"{_usd(left)} left, so the cheapest that fits, {cheap.model} "
                f"({_usd(cheap.expected_cost_usd)}) [on_exhausted: cheapest]; was: {reason}"
            )
        else:
            ranking = fitting
    return Decision(
        strategy=strategy,
        chosen=ranking[0].model,
        ranking=tuple(ranking),
        reason=reason,
        runner_up=ranking[1].model if len(ranking) > 1 else None,
        cost_sensitivity=cost_sensitivity if strategy == "cost-aware" else None,
        seed=pick.seed,
        mix=pick.mix,
    )
