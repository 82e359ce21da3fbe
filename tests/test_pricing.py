"""Pricing by input class: what a chat usage's cache counts cost, for every shape an
upstream may send (missing, null, negative, inconsistent), never less than the bill of
what is trusted and never raising."""

from __future__ import annotations

import pytest

from router.config import ModelConfig
from router.serving.chat import input_classes

M = ModelConfig(
    name="m", provider="p", input_usd_per_mtok=1.0, output_usd_per_mtok=2.0,
    cached_input_usd_per_mtok=0.1, cache_write_usd_per_mtok=1.25,
    cache_write_1h_usd_per_mtok=2.0,
)  # fmt: skip
PLAIN = ModelConfig(name="n", provider="p", input_usd_per_mtok=1.0, output_usd_per_mtok=2.0)


@pytest.mark.parametrize(
    ("details", "prompt", "classes"),
    [
        (None, 100, {}),
        ({}, 100, {}),
        ({"cached_tokens": 40}, 100, {"cache_read": 40}),
        ({"cached_tokens": 0}, 100, {}),
        ({"cached_tokens": None}, 100, {}),
        ({"cached_tokens": -5}, 100, {}),
        ({"cached_tokens": True}, 100, {}),
        ({"cached_tokens": "40"}, 100, {}),
        ({"cached_tokens": 400}, 100, {"cache_read": 100}),  # more than the prompt: clamped
        ({"cached_tokens": 60, "cache_write_tokens": 30}, 100,
         {"cache_read": 60, "cache_write": 30}),
        ({"cached_tokens": 90, "cache_write_tokens": 30}, 100,  # writes first, reads the rest
         {"cache_write": 30, "cache_read": 70}),
        ({"cache_write_1h_tokens": 50, "cache_write_tokens": 80}, 100,
         {"cache_write_1h": 50, "cache_write": 50}),
        ({"cached_tokens": 10}, 0, {}),
    ],
)  # fmt: skip
def test_input_classes(details, prompt, classes):
    usage = {"prompt_tokens": prompt} if details is None else {"prompt_tokens_details": details}
    assert input_classes(usage, prompt) == classes


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
