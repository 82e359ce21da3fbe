"""Routing strategies, one registry by name, and ``decide``: candidates in, a decision out.

Pure on purpose (no torch, no httpx, no I/O, no clock): the server scores the prompt,
asks the ledger what is left, and hands both here; whatever this module decides can be
replayed offline (``router.offline.simulate``) and tested as a table.

Strategies (``STRATEGIES``, keyed by exactly the names ``router.config`` validates team
files and requests against, ``STRATEGY_NAMES``; checked at import), all over the
candidates' route score (σ(β) for GRK heads, β for BT/RK, as in the P2L paper's public
routing code):

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
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from router.config import STRATEGY_NAMES
from router.errors import BudgetExceededError, InvalidRequestError, NoCandidateError
from router.policy.candidates import (
    Candidate,
)
from router.policy.lp import lp_mix, sample_mix, win_rates
from router.policy.text import num, usd

__all__ = [
    "STRATEGIES",
    "STRATEGY_NAMES",
    "Decision",
    "StrategyFn",
    "StrategyInput",
    "StrategyResult",
    "decide",
]


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


@dataclass(frozen=True)
class StrategyInput:
    """What every strategy may use besides the candidates."""

    cost_sensitivity: float
    cap_usd: float | None
    seed: int | None
    coefs: Mapping[str, float] | None
    opponent_mix: Mapping[str, float] | None


@dataclass(frozen=True)
class StrategyResult:
    """A strategy's ranking and reason, before the budget is applied by ``decide``."""

    ranking: tuple[Candidate, ...]
    reason: str
    seed: int | None = None
    mix: tuple[tuple[str, float], ...] | None = None


StrategyFn = Callable[[Sequence[Candidate], StrategyInput], StrategyResult]


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
            f"{strategy}: the cost cap {usd(cap)} is below every candidate's expected cost; "
            f"the cheapest is {cheapest.model} at {usd(cheapest.expected_cost_usd)}",
            param="router.max_cost_usd",
        )
    return fit


def _cap_note(cap: float | None, total: int, fit: int) -> str:
    if cap is None:
        return ""
    over = f", {total - fit} over it" if total > fit else ""
    return f" (cap {usd(cap)}{over})"


def max_quality(
    cands: Sequence[Candidate], a: StrategyInput, name: str = "max-quality"
) -> StrategyResult:
    fit = _under_cap(cands, a.cap_usd, name)
    ranking = _ranked(fit, lambda c: c.score)
    best = ranking[0]
    head = f"{name}: {best.model} score {num(best.score)} ({usd(best.expected_cost_usd)})"
    if len(ranking) > 1:
        ru = ranking[1]
        head += f" beats {ru.model} {num(ru.score)} ({usd(ru.expected_cost_usd)})"
    return StrategyResult(tuple(ranking), head + _cap_note(a.cap_usd, len(cands), len(fit)))


def strict(cands: Sequence[Candidate], a: StrategyInput) -> StrategyResult:
    pick = max_quality(cands, a, "strict")
    if a.cap_usd is None:
        return replace(pick, reason=pick.reason + " (no cost cap set)")
    return pick


def cost_aware(cands: Sequence[Candidate], a: StrategyInput) -> StrategyResult:
    lam = a.cost_sensitivity
    fit = _under_cap(cands, a.cap_usd, "cost-aware")
    ranking = _ranked(fit, lambda c: c.score - lam * c.expected_cost_usd)

    def term(c: Candidate) -> str:
        v = c.score - lam * c.expected_cost_usd
        return f"{c.model} score {num(c.score)} - {lam:g}×{usd(c.expected_cost_usd)} = {num(v)}"

    reason = "cost-aware: " + term(ranking[0])
    if len(ranking) > 1:
        reason += " beats " + term(ranking[1])
    return StrategyResult(tuple(ranking), reason + _cap_note(a.cap_usd, len(cands), len(fit)))


def _lp_pick(
    cands: Sequence[Candidate],
    values: Sequence[float],
    a: StrategyInput,
    name: str,
    what: str,
) -> StrategyResult:
    """Solve the LP over ``values`` (``what`` names them in the reason) and draw a model."""
    val = {c.model: v for c, v in zip(cands, values, strict=True)}
    if a.cap_usd is None:
        ranking = _ranked(cands, lambda c: val[c.model])
        best = ranking[0]
        reason = f"{name}: no cost cap, so the best {what}: {best.model} {num(val[best.model])}"
        return StrategyResult(tuple(ranking), reason, a.seed, ((best.model, 1.0),))
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
        chosen = sample_mix(opt, seed)
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
        f"{name}: mix {parts} has expected {what} {num(exp_val)} at expected cost "
        f"{usd(exp_cost)} (cap {usd(cap)}); drew {cands[chosen].model} "
        f"({what} {num(values[chosen])}, {usd(costs[chosen])}"
        + (f", seed {seed})" if len(opt) > 1 else ", the cap does not bind)")
    )
    return StrategyResult(ranking, reason, seed, mix)


def lp(cands: Sequence[Candidate], a: StrategyInput) -> StrategyResult:
    return _lp_pick(cands, [c.score for c in cands], a, "lp", "score")


def optimal_lp(cands: Sequence[Candidate], a: StrategyInput) -> StrategyResult:
    w, note = win_rates(cands, a.coefs, a.opponent_mix)
    pick = _lp_pick(cands, [float(x) for x in w], a, "optimal-lp", "win rate")
    return replace(pick, reason=f"{pick.reason}; {note}")


STRATEGIES: dict[str, StrategyFn] = {
    "max-quality": max_quality,
    "strict": strict,
    "cost-aware": cost_aware,
    "lp": lp,
    "optimal-lp": optimal_lp,
}
if tuple(STRATEGIES) != STRATEGY_NAMES:  # the names config validates against
    raise ImportError(f"STRATEGIES {tuple(STRATEGIES)} != router.config's {STRATEGY_NAMES}")


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
            f"unknown strategy {strategy!r} (expected one of {', '.join(STRATEGY_NAMES)})",
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
                f"the team budget has {usd(max(budget_remaining_usd, 0.0))} left, less than "
                f"the cheapest candidate's expected cost ({cheapest.model}, "
                f"{usd(cheapest.expected_cost_usd)})"
            )
    pick = fn(cands, StrategyInput(cost_sensitivity, cap_usd, seed, coefs, opponent_mix))
    ranking = list(pick.ranking)
    reason = pick.reason
    if budget_remaining_usd is not None:
        ranking, reason = _within_budget(
            ranking, reason, strategy, budget_remaining_usd, on_exhausted
        )
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


def _within_budget(
    ranking: list[Candidate], reason: str, strategy: str, left: float, on_exhausted: str
) -> tuple[list[Candidate], str]:
    """Drop what the budget cannot pay for; when that is the strategy's choice, refuse or
    fall to the cheapest that fits (``on_exhausted``)."""
    first = ranking[0]
    fitting = [c for c in ranking if c.expected_cost_usd <= left]
    if first.expected_cost_usd <= left:
        return fitting, reason
    if on_exhausted == "reject" or not fitting:
        # Not even the capped ranking fits (the cheapest overall might, but it is above the
        # cap or outside the strategy): refuse rather than overspend.
        raise BudgetExceededError(
            f"{strategy} chose {first.model} at {usd(first.expected_cost_usd)} but the "
            f"team budget has {usd(max(left, 0.0))} left"
            + ("" if on_exhausted == "cheapest" else " (on_exhausted: reject)")
        )
    cheap = min(fitting, key=lambda c: (c.expected_cost_usd, c.model))
    reason = (
        f"budget: {first.model} ({usd(first.expected_cost_usd)}) does not fit the "
        f"{usd(left)} left, so the cheapest that fits, {cheap.model} "
        f"({usd(cheap.expected_cost_usd)}) [on_exhausted: cheapest]; was: {reason}"
    )
    return [cheap, *(c for c in fitting if c is not cheap)], reason
