"""The ledger equals the provider's invoice: a mixed run per upstream protocol (cache
reads, 5-minute and 1-hour cache writes, reasoning, prompts both sides of a long-context
tier), streams and whole answers, through the chat front with the real openai SDK's
wire shape, against the fake upstreams that bill each request from their own price
table (tests/fake_billing.py). The decision log's classes are what the provider
reported. A stream cut short: Anthropic's input classes (``message_start``) are charged
as reported and only the output is estimated (``usage_source: partial``); a protocol
that reports usage only at the end is estimated whole.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any

import pytest
from conftest import TEAM_KEY, RouterHandle, default_models

MODEL = "gpt-4o-mini-2024-07-18"
APIS = ["openai-chat", "openai-responses", "anthropic-messages"]
ABOVE = 1500  # the test model's long-context threshold, in prompt tokens
BASE = {"input": 0.15, "output": 0.60, "cached_input": 0.075}
TIER = {"above": ABOVE, "input": 0.30, "output": 0.90, "cached_input": 0.15}
# Anthropic bills cache writes (1.25x / 2x of the input); OpenAI does not.
WRITES = {"cache_write": 0.1875, "cache_write_1h": 0.30}
TIER_WRITES = {"cache_write": 0.375, "cache_write_1h": 0.60}
LONG = "The ledger keeps every settled dollar exactly once. " * 400


def prices(api: str) -> dict[str, Any]:
    writes = api == "anthropic-messages"
    tier = {**TIER, **(TIER_WRITES if writes else {})}
    return {**BASE, **(WRITES if writes else {}), "long_context": tier}


def catalog(api: str) -> dict[str, Any]:
    p, models = prices(api), default_models()
    tier = p["long_context"]
    upstream = "up-o3-mini" if api == "openai-chat" else f"up-{MODEL}"  # chat: a reasoner
    models[MODEL].update(
        upstream_model=upstream,
        input_usd_per_mtok=p["input"],
        output_usd_per_mtok=p["output"],
        cached_input_usd_per_mtok=p["cached_input"],
        cache_write_usd_per_mtok=p.get("cache_write"),
        cache_write_1h_usd_per_mtok=p.get("cache_write_1h"),
        long_context={
            "above_prompt_tokens": tier["above"],
            "input_usd_per_mtok": tier["input"],
            "output_usd_per_mtok": tier["output"],
            "cached_input_usd_per_mtok": tier["cached_input"],
            "cache_write_usd_per_mtok": tier.get("cache_write"),
            "cache_write_1h_usd_per_mtok": tier.get("cache_write_1h"),
        },
    )
    return models


def ask(api: str, i: int, *, long: str | None, ttl: str | None = None) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    if long is not None:
        part: dict[str, Any] = {"type": "text", "text": long}
        if api == "anthropic-messages":  # an explicit breakpoint; OpenAI caches by itself
            part["cache_control"] = {"type": "ephemeral", **({"ttl": ttl} if ttl else {})}
        messages.append({"role": "system", "content": [part]})
    messages.append({"role": "user", "content": f"question {i}: say something"})
    body: dict[str, Any] = {"model": MODEL, "messages": messages}
    if api == "openai-responses":
        body["reasoning_effort"] = "low"  # Responses reports reasoning tokens for it
    return body


def lines_of(fake: Any, n: int) -> list[Any]:
    """The invoice's lines once all ``n`` are in (the fake writes a stream's line after
    its last event, which the router may have relayed already)."""
    deadline = time.monotonic() + 5
    while len(lines := fake.lines()) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    return lines


def send(r: RouterHandle, body: dict, streamed: bool) -> None:
    http = r.http(TEAM_KEY)
    if not streamed:
        resp = http.post("/v1/chat/completions", json=body)
        assert resp.status_code == 200, resp.text
        assert "x_router" not in resp.text  # the router's own marks never reach a client
        details = resp.json()["usage"]["completion_tokens_details"]
        assert isinstance(details["reasoning_tokens"], int)  # 0 where none was reported
        return
    with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as resp:
        assert resp.status_code == 200, resp.read()
        events = [ln[6:] for ln in resp.iter_lines() if ln.startswith("data: ")]
    assert events[-1] == "[DONE]"
    for e in events[:-1]:
        assert "x_router" not in e  # the router's own usage and marks never reach a client
        json.loads(e)


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("api", APIS)
def test_the_ledger_equals_the_invoice(make_router, fake, api, streamed):
    r = make_router(provider={"api": api}, models=catalog(api))
    # Short (base prices), long (above the tier): written, read, read, a 1-hour write of a
    # longer prefix (Anthropic), then short again.
    plan = [(None, None), (LONG, None), (LONG, None), (LONG, None), (LONG + " More.", "1h"),
            (None, None)]  # fmt: skip
    for i, (long, ttl) in enumerate(plan):
        send(r, ask(api, i, long=long, ttl=ttl), streamed)
    lines, logged = lines_of(fake, len(plan)), r.decisions()
    assert len(lines) == len(logged) == len(plan)
    table = {line.model: prices(api) for line in lines}
    assert any(ln.prompt > ABOVE for ln in lines) and any(ln.prompt <= ABOVE for ln in lines)
    assert any(ln.cache_read for ln in lines)
    if api == "anthropic-messages":
        assert any(ln.cache_write_5m for ln in lines) and any(ln.cache_write_1h for ln in lines)
    else:
        assert any(ln.reasoning for ln in lines)
    reported = [q.usage for q in fake.requests if q.line is not None]
    for line, d, said in zip(lines, logged, reported, strict=True):
        assert d["usage_source"] == "upstream" and d["upstream_api"] == api
        assert d["prompt_tokens"] == line.prompt and d["completion_tokens"] == line.output
        assert (d["cached_prompt_tokens"] or 0) == line.cache_read
        if api == "openai-responses":  # reported, though OpenAI bills them as plain input
            assert (d["cache_write_tokens"] or 0) == said["input_tokens_details"][
                "cache_write_tokens"
            ]
        else:
            assert (d["cache_write_tokens"] or 0) == line.cache_write_5m
        assert (d["cache_write_1h_tokens"] or 0) == line.cache_write_1h
        if api == "anthropic-messages":  # Anthropic counts no reasoning: not reported
            assert d["reasoning_tokens"] is None
        else:
            assert d["reasoning_tokens"] == line.reasoning
        assert d["cost_usd"] == pytest.approx(line.cost(table), abs=1e-12)
        full = replace(line, input=line.prompt, cache_read=0, cache_write_5m=0, cache_write_1h=0)
        assert d["cache_saved_usd"] == pytest.approx(full.cost(table) - d["cost_usd"], abs=1e-12)
    billed = fake.invoice(table)
    spent = r.http(TEAM_KEY).get("/v1/budget").json()["spent_usd"]
    assert abs(sum(d["cost_usd"] for d in logged) - billed) < 1e-9
    assert abs(spent - billed) < 1e-9


@pytest.mark.parametrize("api", APIS)
def test_a_cut_stream_charges_what_was_reported_and_estimates_the_rest(make_router, fake, api):
    r = make_router(provider={"api": api}, models=catalog(api))
    send(r, ask(api, 0, long=LONG), True)  # the prefix is cached (written) first
    fake.behave(cut_after_events=4)
    body = ask(api, 1, long=LONG)
    with r.http(TEAM_KEY).stream(
        "POST", "/v1/chat/completions", json={**body, "stream": True}
    ) as resp:
        assert resp.status_code == 200
        text = resp.read().decode()
    assert "x_router_partial" not in text and text.rstrip().endswith("data: [DONE]")
    line, d = lines_of(fake, 2)[-1], r.decisions()[-1]
    assert line.cut
    table = {line.model: prices(api)}
    spent = r.http(TEAM_KEY).get("/v1/budget").json()["spent_usd"]
    assert abs(spent - sum(x["cost_usd"] for x in r.decisions())) < 1e-9
    if api != "anthropic-messages":  # usage only comes at the end: all of it estimated
        assert d["usage_source"] == "estimated" and d["cost_usd"] > 0
        return
    # The input classes as message_start reported them (a cache read of the long prefix,
    # above the tier); the output is the estimate of the text relayed, never less than
    # what was reported.
    assert d["usage_source"] == "partial" and line.cache_read > 0 and line.prompt > ABOVE
    assert d["prompt_tokens"] == line.prompt and d["cached_prompt_tokens"] == line.cache_read
    assert d["completion_tokens"] >= line.output
    charged = replace(line, output=d["completion_tokens"]).cost(table)
    assert d["cost_usd"] == pytest.approx(charged, abs=1e-12)


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("ttl", ["5m", "1h"])
def test_a_cache_write_settles_within_its_reservation(make_router, fake, ttl, streamed):
    """A request that asks Anthropic to write the cache reserves its whole prompt at the
    write price (the long-context tier's here): the settle never passes what was reserved,
    and the ledger holds the settles and nothing reserved after. Write prices are steep
    (5x / 10x the input) so that the write outgrows the slack of the router's own prompt
    count: the same prompt without ``cache_control``, reserved at the input price, is
    below what the write costs."""
    api = "anthropic-messages"
    models = catalog(api)
    tier = models[MODEL]["long_context"]
    steep = {"cache_write_usd_per_mtok": 5 * tier["input_usd_per_mtok"],
             "cache_write_1h_usd_per_mtok": 10 * tier["input_usd_per_mtok"]}  # fmt: skip
    tier.update(steep)
    r = make_router(provider={"api": api}, models=models)
    plain = {**ask(api, 0, long=LONG), "max_tokens": 40}
    plain["messages"][0]["content"][0].pop("cache_control")
    writing = {**ask(api, 1, long=LONG, ttl=ttl), "max_tokens": 40}
    send(r, plain, streamed)
    send(r, writing, streamed)
    [line_plain, line_write] = lines_of(fake, 2)
    assert not line_plain.cache_write_5m and not line_plain.cache_write_1h
    written = line_write.cache_write_1h if ttl == "1h" else line_write.cache_write_5m
    assert written > ABOVE  # the whole system prompt, at the tier's write price
    d_plain, d_write = r.decisions()
    assert d_write["usage_source"] == "upstream"
    assert d_write["cache_write_1h_tokens" if ttl == "1h" else "cache_write_tokens"] == written
    assert d_plain["expected_cost_usd"] < d_write["cost_usd"] <= d_write["expected_cost_usd"]
    # The reservation is the plain one plus the write premium on the router's prompt count
    # (the same prompt: the plain one's input part at the input price says how many).
    price = steep["cache_write_1h_usd_per_mtok" if ttl == "1h" else "cache_write_usd_per_mtok"]
    out = 40 * tier["output_usd_per_mtok"] / 1e6
    counted = (d_plain["expected_cost_usd"] - out) / tier["input_usd_per_mtok"]
    assert d_write["expected_cost_usd"] == pytest.approx(counted * price + out, rel=1e-6)
    budget = r.http(TEAM_KEY).get("/v1/budget").json()
    assert budget["reserved_usd"] == 0
    assert abs(budget["spent_usd"] - d_plain["cost_usd"] - d_write["cost_usd"]) < 1e-12
