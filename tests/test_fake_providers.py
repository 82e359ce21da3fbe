"""The fake upstream's three protocols, driven with the real SDKs: what it sends parses
with their types and stream helpers, what it refuses it refuses as the provider does,
and its caches and invoice add up."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import openai
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from fake_billing import TTL_S, Line, tokens
from fake_upstream import FakeUpstream
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

MODEL = "claude-fake"
GPT = "gpt-fake"
TOOL = {
    "name": "get_weather",
    "description": "weather",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city"],
    },
}
FN = {"type": "function", "name": "get_weather", "parameters": TOOL["input_schema"]}
CHAT_FN = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
LONG = "lorem ipsum dolor sit amet " * 200  # 5400 characters: 1351 fake tokens
CHAT_LONG = LONG * 2  # 2000 words: chat counts the echo's words
PRICES = {
    MODEL: {"input": 3.0, "output": 15.0, "cached_input": 0.3, "cache_write": 3.75,
            "cache_write_1h": 6.0},
    GPT: {"input": 2.5, "output": 10.0, "cached_input": 1.25},
    "gpt-chat": {"input": 0.15, "output": 0.6, "cached_input": 0.075},
}  # fmt: skip


@pytest.fixture(scope="module")
def _claude(fake_upstream_server: FakeUpstream) -> anthropic.Anthropic:
    url = fake_upstream_server.base_url.removesuffix("/v1")
    return anthropic.Anthropic(base_url=url, api_key="sk-ant", max_retries=0)


@pytest.fixture(scope="module")
def _oai(fake_upstream_server: FakeUpstream) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake_upstream_server.base_url, api_key="sk-oai", max_retries=0)


@pytest.fixture
def claude(fake: FakeUpstream, _claude: anthropic.Anthropic) -> anthropic.Anthropic:
    """The real anthropic SDK, pointed at a fake with no state of earlier tests."""
    return _claude


@pytest.fixture
def oai(fake: FakeUpstream, _oai: openai.OpenAI) -> openai.OpenAI:
    return _oai


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def raw_events(fake: FakeUpstream, path: str, body: dict, headers: dict) -> list[tuple[str, dict]]:
    """(event name, data) of every SSE event of a streamed answer, read off the wire."""
    out = []
    with httpx.stream("POST", fake.base_url + path, json=body, headers=headers) as r:
        assert r.status_code == 200
        name = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                out.append((name, json.loads(line[6:])))
                name = None
    return out


ANT_HEADERS = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
OAI_HEADERS = {"authorization": "Bearer k"}


# ---------------------------------------------------------------- Anthropic: answers


def test_messages_answer_is_a_valid_message(claude: anthropic.Anthropic) -> None:
    raw = claude.messages.with_raw_response.create(
        model=MODEL, max_tokens=100, messages=[user("hello there")]
    )
    msg = Message.model_validate(raw.http_response.json())  # strict pydantic validation
    assert msg.content[0].type == "text" and msg.content[0].text == f"[{MODEL}] echo: hello there"
    assert msg.stop_reason == "end_turn"
    assert msg.usage.input_tokens == tokens("hello there")
    assert msg.usage.output_tokens == tokens(msg.content[0].text)
    assert msg.usage.cache_read_input_tokens == msg.usage.cache_creation_input_tokens == 0


def test_messages_stream_event_sequence(fake: FakeUpstream) -> None:
    body = {"model": MODEL, "max_tokens": 4000, "stream": True, "tools": [TOOL],
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "messages": [user("please call tool get_weather")]}  # fmt: skip
    events = raw_events(fake, "/messages", body, ANT_HEADERS)
    adapter = TypeAdapter(RawMessageStreamEvent)
    for name, data in events:
        assert name == data["type"]
        if name != "ping":
            adapter.validate_python(data)
    names = [n for n, _ in events]
    assert names[:2] == ["message_start", "ping"] and names[-2:] == [
        "message_delta",
        "message_stop",
    ]
    deltas = [d["delta"]["type"] for n, d in events if n == "content_block_delta"]
    assert deltas[-1] == "input_json_delta" and "signature_delta" in deltas
    assert deltas.index("signature_delta") < deltas.index("input_json_delta")
    starts = [d["content_block"]["type"] for n, d in events if n == "content_block_start"]
    assert starts == ["thinking", "tool_use"]
    assert events[0][1]["message"]["usage"]["input_tokens"] > 0
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_messages_stream_helper_and_tool_round_trip(
    fake: FakeUpstream, claude: anthropic.Anthropic
) -> None:
    kw: dict[str, Any] = {"model": MODEL, "max_tokens": 4000, "tools": [TOOL],
                          "thinking": {"type": "enabled", "budget_tokens": 2000}}  # fmt: skip
    ask = [user("call tool get_weather for Paris")]
    with claude.messages.stream(**kw, messages=ask) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert texts == []
    rec = fake.requests[-1]
    assert rec.protocol == "anthropic-messages" and rec.json["model"] == MODEL
    assert len(fake.bodies_for(MODEL)) == 1 and rec.usage == final.usage.model_dump(
        exclude_none=True
    )
    thinking, call = final.content
    assert thinking.type == "thinking" and thinking.signature
    assert call.type == "tool_use" and call.name == "get_weather" and call.input == {"city": "echo"}
    assert final.stop_reason == "tool_use"
    # The thinking block goes back with the tool result, as Anthropic requires.
    turn = [c.model_dump(exclude_none=True) for c in final.content]
    result = {"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}
    nxt = claude.messages.create(
        **kw,
        messages=[
            *ask,
            {"role": "assistant", "content": turn},
            {"role": "user", "content": [result]},
        ],
    )
    assert nxt.content[0].type == "thinking" and nxt.content[-1].type == "text"
    assert nxt.stop_reason == "end_turn"


def test_messages_forced_tool_and_json_output(claude: anthropic.Anthropic) -> None:
    forced = claude.messages.create(
        model=MODEL, max_tokens=50, tools=[TOOL], messages=[user("hi")],
        tool_choice={"type": "tool", "name": "get_weather"},
    )  # fmt: skip
    assert forced.content[0].type == "tool_use" and forced.stop_reason == "tool_use"
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "n": {"type": "integer"},
              "opt": {"type": "string"}}, "required": ["name", "n"]}  # fmt: skip
    out = claude.messages.create(
        model=MODEL, max_tokens=50, messages=[user("json please")],
        output_config={"format": {"type": "json_schema", "schema": schema}},
    )  # fmt: skip
    assert set(json.loads(out.content[0].text)) == {"name", "n"}


def test_messages_cut_at_max_tokens(claude: anthropic.Anthropic) -> None:
    msg = claude.messages.create(model=MODEL, max_tokens=3, messages=[user("a b c d e f g h")])
    assert msg.stop_reason == "max_tokens" and msg.usage.output_tokens == 3


def test_redacted_thinking_round_trip(claude: anthropic.Anthropic) -> None:
    from fake_anthropic import REDACT

    kw: dict[str, Any] = {"model": MODEL, "max_tokens": 3000, "tools": [TOOL],
                          "thinking": {"type": "enabled", "budget_tokens": 1024}}  # fmt: skip
    ask = [user(f"{REDACT} call tool get_weather")]
    first = claude.messages.create(**kw, messages=ask)
    assert [c.type for c in first.content] == ["redacted_thinking", "tool_use"]
    turn = [c.model_dump(exclude_none=True) for c in first.content]
    result = {"type": "tool_result", "tool_use_id": first.content[1].id, "content": "ok"}
    claude.messages.create(**kw, messages=[*ask, {"role": "assistant", "content": turn},
                                           {"role": "user", "content": [result]}])  # fmt: skip
    turn[0]["data"] = "forged." + turn[0]["data"].split(".")[1]
    with pytest.raises(anthropic.BadRequestError, match="redacted_thinking"):
        claude.messages.create(**kw, messages=[*ask, {"role": "assistant", "content": turn},
                                               {"role": "user", "content": [result]}])  # fmt: skip


# ---------------------------------------------------------------- Anthropic: refusals

SIGNED = "ZmFrZS1zaWc6AAAA"  # looks like the fake's signatures, but it never issued it
USE = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}
RESULT = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "x"}
THINK = {"type": "thinking", "thinking": "hmm", "signature": SIGNED}
ENABLED = {"type": "enabled", "budget_tokens": 1024}


def _turns(*assistant: dict, answer: list[dict] | None = None) -> list[dict]:
    return [user("q"), {"role": "assistant", "content": list(assistant)},
            {"role": "user", "content": answer if answer is not None else [RESULT]}]  # fmt: skip


ANTHROPIC_REFUSALS = [
    ("max_tokens missing", {"max_tokens": None}, "max_tokens: Field required"),
    ("max_tokens zero", {"max_tokens": 0}, "greater than or equal to 1"),
    ("system role", {"messages": [{"role": "system", "content": "s"}, user("q")]}, 'Unexpected role "system"'),
    ("assistant first", {"messages": [{"role": "assistant", "content": "a"}]}, 'first message must use the "user" role'),
    ("two users", {"messages": [user("a"), user("b")]}, "roles must alternate"),
    ("unknown tool_use_id", {"messages": _turns(USE, answer=[{**RESULT, "tool_use_id": "toolu_2"}])},
     "unexpected `tool_use_id` found in `tool_result` blocks: toolu_2"),
    ("tool_use unanswered", {"messages": _turns(USE, {**USE, "id": "toolu_9"})},
     "`tool_use` ids were found without `tool_result` blocks immediately after: toolu_9"),
    ("tool_result not after its tool_use", {"messages": [user("q"), {"role": "assistant", "content": [USE]},
     {"role": "user", "content": [RESULT]}, {"role": "assistant", "content": "ok"},
     {"role": "user", "content": [RESULT]}]}, "unexpected `tool_use_id`"),
    ("tool id pattern", {"messages": _turns({**USE, "id": "toolu.1"}, answer=[{**RESULT, "tool_use_id": "toolu.1"}])},
     "String should match pattern '^[a-zA-Z0-9_-]+$'"),
    ("forged signature", {"thinking": ENABLED, "messages": _turns(THINK, USE)}, "Invalid `signature` in `thinking` block"),
    ("budget too small", {"thinking": {"type": "enabled", "budget_tokens": 1000}}, "greater than or equal to 1024"),
    ("budget not under max_tokens", {"thinking": {"type": "enabled", "budget_tokens": 5000}},
     "`max_tokens` must be greater than `thinking.budget_tokens`"),
    ("thinking missing before tool_use", {"thinking": ENABLED, "messages": _turns(USE)},
     "Expected `thinking` or `redacted_thinking`, but found `tool_use`"),
    ("thinking with forced tool", {"thinking": ENABLED, "tool_choice": {"type": "any"}}, "forces tool use"),
    ("five breakpoints", {"messages": [{"role": "user", "content": [
        {"type": "text", "text": str(i), "cache_control": {"type": "ephemeral"}} for i in range(5)]}]},
     "A maximum of 4 blocks with cache_control"),
    ("1h after 5m", {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "b", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}]}, "ttl='1h'"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [c[1:] for c in ANTHROPIC_REFUSALS],
    ids=[c[0] for c in ANTHROPIC_REFUSALS],
)
def test_messages_refusals(claude: anthropic.Anthropic, change: dict, message: str) -> None:
    body = {"model": MODEL, "max_tokens": 2000, "messages": [user("q")], "tools": [TOOL], **change}
    body = {k: v for k, v in body.items() if v is not None}
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.post("/v1/messages", body=body, cast_to=Message)
    assert info.value.status_code == 400
    assert info.value.body["type"] == "error"
    assert info.value.body["error"]["type"] == "invalid_request_error"
    assert message in info.value.body["error"]["message"]


def test_messages_auth_and_version(fake: FakeUpstream, claude: anthropic.Anthropic) -> None:
    fake.api_keys = {"sk-other"}
    with pytest.raises(anthropic.AuthenticationError) as info:
        claude.messages.create(model=MODEL, max_tokens=5, messages=[user("q")])
    assert info.value.body["error"]["type"] == "authentication_error"
    fake.api_keys = None
    r = httpx.post(fake.base_url + "/messages", headers={"x-api-key": "k"},
                   json={"model": MODEL, "max_tokens": 5, "messages": [user("q")]})  # fmt: skip
    assert r.status_code == 400 and "anthropic-version" in r.json()["error"]["message"]
    ok = httpx.post(fake.base_url + "/messages", headers=ANT_HEADERS,
                    json={"model": MODEL, "max_tokens": 5, "messages": [user("q")]})  # fmt: skip
    assert ok.status_code == 200


def test_messages_behaviours_render_anthropic_errors(
    fake: FakeUpstream, claude: anthropic.Anthropic
) -> None:
    fake.behave(MODEL, status=529, fail_times=1)
    with pytest.raises(anthropic.OverloadedError) as info:
        claude.messages.create(model=MODEL, max_tokens=5, messages=[user("q")])
    assert info.value.body == {"type": "error", "error": {"type": "overloaded_error",
                                                          "message": "fake upstream failure 529"}}  # fmt: skip
    assert claude.messages.create(model=MODEL, max_tokens=5, messages=[user("q")]).content
    fake.behave(MODEL, status=429, retry_after=2, fail_times=1)
    with pytest.raises(anthropic.RateLimitError) as rl:
        claude.messages.create(model=MODEL, max_tokens=5, messages=[user("q")])
    assert rl.value.response.headers["retry-after"] == "2"
    assert rl.value.body["error"]["type"] == "rate_limit_error"
    assert all(line.cut is False for line in fake.lines()) and len(fake.lines()) == 1


# ---------------------------------------------------------------- Anthropic: caching


def _cached_ask(ttl: str = "5m", extra: list[dict] | None = None) -> dict:
    system = [{"type": "text", "text": LONG, "cache_control": {"type": "ephemeral", "ttl": ttl}}]
    return {
        "model": MODEL,
        "max_tokens": 50,
        "system": system,
        "messages": [user("question"), *(extra or [])],
    }


def test_messages_prompt_cache_write_then_read(
    claude: anthropic.Anthropic, fake: FakeUpstream
) -> None:
    first = claude.messages.create(**_cached_ask()).usage
    assert first.cache_creation_input_tokens == tokens(LONG) and first.cache_read_input_tokens == 0
    assert first.cache_creation.ephemeral_5m_input_tokens == tokens(LONG)
    assert first.input_tokens == tokens("question")  # cache excluded, as Anthropic reports
    second = claude.messages.create(**_cached_ask()).usage
    assert (
        second.cache_read_input_tokens == tokens(LONG) and second.cache_creation_input_tokens == 0
    )
    assert second.input_tokens == tokens("question")
    other = claude.messages.create(**{**_cached_ask(), "model": "claude-other"}).usage
    assert other.cache_read_input_tokens == 0  # caches are per model


def test_messages_prompt_cache_ttls_and_extension(
    claude: anthropic.Anthropic, fake: FakeUpstream
) -> None:
    now = [0.0]
    fake.state.cache.clock = lambda: now[0]
    hour = claude.messages.create(**_cached_ask("1h")).usage
    assert hour.cache_creation.ephemeral_1h_input_tokens == tokens(LONG)
    assert hour.cache_creation.ephemeral_5m_input_tokens == 0
    now[0] += TTL_S["5m"] + 1
    assert claude.messages.create(**_cached_ask("1h")).usage.cache_read_input_tokens == tokens(LONG)
    # A second breakpoint later in the conversation: read the cached system, write the rest.
    turn = [{"role": "assistant", "content": "answer"},
            {"role": "user", "content": [{"type": "text", "text": "more " * 40,
                                          "cache_control": {"type": "ephemeral"}}]}]  # fmt: skip
    ext = claude.messages.create(**_cached_ask("1h", turn)).usage
    written = tokens("question") + tokens("answer") + tokens("more " * 40)
    assert ext.cache_read_input_tokens == tokens(LONG)
    assert ext.cache_creation.ephemeral_5m_input_tokens == written and ext.input_tokens == 0
    now[0] += TTL_S["1h"] + 1  # both expired
    gone = claude.messages.create(**_cached_ask("1h")).usage
    assert gone.cache_read_input_tokens == 0 and gone.cache_creation_input_tokens == tokens(LONG)


# ---------------------------------------------------------------- Responses


def test_responses_answer_is_a_valid_response(oai: openai.OpenAI) -> None:
    raw = oai.responses.with_raw_response.create(model=GPT, input="hello there")
    resp = Response.model_validate(raw.http_response.json())
    assert resp.status == "completed" and resp.output_text == f"[{GPT}] echo: hello there"
    assert resp.usage.input_tokens == tokens("hello there")
    assert resp.usage.input_tokens_details.cached_tokens == 0
    assert resp.usage.output_tokens_details.reasoning_tokens == 0


def test_responses_stream_event_sequence(fake: FakeUpstream, oai: openai.OpenAI) -> None:
    body = {"model": GPT, "input": "call tool get_weather", "stream": True, "tools": [FN],
            "reasoning": {"effort": "low", "summary": "auto"}}  # fmt: skip
    events = raw_events(fake, "/responses", body, OAI_HEADERS)
    adapter = TypeAdapter(ResponseStreamEvent)
    for i, (name, data) in enumerate(events):
        assert name == data["type"] and data["sequence_number"] == i
        adapter.validate_python(data)
    names = [n for n, _ in events]
    assert names[:2] == ["response.created", "response.in_progress"]
    assert names[-1] == "response.completed"
    assert names.index("response.reasoning_summary_text.delta") < names.index(
        "response.function_call_arguments.delta"
    )
    final = Response.model_validate(events[-1][1]["response"])
    assert [o.type for o in final.output] == ["reasoning", "function_call"]
    with oai.responses.stream(model=GPT, input="hello stream") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        done = stream.get_final_response()
    assert "".join(deltas) == done.output_text == f"[{GPT}] echo: hello stream"


def test_responses_function_call_round_trips(oai: openai.OpenAI) -> None:
    first = oai.responses.create(model=GPT, input="call tool get_weather", tools=[FN])
    (call,) = first.output
    assert call.type == "function_call" and json.loads(call.arguments) == {"city": "echo"}
    out = {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}
    # Stateless: the call given back in the input.
    items = [
        {"role": "user", "content": "call tool get_weather"},
        call.model_dump(exclude_none=True),
        out,
    ]
    assert oai.responses.create(model=GPT, input=items, tools=[FN]).output[0].type == "message"
    # Stateful: the stored response holds the call.
    nxt = oai.responses.create(model=GPT, previous_response_id=first.id, input=[out], tools=[FN])
    assert nxt.output[0].type == "message"
    forced = oai.responses.create(model=GPT, input="hi", tools=[FN],
                                  tool_choice={"type": "function", "name": "get_weather"})  # fmt: skip
    assert forced.output[0].type == "function_call"


def test_responses_reasoning_items_given_back(oai: openai.OpenAI) -> None:
    reasoning = {"effort": "medium"}
    sealed = oai.responses.create(model=GPT, input="think", reasoning=reasoning, store=False,
                                  include=["reasoning.encrypted_content"])  # fmt: skip
    rs = sealed.output[0]
    assert rs.type == "reasoning" and rs.encrypted_content
    assert sealed.usage.output_tokens_details.reasoning_tokens > 0
    back = [user("think"), rs.model_dump(exclude_none=True), user("again")]
    oai.responses.create(model=GPT, input=back, reasoning=reasoning, store=False)
    stored = oai.responses.create(model=GPT, input="think", reasoning=reasoning)
    assert stored.output[0].encrypted_content is None
    by_id = [
        user("think"),
        {"type": "reasoning", "id": stored.output[0].id, "summary": []},
        user("again"),
    ]
    oai.responses.create(model=GPT, input=by_id, reasoning=reasoning)
    unstored = oai.responses.create(model=GPT, input="think", reasoning=reasoning, store=False)
    lost = [user("think"), {"type": "reasoning", "id": unstored.output[0].id, "summary": []}]
    with pytest.raises(
        openai.BadRequestError, match="Items are not persisted when `store` is set to false"
    ):
        oai.responses.create(model=GPT, input=lost, reasoning=reasoning)


RESPONSES_REFUSALS = [
    ("orphan function_call_output", {"input": [{"type": "function_call_output", "call_id": "call_x", "output": "1"}]},
     "No tool call found for function call output with call_id call_x.", "input"),
    ("unknown previous_response_id", {"previous_response_id": "resp_nope", "input": "x"},
     "Previous response with id 'resp_nope' not found.", "previous_response_id"),
    ("forged encrypted_content", {"input": [{"type": "reasoning", "id": "rs_1", "summary": [],
                                             "encrypted_content": "Zm9v.c2ln"}]},
     "The encrypted content for item rs_1 could not be verified.", None),
    ("json_schema without name", {"input": "x", "text": {"format": {"type": "json_schema", "schema": {}}}},
     "Missing required parameter: 'text.format.name'.", "text.format.name"),
    ("forced unknown tool", {"input": "x", "tool_choice": {"type": "function", "name": "nope"}},
     "Tool choice 'nope' not found in 'tools' parameter.", "tool_choice"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message", "param"),
    [c[1:] for c in RESPONSES_REFUSALS],
    ids=[c[0] for c in RESPONSES_REFUSALS],
)
def test_responses_refusals(
    oai: openai.OpenAI, change: dict, message: str, param: str | None
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        oai.responses.create(model=GPT, **change)
    assert info.value.body["message"] == message and info.value.body["param"] == param
    assert info.value.body["type"] == "invalid_request_error"


def test_responses_json_schema_and_max_output_tokens(oai: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "boolean"}},
              "required": ["a", "b"], "additionalProperties": False}  # fmt: skip
    fmt = {"format": {"type": "json_schema", "name": "out", "schema": schema, "strict": True}}
    assert set(json.loads(oai.responses.create(model=GPT, input="x", text=fmt).output_text)) == {
        "a",
        "b",
    }
    cut = oai.responses.create(model=GPT, input="a b c d e f g h i j", max_output_tokens=3)
    assert cut.status == "incomplete" and cut.incomplete_details.reason == "max_output_tokens"
    assert cut.usage.output_tokens == 3


def test_responses_auth_and_behaviours(fake: FakeUpstream, oai: openai.OpenAI) -> None:
    fake.api_keys = {"sk-other"}
    with pytest.raises(openai.AuthenticationError) as info:
        oai.responses.create(model=GPT, input="x")
    assert info.value.body["code"] == "invalid_api_key"
    fake.api_keys = None
    fake.behave(GPT, status=503, fail_times=1)
    with pytest.raises(openai.InternalServerError) as err:
        oai.responses.create(model=GPT, input="x")
    assert err.value.body == {"message": "fake upstream failure 503", "type": "server_error",
                              "param": None, "code": "503"}  # fmt: skip
    assert oai.responses.create(model=GPT, input="x").status == "completed"


def test_responses_automatic_prefix_cache(oai: openai.OpenAI) -> None:
    first = oai.responses.create(model=GPT, input=LONG)
    details = first.usage.input_tokens_details
    assert first.usage.input_tokens == tokens(LONG)
    assert details.cached_tokens == 0 and details.cache_write_tokens == tokens(LONG)
    again = oai.responses.create(model=GPT, input=LONG).usage.input_tokens_details
    assert again.cached_tokens == tokens(LONG) and again.cache_write_tokens == 0
    longer = [user(LONG), {"role": "assistant", "content": "ok"}, user("next")]
    ext = oai.responses.create(model=GPT, input=longer).usage
    assert ext.input_tokens_details.cached_tokens == tokens(LONG)
    assert ext.input_tokens_details.cache_write_tokens == tokens("ok") + tokens("next")
    assert ext.input_tokens == tokens(LONG) + tokens("ok") + tokens("next")
    short = oai.responses.create(model=GPT, input="short")
    again_short = oai.responses.create(model=GPT, input="short")
    assert short.usage.input_tokens_details.cached_tokens == 0  # under 1024 tokens: never cached
    assert again_short.usage.input_tokens_details.cached_tokens == 0


# ---------------------------------------------------------------- OpenAI chat


CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
CHAT_REFUSALS = [
    ("tool without a call", [user("q"), {"role": "tool", "tool_call_id": "call_1", "content": "r"}],
     "must be a response to a preceeding message with 'tool_calls'", "messages.[1].role"),
    ("tool answering another id", [user("q"), {"role": "assistant", "tool_calls": [CALL]},
                                   {"role": "tool", "tool_call_id": "call_2", "content": "r"}],
     "'tool_call_id' of 'call_2' not found", "messages.[2].tool_call_id"),
    ("a call unanswered", [user("q"), {"role": "assistant", "tool_calls": [CALL, {**CALL, "id": "call_3"}]},
                           {"role": "tool", "tool_call_id": "call_1", "content": "r"}, user("more")],
     "did not have response messages: call_3", "messages.[1].role"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("messages", "message", "param"),
    [c[1:] for c in CHAT_REFUSALS],
    ids=[c[0] for c in CHAT_REFUSALS],
)
def test_chat_refusals(oai: openai.OpenAI, messages: list, message: str, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model="gpt-chat", messages=messages)
    assert message in info.value.body["message"] and info.value.body["param"] == param


def test_chat_tool_round_trip_and_usage_details(oai: openai.OpenAI) -> None:
    msgs = [user("q"), {"role": "assistant", "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": "r"}]  # fmt: skip
    done = oai.chat.completions.create(model="gpt-chat", messages=msgs, tools=[CHAT_FN])
    assert done.choices[0].message.content and done.usage.prompt_tokens_details.cached_tokens == 0
    o1 = oai.chat.completions.create(
        model="up-o1-mini", messages=[user("a b")], max_completion_tokens=10
    )
    assert o1.usage.completion_tokens_details.reasoning_tokens == 10 - 4  # capped by the limit
    assert o1.usage.completion_tokens == 10
    ds = oai.chat.completions.create(model="deepseek-v3", messages=[user(LONG)]).usage.model_dump()
    assert (
        ds["prompt_cache_hit_tokens"] == 0 and ds["prompt_cache_miss_tokens"] == ds["prompt_tokens"]
    )


def test_chat_automatic_prefix_cache(oai: openai.OpenAI) -> None:
    msgs = [{"role": "system", "content": CHAT_LONG}, user("one")]
    first = oai.chat.completions.create(model="gpt-chat", messages=msgs)
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    nxt = [*msgs, {"role": "assistant", "content": "x"}, user("two")]
    stream = oai.chat.completions.create(model="gpt-chat", messages=nxt, stream=True,
                                         stream_options={"include_usage": True})  # fmt: skip
    usage = [c.usage for c in stream if c.usage][0]
    assert usage.prompt_tokens_details.cached_tokens == first.usage.prompt_tokens  # words


# ---------------------------------------------------------------- cut streams and the invoice


def test_cut_streams_bill_what_was_reported(
    fake: FakeUpstream, claude: anthropic.Anthropic, oai: openai.OpenAI
) -> None:
    fake.behave(MODEL, cut_after_events=3)
    with (
        pytest.raises((anthropic.APIConnectionError, httpx.HTTPError)),
        claude.messages.stream(**_cached_ask()) as stream,
    ):
        list(stream)
    (line,) = fake.lines()
    assert line == Line(
        "anthropic-messages", MODEL, tokens("question"), 0, tokens(LONG), 0, 1, cut=True
    )
    assert fake.requests[-1].chunks_sent == 3 and fake.requests[-1].usage is None
    fake.behave(GPT, cut_after_events=4)
    with pytest.raises((openai.APIConnectionError, httpx.HTTPError)):
        list(oai.responses.create(model=GPT, input="x", stream=True))
    assert fake.lines()[-1] == Line("openai-responses", GPT, cut=True)
    fake.behave("gpt-chat", cut_after_events=1)
    with pytest.raises((openai.APIConnectionError, httpx.HTTPError)):
        list(oai.chat.completions.create(model="gpt-chat", messages=[user("x")], stream=True))
    assert fake.lines()[-1] == Line("openai-chat", "gpt-chat", cut=True)
    assert fake.invoice(PRICES) == pytest.approx(line.cost(PRICES), abs=1e-12)


def test_invoice_matches_reported_usage(
    fake: FakeUpstream, claude: anthropic.Anthropic, oai: openai.OpenAI
) -> None:
    expected = 0.0
    p = PRICES[MODEL]
    for ask in (_cached_ask("1h"), _cached_ask("1h")):
        u = claude.messages.create(**ask).usage
        expected += (u.input_tokens * p["input"] + u.cache_read_input_tokens * p["cached_input"]
                     + u.cache_creation.ephemeral_5m_input_tokens * p["cache_write"]
                     + u.cache_creation.ephemeral_1h_input_tokens * p["cache_write_1h"]
                     + u.output_tokens * p["output"]) / 1e6  # fmt: skip
    with claude.messages.stream(**_cached_ask()) as stream:
        u = stream.get_final_message().usage
    expected += (u.input_tokens * p["input"] + u.cache_read_input_tokens * p["cached_input"]
                 + u.cache_creation_input_tokens * p["cache_write"] + u.output_tokens * p["output"]) / 1e6  # fmt: skip
    g = PRICES[GPT]
    for _ in range(2):
        u = oai.responses.create(model=GPT, input=LONG, reasoning={"effort": "low"}).usage
        cached = u.input_tokens_details.cached_tokens
        expected += (
            (u.input_tokens - cached) * g["input"]
            + cached * g["cached_input"]
            + u.output_tokens * g["output"]
        ) / 1e6
    c = PRICES["gpt-chat"]
    for _ in range(2):
        u = oai.chat.completions.create(model="gpt-chat", messages=[user(CHAT_LONG)]).usage
        cached = u.prompt_tokens_details.cached_tokens
        expected += (
            (u.prompt_tokens - cached) * c["input"]
            + cached * c["cached_input"]
            + u.completion_tokens * c["output"]
        ) / 1e6
    lines = fake.lines()
    assert len(lines) == 7 and not any(line.cut for line in lines)
    assert [line.cache_read > 0 for line in lines] == [False, True, True, False, True, False, True]
    assert abs(fake.invoice(PRICES) - expected) < 1e-9
    with pytest.raises(KeyError):
        fake.invoice({})
