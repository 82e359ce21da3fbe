"""Providers of another protocol behind the chat front: ``api: anthropic-messages`` and
``api: openai-responses``, against the fake upstream that validates requests the way
those providers do (alternating roles, max_tokens, tool_result pairing, tool ids), with
the real openai SDK as the client. Streams and whole answers, a tool round trip, usage
classes reaching the decision log, and a field the protocol cannot express refused
before anything is sent.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import TEAM_KEY, RouterHandle

MINI = "gpt-4o-mini-2024-07-18"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look a word up",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        },
    }
]
APIS = ["anthropic-messages", "openai-responses"]
PROTOCOL_OF = {"anthropic-messages": "anthropic-messages", "openai-responses": "openai-responses"}


def router_for(make_router: Any, api: str, **kw: Any) -> RouterHandle:
    return make_router(provider={"api": api}, **kw)


def post(r: RouterHandle, body: dict) -> Any:
    return r.http(TEAM_KEY).post("/v1/chat/completions", json=body)


def stream(r: RouterHandle, body: dict) -> list[Any]:
    out: list[Any] = []
    with r.http(TEAM_KEY).stream("POST", "/v1/chat/completions", json=body) as resp:
        assert resp.status_code == 200, resp.read()
        for line in resp.iter_lines():
            if line.startswith("data: "):
                data = line[6:]
                out.append(data if data == "[DONE]" else json.loads(data))
    return out


@pytest.mark.parametrize("api", APIS)
def test_a_chat_client_is_served_by_a_provider_of_another_protocol(make_router, fake, api):
    r = router_for(make_router, api)
    client = r.openai()
    got = client.chat.completions.create(
        model=MINI, messages=[{"role": "system", "content": "Be brief."},
                              {"role": "user", "content": "Say hello"}],
    )  # fmt: skip
    assert got.model == MINI and got.choices[0].finish_reason == "stop"
    assert "hello" in (got.choices[0].message.content or "").lower()
    [req] = fake.requests
    assert req.protocol == PROTOCOL_OF[api]
    if api == "anthropic-messages":
        assert req.path.endswith("/v1/messages")
        assert req.json["max_tokens"] == 4096  # the default: the model gives none
        assert req.json["system"][0]["text"] == "Be brief." or req.json["system"] == "Be brief."
        assert req.headers.get("anthropic-version")
    else:
        assert req.path.endswith("/v1/responses")
    line = next(ln for ln in r.decisions() if ln["status"] == 200)
    billed = req.line
    assert billed is not None
    total_in = billed.input + billed.cache_read + billed.cache_write_5m + billed.cache_write_1h
    assert line["prompt_tokens"] == total_in and line["completion_tokens"] == billed.output
    assert line["usage_source"] == "upstream" and line["cost_usd"] > 0


@pytest.mark.parametrize("api", APIS)
def test_streams_of_another_protocol_arrive_as_chat_chunks(make_router, fake, api):
    r = router_for(make_router, api)
    body = {
        "model": MINI,
        "messages": [{"role": "user", "content": "Stream a hello"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    events = stream(r, body)
    assert events[-1] == "[DONE]"
    chunks = [e for e in events[:-1] if isinstance(e, dict)]
    text = "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")
    )
    assert "hello" in text.lower()
    usage = [c["usage"] for c in chunks if c.get("usage")]
    assert usage and usage[-1]["prompt_tokens"] > 0
    assert chunks[-1]["router"]["served_by"] == MINI
    [req] = fake.requests
    assert req.protocol == PROTOCOL_OF[api] and req.json["stream"] is True


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "stream"])
def test_a_tool_round_trip_passes_the_providers_validation(make_router, fake, api, streamed):
    r = router_for(make_router, api)
    ask = [{"role": "user", "content": "call tool lookup"}]
    first = post(r, {"model": MINI, "messages": ask, "tools": TOOLS})
    assert first.status_code == 200, first.text
    msg = first.json()["choices"][0]["message"]
    [call] = msg["tool_calls"]
    assert call["function"]["name"] == "lookup"
    assert first.json()["choices"][0]["finish_reason"] == "tool_calls"
    history = [
        *ask,
        {"role": "assistant", "content": msg.get("content"), "tool_calls": msg["tool_calls"]},
        {"role": "tool", "tool_call_id": call["id"], "content": "a word"},
    ]
    body = {"model": MINI, "messages": history, "tools": TOOLS}
    if streamed:
        events = stream(r, {**body, "stream": True})
        assert events[-1] == "[DONE]"
    else:
        second = post(r, body)
        assert second.status_code == 200, second.text
    assert len(fake.requests) == 2  # the provider took both: ids paired, roles alternating
    sent = fake.requests[1].json
    if api == "anthropic-messages":
        kinds = [[b["type"] for b in m["content"]] for m in sent["messages"]]
        assert "tool_result" in kinds[-1] and "tool_use" in kinds[-2]
    else:
        kinds = [item.get("type") for item in sent["input"]]
        assert "function_call" in kinds and "function_call_output" in kinds


@pytest.mark.parametrize(
    ("api", "field", "value"),
    [
        ("anthropic-messages", "n", 2),
        ("anthropic-messages", "seed", 7),
        ("openai-responses", "stop", ["END"]),
        ("openai-responses", "n", 2),
    ],
)
def test_a_field_the_protocol_cannot_express_is_refused_before_sending(
    make_router, fake, api, field, value
):
    r = router_for(make_router, api)
    ask = [{"role": "user", "content": "hello"}]
    for model in (MINI, "p2l"):
        resp = post(r, {"model": model, "messages": ask, field: value})
        assert resp.status_code == 400, resp.text
        err = resp.json()["error"]
        assert err["param"] == field and field in err["message"]
    assert fake.requests == []


def test_the_provider_error_of_another_protocol_is_relayed_in_chat_shape(make_router, fake):
    r = router_for(make_router, "anthropic-messages")
    fake.behave(f"up-{MINI}", status=529)
    resp = post(r, {"model": MINI, "messages": [{"role": "user", "content": "hi"}]})
    assert resp.status_code == 502
    err = resp.json()["error"]
    assert err["type"] == "upstream_error" and err["code"] == "529"
    assert "fake upstream failure 529" in err["message"]
    # 529 means "not processed" on Anthropic: retried like a 503 (max_retries: 1).
    assert len(fake.requests) == 2
    [line] = r.decisions()
    assert "overloaded_error" in line["fallbacks"][0]["message"]


# Class prices for the test model, per 1M tokens (Anthropic's multipliers of the input).
CLASS_PRICES = {
    "input": 0.15,
    "output": 0.60,
    "cached_input": 0.015,
    "cache_write": 0.1875,
    "cache_write_1h": 0.30,
}


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "stream"])
def test_cache_reads_and_writes_reach_the_ledger_as_the_provider_bills_them(
    make_router, fake, streamed
):
    from conftest import default_models

    models = default_models()
    models[MINI].update(
        input_usd_per_mtok=CLASS_PRICES["input"],
        output_usd_per_mtok=CLASS_PRICES["output"],
        cached_input_usd_per_mtok=CLASS_PRICES["cached_input"],
        cache_write_usd_per_mtok=CLASS_PRICES["cache_write"],
        cache_write_1h_usd_per_mtok=CLASS_PRICES["cache_write_1h"],
    )
    r = router_for(make_router, "anthropic-messages", models=models)
    long = "The ledger keeps every settled dollar exactly once. " * 400

    def ask(i: int, ttl: str | None) -> dict:
        cache: dict[str, str] = {"type": "ephemeral", **({"ttl": ttl} if ttl else {})}
        system = {"type": "text", "text": long, "cache_control": cache}
        return {
            "model": MINI,
            "messages": [
                {"role": "system", "content": [system]},
                {"role": "user", "content": f"question {i}"},
            ],
        }

    # A 5-minute write, two reads, then a 1-hour write of a longer prefix.
    for i, ttl in enumerate([None, None, None, "1h"]):
        body = ask(i, ttl)
        if ttl == "1h":
            body["messages"][0]["content"][0]["text"] = long + " More."
        if streamed:
            assert stream(r, {**body, "stream": True})[-1] == "[DONE]"
        else:
            assert post(r, body).status_code == 200
    lines = fake.lines()
    assert [bool(ln.cache_write_5m) for ln in lines] == [True, False, False, False]
    assert [bool(ln.cache_read) for ln in lines] == [False, True, True, False]
    assert lines[-1].cache_write_1h > 0
    billed = fake.invoice({f"up-{MINI}": CLASS_PRICES})
    logged = sum(ln["cost_usd"] for ln in r.decisions())
    spent = r.http(TEAM_KEY).get("/v1/budget").json()["spent_usd"]
    assert abs(logged - billed) < 1e-9 and abs(spent - billed) < 1e-9
    # At the input price alone the writes would have been billed short.
    flat = (
        sum(
            (ln.input + ln.cache_read + ln.cache_write_5m + ln.cache_write_1h) * 0.15
            + ln.output * 0.60
            for ln in lines
        )
        / 1e6
    )
    assert flat != pytest.approx(billed, abs=1e-9)
