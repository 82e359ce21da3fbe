"""Offline simulation: prompts file, routing a sample, the λ frontier and its plot."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from router.config import Catalog, ModelConfig, ProviderConfig, TeamPolicy
from router.errors import NoCandidateError
from router.offline.plot import plot_frontier
from router.offline.simulate import (
    Prompt,
    load_prompts,
    rough_prompt_tokens,
    score_prompts,
    simulate,
    simulate_scored,
)
from router.policy import decide, frontier_scored, lambda_grid

MODELS = ("big", "mid", "small", "tiny")
PRICES = {"big": (5.0, 20.0), "mid": (1.0, 4.0), "small": (0.2, 0.8), "tiny": (0.05, 0.1)}
BASE = np.array([1.5, 1.0, 0.4, -0.3])  # pricier is better on average


def catalog(supports: frozenset[str] | None = frozenset()) -> Catalog:
    """Every model declares ``supports`` (plain chat only) unless told otherwise."""
    return Catalog(
        providers={"p": ProviderConfig(name="p", base_url="http://p/v1")},
        models={
            m: ModelConfig(
                name=m, provider="p", input_usd_per_mtok=i, output_usd_per_mtok=o, supports=supports
            )
            for m, (i, o) in PRICES.items()
        },
    )


def score_fn(messages: list[dict]) -> tuple[np.ndarray, tuple[str, ...]]:
    """A deterministic stand-in for the P2L model: coefs seeded by the prompt text."""
    text = json.dumps(messages, sort_keys=True).encode()
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(text).digest()[:8], "little"))
    hard = rng.normal()
    return BASE - np.array([0.2, 0.5, 0.9, 1.2]) * hard + rng.normal(0, 0.3, 4), MODELS


def prompts(n: int = 120) -> list[Prompt]:
    rng = np.random.default_rng(0)
    return [
        Prompt(
            [{"role": "user", "content": f"question {i} " + "word " * int(rng.integers(5, 400))}]
        )
        for i in range(n)
    ]


def team(**kw) -> TeamPolicy:
    kw.setdefault("budget", {"usd": None})
    return TeamPolicy(name="t", file="policies/t.yaml", **kw)


def run(t: TeamPolicy, **kw):
    return simulate(score_fn, prompts(), team=t, catalog=catalog(), head="grk", **kw)


# ---------------------------------------------------------------- prompts file


def test_load_prompts_both_forms(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text(
        '{"prompt": "hello", "max_tokens": 64}\n'
        "\n"
        '{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}]}\n'
    )
    ps = load_prompts(f)
    assert ps[0] == Prompt([{"role": "user", "content": "hello"}], 64)
    assert ps[1].messages[1]["content"] == "hi" and ps[1].max_tokens is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"prompt": "a"}\n{oops\n', r"p.jsonl:2: not JSON"),
        ('{"text": "a"}\n', r"p.jsonl:1: expected a non-empty 'messages' list or 'prompt'"),
        ('{"prompt": "a", "max_tokens": -1}\n', r"p.jsonl:1: max_tokens must be a positive"),
        ("[1]\n", r"p.jsonl:1: expected an object"),
        ("\n", r"no prompts"),
    ],
)
def test_load_prompts_errors(tmp_path, text, message):
    f = tmp_path / "p.jsonl"
    f.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_prompts(f)


def test_rough_prompt_tokens():
    assert rough_prompt_tokens([{"role": "user", "content": "x" * 400}]) == 104
    parts = [{"type": "text", "text": "x" * 40}, {"type": "image_url"}]
    assert rough_prompt_tokens([{"role": "user", "content": parts}]) == 14


# ---------------------------------------------------------------- simulate


def test_max_quality_spend_is_the_sum_of_the_chosen_costs():
    r = run(team(strategy="max-quality"), prompt_tokens_fn=lambda m: 1000)
    sp = score_prompts(
        score_fn,
        prompts(),
        team=team(),
        catalog=catalog(),
        head="grk",
        prompt_tokens_fn=lambda m: 1000,
    )
    picks = np.argmax(sp.scores, axis=1)
    rows = np.arange(len(picks))
    assert r.spend_usd == pytest.approx(sp.costs[rows, picks].sum())
    assert r.mean_score == pytest.approx(sp.scores[rows, picks].mean())
    assert r.shares == pytest.approx(
        {
            MODELS[j]: k / len(picks)
            for j, k in zip(*np.unique(picks, return_counts=True), strict=True)
        }
    )
    assert list(r.shares) == sorted(r.shares, key=r.shares.get, reverse=True)
    # 1000 prompt tokens + the default 500 output tokens
    assert sp.costs[0, 0] == pytest.approx((1000 * 5.0 + 500 * 20.0) / 1e6)


def test_cost_aware_matches_the_frontier_at_the_same_lambda():
    t = team(strategy="cost-aware", cost_sensitivity=50.0)
    r = run(t, lambdas=[0.0, 50.0, 500.0])
    assert r.cost_sensitivity == 50.0 and r.frontier is not None
    at = {p.cost_sensitivity: p for p in r.frontier}[50.0]
    assert at.spend_usd == pytest.approx(r.spend_usd)
    assert at.mean_score == pytest.approx(r.mean_score)


def test_frontier_is_monotone_and_includes_zero_and_the_current_lambda():
    t = team(cost_sensitivity=37.0)
    sp = score_prompts(score_fn, prompts(), team=t, catalog=catalog(), head="grk")
    pts = frontier_scored(sp, team=t)
    lams = [p.cost_sensitivity for p in pts]
    assert lams[0] == 0.0 and 37.0 in lams and len(pts) >= 20
    spends = [p.spend_usd for p in pts]
    scores = [p.mean_score for p in pts]
    assert spends == sorted(spends, reverse=True) and scores == sorted(scores, reverse=True)
    assert spends[0] > 5 * spends[-1]  # the grid spans the trade-off
    assert pts[0].top_model == "big" and pts[-1].top_model == "tiny"


def test_lambda_grid_spans_the_breakpoints():
    sp = score_prompts(score_fn, prompts(), team=team(), catalog=catalog(), head="grk")
    grid = lambda_grid(sp, current=12.5, n=10)
    assert grid[0] == 0.0 and 12.5 in grid and len(grid) == 12
    assert grid == sorted(grid)


def test_cap_refuses_prompts_no_model_fits():
    t = team(strategy="strict", max_cost_per_request_usd=0.0001)
    r = run(t, prompt_tokens_fn=lambda m: rough_prompt_tokens(m) * 4)
    assert r.refused > 0 and r.routed + r.refused == r.prompts
    assert r.cap_usd == 0.0001
    # a request-level cap combines with the team's (the smaller wins)
    assert run(t, cap_usd=0.5).cap_usd == 0.0001
    assert "refused" in r.summary()


def test_lp_is_reproducible_and_respects_the_cap_on_average():
    t = team(strategy="lp", max_cost_per_request_usd=0.002)
    a, b = run(t, seed=5), run(t, seed=5)
    assert a == b
    assert a.mean_cost_usd <= 0.002 * 1.25  # a sampled mix: the cap holds in expectation
    assert len(a.shares) >= 2


def test_needs_and_mismatched_model_lists():
    vision = [Prompt([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}])]
    r = simulate(score_fn, vision + prompts(5), team=team(), catalog=catalog(), head="grk")
    assert r.refused == 1 and r.routed == 5  # every model declares `supports: []`
    unknown = simulate(score_fn, vision, team=team(), catalog=catalog(None), head="grk")
    assert unknown.refused == 0 and unknown.routed == 1  # no `supports`: unknown, not refused
    with pytest.raises(ValueError, match="differs from model_list"):
        simulate(score_fn, prompts(3), team=team(), catalog=catalog(), head="grk", model_list=["x"])
    with pytest.raises(NoCandidateError, match="allow"):
        simulate(score_fn, prompts(3), team=team(allow=["gpt*"]), catalog=catalog(), head="grk")


def test_projection_and_summary():
    t = team(budget={"usd": 25, "period": "day"}, strategy="cost-aware", cost_sensitivity=20)
    r = run(t, requests_per_period=10_000)
    assert r.projected_period_usd == pytest.approx(r.mean_cost_usd * 10_000)
    text = r.summary()
    assert "cost-aware λ=20" in text and "per day vs budget $25" in text
    assert all(m in text for m in r.shares)


def test_simulation_uses_the_servers_decide():
    """The same candidate numbers give the same pick as decide() on one prompt."""
    t = team(strategy="cost-aware", cost_sensitivity=80)
    sp = score_prompts(score_fn, prompts(1), team=t, catalog=catalog(), head="grk")
    r = simulate_scored(sp, team=t)
    from router.offline.simulate import candidates_at

    d = decide(candidates_at(sp, 0), strategy="cost-aware", cost_sensitivity=80)
    assert r.shares == {d.chosen: 1.0}


# ---------------------------------------------------------------- plot


def test_plot_frontier_writes_a_png(tmp_path):
    t = team(strategy="cost-aware", cost_sensitivity=30.0)
    sp = score_prompts(score_fn, prompts(), team=t, catalog=catalog(), head="grk")
    r = simulate_scored(sp, team=t, lambdas=lambda_grid(sp, 30.0))
    out = plot_frontier(r.frontier, r, tmp_path / "frontier.png", budget_usd=0.5)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    with pytest.raises(ValueError, match="no frontier points"):
        plot_frontier([], None, tmp_path / "x.png")
