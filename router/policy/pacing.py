"""Budget pacing for ``cost-aware`` routing: adapt λ so that spend tracks the budget.

A fixed cost sensitivity λ either spends the budget by noon and then refuses, or leaves
money on the table. For a known stream the best fixed λ is the smallest one whose spend
fits the budget (score − λ·cost picks get cheaper as λ grows); pacing learns that λ online.

Controller: a PI controller in log λ on the pacing error, measured in log-odds so that
an early overspend (4 % spent at 2 % of the day) and a late one (99 % at 90 %) both count::

    e = logit(spent/limit) − logit(plan(t))      logit(x) = log((x+ε)/(1−x+ε))
    log λ = I + kp·e          I ← I + ki·∫e dt   (dt in periods, trapezoid rule)

``plan(t)`` is the share of the period's traffic expected by now: uniform at first, then
the shape of past periods' traffic (requests per 1/24 of the period, an exponential
average kept in the state), because spending at a constant pace through a quiet night
and a busy afternoon would swing λ with traffic, while the best fixed λ does not swing.
The integral term is the learned equilibrium λ, kept from one period to the next, so a
team whose traffic is alike every day starts each day at yesterday's price. λ stays within
``[ref/max_ratio, ref·max_ratio]`` (ref = base λ, or ``PacingConfig.ref_lambda`` when the
team's base is 0) and the integral is clamped there too (no wind-up); the budget wall
itself stays with the ledger. The state is a small JSON-able dict (under 1 kB) the server
keeps in the ledger (``get_state``/``set_state``) — read it, call, write it back.

Measured on ``synthetic_day`` (2,000 requests, 6× afternoon peak, base λ 0.3–3× off):
first day, spend ends at 91–100 % of the budget with 97.3–98.5 % of the hindsight-best
fixed λ's mean score; with one day of history, 99.4–100 % and 99.4–99.8 %.

Also here, for tests and the benchmark: a synthetic day of requests (``synthetic_day``), a
replay of a stream through the pacer (``replay``) and the hindsight-best fixed λ
(``hindsight_lambda``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

STATE_VERSION = 2


@dataclass(frozen=True)
class PacingConfig:
    kp: float = 8.0  # log-λ per unit of pacing error
    ki: float = 10.0  # log-λ per unit of error × period
    eps: float = 0.02  # softening of the log-odds error near 0 and 1
    bins: int = 24  # traffic profile resolution (hours of a day)
    profile_memory: float = 0.7  # weight of the last period in the learned profile
    uniform_share: float = 0.1  # uniform traffic mixed into the profile, for robustness
    max_ratio: float = 1000.0  # λ bounded to [ref / max_ratio, ref * max_ratio]
    ref_lambda: float = 1.0  # reference λ (score units per USD) when the base λ is 0


DEFAULT_PACING = PacingConfig()


def _ts(x: datetime | float) -> float:
    return x.timestamp() if isinstance(x, datetime) else float(x)


def _logit(x: float, eps: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return math.log((x + eps) / (1.0 - x + eps))


def _planned(f: float, profile: list[float]) -> float:
    """Fraction of the period's traffic expected by elapsed fraction ``f``."""
    n = len(profile)
    k = min(int(f * n), n - 1)
    return min(sum(profile[:k]) + profile[k] * (f * n - k), 1.0)


def _profile(weights: Any, bins: int) -> list[float]:
    if (
        isinstance(weights, list)
        and len(weights) == bins
        and all(isinstance(w, (int, float)) and w >= 0 for w in weights)
        and sum(weights) > 0
    ):
        total = float(sum(weights))
        return [w / total for w in weights]
    return [1.0 / bins] * bins


def paced_lambda(
    state: Mapping[str, Any] | None,
    base_lambda: float,
    spent_usd: float,
    limit_usd: float | None,
    period_start: datetime | float,
    period_end: datetime | float | None,
    now: datetime | float,
    config: PacingConfig = DEFAULT_PACING,
) -> tuple[float, dict[str, Any]]:
    """The λ to use for one routed request now, and the state to persist afterwards.

    Call once per routed request (the call also counts traffic for the profile).
    ``spent_usd`` should include live reservations (what is committed). Without a limit
    or a period end (``total`` budgets) there is no pace to keep: returns ``base_lambda``.
    Times are datetimes or epoch seconds; the clock is the caller's.
    """
    if limit_usd is None or limit_usd <= 0 or period_end is None:
        return base_lambda, dict(state or {})
    cfg = config
    t0, t1, t = _ts(period_start), _ts(period_end), _ts(now)
    ref = base_lambda if base_lambda > 0 else cfg.ref_lambda
    lo, hi = math.log(ref / cfg.max_ratio), math.log(ref * cfg.max_ratio)
    f = min(max((t - t0) / (t1 - t0), 0.0), 1.0) if t1 > t0 else 1.0
    st = dict(state or {})
    fresh = st.get("v") != STATE_VERSION or not _finite(st.get("i"))
    integ = math.log(ref) if fresh else float(st["i"])
    profile = _profile(None if fresh else st.get("w"), cfg.bins)
    counts = st.get("n") if not fresh and isinstance(st.get("n"), list) else None
    if counts is None or len(counts) != cfg.bins:
        counts = [0] * cfg.bins
    new_period = fresh or st.get("p") != t0
    if new_period and not fresh and sum(counts) > 0:
        # Learn the shape of traffic over the period from the one that just ended.
        last = _profile(counts, cfg.bins)
        m = cfg.profile_memory
        profile = [m * a + (1 - m) * b for a, b in zip(last, profile, strict=True)]
    if new_period:
        counts = [0] * cfg.bins
    # A base λ changed in the team file moves the learned level by the same factor.
    old_base = st.get("b")
    if not fresh and _finite(old_base) and old_base > 0 and base_lambda > 0:
        integ += math.log(base_lambda / old_base)
    counts[min(int(f * cfg.bins), cfg.bins - 1)] += 1
    mixed = [cfg.uniform_share / cfg.bins + (1 - cfg.uniform_share) * w for w in profile]
    plan = _planned(f, mixed)
    e = _logit(spent_usd / limit_usd, cfg.eps) - _logit(plan, cfg.eps)
    if new_period:
        prev_f, prev_e = f, e
    else:
        prev_f, prev_e = float(st.get("f", f)), float(st.get("e", e))
    dt = max(f - prev_f, 0.0)
    integ = min(max(integ + cfg.ki * 0.5 * (e + prev_e) * dt, lo), hi)
    log_lam = min(max(integ + cfg.kp * e, lo), hi)
    new = {
        "v": STATE_VERSION,
        "i": integ,
        "f": f,
        "e": e,
        "p": t0,
        "b": base_lambda,
        "w": [round(w, 6) for w in profile],
        "n": counts,
    }
    return math.exp(log_lam), new


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


# ---------------------------------------------------------------- simulation helpers


@dataclass(frozen=True)
class Stream:
    """A day of requests: arrival times (s from the period start), per-candidate route
    scores and expected costs (N × M), the model names."""

    times: np.ndarray
    scores: np.ndarray
    costs: np.ndarray
    models: tuple[str, ...]
    period_s: float


def synthetic_day(
    n: int = 2000, *, seed: int = 0, models: int = 8, period_s: float = 86400.0
) -> Stream:
    """Requests over one day with a realistic structure: prices spread over two orders
    of magnitude, pricier models better on average and more so on hard prompts, token
    counts lognormal and longer for hard prompts, and a daytime traffic peak (about 6×
    the night rate)."""
    rng = np.random.default_rng(seed)
    out_price = np.geomspace(0.15, 15.0, models)  # USD per 1M output tokens
    in_price = out_price / 4
    tier = np.log10(out_price / out_price[0]) / 2  # 0 (cheapest) .. 1 (priciest)
    hard = rng.normal(0, 1, n)
    beta = (
        (0.2 + 1.6 * tier)[None, :]
        - (0.9 * (1 - tier))[None, :] * hard[:, None]
        + rng.normal(0, 0.45, (n, models))
    )
    scores = 1 / (1 + np.exp(-beta))
    prompt = rng.lognormal(math.log(350), 0.9, n)
    out = rng.lognormal(math.log(300), 0.6, n) * np.exp(0.25 * hard)
    verbosity = rng.lognormal(0, 0.15, models)
    costs = (prompt[:, None] * in_price + (out[:, None] * verbosity) * out_price) / 1e6
    # arrivals: inverse CDF of rate(t) = 0.25 + sin²(π t) shifted to peak mid-afternoon
    grid = np.linspace(0, 1, 4097)
    rate = 0.25 + np.sin(np.pi * np.clip(grid - 0.1, 0, None) / 0.9) ** 4 * 1.5
    cdf = np.concatenate([[0], np.cumsum((rate[1:] + rate[:-1]) / 2)])
    cdf /= cdf[-1]
    times = np.sort(np.interp(rng.random(n), cdf, grid)) * period_s
    names = tuple(f"model-{i}" for i in range(models))
    return Stream(times, scores, costs, names, period_s)


@dataclass(frozen=True)
class ReplayResult:
    spent_usd: float
    mean_score: float
    served: int
    rejected: int
    lambdas: np.ndarray  # λ used for each request
    spend_curve: np.ndarray  # cumulative spend after each request
    state: dict[str, Any]


def _picks(scores: np.ndarray, costs: np.ndarray, lam: float) -> np.ndarray:
    return np.argmax(scores - lam * costs, axis=1)


def fixed_lambda(stream: Stream, lam: float) -> tuple[float, float]:
    """(spend, mean score) of cost-aware routing at a fixed λ, with no budget wall."""
    idx = _picks(stream.scores, stream.costs, lam)
    rows = np.arange(len(idx))
    return float(stream.costs[rows, idx].sum()), float(stream.scores[rows, idx].mean())


def hindsight_lambda(
    stream: Stream, budget_usd: float, *, lo: float = 0.0, hi: float = 1e7, iters: int = 80
) -> tuple[float, float, float]:
    """The best fixed λ in hindsight: the smallest λ whose whole-stream spend fits the
    budget (spend and quality both fall as λ grows), by bisection in log space.
    Returns (λ, spend, mean score)."""
    if fixed_lambda(stream, lo)[0] <= budget_usd:
        return lo, *fixed_lambda(stream, lo)
    if fixed_lambda(stream, hi)[0] > budget_usd:
        raise ValueError(f"even λ={hi:g} spends more than the budget ${budget_usd:g}")
    a, b = max(lo, 1e-9), hi  # spend(a) > budget >= spend(b)
    if fixed_lambda(stream, a)[0] <= budget_usd:
        return a, *fixed_lambda(stream, a)
    for _ in range(iters):
        mid = math.sqrt(a * b)
        if fixed_lambda(stream, mid)[0] <= budget_usd:
            b = mid
        else:
            a = mid
    return b, *fixed_lambda(stream, b)


def replay(
    stream: Stream,
    budget_usd: float,
    base_lambda: float,
    *,
    config: PacingConfig = DEFAULT_PACING,
    state: Mapping[str, Any] | None = None,
    on_exhausted: str = "cheapest",
    period_start: float = 0.0,
) -> ReplayResult:
    """Route the stream in time order with paced λ and the budget wall the ledger keeps
    (a request whose pick does not fit what is left goes to the cheapest that fits, or is
    rejected). Actual cost = expected cost. Rejected requests score 0."""
    spent = 0.0
    total = 0.0
    served = rejected = 0
    lams = np.empty(len(stream.times))
    curve = np.empty(len(stream.times))
    st = dict(state or {})
    t0 = period_start
    for k, t in enumerate(stream.times):
        lam, st = paced_lambda(
            st, base_lambda, spent, budget_usd, t0, t0 + stream.period_s, t0 + float(t), config
        )
        lams[k] = lam
        s, c = stream.scores[k], stream.costs[k]
        j = int(np.argmax(s - lam * c))
        left = budget_usd - spent
        if c[j] > left:
            fit = np.flatnonzero(c <= left)
            j = int(fit[np.argmin(c[fit])]) if on_exhausted == "cheapest" and fit.size else -1
        if j < 0:
            rejected += 1
        else:
            served += 1
            spent += float(c[j])
            total += float(s[j])
        curve[k] = spent
    n = max(len(stream.times), 1)
    return ReplayResult(spent, total / n, served, rejected, lams, curve, st)
