"""Budget pacing: the controller's direction and bounds, its state, and a simulated day."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from router.policy.pacing import (
    DEFAULT_PACING,
    fixed_lambda,
    hindsight_lambda,
    paced_lambda,
    replay,
    synthetic_day,
)

DAY = 86400.0


def lam_at(spent: float, f: float, state=None, base: float = 20.0):
    return paced_lambda(state, base, spent, 100.0, 0.0, DAY, f * DAY)


# ---------------------------------------------------------------- the controller


@pytest.mark.parametrize(
    ("limit", "end"),
    [(None, DAY), (0.0, DAY), (100.0, None)],  # no limit, or a `total` budget: no pace
)
def test_no_pace_to_keep_returns_the_base(limit, end):
    lam, st = paced_lambda({"x": 1}, 20.0, 50.0, limit, 0.0, end, 10.0)
    assert lam == 20.0 and st == {"x": 1}


@pytest.mark.parametrize(
    ("spent", "f", "relation"),
    [
        (50.0, 0.5, "=="),  # on plan (uniform profile at first)
        (70.0, 0.5, ">"),  # ahead: dearer
        (30.0, 0.5, "<"),  # behind: cheaper
        (10.0, 0.01, ">"),  # early overspend is seen at once (log-odds error)
        (0.0, 0.99, "<"),
    ],
)
def test_direction(spent, f, relation):
    lam, _ = lam_at(spent, f)
    if relation == "==":
        assert lam == pytest.approx(20.0)
    elif relation == ">":
        assert lam > 20.0
    else:
        assert lam < 20.0


def test_monotone_in_spend_and_bounded():
    lams = [lam_at(s, 0.5)[0] for s in (0, 10, 30, 49, 51, 70, 90, 100, 500)]
    assert lams == sorted(lams)
    assert lams[0] >= 20.0 / DEFAULT_PACING.max_ratio - 1e-9
    assert lams[-1] <= 20.0 * DEFAULT_PACING.max_ratio + 1e-9
    # a base of 0 (max quality) still paces, around the reference λ
    lam0, _ = paced_lambda(None, 0.0, 80.0, 100.0, 0.0, DAY, DAY / 2)
    assert lam0 > DEFAULT_PACING.ref_lambda


def test_integral_accumulates_while_ahead():
    st = None
    levels = []
    for k in range(11):  # 10 % of the budget ahead from 30 % to 60 % of the day
        f = 0.3 + 0.03 * k
        _, st = lam_at(100 * f + 10.0, f, st)
        levels.append(st["i"])
    assert levels == sorted(levels) and levels[-1] > levels[0] + 0.5
    with_history, _ = lam_at(70.0, 0.6, st)
    fresh, _ = lam_at(70.0, 0.6)
    assert with_history > 1.5 * fresh


def test_state_is_small_json_and_replays_identically():
    st = None
    for k in range(50):
        _, st = lam_at(k * 0.9, k / 100, st)
    text = json.dumps(st)
    assert len(text) < 800
    a = lam_at(47.0, 0.51, st)
    b = lam_at(47.0, 0.51, json.loads(text))
    assert a == b


def test_datetimes_and_epoch_seconds_agree():
    t0 = datetime(2026, 1, 5, tzinfo=UTC)
    lam_dt, _ = paced_lambda(
        None, 20.0, 60.0, 100.0, t0, t0 + timedelta(days=1), t0 + timedelta(hours=12)
    )
    e0 = t0.timestamp()
    lam_f, _ = paced_lambda(None, 20.0, 60.0, 100.0, e0, e0 + DAY, e0 + DAY / 2)
    assert lam_dt == pytest.approx(lam_f)


def test_new_period_learns_the_profile_and_keeps_the_level():
    st = None
    for k in range(200):  # all traffic in the second half of the day
        _, st = paced_lambda(st, 20.0, 0.0, 100.0, 0.0, DAY, DAY * (0.5 + k / 400))
    level = st["i"]
    _, st2 = paced_lambda(st, 20.0, 0.0, 100.0, DAY, 2 * DAY, DAY)  # next day starts
    assert st2["p"] == DAY and sum(st2["n"]) == 1
    assert st2["i"] == pytest.approx(level)
    w = st2["w"]
    assert sum(w[:12]) < 0.35 < 0.65 < sum(w[12:])


def test_changing_the_base_moves_the_learned_level():
    _, st = lam_at(50.0, 0.5)
    lam, _ = paced_lambda(st, 40.0, 50.0, 100.0, 0.0, DAY, DAY / 2)
    assert lam == pytest.approx(40.0)


def test_corrupt_state_starts_fresh():
    assert lam_at(50.0, 0.5, {"v": 2, "i": float("nan")})[0] == pytest.approx(20.0)
    assert lam_at(50.0, 0.5, {"v": 0, "i": 9.0})[0] == pytest.approx(20.0)


# ---------------------------------------------------------------- hindsight


def test_hindsight_lambda_is_the_smallest_that_fits():
    s = synthetic_day(500, seed=3)
    full, _ = fixed_lambda(s, 0.0)
    lam, spend, score = hindsight_lambda(s, 0.4 * full)
    assert spend <= 0.4 * full
    assert fixed_lambda(s, lam * 0.999)[0] > 0.4 * full
    assert score == fixed_lambda(s, lam)[1]
    assert hindsight_lambda(s, 2 * full)[0] == 0.0  # budget never binds
    with pytest.raises(ValueError, match="spends more"):
        hindsight_lambda(s, 1e-9)


def test_synthetic_day_has_structure():
    s = synthetic_day(2000, seed=0)
    assert s.scores.shape == s.costs.shape == (2000, 8)
    assert np.all(np.diff(s.times) >= 0) and s.times[0] >= 0 and s.times[-1] <= DAY
    # pricier models are better on average, and the afternoon is busier than the night
    assert np.all(np.diff(s.costs.mean(0)) > 0)
    assert s.scores.mean(0)[-1] > s.scores.mean(0)[0] + 0.2
    hours = np.histogram(s.times, bins=24, range=(0, DAY))[0]
    assert hours[12:18].mean() > 3 * hours[:4].mean()


# ---------------------------------------------------------------- a simulated day

CASES = [(frac, mult) for frac in (0.2, 0.5) for mult in (0.3, 1.0, 3.0)]


@pytest.mark.parametrize(("frac", "mult"), CASES)
def test_simulated_day_cold_start(frac, mult):
    """First day, no traffic profile yet, base λ off by up to 3×: spend ends within 10 %
    of the budget and quality within 5 % of the best fixed λ chosen in hindsight."""
    s = synthetic_day(2000, seed=0)
    budget = frac * fixed_lambda(s, 0.0)[0]
    lam_star, _, best = hindsight_lambda(s, budget)
    r = replay(s, budget, lam_star * mult)
    assert 0.90 * budget <= r.spent_usd <= budget
    assert r.mean_score >= 0.95 * best
    assert r.rejected == 0
    # without pacing, the base λ at 0.3× would spend far beyond the budget
    if mult == 0.3:
        assert fixed_lambda(s, lam_star * mult)[0] > 1.5 * budget


@pytest.mark.parametrize(("frac", "mult"), CASES)
def test_simulated_day_after_a_day_of_history(frac, mult):
    """With yesterday's state (its traffic profile and λ level), today tracks closely."""
    yesterday = synthetic_day(2000, seed=10)
    s = synthetic_day(2000, seed=0)
    budget = frac * fixed_lambda(s, 0.0)[0]
    lam_star, _, best = hindsight_lambda(s, budget)
    prev = replay(yesterday, frac * fixed_lambda(yesterday, 0.0)[0], lam_star * mult)
    r = replay(s, budget, lam_star * mult, state=prev.state, period_start=DAY)
    assert 0.95 * budget <= r.spent_usd <= budget
    assert r.mean_score >= 0.98 * best
    # the spend curve follows the budget through the day, not only at its end
    planned = np.interp(s.times, np.linspace(0, DAY, 25), np.r_[0, np.cumsum(prev.state["w"])])
    assert np.max(np.abs(r.spend_curve / budget - planned)) < 0.15
