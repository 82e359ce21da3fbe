"""Pricing by input class: what a chat usage's cache counts cost, for every shape an
upstream may send (missing, null, negative, inconsistent), never less than the bill of
what is trusted and never raising."""

from __future__ import annotations

import pytest

from router.config import ModelConfig
from router.serving.bills import bill

M = ModelConfig(
    name="m", provider="p", input_usd_per_mtok=1.0, output_usd_per_mtok=2.0,
    cached_input_usd_per_mtok=0.1, cache_write_usd_per_mtok=1.25,
    cache_write_1h_usd_per_mtok=2.0,
)  # fmt: skip
PLAIN = ModelConfig(name="n", provider="p", input_usd_per_mtok=1.0, output_usd_per_mtok=2.0)


def usd(inp: float = 0, read: float = 0, w5: float = 0, w1: float = 0, out: float = 0) -> float:
    """At M's prices (input 1, read 0.1, 5m write 1.25, 1h write 2, output 2 per 1M)."""
    return (inp * 1.0 + read * 0.1 + w5 * 1.25 + w1 * 2.0 + out * 2.0) / 1e6


def u(prompt, completion=10, **details):
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "prompt_tokens_details": details}  # fmt: skip


# (usage as the upstream reported it, source, cost) with the router's own count of the
# prompt at 80 tokens and 30 tokens of answer text.
BILLS = [
    (u(100), "upstream", usd(100, out=10)),
    (u(100, cached_tokens=40), "upstream", usd(60, 40, out=10)),
    (u(100, cached_tokens=0), "upstream", usd(100, out=10)),
    (u(100, cached_tokens=None), "upstream", usd(100, out=10)),
    (u(100, cached_tokens=60, cache_write_tokens=30), "upstream", usd(10, 60, 30, out=10)),
    (u(100, cache_write_1h_tokens=50, cache_write_tokens=50), "upstream", usd(0, 0, 50, 50, out=10)),
    # DeepSeek's hit/miss fields are the cache read.
    ({"prompt_tokens": 100, "completion_tokens": 10, "prompt_cache_hit_tokens": 64,
      "prompt_cache_miss_tokens": 36}, "upstream", usd(36, 64, out=10)),
    # Not to be trusted: estimated, never below the input reported, reads not discounted.
    (u(100, cached_tokens=-5), "estimated", usd(100, out=30)),
    (u(100, cached_tokens=True), "estimated", usd(100, out=30)),
    (u(100, cached_tokens="40"), "estimated", usd(100, out=30)),
    (u(100, cached_tokens=400), "estimated", usd(100, out=30)),  # more than the prompt
    (u(100, cached_tokens=90, cache_write_tokens=30), "estimated", usd(70, 0, 30, out=30)),
    (u(-100, -10), "estimated", usd(80, out=30)),
    (u(50, 500), "upstream", usd(50, out=500)),  # trusted even below the estimate
    ({"prompt_tokens": 50}, "estimated", usd(80, out=30)),
    ({"prompt_tokens": 500, "completion_tokens": None}, "estimated", usd(500, out=30)),
    ({"prompt_tokens": 100, "completion_tokens": 5,
      "completion_tokens_details": {"reasoning_tokens": 900}}, "estimated", usd(100, out=900)),
    (None, "estimated", usd(80, out=30)),
    ("junk", "estimated", usd(80, out=30)),
    ({}, "estimated", usd(80, out=30)),
    # A cut stream's input classes, output from the text (or as reported when larger).
    ({**u(100, cached_tokens=60), "x_router_partial": True}, "partial", usd(40, 60, out=30)),
    ({**u(100, 99), "x_router_partial": True}, "partial", usd(100, out=99)),
    ({**u(100, cached_tokens=-1), "x_router_partial": True}, "estimated", usd(100, out=30)),
    ({**u(100), "x_router_doubtful": True}, "estimated", usd(100, out=30)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("usage", "source", "cost"), BILLS, ids=[str(i) for i in range(len(BILLS))]
)
def test_bill(usage, source, cost):
    b = bill(M, usage, prompt_estimate=80, text_tokens=lambda: 30, reserved_usd=1.0)
    assert (b.source, b.cost_usd) == (source, pytest.approx(cost, abs=1e-15))
    assert b.cost_usd >= 0


def test_without_usage_or_text_the_reservation_is_charged():
    b = bill(M, None, prompt_estimate=80, text_tokens=None, reserved_usd=0.25)
    assert (b.source, b.cost_usd, b.usage) == ("reserved", 0.25, None)


@pytest.mark.parametrize(
    ("model", "classes", "usd"),
    [
        (M, {}, (100 * 1.0 + 10 * 2.0) / 1e6),
        (M, {"cache_read": 60}, (40 * 1.0 + 60 * 0.1 + 20) / 1e6),
        (M, {"cache_write": 100}, (100 * 1.25 + 20) / 1e6),
        (M, {"cache_write_1h": 50, "cache_read": 50}, (50 * 2.0 + 50 * 0.1 + 20) / 1e6),
        # No class prices: every class at the input price, as before classes existed.
        (PLAIN, {"cache_read": 60, "cache_write": 40}, (100 * 1.0 + 20) / 1e6),
    ],
)
def test_cost_by_class(model, classes, usd):
    assert model.cost_usd(100, 10, **classes) == pytest.approx(usd, abs=1e-15)


def test_the_1h_write_defaults_to_the_5_minute_price():
    m = ModelConfig(
        name="x", provider="p", input_usd_per_mtok=1.0, output_usd_per_mtok=0.0,
        cache_write_usd_per_mtok=1.25,
    )  # fmt: skip
    assert m.cost_usd(100, 0, cache_write_1h=100) == pytest.approx(125 / 1e6)


# ---------------------------------------------------------------- long-context tiers

TIERED = ModelConfig(
    name="t", provider="p", input_usd_per_mtok=1.0, output_usd_per_mtok=2.0,
    cached_input_usd_per_mtok=0.1,
    long_context={"above_prompt_tokens": 1000, "input_usd_per_mtok": 3.0,
                  "output_usd_per_mtok": 5.0, "cache_write_usd_per_mtok": 3.75},
)  # fmt: skip


@pytest.mark.parametrize(
    ("prompt", "classes", "usd"),
    [
        (1000, {}, (1000 * 1.0 + 10 * 2.0) / 1e6),  # at the threshold: the base prices
        (1001, {}, (1001 * 3.0 + 10 * 5.0) / 1e6),  # above it: the whole request at the tier
        # A class the tier does not price costs the tier's input price (never less).
        (2000, {"cache_read": 1500}, (2000 * 3.0 + 10 * 5.0) / 1e6),
        (2000, {"cache_write": 1000, "cache_write_1h": 500},
         (500 * 3.0 + 1000 * 3.75 + 500 * 3.75 + 10 * 5.0) / 1e6),
    ],
)  # fmt: skip
def test_long_context_tier(prompt, classes, usd):
    assert TIERED.cost_usd(prompt, 10, **classes) == pytest.approx(usd, abs=1e-15)


def test_the_reservation_is_priced_at_the_tier_the_prompt_falls_in():
    from router.policy.candidates import expected_cost_usd

    assert expected_cost_usd(TIERED, 5000, 100) == pytest.approx((5000 * 3.0 + 100 * 5.0) / 1e6)
    # An upper bound of any settlement of that prompt, whatever its cache classes.
    assert expected_cost_usd(TIERED, 5000, 100) >= TIERED.cost_usd(5000, 100, cache_read=4000)


def test_shipped_tiers_and_cache_prices():
    from pathlib import Path

    from router.config import load_providers

    cat = load_providers(Path(__file__).parents[1] / "providers.yaml", env={})
    pro = cat.models["gemini-2.5-pro"]
    assert pro.cost_usd(200_000, 0) == pytest.approx(0.25)
    assert pro.cost_usd(200_001, 1_000) == pytest.approx((200_001 * 2.5 + 1000 * 15.0) / 1e6)
    sonnet = cat.models["claude-sonnet-4-20250514"]
    assert sonnet.cost_usd(300_000, 0, cache_read=300_000) == pytest.approx(0.18)
    assert cat.models["deepseek-v3"].cost_usd(100, 0, cache_read=100) == pytest.approx(7e-6)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("{above_prompt_tokens: 0, input_usd_per_mtok: 1, output_usd_per_mtok: 1}",
         "long_context.above_prompt_tokens"),
        ("{above_prompt_tokens: 10, output_usd_per_mtok: 1}", "long_context.input_usd_per_mtok"),
        ("{above_prompt_tokens: 10, input_usd_per_mtok: 1, output_usd_per_mtok: -1}",
         "long_context.output_usd_per_mtok"),
        ("{above_prompt_tokens: 10, input_usd_per_mtok: 1, output_usd_per_mtok: 1, x: 1}",
         "long_context.x"),
        ("128000", "long_context"),
    ],
)  # fmt: skip
def test_a_malformed_tier_is_a_config_error_naming_file_and_field(tmp_path, body, field):
    from router.config import load_providers
    from router.errors import ConfigError

    path = tmp_path / "providers.yaml"
    path.write_text(
        "providers:\n  p: {base_url: 'https://p.example/v1'}\n"
        "models:\n  m:\n    provider: p\n    input_usd_per_mtok: 1\n"
        f"    output_usd_per_mtok: 1\n    long_context: {body}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_providers(path, env={})
    text = str(err.value)
    assert str(path) in text and f"models.m.{field}" in text, text
