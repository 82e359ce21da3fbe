"""The λ frontier over scored prompts: how quality trades against cost as the cost
sensitivity moves, computed on arrays with ``decide``'s cost-aware pick and tie-break.

Here in the policy, not in ``router.offline``, because the request path needs it too: the
admin what-if (router/serving/admin.py) re-decides a team's logged candidates at each λ.
The offline simulation (router/offline/simulate.py) builds its ``ScoredPrompts`` by
scoring a prompts file and reuses these functions; pure numpy, no I/O, no clock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from router.config import TeamPolicy

__all__ = [
    "FrontierPoint",
    "ScoredPrompts",
    "default_cap",
    "frontier_scored",
    "lambda_grid",
]


@dataclass(frozen=True)
class ScoredPrompts:
    """Per-prompt numbers over the P2L model list (N prompts × M models). ``eligible``
    is False where a model may not serve that prompt (catalog, team, needs)."""

    models: tuple[str, ...]
    coefs: np.ndarray
    scores: np.ndarray
    costs: np.ndarray
    eligible: np.ndarray
    prompt_tokens: np.ndarray
    head: str


@dataclass(frozen=True)
class FrontierPoint:
    cost_sensitivity: float
    mean_score: float
    spend_usd: float  # over the sample
    top_model: str  # the model serving the most prompts
    top_share: float
    routed: int = 0  # prompts with a candidate under the cap


def default_cap(team: TeamPolicy, cap_usd: float | None) -> float | None:
    caps = [c for c in (team.max_cost_per_request_usd, cap_usd) if c is not None]
    return min(caps) if caps else None


def lambda_grid(sp: ScoredPrompts, current: float | None = None, n: int = 25) -> list[float]:
    """0, the current λ, and ``n`` log-spaced values spanning the λ at which picks change
    in this sample (the 2nd to 98th percentile of pairwise score/cost breakpoints)."""
    br: list[np.ndarray] = []
    for i in range(min(len(sp.prompt_tokens), 500)):
        j = np.flatnonzero(sp.eligible[i])
        s, c = sp.scores[i, j], sp.costs[i, j]
        ds, dc = s[:, None] - s[None, :], c[:, None] - c[None, :]
        ok = (ds > 0) & (dc > 0)
        br.append(ds[ok] / dc[ok])
    allb = np.concatenate(br) if br else np.array([])
    lo, hi = np.percentile(allb, [2, 98]) if allb.size else (1.0, 1000.0)
    lo, hi = max(lo, 1e-9), max(hi, lo * 10)
    grid = {0.0, *np.geomspace(lo / 2, hi * 2, n).tolist()}
    if current is not None:
        grid.add(float(current))
    return sorted(grid)


def _cost_aware_picks(sp: ScoredPrompts, lam: float, cap: float | None) -> np.ndarray:
    """Vectorised cost-aware argmax with decide's tie-break (cheaper, then list order);
    -1 where no candidate fits the cap."""
    ok = sp.eligible if cap is None else sp.eligible & (sp.costs <= cap)
    value = np.where(ok, np.round(sp.scores - lam * np.where(ok, sp.costs, 0.0), 12), -np.inf)
    best = value.max(axis=1, keepdims=True)
    tied = ok & (value == best)
    picks = np.argmin(np.where(tied, sp.costs, np.inf), axis=1)
    picks[~ok.any(axis=1)] = -1
    return picks


def frontier_scored(
    sp: ScoredPrompts,
    *,
    team: TeamPolicy,
    lambdas: Sequence[float] | None = None,
    cap_usd: float | None = None,
) -> list[FrontierPoint]:
    """(λ, mean score, spend) of cost-aware routing across ``lambdas`` (default:
    ``lambda_grid`` around the team's λ)."""
    cap = default_cap(team, cap_usd)
    grid = list(lambdas) if lambdas is not None else lambda_grid(sp, team.cost_sensitivity)
    rows = np.arange(len(sp.prompt_tokens))
    out = []
    for lam in sorted(grid):
        picks = _cost_aware_picks(sp, float(lam), cap)
        ok = picks >= 0
        if not ok.any():
            continue
        r, p = rows[ok], picks[ok]
        top, k = Counter(p.tolist()).most_common(1)[0]
        out.append(
            FrontierPoint(
                cost_sensitivity=float(lam),
                mean_score=float(sp.scores[r, p].mean()),
                spend_usd=float(sp.costs[r, p].sum()),
                top_model=sp.models[top],
                top_share=k / ok.sum(),
                routed=int(ok.sum()),
            )
        )
    return out
