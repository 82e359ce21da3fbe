"""P2L outcome formulas (BT, RK, GRK) and the leaderboard helpers, against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from router.policy.outcomes import grk_theta, p_not_bad, pairwise, rk_eta, route_scores, sigmoid
from router.scoring.leaderboard import format_table, leaderboard_rows, pairwise_matrix
from router.scoring.types import Scores

BETA = np.array([1.2, -0.3, 0.0, 2.5, -1.7])


def _total(probs) -> np.ndarray:
    bad = probs["bad"] if probs["bad"] is not None else 0.0
    return probs["win"] + probs["win"].T + probs["tie"] + bad


@pytest.mark.parametrize(
    "head, eta", [("bt", None), ("rk", 21.0), ("rk", 40.0), ("grk", -0.7), ("grk", 1.5)]
)
def test_probabilities_sum_to_one_and_are_symmetric(head, eta):
    probs = pairwise(head, BETA, eta)
    np.testing.assert_allclose(_total(probs), 1.0, atol=1e-12)
    np.testing.assert_allclose(probs["tie"], probs["tie"].T, atol=1e-12)
    if probs["bad"] is not None:
        np.testing.assert_allclose(probs["bad"], probs["bad"].T, atol=1e-12)
    for name in ("win", "tie", "bad"):
        if probs[name] is not None:
            assert (probs[name] >= 0).all() and (probs[name] <= 1).all()
    # a better coefficient wins more often than it loses
    assert probs["win"][3, 1] > probs["win"][1, 3]


def test_bt_hand_values():
    p = pairwise("bt", np.array([1.0, 0.0]))
    assert p["win"][0, 1] == pytest.approx(1 / (1 + math.exp(-1.0)))
    assert p["win"][0, 0] == pytest.approx(0.5) and p["bad"] is None
    assert p["tie"].tolist() == [[0.0, 0.0], [0.0, 0.0]]


def test_rk_hand_values():
    # eta_raw = 32.5 -> softplus_0.1(10) = 10 * log(1 + e) = 13.1326...
    assert rk_eta(32.5) == pytest.approx(10 * math.log(1 + math.e))
    assert rk_eta(-100.0) == pytest.approx(0.02)  # clamped below
    assert rk_eta(22.5) == pytest.approx(10 * math.log(2))
    eta = rk_eta(22.5)
    p = pairwise("rk", np.array([0.5, -0.5]), 22.5)
    win = 1 / (1 + math.exp(-(1.0 - eta)))
    lose = 1 / (1 + math.exp(-(-1.0 - eta)))
    assert p["win"][0, 1] == pytest.approx(win)
    assert p["win"][1, 0] == pytest.approx(lose)
    assert p["tie"][0, 1] == pytest.approx(1 - win - lose)
    assert np.allclose(rk_eta(np.array([22.5, -100.0])), [eta, 0.02])


def test_grk_hand_values():
    assert grk_theta(0.0) == pytest.approx(2.000001)
    theta = math.exp(0.4) + 1.000001
    phi_a, phi_b = math.exp(1.0), math.exp(-0.5)
    p = pairwise("grk", np.array([1.0, -0.5]), 0.4)
    assert p["win"][0, 1] == pytest.approx(phi_a / (phi_a + theta * phi_b + 1))
    assert p["win"][1, 0] == pytest.approx(phi_b / (phi_b + theta * phi_a + 1))
    assert p["bad"][0, 1] == pytest.approx(1 / (1 + phi_a + phi_b))
    # two equal models at beta = 0, theta = 2: P(A) = 1/4, P(bad) = 1/3, tie = 1 - 1/2 - 1/3
    q = pairwise("grk", np.zeros(2), 0.0)
    assert q["win"][0, 1] == pytest.approx(1 / (1 + 2.000001 + 1))
    assert q["bad"][0, 1] == pytest.approx(1 / 3)


def test_grk_sigmoid_beta_is_p_not_bad_against_an_always_bad_opponent():
    # phi_B -> 0 (beta_B -> -inf): P(bad) -> 1 - sigma(beta_A), P(A wins) -> sigma(beta_A)
    null = -60.0
    probs = pairwise("grk", np.append(BETA, null), 0.9)
    np.testing.assert_allclose(1 - probs["bad"][:-1, -1], p_not_bad(BETA), atol=1e-12)
    np.testing.assert_allclose(probs["win"][:-1, -1], p_not_bad(BETA), atol=1e-12)
    np.testing.assert_allclose(probs["tie"][:-1, -1], 0.0, atol=1e-12)
    # and P(not bad) is monotone in beta, 1/2 at the ground beta = 0
    assert p_not_bad(np.array([0.0]))[0] == 0.5
    assert np.all(np.diff(p_not_bad(np.sort(BETA))) > 0)


def test_route_scores_and_stability():
    np.testing.assert_allclose(route_scores("grk", BETA), 1 / (1 + np.exp(-BETA)))
    np.testing.assert_array_equal(route_scores("bt", BETA), BETA)
    np.testing.assert_array_equal(route_scores("rk", BETA), BETA)
    with pytest.raises(ValueError):
        route_scores("xx", BETA)
    with pytest.raises(ValueError, match="eta_raw"):
        pairwise("grk", BETA)
    assert sigmoid(np.array([-1000.0, 1000.0])).tolist() == [0.0, 1.0]
    extreme = pairwise("grk", np.array([800.0, -800.0]), 0.0)
    assert np.isfinite(extreme["win"]).all()


# -- leaderboard ------------------------------------------------------------------------------


def _scores(head: str = "grk") -> Scores:
    return Scores(
        models=("a", "b", "c", "d"),
        coefs=np.array([0.1, 1.5, -0.4, 0.9]),
        eta=0.2 if head != "bt" else None,
        head=head,
        prompt_tokens=12,
        cached=False,
        scoring_ms=3.0,
    )


def test_leaderboard_rows():
    prices = {"b": (2.5, 10.0, 0.0051), "c": (0.15, 0.6, None), "a": (1.0, 4.0, 0.002)}
    rows = leaderboard_rows(_scores(), prices)
    assert [r["model"] for r in rows] == ["b", "d", "a", "c"]
    assert rows[0] == {
        "model": "b",
        "coef": 1.5,
        "p_not_bad": pytest.approx(1 / (1 + math.exp(-1.5))),
        "routable": True,
        "expected_cost_usd": 0.0051,
        "output_usd_per_mtok": 10.0,
    }
    assert rows[1] == {
        "model": "d",
        "coef": 0.9,
        "p_not_bad": pytest.approx(sigmoid(0.9)),
        "routable": False,
    }
    assert "expected_cost_usd" not in rows[3] and rows[3]["output_usd_per_mtok"] == 0.6
    assert all("p_not_bad" not in r for r in leaderboard_rows(_scores("bt"), prices))


def test_format_table_is_aligned():
    rows = leaderboard_rows(_scores(), {"b": (2.5, 10.0, 0.0051)})
    table = format_table(rows, top=3)
    lines = table.splitlines()
    assert len(lines) == 2 + 3
    assert lines[0].split() == [
        "#",
        "model",
        "coef",
        "P(not",
        "bad)",
        "routable",
        "$/1M",
        "out",
        "exp.",
        "cost",
    ]
    assert "$10.00" in lines[2] and "$0.00510" in lines[2] and "+1.5000" in lines[2]
    assert lines[3].split()[-2:] == ["-", "-"]
    # numbers right-aligned: every data line ends in the same column as the header rule
    assert len({len(line) for line in lines[1:3]}) == 1


def test_pairwise_matrix_top_k():
    m = pairwise_matrix(_scores(), top_k=3)
    assert m["models"] == ["b", "d", "a"]
    win = np.array(m["win"])
    assert win.shape == (3, 3) and win[0, 1] > win[1, 0]
    total = win + win.T + np.array(m["tie"]) + np.array(m["bad"])
    np.testing.assert_allclose(total, 1.0, atol=1e-12)
    assert pairwise_matrix(_scores("bt"), top_k=2)["bad"] is None
