"""The P2L paper's routing LP, solved exactly: max Σ pᵢvᵢ s.t. Σ pᵢcᵢ ≤ cap over
distributions p, and the win-rate values the ``optimal-lp`` strategy feeds it.

Written here rather than calling an LP solver: with a single cost constraint the optimum
sits on the upper concave hull of the points (cᵢ, vᵢ) and mixes at most two models, which
is O(M log M) and exact (the tests check it against scipy's ``linprog``).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

import numpy as np

from router.policy.candidates import Candidate
from router.policy.outcomes import sigmoid

__all__ = ["lp_mix", "sample_mix", "win_rates"]


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


def sample_mix(mix: Mapping[int, float], seed: int) -> int:
    """Draw one index from the distribution ``mix``; the same seed draws the same index."""
    u = random.Random(seed).random()  # stable across Python versions for int seeds
    acc = 0.0
    items = sorted(mix.items())
    for i, p in items:
        acc += p
        if u < acc:
            return i
    return items[-1][0]


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
