"""The frontier plot of ``p2l-router simulate --frontier``: mean score against spend
across cost sensitivity λ. matplotlib (the ``plot`` extra) is imported only here."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from router.offline.simulate import SimulationResult
from router.policy import FrontierPoint


def plot_frontier(
    points: Sequence[FrontierPoint],
    current: FrontierPoint | SimulationResult | None,
    out_png: str | Path,
    *,
    title: str | None = None,
    budget_usd: float | None = None,
) -> Path:
    """Mean score against spend across λ, the team's current setting starred; ``budget_usd``
    (drawn as a line) must be in the x axis' units, i.e. scaled to the sample. Needs
    matplotlib (the ``plot`` extra), imported here so the rest works without it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError("plotting needs matplotlib: pip install 'p2l-router[plot]'") from exc
    if not points:
        raise ValueError("no frontier points to plot")
    pts = sorted(points, key=lambda p: p.spend_usd)
    xs = [p.spend_usd for p in pts]
    ys = [p.mean_score for p in pts]
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    ax.plot(xs, ys, "-o", color="#3b6ea8", ms=3.5, lw=1.4, label="cost-aware, λ varied")
    # label a few λ values, spread along the x axis (points bunch up at both ends)
    logx = np.log10(np.maximum(xs, 1e-12))
    gap = (logx[-1] - logx[0]) / 7 if len(pts) > 1 else 1.0
    last = -np.inf
    for p, lx in zip(pts, logx, strict=True):
        if lx - last < gap and p is not pts[-1]:
            continue
        last = lx
        ax.annotate(
            f"λ={p.cost_sensitivity:.3g}",
            (p.spend_usd, p.mean_score),
            textcoords="offset points",
            xytext=(4, -11),
            fontsize=7,
            color="#555555",
        )
    if current is not None:
        lam = current.cost_sensitivity
        label = "current" + (f" (λ={lam:g})" if lam is not None else "")
        if isinstance(current, SimulationResult):
            label = f"current: {current.strategy}" + (f", λ={lam:g}" if lam is not None else "")
        ax.plot(
            [current.spend_usd],
            [current.mean_score],
            marker="*",
            ms=16,
            color="#d1495b",
            ls="none",
            label=label,
            zorder=5,
        )
    if budget_usd is not None:
        ax.axvline(budget_usd, color="#888888", ls="--", lw=1, label=f"budget ${budget_usd:g}")
    if min(xs) > 0 and max(xs) / min(xs) > 20:
        ax.set_xscale("log")
    ax.set_xlabel("expected spend over the sample (USD)")
    ax.set_ylabel("mean route score of the chosen model")
    ax.set_title(title or "Quality vs spend across cost sensitivity λ")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    out = Path(out_png)
    fig.savefig(out)
    plt.close(fig)
    return out


def plot_decisions(summary: dict, out_png: str | Path) -> Path:
    """Two panels from ``summarize_decisions``: spend per bucket by team (left) and each
    team's model share of requests (right, stacked bars)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError("plotting needs matplotlib: pip install 'p2l-router[plot]'") from exc
    from datetime import datetime

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5), dpi=110)
    spend: dict[str, dict[str, float]] = {}
    for b in summary["buckets"]:
        team = str(b["team"])
        spend.setdefault(team, {})
        spend[team][b["start"]] = spend[team].get(b["start"], 0.0) + b["spend_usd"]
    for team, series in sorted(spend.items()):
        xs = sorted(series)
        left.plot([datetime.fromisoformat(x) for x in xs], [series[x] for x in xs], "-o",
                  ms=3, label=team)  # fmt: skip
    left.set_title(f"spend per {summary['bucket_s']:g} s bucket (USD)")
    left.tick_params(axis="x", labelrotation=30, labelsize=7)
    if spend:
        left.legend(fontsize=8)
    left.grid(True, alpha=0.3)
    teams = sorted({str(g["team"]) for g in summary["groups"]})
    models = sorted({str(g["model"]) for g in summary["groups"]})
    bottom = np.zeros(len(teams))
    for model in models:
        share = np.array(
            [
                sum(g["share"] for g in summary["groups"]
                    if str(g["team"]) == t and str(g["model"]) == model)
                for t in teams
            ]
        )  # fmt: skip
        right.bar(teams, share, bottom=bottom, label=model)
        bottom += share
    right.set_title("model share of each team's requests")
    right.set_ylim(0, 1)
    if models:
        right.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    out = Path(out_png)
    fig.savefig(out)
    plt.close(fig)
    return out
