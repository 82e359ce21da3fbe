"""Routing policy: table-driven tests on hand-made numbers, plus the LP against scipy."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.optimize import linprog

from router.config import BudgetConfig, Catalog, ModelConfig, ProviderConfig, TeamPolicy
from router.errors import BudgetExceededError, InvalidRequestError, NoCandidateError
from router.policy import (
    STRATEGIES,
    STRATEGY_NAMES,
    Candidate,
    check_fits,
    decide,
    eligible_models,
    expected_cost_usd,
    expected_output_tokens,
    lp_mix,
    make_candidates,
    request_needs,
    route_scores,
    win_rates,
)

# ---------------------------------------------------------------- fixtures


def C(model: str, score: float, cost: float, coef: float | None = None) -> Candidate:
    return Candidate(model, score if coef is None else coef, score, cost)


THREE = [
    C("big", 0.90, 0.0100),
    C("mid", 0.85, 0.0020),
    C("small", 0.70, 0.0002),
]


def catalog(skip: bool = False) -> Catalog:
    providers = {
        "openai": ProviderConfig(name="openai", base_url="http://o/v1", api_key_env="OAI"),
        "local": ProviderConfig(name="local", base_url="http://l/v1"),
    }
    models = {
        "gpt-4o": ModelConfig(
            name="gpt-4o",
            provider="openai",
            input_usd_per_mtok=2.5,
            output_usd_per_mtok=10,
            supports=frozenset({"tools", "vision"}),
        ),
        "gpt-4o-mini": ModelConfig(
            name="gpt-4o-mini",
            provider="openai",
            input_usd_per_mtok=0.15,
            output_usd_per_mtok=0.6,
            supports=frozenset({"tools"}),
            expected_output_tokens=300,
            context_window=4096,
        ),
        "llama-3-8b": ModelConfig(  # no `supports`: unknown, so a candidate for anything
            name="llama-3-8b",
            provider="local",
            input_usd_per_mtok=0.05,
            output_usd_per_mtok=0.1,
            context_window=8192,
        ),
        "not-in-p2l": ModelConfig(
            name="not-in-p2l", provider="local", input_usd_per_mtok=0, output_usd_per_mtok=0
        ),
    }
    skipped = {"openai": "OAI"} if skip else {}
    return Catalog(providers=providers, models=models, skipped=skipped, source="providers.yaml")


P2L = ["claude-3-5-sonnet", "gpt-4o", "gpt-4o-mini", "llama-3-8b"]


def team(**kw) -> TeamPolicy:
    kw.setdefault("budget", BudgetConfig(usd=None))
    return TeamPolicy(name="research", file="policies/research.yaml", **kw)


# ---------------------------------------------------------------- scores and costs


def test_route_scores_by_head():
    b = [0.0, 2.0, -40.0, 800.0]
    np.testing.assert_allclose(
        route_scores("grk", b),
        [0.5, 1 / (1 + math.exp(-2)), math.exp(-40) / (1 + math.exp(-40)), 1],
    )
    assert route_scores("bt", b).tolist() == b
    assert route_scores("rk", b).tolist() == b
    with pytest.raises(ValueError, match="unknown P2L head"):
        route_scores("xx", b)


@pytest.mark.parametrize(
    ("max_tokens", "learned", "model", "want"),
    [
        (128, 700.0, "gpt-4o-mini", 128),  # caller's bound wins
        (None, 700.4, "gpt-4o-mini", 700),  # then the learned EWMA
        (None, None, "gpt-4o-mini", 300),  # then the configured figure
        (None, None, "gpt-4o", 500),  # then the default
        (0, None, "gpt-4o", 500),
    ],
)
def test_expected_output_tokens(max_tokens, learned, model, want):
    assert expected_output_tokens(catalog().models[model], max_tokens, learned) == want


def test_expected_cost_and_candidates():
    cat = catalog()
    assert expected_cost_usd(cat.models["gpt-4o"], 1000, 500) == pytest.approx(
        (1000 * 2.5 + 500 * 10) / 1e6
    )
    cands = make_candidates(
        ["gpt-4o", "gpt-4o-mini"],
        {"gpt-4o": 1.0, "gpt-4o-mini": 0.0, "llama-3-8b": 5.0},
        head="grk",
        catalog=cat,
        prompt_tokens=200,
        learned_output_tokens={"gpt-4o": 100},
    )
    assert [c.model for c in cands] == ["gpt-4o", "gpt-4o-mini"]
    assert cands[0].score == pytest.approx(1 / (1 + math.exp(-1)))
    assert cands[0].expected_cost_usd == pytest.approx((200 * 2.5 + 100 * 10) / 1e6)
    assert cands[1].expected_cost_usd == pytest.approx((200 * 0.15 + 300 * 0.6) / 1e6)


@pytest.mark.parametrize(
    ("body", "needs"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, set()),
        ({"messages": [], "tools": [{"type": "function"}]}, {"tools"}),
        ({"messages": [], "functions": [{"name": "f"}]}, {"tools"}),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "what is it"},
                            {"type": "image_url", "image_url": {"url": "data:..."}},
                        ],
                    }
                ],
                "tools": [],
            },
            {"vision"},
        ),
    ],
)
def test_request_needs(body, needs):
    assert request_needs(body) == needs


# ---------------------------------------------------------------- eligible_models


@pytest.mark.parametrize(
    ("kw", "want"),
    [
        ({}, ["gpt-4o", "gpt-4o-mini", "llama-3-8b"]),
        ({"team": team(allow=["gpt-4o*"])}, ["gpt-4o", "gpt-4o-mini"]),
        ({"team": team(deny=["gpt-4o"])}, ["gpt-4o-mini", "llama-3-8b"]),
        ({"requested": ["llama-3-8b", "gpt-4o", "nope"]}, ["gpt-4o", "llama-3-8b"]),
        ({"needs": frozenset({"tools"})}, ["gpt-4o", "gpt-4o-mini", "llama-3-8b"]),
        ({"needs": frozenset({"tools", "vision"})}, ["gpt-4o", "llama-3-8b"]),  # mini: no vision
        ({"catalog": catalog(skip=True)}, ["llama-3-8b"]),
    ],
)
def test_eligible_models(kw, want):
    args = {"catalog": catalog(), "team": team(), "requested": None, "needs": frozenset()} | kw
    assert (
        eligible_models(P2L, args["catalog"], args["team"], args["requested"], args["needs"])
        == want
    )


@pytest.mark.parametrize(
    ("model_list", "kw", "message"),
    [
        (["a", "b"], {}, r"none of the P2L model's 2 models \[a, b\] is listed in providers.yaml"),
        (
            ["gpt-4o", "gpt-4o-mini"],
            {"catalog": catalog(skip=True)},
            r"\[gpt-4o, gpt-4o-mini\] are all served by providers whose key is unset \(OAI\)",
        ),
        (
            P2L,
            {"team": team(allow=["claude*"])},
            r"no model allowed by research.yaml allow \['claude\*'\] is served by a "
            r"configured provider \(served: \[gpt-4o, gpt-4o-mini, llama-3-8b\]\)",
        ),
        (
            P2L,
            {"team": team(allow=["gpt*"], deny=["gpt*"])},
            r"allow \['gpt\*'\] deny \['gpt\*'\]",
        ),
        (
            P2L,
            {"team": team(allow=["gpt*"]), "requested": ["llama-3-8b"]},
            r"none of router.models \[llama-3-8b\] is a candidate for team 'research' "
            r"\(candidates: \[gpt-4o, gpt-4o-mini\]\)",
        ),
        (
            P2L,
            {"team": team(deny=["gpt-4o", "llama*"]), "needs": frozenset({"vision"})},
            r"needs vision and no candidate \[gpt-4o-mini\] declares it .*gpt-4o-mini \['tools'\]",
        ),
    ],
)
def test_eligible_models_names_the_empty_filter(model_list, kw, message):
    args = {"catalog": catalog(), "team": team(), "requested": None, "needs": frozenset()} | kw
    with pytest.raises(NoCandidateError, match=message) as err:
        eligible_models(model_list, args["catalog"], args["team"], args["requested"], args["needs"])
    assert err.value.status == 400 and err.value.code == "no_candidate"


# ---------------------------------------------------------------- context windows

# gpt-4o: no context_window (fits anything); gpt-4o-mini: 4096; llama-3-8b: 8192.
# Expected output without max_tokens: gpt-4o 500 (default), mini 300 (configured), llama 500.


@pytest.mark.parametrize(
    ("prompt_tokens", "max_tokens", "learned", "want"),
    [
        (100, None, None, ["gpt-4o", "gpt-4o-mini", "llama-3-8b"]),
        (3796, None, None, ["gpt-4o", "gpt-4o-mini", "llama-3-8b"]),  # 3796 + 300 = 4096 fits
        (3797, None, None, ["gpt-4o", "llama-3-8b"]),
        (3000, 1097, None, ["gpt-4o", "llama-3-8b"]),  # max_tokens wins over the 300 figure
        (3000, 1096, None, ["gpt-4o", "gpt-4o-mini", "llama-3-8b"]),
        (3700, None, {"gpt-4o-mini": 400.0}, ["gpt-4o", "llama-3-8b"]),  # learned: 4100
        (3700, None, {"gpt-4o-mini": 396.0}, ["gpt-4o", "gpt-4o-mini", "llama-3-8b"]),
        (8200, None, None, ["gpt-4o"]),
        (None, 10**9, None, ["gpt-4o", "gpt-4o-mini", "llama-3-8b"]),  # no prompt size: no filter
    ],
)
def test_context_window_filter(prompt_tokens, max_tokens, learned, want):
    got = eligible_models(
        P2L,
        catalog(),
        team(),
        None,
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        learned_output_tokens=learned,
    )
    assert got == want


@pytest.mark.parametrize(
    ("prompt_tokens", "max_tokens", "param", "message"),
    [
        (
            8200,
            None,
            "messages",
            r"context window: the prompt is about 8200 tokens and the answer needs up to 500 "
            r"more \(expected output\).*gpt-4o-mini 4096 < 8500, llama-3-8b 8192 < 8700",
        ),
        (
            3000,
            6000,
            "max_tokens",
            r"about 3000 tokens .* up to 6000 more \(max_tokens\).*gpt-4o-mini 4096 < 9000",
        ),
    ],
)
def test_context_window_filter_names_the_numbers(prompt_tokens, max_tokens, param, message):
    with pytest.raises(NoCandidateError, match=message) as err:
        eligible_models(
            P2L,
            catalog(),
            team(deny=["gpt-4o"]),
            None,
            prompt_tokens=prompt_tokens,
            max_tokens=max_tokens,
        )
    assert err.value.status == 400 and err.value.param == param


@pytest.mark.parametrize(
    ("model", "prompt_tokens", "output_tokens", "param", "message"),
    [
        ("gpt-4o", 10**7, 10**7, None, None),  # no context_window declared: always fits
        ("gpt-4o-mini", 4000, 96, None, None),
        ("gpt-4o-mini", 4000, 97, "max_tokens", r"4097 tokens.*4096 tokens.*at most 96"),
        ("gpt-4o-mini", 4096, 1, "messages", r"prompt is about 4096 tokens.*window is 4096"),
        ("llama-3-8b", 8200, 100, "messages", r"8200 tokens; llama-3-8b's context window is 8192"),
    ],
)
def test_check_fits(model, prompt_tokens, output_tokens, param, message):
    cfg = catalog().models[model]
    if param is None:
        assert check_fits(cfg, prompt_tokens, output_tokens) is None
        return
    with pytest.raises(InvalidRequestError, match=message) as err:
        check_fits(cfg, prompt_tokens, output_tokens)
    assert (err.value.status, err.value.param, err.value.code) == (
        400,
        param,
        "context_length_exceeded",
    )


def test_strategy_names_have_one_source():
    from typing import get_args

    from router.config import Strategy
    from router.protocol import RouterOptions

    assert tuple(STRATEGIES) == STRATEGY_NAMES
    assert get_args(Strategy) == STRATEGY_NAMES
    assert RouterOptions(strategy="lp").strategy == "lp"


# ---------------------------------------------------------------- deterministic strategies


@pytest.mark.parametrize(
    ("strategy", "lam", "cap", "cands", "ranking"),
    [
        ("max-quality", 0, None, THREE, ["big", "mid", "small"]),
        ("max-quality", 0, 0.005, THREE, ["mid", "small"]),  # the cap is a hard filter
        ("strict", 0, 0.005, THREE, ["mid", "small"]),
        ("strict", 0, 0.0002, THREE, ["small"]),  # cap equal to a cost is allowed
        ("strict", 0, None, THREE, ["big", "mid", "small"]),
        ("cost-aware", 0, None, THREE, ["big", "mid", "small"]),
        # 0.90-0.2=0.70, 0.85-0.04=0.81, 0.70-0.004=0.696
        ("cost-aware", 20, None, THREE, ["mid", "big", "small"]),
        ("cost-aware", 1000, None, THREE, ["small", "mid", "big"]),
        ("cost-aware", 20, 0.005, THREE, ["mid", "small"]),
        # ties: same score -> cheaper first; same score and cost -> by name
        (
            "max-quality",
            0,
            None,
            [C("b", 0.8, 0.2), C("a", 0.8, 0.3), C("c", 0.8, 0.2)],
            ["b", "c", "a"],
        ),
        # cost-aware tie on value: 0.9-10*0.01 = 0.8 = 0.85-10*0.005 -> cheaper wins
        ("cost-aware", 10, None, [C("x", 0.9, 0.01), C("y", 0.85, 0.005)], ["y", "x"]),
        ("lp", 0, None, THREE, ["big", "mid", "small"]),  # no cap: argmax
        ("lp", 0, 0.5, THREE, ["big", "mid", "small"]),  # cap not binding
    ],
)
def test_strategy_rankings(strategy, lam, cap, cands, ranking):
    d = decide(cands, strategy=strategy, cost_sensitivity=lam, cap_usd=cap)
    assert [c.model for c in d.ranking] == ranking
    assert d.chosen == ranking[0]
    assert d.runner_up == (ranking[1] if len(ranking) > 1 else None)
    assert d.strategy == strategy
    assert d.chosen in d.reason and "\n" not in d.reason
    assert d.cost_sensitivity == (lam if strategy == "cost-aware" else None)


def test_reasons_carry_the_numbers():
    d = decide(THREE, strategy="cost-aware", cost_sensitivity=20)
    assert d.reason == (
        "cost-aware: mid score 0.850 - 20×$0.002 = 0.810 beats big score 0.900 - 20×$0.01 = 0.700"
    )
    d = decide(THREE, strategy="strict", cost_sensitivity=0, cap_usd=0.005)
    assert (
        d.reason
        == "strict: mid score 0.850 ($0.002) beats small 0.700 ($0.0002) (cap $0.005, 1 over it)"
    )
    d = decide(THREE, strategy="strict", cost_sensitivity=0)
    assert d.reason.endswith("(no cost cap set)")


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_cap_below_every_candidate(strategy):
    with pytest.raises(
        NoCandidateError, match=r"below every candidate.*cheapest is small at \$0.0002"
    ):
        decide(THREE, strategy=strategy, cost_sensitivity=1, cap_usd=0.0001)


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_no_candidates(strategy):
    with pytest.raises(NoCandidateError):
        decide([], strategy=strategy, cost_sensitivity=1)


def test_unknown_strategy_and_bad_arguments():
    with pytest.raises(InvalidRequestError, match="unknown strategy 'best'") as err:
        decide(THREE, strategy="best", cost_sensitivity=1)
    assert err.value.param == "router.strategy"
    with pytest.raises(ValueError, match="on_exhausted"):
        decide(THREE, strategy="lp", cost_sensitivity=1, on_exhausted="free")
    with pytest.raises(ValueError, match="cost_sensitivity"):
        decide(THREE, strategy="cost-aware", cost_sensitivity=-1)


# ---------------------------------------------------------------- budget


def test_budget_drops_what_does_not_fit():
    d = decide(THREE, strategy="cost-aware", cost_sensitivity=20, budget_remaining_usd=0.005)
    assert [c.model for c in d.ranking] == ["mid", "small"]


def test_budget_reject_refuses_when_the_choice_does_not_fit():
    with pytest.raises(
        BudgetExceededError, match=r"max-quality chose big at \$0.01 .* \$0.005 left"
    ):
        decide(THREE, strategy="max-quality", cost_sensitivity=0, budget_remaining_usd=0.005)


def test_budget_cheapest_serves_the_cheapest_that_fits():
    d = decide(
        THREE,
        strategy="max-quality",
        cost_sensitivity=0,
        budget_remaining_usd=0.005,
        on_exhausted="cheapest",
    )
    assert d.chosen == "small" and [c.model for c in d.ranking] == ["small", "mid"]
    assert d.reason.startswith("budget: big ($0.01) does not fit the $0.005 left")
    assert "on_exhausted: cheapest" in d.reason


@pytest.mark.parametrize("on_exhausted", ["reject", "cheapest"])
def test_budget_below_every_candidate(on_exhausted):
    with pytest.raises(BudgetExceededError, match=r"\$0.0001 left.*small, \$0.0002") as err:
        decide(
            THREE,
            strategy="cost-aware",
            cost_sensitivity=1,
            budget_remaining_usd=0.0001,
            on_exhausted=on_exhausted,
        )
    assert err.value.status == 429


# ---------------------------------------------------------------- LP


def lp_value_scipy(s: np.ndarray, c: np.ndarray, cap: float) -> float:
    m = len(s)
    res = linprog(
        -s,
        A_ub=[c / cap],
        b_ub=[1.0],
        A_eq=[np.ones(m)],
        b_eq=[1.0],
        bounds=[(0, None)] * m,
        method="highs",
        options={"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10},
    )
    assert res.status == 0
    return -res.fun


def lp_value_pairs(s: np.ndarray, c: np.ndarray, cap: float) -> float:
    best = max((s[i] for i in range(len(s)) if c[i] <= cap), default=-np.inf)
    for i, j in itertools.permutations(range(len(s)), 2):
        if c[i] <= cap < c[j]:
            w = (cap - c[i]) / (c[j] - c[i])
            best = max(best, (1 - w) * s[i] + w * s[j])
    return best


def random_instance(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    m = int(rng.integers(1, 12))
    if rng.random() < 0.3:  # coarse grid: many ties in score and in cost
        s = rng.integers(0, 4, m) / 4
        c = rng.integers(1, 5, m) / 1000
    else:
        c = np.exp(rng.uniform(np.log(1e-5), np.log(1e-1), m))
        s = 0.5 + 0.1 * np.log10(c) / 4 + 0.3 * rng.random(m)  # pricier tends to be better
    cap = float(rng.uniform(c.min(), c.max() * 1.1))
    return s, c, cap


def test_lp_matches_linprog_and_brute_force():
    rng = np.random.default_rng(7)
    for _ in range(400):
        s, c, cap = random_instance(rng)
        mix = lp_mix(s, c, cap)
        assert len(mix) <= 2 and math.isclose(sum(mix.values()), 1.0)
        assert all(p > 0 for p in mix.values())
        value = sum(p * s[i] for i, p in mix.items())
        cost = sum(p * c[i] for i, p in mix.items())
        assert cost <= cap * (1 + 1e-12)
        assert value == pytest.approx(lp_value_scipy(s, c, cap), abs=1e-9)
        assert value == pytest.approx(lp_value_pairs(s, c, cap), abs=1e-12)


def test_lp_mix_cases():
    s, c = [0.9, 0.85, 0.7], [0.01, 0.002, 0.0002]
    assert lp_mix(s, c, None) == {0: 1.0}
    assert lp_mix(s, c, 0.02) == {0: 1.0}
    assert lp_mix(s, c, 0.002) == {1: 1.0}  # exactly at a hull vertex
    mix = lp_mix(s, c, 0.006)
    assert set(mix) == {0, 1} and mix[0] == pytest.approx(0.5)
    mix = lp_mix([0.9, 0.5, 0.6], [1.0, 0.1, 0.5], 0.3)  # 0.6@0.5 is under the chord
    assert set(mix) == {0, 1}
    assert sum(p * [0.9, 0.5, 0.6][i] for i, p in mix.items()) == pytest.approx(
        lp_value_pairs(np.array([0.9, 0.5, 0.6]), np.array([1.0, 0.1, 0.5]), 0.3)
    )
    with pytest.raises(ValueError, match="below every cost"):
        lp_mix(s, c, 0.0001)


def test_lp_decision_mix_ranking_and_seed():
    d = decide(THREE, strategy="lp", cost_sensitivity=0, cap_usd=0.006, seed=3)
    assert d.mix == (("mid", pytest.approx(0.5)), ("big", pytest.approx(0.5)))
    assert d.seed == 3
    assert {c.model for c in d.ranking[:2]} == {"big", "mid"}
    assert [c.model for c in d.ranking][2:] == ["small"]
    assert "seed 3" in d.reason and "0.50×mid + 0.50×big" in d.reason
    again = [
        decide(THREE, strategy="lp", cost_sensitivity=0, cap_usd=0.006, seed=3).chosen
        for _ in range(5)
    ]
    assert set(again) == {d.chosen}
    free = decide(THREE, strategy="lp", cost_sensitivity=0, cap_usd=0.006)
    assert isinstance(free.seed, int)
    assert (
        decide(THREE, strategy="lp", cost_sensitivity=0, cap_usd=0.006, seed=free.seed).chosen
        == free.chosen
    )


def test_lp_sampling_frequencies_match_the_mix():
    cap = 0.0047  # between mid ($0.002) and big ($0.01): p(big) = 0.0027 / 0.008
    d0 = decide(THREE, strategy="lp", cost_sensitivity=0, cap_usd=cap, seed=0)
    mix = dict(d0.mix)
    assert mix == {"mid": pytest.approx(1 - 0.3375), "big": pytest.approx(0.3375)}
    n = 4000
    counts: dict[str, int] = {}
    for seed in range(n):
        ch = decide(THREE, strategy="lp", cost_sensitivity=0, cap_usd=cap, seed=seed).chosen
        counts[ch] = counts.get(ch, 0) + 1
    assert set(counts) == set(mix)
    for m, p in mix.items():
        sd = math.sqrt(p * (1 - p) / n)
        assert abs(counts[m] / n - p) < 4 * sd


# ---------------------------------------------------------------- optimal LP


def test_win_rates_formula():
    cands = [C("a", 0.0, 1.0, coef=1.0), C("b", 0.0, 1.0, coef=0.0), C("c", 0.0, 1.0, coef=-2.0)]
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    w, note = win_rates(cands, None, None)
    assert note == "uniform opponents"
    assert w[0] == pytest.approx((sig(0) + sig(1) + sig(3)) / 3)
    # an opponent outside the candidates, with its coef given; one without a coef dropped
    w, note = win_rates(cands, {"z": 2.0}, {"z": 3.0, "b": 1.0, "ghost": 5.0})
    assert w[2] == pytest.approx(0.75 * sig(-4) + 0.25 * sig(-2))
    assert note == "opponent mix of 2 (1 without a coef dropped)"
    w, note = win_rates(cands, None, {"ghost": 1.0})
    assert "uniform" in note and w[1] == pytest.approx((sig(-1) + sig(0) + sig(2)) / 3)


def test_optimal_lp_matches_linprog():
    rng = np.random.default_rng(11)
    for _ in range(150):
        m = int(rng.integers(2, 9))
        beta = rng.normal(0, 1, m)
        cost = np.exp(rng.uniform(-9, -3, m))
        cands = [Candidate(f"m{i}", beta[i], beta[i], cost[i]) for i in range(m)]
        q = {f"m{i}": float(x) for i, x in enumerate(rng.random(m))}
        cap = float(rng.uniform(cost.min(), cost.max()))
        d = decide(
            cands, strategy="optimal-lp", cost_sensitivity=0, cap_usd=cap, seed=1, opponent_mix=q
        )
        w, _ = win_rates(cands, None, q)
        value = sum(p * w[int(name[1:])] for name, p in d.mix)
        assert value == pytest.approx(lp_value_scipy(w, cost, cap), abs=1e-9)
        assert value == pytest.approx(lp_value_pairs(w, cost, cap), abs=1e-12)
        assert d.chosen in dict(d.mix)
        assert "win rate" in d.reason and "opponent mix of" in d.reason


def test_optimal_lp_differs_from_lp_when_win_rates_reorder():
    # Under uniform opponents w is monotone in beta, so the argmax agrees with BT lp
    cands = [C("a", 2.0, 0.01), C("b", 1.0, 0.001)]
    d = decide(cands, strategy="optimal-lp", cost_sensitivity=0)
    assert d.chosen == "a" and d.mix == (("a", 1.0),)
    assert "no cost cap" in d.reason
