"""One prompt's leaderboard, shared by ``POST /v1/leaderboard`` and ``p2l-router leaderboard``.

Pure: Scores and prices in, rows (JSON-ready dicts) or a terminal table out; no I/O,
no torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from router.policy.outcomes import p_not_bad, pairwise
from router.scoring.types import Scores

# model -> (input USD per 1M tokens, output USD per 1M tokens, expected cost USD or None)
Prices = Mapping[str, tuple[float, float, float | None]]


def leaderboard_rows(scores: Scores, prices: Prices | None = None) -> list[dict[str, Any]]:
    """Every model of the checkpoint, best coef first.

    Each row: ``model``, ``coef``, ``p_not_bad`` (GRK only), ``routable`` (has a price,
    i.e. a configured provider), and for routable rows ``expected_cost_usd`` (when
    known) and ``output_usd_per_mtok``.
    """
    prices = prices or {}
    coefs = np.asarray(scores.coefs, dtype=np.float64)
    pnb = p_not_bad(coefs) if scores.head == "grk" else None
    order = sorted(range(len(scores.models)), key=lambda i: (-coefs[i], scores.models[i]))
    rows: list[dict[str, Any]] = []
    for i in order:
        name = scores.models[i]
        row: dict[str, Any] = {"model": name, "coef": float(coefs[i])}
        if pnb is not None:
            row["p_not_bad"] = float(pnb[i])
        price = prices.get(name)
        row["routable"] = price is not None
        if price is not None:
            _, out_per_mtok, expected = price
            if expected is not None:
                row["expected_cost_usd"] = float(expected)
            row["output_usd_per_mtok"] = float(out_per_mtok)
        rows.append(row)
    return rows


def _fmt_usd(value: float | None, digits: int) -> str:
    return "-" if value is None else f"${value:.{digits}f}"


def format_table(rows: Sequence[Mapping[str, Any]], *, top: int | None = None) -> str:
    """The rows as an aligned plain-text table (rank, model, coef, P(not bad), prices)."""
    rows = list(rows)[:top] if top else list(rows)
    has_pnb = any("p_not_bad" in r for r in rows)
    header = ["#", "model", "coef"] + (["P(not bad)"] if has_pnb else [])
    header += ["routable", "$/1M out", "exp. cost"]
    table = [header]
    for rank, r in enumerate(rows, 1):
        line = [str(rank), str(r["model"]), f"{r['coef']:+.4f}"]
        if has_pnb:
            line.append(f"{r['p_not_bad']:.3f}" if "p_not_bad" in r else "-")
        line += [
            "yes" if r.get("routable") else "no",
            _fmt_usd(r.get("output_usd_per_mtok"), 2),
            _fmt_usd(r.get("expected_cost_usd"), 5),
        ]
        table.append(line)
    widths = [max(len(row[c]) for row in table) for c in range(len(header))]
    left = {1}  # the model name reads best left-aligned; numbers right-aligned
    out = []
    for n, row in enumerate(table):
        cells = [
            cell.ljust(w) if c in left else cell.rjust(w)
            for c, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def pairwise_matrix(scores: Scores, top_k: int = 10) -> dict[str, Any]:
    """Head-to-head probabilities among the ``top_k`` models by coef.

    ``win[i][j]`` = P(models[i] beats models[j]); ``tie`` likewise; ``bad`` = P(both bad)
    for GRK, else None. Lists of lists, ready for JSON.
    """
    coefs = np.asarray(scores.coefs, dtype=np.float64)
    order = sorted(range(len(coefs)), key=lambda i: (-coefs[i], scores.models[i]))[:top_k]
    probs = pairwise(scores.head, coefs[order], scores.eta)
    bad = probs["bad"]
    return {
        "models": [scores.models[i] for i in order],
        "win": probs["win"].tolist(),  # type: ignore[union-attr]
        "tie": probs["tie"].tolist(),  # type: ignore[union-attr]
        "bad": None if bad is None else bad.tolist(),
    }
