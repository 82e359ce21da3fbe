"""The Anthropic Messages front with real clients over real sockets: the anthropic SDK
(create, stream, tool round trip, count_tokens, models, errors), LangChain's
ChatAnthropic and Claude Code, against each upstream protocol of the fake."""

from __future__ import annotations

import json

import anthropic
import httpx
import pytest
from agent_clis import claude_bin, run_claude
from conftest import OTHER_KEY, TEAM_KEY

MINI = "gpt-4o-mini-2024-07-18"
APIS = ["openai-chat", "anthropic-messages", "openai-responses"]
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def sdk(r, key: str = TEAM_KEY, **kw) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=r.root, api_key=key, max_retries=0, **kw)


def sse_events(text: str) -> list[tuple[str, dict]]:
    out = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        out.append((lines["event"], json.loads(lines["data"])))
    return out


@pytest.mark.parametrize("api", APIS)
def test_create_stream_and_tool_round_trip(make_router, fake, api):
    r = make_router(provider={"api": api})
    client = sdk(r)
    raw = client.messages.with_raw_response.create(
        model=MINI, max_tokens=100, messages=[{"role": "user", "content": "Say hello"}]
    )
    got = raw.parse()
    assert got.type == "message" and got.role == "assistant" and got.model == MINI
    assert "hello" in got.content[0].text.lower() and got.stop_reason == "end_turn"
    assert raw.headers["x-router-model"] == MINI and raw.headers["x-router-decision-id"]
    line = r.decisions()[-1]
    assert line["front"] == "anthropic-messages" and line["upstream_api"] == api
    assert line["decision_id"] == raw.headers["x-router-decision-id"]

    # The stream's exact event sequence, read off the wire.
    body = {"model": MINI, "max_tokens": 100, "stream": True,
            "messages": [{"role": "user", "content": "Say hello"}]}  # fmt: skip
    with httpx.Client(base_url=r.root, timeout=30) as http:
        resp = http.post("/v1/messages", json=body, headers={"x-api-key": TEAM_KEY})
    assert resp.status_code == 200 and resp.headers["x-router-model"] == MINI
    events = sse_events(resp.text)
    names = [e for e, _ in events]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] == "end_turn" and delta["usage"]["output_tokens"] > 0
    assert events[0][1]["message"]["model"] == MINI
    text = "".join(d["delta"]["text"] for e, d in events if e == "content_block_delta")
    assert "hello" in text.lower()
    assert r.decisions()[-1]["stream"] is True

    # Tool round trip: tool_use, then the tool_result gets a text answer.
    ask = [{"role": "user", "content": "call tool get_weather for Paris"}]
    first = client.messages.create(model=MINI, max_tokens=200, tools=[WEATHER], messages=ask)
    assert first.stop_reason == "tool_use"
    use = next(b for b in first.content if b.type == "tool_use")
    assert use.name == "get_weather" and isinstance(use.input, dict)
    result = {"type": "tool_result", "tool_use_id": use.id, "content": "18C and sunny"}
    second = client.messages.create(
        model=MINI,
        max_tokens=200,
        tools=[WEATHER],
        messages=[*ask, {"role": "assistant", "content": first.content},
                  {"role": "user", "content": [result]}],
    )  # fmt: skip
    assert second.stop_reason == "end_turn" and second.content[0].type == "text"


def test_anthropic_headers_and_cache_control_reach_an_anthropic_upstream(make_router, fake):
    r = make_router(provider={"api": "anthropic-messages"})
    beta = "prompt-caching-2024-07-31,interleaved-thinking-2025-05-14"
    client = sdk(r, default_headers={"anthropic-beta": beta})
    system = [
        {"type": "text", "text": "You are terse. " * 300, "cache_control": {"type": "ephemeral"}}
    ]
    msgs = [{"role": "user", "content": "Say hello"}]
    raw = client.messages.with_raw_response.create(
        model=MINI, max_tokens=50, system=system, messages=msgs
    )
    first = raw.parse()
    sent = fake.requests[-1]
    assert sent.path == "/v1/messages"
    assert sent.headers["anthropic-beta"] == beta
    assert sent.headers["anthropic-version"] == raw.http_request.headers["anthropic-version"]
    assert sent.json["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert first.usage.cache_creation_input_tokens > 0
    second = client.messages.create(model=MINI, max_tokens=50, system=system, messages=msgs)
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    assert r.decisions()[-1]["prompt_tokens"] >= second.usage.cache_read_input_tokens

    # A version the client chose is the one sent; none: the router's own.
    client.messages.create(
        model=MINI, max_tokens=50, messages=msgs,
        extra_headers={"anthropic-version": "2023-01-01"},
    )  # fmt: skip
    assert fake.requests[-1].headers["anthropic-version"] == "2023-01-01"
    httpx.post(
        r.root + "/v1/messages",
        json={"model": MINI, "max_tokens": 20, "messages": msgs},
        headers={"authorization": f"Bearer {TEAM_KEY}"},
    ).raise_for_status()
    assert fake.requests[-1].headers["anthropic-version"] == "2023-06-01"
    assert "anthropic-beta" not in fake.requests[-1].headers


@pytest.mark.parametrize("api", ["openai-chat", "openai-responses"])
def test_anthropic_headers_are_not_sent_to_other_protocols(make_router, fake, api):
    r = make_router(provider={"api": api})
    client = sdk(r, default_headers={"anthropic-beta": "context-management-2025-06-27"})
    client.messages.create(
        model=MINI, max_tokens=50, messages=[{"role": "user", "content": "Say hello"}]
    )
    sent = fake.requests[-1].headers
    assert "anthropic-beta" not in sent and "anthropic-version" not in sent


def test_thinking_signatures_round_trip_through_an_anthropic_upstream(make_router, fake):
    r = make_router(provider={"api": "anthropic-messages"})
    client = sdk(r)
    thinking = {"type": "enabled", "budget_tokens": 1024}
    ask = [{"role": "user", "content": "call tool get_weather for Paris"}]
    first = client.messages.create(
        model=MINI, max_tokens=2000, thinking=thinking, tools=[WEATHER], messages=ask
    )
    kinds = [b.type for b in first.content]
    assert kinds[0] == "thinking" and "tool_use" in kinds and first.content[0].signature
    use = next(b for b in first.content if b.type == "tool_use")
    result = {"type": "tool_result", "tool_use_id": use.id, "content": "18C"}
    with client.messages.stream(
        model=MINI,
        max_tokens=2000,
        thinking=thinking,
        tools=[WEATHER],
        messages=[*ask, {"role": "assistant", "content": first.content},
                  {"role": "user", "content": [result]}],
    ) as s:  # fmt: skip
        final = s.get_final_message()
    # The fake refuses a signature it did not issue: a 200 is the round trip.
    sent = fake.requests[-1].json["messages"][1]["content"][0]
    assert sent == {
        "type": "thinking",
        "thinking": first.content[0].thinking,
        "signature": first.content[0].signature,
    }
    assert final.stop_reason == "end_turn" and final.content[0].type == "thinking"
    assert final.content[0].signature

    # A signature the upstream did not issue is refused by it, in Anthropic's shape.
    forged = {"type": "thinking", "thinking": "x", "signature": "forged"}
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(
            model=MINI,
            max_tokens=2000,
            thinking=thinking,
            tools=[WEATHER],
            messages=[*ask, {"role": "assistant", "content": [forged, use.model_dump()]},
                      {"role": "user", "content": [result]}],
        )  # fmt: skip
    assert "signature" in err.value.message


def test_usage_cache_classes_from_an_openai_upstream(make_router, fake):
    r = make_router(provider={"api": "openai-chat"})
    client = sdk(r)
    system = " ".join(f"rule{i}" for i in range(1500))  # over the fake's 1024-word minimum
    msgs = [{"role": "user", "content": "Say hello"}]
    first = client.messages.create(model=MINI, max_tokens=50, system=system, messages=msgs)
    assert first.usage.cache_read_input_tokens == 0
    assert first.usage.cache_creation_input_tokens == 0
    second = client.messages.create(model=MINI, max_tokens=50, system=system, messages=msgs)
    upstream = fake.requests[-1].usage
    cached = upstream["prompt_tokens_details"]["cached_tokens"]
    assert cached > 1000
    assert second.usage.cache_read_input_tokens == cached
    assert second.usage.input_tokens == upstream["prompt_tokens"] - cached
    assert second.usage.cache_creation_input_tokens == 0
    line = r.decisions()[-1]
    assert line["prompt_tokens"] == upstream["prompt_tokens"]


def test_count_tokens(make_router, fake):
    r = make_router()
    client = sdk(r)
    small = client.messages.count_tokens(
        model="p2l", messages=[{"role": "user", "content": "Say hello"}]
    )
    big = client.messages.count_tokens(
        model="p2l",
        system="You are a careful assistant. " * 50,
        tools=[WEATHER],
        messages=[{"role": "user", "content": "Say hello"}],
    )
    assert 0 < small.input_tokens < big.input_tokens
    assert not fake.requests  # nothing sent upstream, nothing billed
    with httpx.Client(base_url=r.root, timeout=30) as http:
        bearer = http.post(
            "/v1/messages/count_tokens",
            json={"model": "p2l", "messages": [{"role": "user", "content": "Say hello"}]},
            headers={"authorization": f"Bearer {TEAM_KEY}"},
        )
        assert bearer.json() == {"input_tokens": small.input_tokens}
        bad = http.post(
            "/v1/messages/count_tokens",
            json={"model": "p2l", "messages": [{"role": "tool", "content": "x"}]},
            headers={"x-api-key": TEAM_KEY},
        )
        assert bad.status_code == 400
        assert bad.json()["type"] == "error"
        assert bad.json()["error"]["type"] == "invalid_request_error"
        assert "messages.0.role" in bad.json()["error"]["message"]
        big_body = http.post(
            "/v1/messages/count_tokens",
            content=b'{"model": "p2l", "messages": "' + b"x" * (r.service.limits.max_body_bytes)
            + b'"}',
            headers={"x-api-key": TEAM_KEY, "content-type": "application/json"},
        )  # fmt: skip
        assert big_body.status_code == 413
        assert big_body.json()["error"]["type"] == "request_too_large"
    with pytest.raises(anthropic.AuthenticationError):
        sdk(r, key="sk-wrong").messages.count_tokens(
            model="p2l", messages=[{"role": "user", "content": "hi"}]
        )


def test_models_in_anthropic_shape(make_router, fake):
    r = make_router()
    client = sdk(r)
    page = client.models.list(limit=3)
    assert [m.id for m in page.data] == ["p2l", "auto", "router"]
    assert page.has_more and page.first_id == "p2l" and page.last_id == "router"
    every = [m.id for m in client.models.list()]  # the SDK pages through after_id
    assert MINI in every and len(every) == len(set(every))
    one = client.models.retrieve(MINI)
    assert one.type == "model" and one.id == MINI and one.display_name == MINI
    with pytest.raises(anthropic.NotFoundError) as err:
        client.models.retrieve("no-such-model")
    assert err.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.AuthenticationError):
        sdk(r, key="sk-wrong").models.list()
    # Without anthropic-version: OpenAI's shape, as before.
    openai_list = r.openai().models.list()
    assert MINI in [m.id for m in openai_list.data]
    assert r.openai().models.retrieve(MINI).owned_by == "fake"


def test_errors_in_anthropic_shape(make_router, fake):
    r = make_router(
        team={"rate_limit": {"requests_per_minute": 2}},
        other_team={"budget": {"usd": 0.0}},
    )
    msgs = [{"role": "user", "content": "Say hello"}]

    def create(key: str = TEAM_KEY, **kw):
        return sdk(r, key).messages.create(
            **{"model": MINI, "max_tokens": 50, "messages": msgs, **kw}
        )

    with pytest.raises(anthropic.AuthenticationError) as err:
        create("sk-wrong")
    assert err.value.status_code == 401
    assert err.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.BadRequestError) as err:
        create(messages=[{"role": "user", "content": [{"type": "tool_use"}]}])
    assert err.value.body["error"]["type"] == "invalid_request_error"
    assert "messages.0.content.0.type" in err.value.message
    with pytest.raises(anthropic.BadRequestError) as err:
        create(max_tokens=0)
    assert "max_tokens" in err.value.message
    with pytest.raises(anthropic.NotFoundError) as err:
        create(model="no-such-model")
    assert err.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.RateLimitError) as err:
        create(OTHER_KEY)  # a budget of $0: the router's 429 budget_exceeded
    assert err.value.body["error"]["code"] == "budget_exceeded"
    create()  # the first of two requests this minute (the 404 and 400s were refused earlier)
    with pytest.raises(anthropic.RateLimitError) as err:
        for _ in range(3):
            create()
    assert err.value.body["error"]["type"] == "rate_limit_error"
    assert err.value.response.headers["retry-after"]

    with httpx.Client(base_url=r.root, timeout=30) as http:
        got = http.get("/v1/messages", headers={"x-api-key": TEAM_KEY})
        assert got.status_code == 405 and got.json()["type"] == "error"
        moved = http.post("/v1/messages/", json={}, headers={"x-api-key": TEAM_KEY})
        assert moved.status_code == 307 and moved.headers["location"].endswith("/v1/messages")
        too_big = http.post(
            "/v1/messages",
            content=b"x" * (r.service.limits.max_body_bytes + 1),
            headers={"x-api-key": TEAM_KEY},
        )
        assert too_big.status_code == 413
        assert too_big.json()["error"]["type"] == "request_too_large"


def test_ledger_unavailable_is_529_overloaded(make_router, fake, tmp_path):
    import sqlite3

    db = tmp_path / "locked.db"
    r = make_router(ledger=f"sqlite:///{db}?busy_timeout=0.3")
    msgs = [{"role": "user", "content": "hi"}]
    sdk(r).messages.create(model=MINI, max_tokens=20, messages=msgs)
    other = sqlite3.connect(db, isolation_level=None)  # another process holding the lock
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(anthropic.APIStatusError) as err:
            sdk(r).messages.create(model=MINI, max_tokens=20, messages=msgs)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert err.value.status_code == 529
    assert isinstance(err.value, getattr(anthropic, "OverloadedError", anthropic.APIStatusError))
    assert err.value.body["error"]["type"] == "overloaded_error"
    assert err.value.body["error"]["code"] == "ledger_unavailable"


@pytest.mark.parametrize("api", ["openai-chat", "anthropic-messages"])
def test_mid_stream_failure_ends_with_an_error_event(make_router, fake, api):
    r = make_router(provider={"api": api, "max_retries": 0})
    fake.behave(f"up-{MINI}", cut_after_events=3)
    body = {"model": MINI, "max_tokens": 100, "stream": True,
            "messages": [{"role": "user", "content": "Say hello to everyone here"}]}  # fmt: skip
    with httpx.Client(base_url=r.root, timeout=30) as http:
        resp = http.post("/v1/messages", json=body, headers={"x-api-key": TEAM_KEY})
    events = sse_events(resp.text)
    assert events[0][0] == "message_start"
    assert events[-1][0] == "error"
    assert events[-1][1]["type"] == "error" and events[-1][1]["error"]["type"]
    assert r.decisions()[-1]["status"] == 502


def test_langchain_chat_anthropic(make_router, fake):
    from langchain_anthropic import ChatAnthropic

    r = make_router(provider={"api": "openai-chat"})
    llm = ChatAnthropic(
        model=MINI, base_url=r.root, api_key=TEAM_KEY, max_tokens=100, max_retries=0
    )
    got = llm.invoke("Say hello")
    assert "hello" in got.content.lower()
    assert got.usage_metadata["input_tokens"] > 0
    assert r.decisions()[-1]["front"] == "anthropic-messages"


needs_claude = pytest.mark.skipif(
    claude_bin() is None,
    reason="Claude Code not installed in .cache/agent-clis (run `make agent-clis`)",
)


@needs_claude
@pytest.mark.parametrize("api", ["openai-chat", "anthropic-messages"])
def test_claude_code_completes_a_task(make_router, fake, api):
    r = make_router(provider={"api": api})
    # The chat fake calls the first tool it is offered whenever it is offered tools;
    # without Agent that is Bash, which print mode denies, and then it answers in text.
    args = ["--disallowedTools", "Agent"]
    p = run_claude(r.root, TEAM_KEY, "say DONE", model=MINI, timeout=90, extra_args=args)
    assert p.returncode == 0, p.stderr + p.stdout
    result = json.loads(p.stdout)
    assert result["is_error"] is False, result
    assert "echo" in result["result"]  # the fakes' answers: "[model] echo: ..."
    line = r.decisions()[-1]
    assert line["front"] == "anthropic-messages" and line["status"] == 200
    assert line["upstream_api"] == api and line["served_by"] == MINI
    sent = fake.requests[-1]
    if api == "anthropic-messages":  # what Claude Code sent that only Anthropic takes
        assert "claude-code-20250219" in sent.headers["anthropic-beta"]
        assert sent.json["thinking"]["type"] == "adaptive"
        assert sent.json["context_management"]
        assert sent.json["metadata"]["user_id"]
        assert sent.json["output_config"] == {"effort": "high"}
