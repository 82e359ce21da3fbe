"""Outcome probabilities of the three P2L heads, as the P2L paper's public code defines them.

Pure numpy, vectorised over models. For models A (row i) and B (column j):

- BT:  P(A) = sigma(b_A - b_B), no ties.
- RK:  eta = max(softplus_{beta=0.1}(eta_raw - 22.5), 0.02);
       P(A) = sigma(b_A - b_B - eta), P(tie) = 1 - P(A) - P(B).
- GRK: theta = exp(eta_raw) + 1.000001, phi = exp(b);
       P(A) = phi_A / (phi_A + theta phi_B + 1), P(bad) = 1 / (1 + phi_A + phi_B),
       P(tie) = 1 - P(A) - P(B) - P(bad).
       b = 0 is the "usable answer" ground: against an opponent that is always bad
       (phi_B -> 0), P(A) -> sigma(b_A) and P(bad) -> 1 - sigma(b_A), so sigma(b) is
       P(this model's answer is not bad).
"""

from __future__ import annotations

import numpy as np

RK_SOFTPLUS_BETA = 0.1
RK_ETA_SHIFT = 22.5
RK_ETA_MIN = 0.02
GRK_THETA_OFFSET = 1.000001


def _sigmoid(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


def sigmoid(x: np.ndarray | float) -> np.ndarray:
    """Overflow-free logistic function."""
    return _sigmoid(np.atleast_1d(np.asarray(x, dtype=np.float64))).reshape(np.shape(x))


def p_not_bad(coefs: np.ndarray) -> np.ndarray:
    """GRK: P(model i's answer is not bad) = sigma(b_i)."""
    return sigmoid(np.asarray(coefs, dtype=np.float64))


def route_scores(head: str, coefs: np.ndarray) -> np.ndarray:
    """The per-model score the public P2L router maximises: sigma(b) for GRK, b otherwise."""
    coefs = np.asarray(coefs, dtype=np.float64)
    if head == "grk":
        return p_not_bad(coefs)
    if head in ("bt", "rk"):
        return coefs.copy()
    raise ValueError(f"unknown P2L head {head!r}; expected bt, rk or grk")


def rk_eta(eta_raw: float | np.ndarray) -> np.ndarray | float:
    """RK tie margin: max(softplus_{beta=0.1}(eta_raw - 22.5), 0.02)."""
    x = RK_SOFTPLUS_BETA * (np.asarray(eta_raw, dtype=np.float64) - RK_ETA_SHIFT)
    eta = np.maximum(np.logaddexp(0.0, x) / RK_SOFTPLUS_BETA, RK_ETA_MIN)
    return float(eta) if np.ndim(eta) == 0 else eta


def grk_theta(eta_raw: float | np.ndarray) -> np.ndarray | float:
    """GRK tie parameter theta = exp(eta_raw) + 1.000001 (> 1, so ties have mass)."""
    theta = np.exp(np.asarray(eta_raw, dtype=np.float64)) + GRK_THETA_OFFSET
    return float(theta) if np.ndim(theta) == 0 else theta


def pairwise(
    head: str, coefs: np.ndarray, eta_raw: float | None = None
) -> dict[str, np.ndarray | None]:
    """All head-to-head outcome probabilities.

    Returns ``win`` (M, M) = P(row model beats column model), ``tie`` (M, M) and
    ``bad`` (M, M) = P(both answers bad) for GRK, None otherwise. For every pair
    win + win.T + tie (+ bad) = 1.
    """
    b = np.asarray(coefs, dtype=np.float64).reshape(-1)
    diff = b[:, None] - b[None, :]  # b_i - b_j
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        if head == "bt":
            win = sigmoid(diff)
            return {"win": win, "tie": np.zeros_like(win), "bad": None}
        if eta_raw is None:
            raise ValueError(f"the {head} head needs eta_raw")
        if head == "rk":
            eta = rk_eta(float(eta_raw))
            win = sigmoid(diff - eta)
            return {"win": win, "tie": 1.0 - win - win.T, "bad": None}
        if head == "grk":
            theta = grk_theta(float(eta_raw))
            # phi_i / (phi_i + theta phi_j + 1), divided through by phi_i
            win = 1.0 / (1.0 + theta * np.exp(-diff) + np.exp(-b)[:, None])
            # 1 / (1 + phi_i + phi_j)
            bad = 1.0 / (1.0 + np.exp(b)[:, None] + np.exp(b)[None, :])
            return {"win": win, "tie": 1.0 - win - win.T - bad, "bad": bad}
    raise ValueError(f"unknown P2L head {head!r}; expected bt, rk or grk")
