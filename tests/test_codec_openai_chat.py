"""The openai-chat codec, table by table, on payloads shaped as OpenAI, DeepSeek, Groq
and vLLM send them; what the codec writes is checked with the openai SDK's own types."""

from __future__ import annotations

import json
from typing import Any

import pytest
from codec_helpers import decode_frames, encode_events
from hypothesis import given
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from router.chat.codecs import frames_text
from router.chat.codecs.openai_chat import OpenAIChatCodec, normalize_usage
from router.chat.codecs.openai_chat.answer import without_marks
from router.chat.model import (
    MAX_MESSAGES,
    Answer,
    ChatRequest,
    Document,
    Finish,
    Image,
    Message,
    OutputFormat,
    Reasoning,
    ReasoningDelta,
    ReasoningHint,
    StreamStart,
    Text,
    TextDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    ToolChoice,
    ToolResult,
    Unsupported,
    Usage,
    UsageEvent,
)
from router.errors import InvalidRequestError, UpstreamError

CODEC = OpenAIChatCodec()
USER = [{"role": "user", "content": "hi"}]


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": USER, **fields}


# ---------------------------------------------------------------- decode: where each field lands

PNG = "iVBORw0KGgo="
FIELDS = [
    ("system", body(messages=[{"role": "system", "content": "be brief"}, *USER]),
     lambda r: r.system, [Text("be brief")]),
    ("developer", body(messages=[{"role": "developer", "content": [{"type": "text", "text": "d"}]}, *USER]),
     lambda r: r.system, [Text("d")]),
    ("user name", body(messages=[{"role": "user", "content": "hi", "name": "ann"}]),
     lambda r: r.messages, [Message("user", [Text("hi")], "ann")]),
    ("image url", body(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}}]}]),
     lambda r: r.messages[0].parts, [Image(url="https://x/y.png", detail="low")]),
    ("image data url", body(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]}]),
     lambda r: r.messages[0].parts, [Image(data=PNG, media_type="image/png")]),
    ("file data", body(messages=[{"role": "user", "content": [{"type": "file", "file": {
        "file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"}}]}]),
     lambda r: r.messages[0].parts,
     [Document(data="JVBE", media_type="application/pdf", filename="a.pdf")]),
    ("file id", body(messages=[{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}]),
     lambda r: r.messages[0].parts, [Document(file_id="file-1")]),
    ("input audio", body(messages=[{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}}]}]),
     lambda r: r.messages[0].parts, [Document(data="UklG", media_type="audio/wav")]),
    ("cache_control on text", body(messages=[{"role": "user", "content": [
        {"type": "text", "text": "long", "cache_control": {"type": "ephemeral"}}]}]),
     lambda r: r.messages[0].parts, [Text("long", {"type": "ephemeral"})]),
    ("assistant tool calls + deepseek reasoning", body(messages=[*USER, {
        "role": "assistant", "content": None, "reasoning_content": "think",
        "tool_calls": [{"id": "call_1", "type": "function",
                        "function": {"name": "f", "arguments": "{\"a\":1}"}}]}]),
     lambda r: r.messages[1].parts,
     [Reasoning(text="think"), ToolCall("call_1", "f", '{"a":1}')]),
    ("assistant refusal", body(messages=[*USER, {"role": "assistant", "content": None, "refusal": "no"}]),
     lambda r: r.messages[1].parts, [Text("no")]),
    ("tool messages merged", body(messages=[*USER,
        {"role": "assistant", "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            {"id": "b", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "a", "content": "1"},
        {"role": "tool", "tool_call_id": "b", "content": [{"type": "text", "text": "2"}]},
        {"role": "user", "content": "go on"}]),
     lambda r: r.messages[2:],
     [Message("user", [ToolResult("a", [Text("1")]), ToolResult("b", [Text("2")])]),
      Message("user", [Text("go on")])]),
    ("tool message without its call", body(messages=[{"role": "tool", "tool_call_id": "zz", "content": "x"}]),
     lambda r: r.messages, [Message("user", [ToolResult("zz", [Text("x")])])]),
    ("tools", body(tools=[{"type": "function", "function": {
        "name": "w", "description": "weather", "parameters": {"type": "object"}, "strict": True}}]),
     lambda r: r.tools, [Tool("w", "weather", {"type": "object"}, True)]),
    ("legacy functions", body(functions=[{"name": "w"}], function_call={"name": "w"}),
     lambda r: (r.tools, r.tool_choice), ([Tool("w")], ToolChoice("tool", "w"))),
    ("legacy function turn", body(messages=[*USER,
        {"role": "assistant", "content": None, "function_call": {"name": "w", "arguments": "{}"}},
        {"role": "function", "name": "w", "content": "sunny"}]),
     lambda r: r.messages[1:],
     [Message("assistant", [ToolCall("call_legacy_1", "w", "{}")]),
      Message("user", [ToolResult("call_legacy_1", [Text("sunny")])])]),
    ("tool_choice required", body(tool_choice="required"), lambda r: r.tool_choice, ToolChoice("required")),
    ("tool_choice function", body(tool_choice={"type": "function", "function": {"name": "f"}}),
     lambda r: r.tool_choice, ToolChoice("tool", "f")),
    ("parallel_tool_calls", body(tool_choice="auto", parallel_tool_calls=False),
     lambda r: r.tool_choice, ToolChoice("auto", parallel=False)),
    ("json_object", body(response_format={"type": "json_object"}), lambda r: r.output, OutputFormat("json_object")),
    ("json_schema", body(response_format={"type": "json_schema", "json_schema": {
        "name": "x", "description": "an x", "schema": {"type": "object"}, "strict": True}}),
     lambda r: r.output, OutputFormat("json_schema", "x", {"type": "object"}, True, "an x")),
    ("reasoning_effort", body(reasoning_effort="low"), lambda r: r.reasoning, ReasoningHint(effort="low")),
    ("reasoning_effort beyond the model", body(reasoning_effort="xhigh"),
     lambda r: (r.reasoning, r.extras), (None, {"reasoning_effort": "xhigh"})),
    ("max_tokens", body(max_tokens=7), lambda r: (r.max_output_tokens, r.extras), (7, {})),
    ("max_completion_tokens wins", body(max_tokens=7, max_completion_tokens=9),
     lambda r: (r.max_output_tokens, r.extras), (9, {"max_completion_tokens": 9})),
    ("sampling", body(temperature=0.2, top_p=0.9, n=2, seed=3, user="u1"),
     lambda r: (r.temperature, r.top_p, r.n, r.seed, r.user), (0.2, 0.9, 2, 3, "u1")),
    ("stop str", body(stop="END"), lambda r: r.stop, ["END"]),
    ("stop list", body(stop=["a", "b"]), lambda r: r.stop, ["a", "b"]),
    ("stream usage", body(stream=True, stream_options={"include_usage": True}),
     lambda r: (r.stream, r.stream_usage, r.extras), (True, True, {})),
    ("router kept, not extras", body(router={"max_cost_usd": 0.1}),
     lambda r: (r.router, r.extras), ({"max_cost_usd": 0.1}, {})),
    ("extras verbatim", body(logprobs=True, top_logprobs=2, logit_bias={"1": -100},
                             presence_penalty=0.5, frequency_penalty=0.1, modalities=["text"],
                             metadata={"k": "v"}, store=False, service_tier="flex",
                             prompt_cache_key="pk", safety_identifier="s", verbosity="low",
                             web_search_options={}, prediction={"type": "content", "content": "x"}),
     lambda r: (r.extras, r.extras_protocol),
     ({"logprobs": True, "top_logprobs": 2, "logit_bias": {"1": -100}, "presence_penalty": 0.5,
       "frequency_penalty": 0.1, "modalities": ["text"], "metadata": {"k": "v"}, "store": False,
       "service_tier": "flex", "prompt_cache_key": "pk", "safety_identifier": "s",
       "verbosity": "low", "web_search_options": {},
       "prediction": {"type": "content", "content": "x"}}, "openai-chat")),
]  # fmt: skip


@pytest.mark.parametrize("case", FIELDS, ids=[c[0] for c in FIELDS])
def test_decode_lands_each_field(case: tuple) -> None:
    _, raw, get, expected = case
    assert get(CODEC.decode_request(raw)) == expected


# ---------------------------------------------------------------- decode: malformed

MALFORMED = [
    ([], None),
    ({"messages": USER}, "model"),
    ({"model": "", "messages": USER}, "model"),
    ({"model": "m"}, "messages"),
    ({"model": "m", "messages": []}, "messages"),
    (
        {"model": "m", "messages": [{"role": "user", "content": "x"}] * (MAX_MESSAGES + 1)},
        "messages",
    ),
    (body(messages=["hi"]), "messages[0]"),
    (body(messages=[*USER, {"role": "robot", "content": "x"}]), "messages[1].role"),
    (body(messages=[*USER, *USER, {"role": "user", "content": 5}]), "messages[2].content"),
    (body(messages=[{"role": "user"}]), "messages[0].content"),
    (
        body(messages=[{"role": "user", "content": [{"type": "video"}]}]),
        "messages[0].content[0].type",
    ),
    (
        body(messages=[{"role": "user", "content": [{"type": "text", "text": 1}]}]),
        "messages[0].content[0].text",
    ),
    (
        body(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]),
        "messages[0].content[0].image_url.url",
    ),
    (
        body(messages=[{"role": "user", "content": [{"type": "file", "file": {}}]}]),
        "messages[0].content[0].file",
    ),
    (body(messages=[{"role": "system", "content": "s"}]), "messages"),
    (body(messages=[{"role": "tool", "content": "x"}]), "messages[0].tool_call_id"),
    (
        body(messages=[{"role": "assistant", "tool_calls": [{"id": "a", "function": {}}]}]),
        "messages[0].tool_calls[0].function.name",
    ),
    (body(messages=[{"role": "user", "content": "x", "name": 3}]), "messages[0].name"),
    (body(tools=[{"type": "web_search"}]), "tools"),
    (
        body(tools=[{"type": "function", "function": {"description": "no name"}}]),
        "tools[0].function.name",
    ),
    (body(tools="f"), "tools"),
    (body(tool_choice="sometimes"), "tool_choice"),
    (body(function_call=3), "function_call"),
    (body(parallel_tool_calls="yes"), "parallel_tool_calls"),
    (body(response_format={"type": "yaml"}), "response_format.type"),
    (body(response_format={"type": "json_schema"}), "response_format.json_schema"),
    (body(reasoning_effort=2), "reasoning_effort"),
    (body(max_tokens=0), "max_tokens"),
    (body(max_tokens="5"), "max_tokens"),
    (body(max_completion_tokens=True), "max_completion_tokens"),
    (body(temperature="hot"), "temperature"),
    (body(top_p=float("nan")), "top_p"),
    (body(stop=[1]), "stop[0]"),
    (body(n=0), "n"),
    (body(seed=1.5), "seed"),
    (body(stream="no"), "stream"),
    (body(stream_options=[]), "stream_options"),
    (body(stream_options={"include_usage": "yes"}), "stream_options.include_usage"),
    (body(user=7), "user"),
    (body(router="fast"), "router"),
]


@pytest.mark.parametrize(("raw", "param"), MALFORMED, ids=[str(m[1]) for m in MALFORMED])
def test_decode_malformed_names_the_field(raw: Any, param: str | None) -> None:
    with pytest.raises(InvalidRequestError) as err:
        CODEC.decode_request(raw)
    assert err.value.param == param
    assert err.value.status == 400


# ---------------------------------------------------------------- request round trips

ROUND_TRIPS = [
    # (client body, body sent to the provider for upstream model "up")
    ("plain", body(messages=[{"role": "system", "content": "s"}, *USER], temperature=0.5),
     {"model": "up", "messages": [{"role": "system", "content": "s"}, *USER], "temperature": 0.5}),
    ("stream without usage asked", body(stream=True, max_tokens=50, stop="x", n=1, seed=4, user="u"),
     {"model": "up", "messages": USER, "max_tokens": 50, "stop": ["x"], "n": 1, "seed": 4,
      "user": "u", "stream": True, "stream_options": {"include_usage": True}}),
    ("openai o-series", body(max_completion_tokens=64, reasoning_effort="high", logprobs=True,
                             stream=True, stream_options={"include_usage": True, "include_obfuscation": False},
                             router={"strategy": "cheapest"}),
     {"model": "up", "messages": USER, "logprobs": True, "reasoning_effort": "high",
      "max_completion_tokens": 64, "stream": True,
      "stream_options": {"include_obfuscation": False, "include_usage": True}}),
    ("tools turn", body(
        messages=[*USER,
                  {"role": "assistant", "content": "let me see", "tool_calls": [
                      {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                  {"role": "tool", "tool_call_id": "c1", "content": "42"},
                  {"role": "user", "content": [{"type": "text", "text": "and"},
                                               {"type": "image_url", "image_url": {"url": "https://i"}}]}],
        tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        tool_choice="auto", parallel_tool_calls=True,
        response_format={"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "object"}, "strict": True}}),
     {"model": "up", "messages": [
         *USER,
         {"role": "assistant", "content": "let me see", "tool_calls": [
             {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
         {"role": "tool", "tool_call_id": "c1", "content": "42"},
         {"role": "user", "content": [{"type": "text", "text": "and"},
                                      {"type": "image_url", "image_url": {"url": "https://i"}}]}],
      "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
      "tool_choice": "auto", "parallel_tool_calls": True,
      "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "object"}, "strict": True}}}),
    ("deepseek history: reasoning not sent back", body(messages=[
        *USER, {"role": "assistant", "content": "4", "reasoning_content": "2+2"}, {"role": "user", "content": "x2?"}]),
     {"model": "up", "messages": [*USER, {"role": "assistant", "content": "4"}, {"role": "user", "content": "x2?"}]}),
    ("legacy functions become tools", body(functions=[{"name": "w", "parameters": {"type": "object"}}],
                                           function_call="auto"),
     {"model": "up", "messages": USER, "tool_choice": "auto",
      "tools": [{"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}]}),
    ("media", body(messages=[{"role": "user", "name": "ann", "content": [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "high"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"}},
        {"type": "input_audio", "input_audio": {"data": "UklG", "format": "mp3"}}]}]),
     {"model": "up", "messages": [{"role": "user", "name": "ann", "content": [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "high"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"}},
        {"type": "input_audio", "input_audio": {"data": "UklG", "format": "mp3"}}]}]}),
]  # fmt: skip


@pytest.mark.parametrize("case", ROUND_TRIPS, ids=[c[0] for c in ROUND_TRIPS])
def test_request_round_trip(case: tuple) -> None:
    _, raw, sent = case
    req = CODEC.decode_request(raw)
    out = CODEC.encode_request(req, "up")
    assert out == sent
    assert "router" not in out
    # what went out means what came in: decoding it again gives the same request
    again = CODEC.decode_request(out)
    if not raw.get("stream_options", {}).get("include_usage"):
        again.stream_usage = False  # usage is always asked of the provider
    reasoning_free = [
        Message(m.role, [p for p in m.parts if not isinstance(p, Reasoning)], m.name)
        for m in req.messages
    ]
    assert (again.messages, again.system, again.tools, again.tool_choice, again.output) == (
        reasoning_free,
        req.system,
        req.tools,
        req.tool_choice,
        req.output,
    )
    assert again.extras == req.extras and again.stream_usage == req.stream_usage


# ---------------------------------------------------------------- encode from another protocol


def claude_like(**kw: Any) -> ChatRequest:
    """A request as the Anthropic codec would hand it over."""
    base: dict[str, Any] = {
        "model": "claude",
        "system": [Text("a", {"type": "ephemeral"}), Text("b")],
        "messages": [
            Message("user", [Text("q")]),
            Message(
                "assistant",
                [
                    Reasoning("hmm", signature="sig", origin="anthropic-messages"),
                    Text("calling"),
                    ToolCall("t1", "f", '{"x":1}'),
                    ToolCall("t2", "g", "{}"),
                ],
            ),
            Message(
                "user",
                [
                    ToolResult("t1", [Text("r1")], is_error=True),
                    ToolResult("t2", [Text("r2a"), Text("r2b")]),
                    Text("more"),
                ],
            ),
        ],
        "extras_protocol": "anthropic-messages",
    }
    return ChatRequest(**{**base, **kw})


ENCODES = [
    ("anthropic turn re-split", claude_like(), {"model": "up", "messages": [
        {"role": "system", "content": "a\n\nb"},
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "calling", "tool_calls": [
            {"id": "t1", "type": "function", "function": {"name": "f", "arguments": '{"x":1}'}},
            {"id": "t2", "type": "function", "function": {"name": "g", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "t1", "content": "r1"},
        {"role": "tool", "tool_call_id": "t2", "content": "r2a\n\nr2b"},
        {"role": "user", "content": "more"}]}),
    ("budget low", claude_like(reasoning=ReasoningHint(budget_tokens=1024)), {"reasoning_effort": "low"}),
    ("budget medium", claude_like(reasoning=ReasoningHint(budget_tokens=8000)), {"reasoning_effort": "medium"}),
    ("budget high", claude_like(reasoning=ReasoningHint(budget_tokens=32000)), {"reasoning_effort": "high"}),
    ("thinking off", claude_like(reasoning=ReasoningHint(enabled=False, budget_tokens=2000)), {}),
    ("max tokens, stream", claude_like(max_output_tokens=100, stream=True, tool_choice=ToolChoice("required", parallel=False),
                                       tools=[Tool("f")], extras={"metadata": {"user_id": "x"}}),
     {"max_tokens": 100, "stream": True, "stream_options": {"include_usage": True}, "tool_choice": "required",
      "parallel_tool_calls": False, "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]}),
    ("responses extras carried", ChatRequest(model="m", messages=[Message("user", [Text("q")])],
                                             extras={"store": False, "prompt_cache_key": "k", "text": {"verbosity": "low"},
                                                     "include": ["reasoning.encrypted_content"]},
                                             extras_protocol="openai-responses",
                                             output=OutputFormat("json_schema", schema={"type": "object"})),
     {"store": False, "prompt_cache_key": "k", "verbosity": "low",
      "response_format": {"type": "json_schema", "json_schema": {"name": "response", "schema": {"type": "object"}}}}),
    ("auto choice without tools left out", ChatRequest(model="m", messages=[Message("user", [Text("q")])],
                                                       tool_choice=ToolChoice("auto")), {}),
    ("empty user message kept", ChatRequest(model="m", messages=[Message("user", [])]),
     {"messages": [{"role": "user", "content": ""}]}),
]  # fmt: skip


@pytest.mark.parametrize("case", ENCODES, ids=[c[0] for c in ENCODES])
def test_encode_request_from_model(case: tuple) -> None:
    _, req, expected = case
    out = CODEC.encode_request(req, "up", default_max_tokens=4096)
    assert {k: out[k] for k in expected if k in out} == expected
    assert not ({"reasoning_effort", "metadata", "max_tokens"} - set(expected)) & set(out)
    assert "router" not in out and "reasoning_content" not in json.dumps(out["messages"])


UNSUPPORTED = [
    ("chat's own extras", ChatRequest(model="m", messages=[], extras={"logprobs": True},
                                      extras_protocol="openai-chat"), []),
    ("top_k", ChatRequest(model="m", messages=[], top_k=5), ["top_k"]),
    ("budget only is a hint", claude_like(reasoning=ReasoningHint(budget_tokens=5000)), []),
    ("cache control is not", claude_like(), []),
    ("url document", ChatRequest(model="m", messages=[Message("user", [Text("q"), Document(url="https://d.pdf")])]),
     ["messages[0].content[1]"]),
    ("image in a tool result", ChatRequest(model="m", messages=[Message("user", [ToolResult("t", [Image(url="u")])])]),
     ["messages[0].content[0]"]),
    ("anthropic extras", claude_like(extras={"metadata": {"user_id": "u"}, "container": "c", "mcp_servers": []}),
     ["container", "mcp_servers"]),
    ("responses extras", ChatRequest(model="m", messages=[], extras_protocol="openai-responses",
                                     extras={"store": True, "include": [], "previous_response_id": "r",
                                             "text": {"verbosity": "high"}, "truncation": "auto"}),
     ["truncation"]),  # previous_response_id: resolved by the router before planning
]  # fmt: skip


@pytest.mark.parametrize("case", UNSUPPORTED, ids=[c[0] for c in UNSUPPORTED])
def test_unsupported(case: tuple) -> None:
    _, req, fields = case
    found = CODEC.unsupported(req)
    assert [u.field for u in found] == fields
    assert all(isinstance(u, Unsupported) and u.protocol == "openai-chat" and u.why for u in found)


# ---------------------------------------------------------------- answers

OPENAI_USAGE = {
    "prompt_tokens": 19,
    "completion_tokens": 10,
    "total_tokens": 29,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 0,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}
ANSWERS = [
    ("openai text", {
        "id": "chatcmpl-B9MBs8", "object": "chat.completion", "created": 1741569952,
        "model": "gpt-4o-2024-08-06", "service_tier": "default", "system_fingerprint": "fp_fc9f1d7035",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!", "refusal": None,
                                             "annotations": []},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": OPENAI_USAGE},
     Answer(id="chatcmpl-B9MBs8", model="gpt-4o-2024-08-06", parts=[Text("Hello!")], created=1741569952,
            usage=Usage(19, 10, cache_read_tokens=0, reasoning_tokens=0),
            extras={"message": {"annotations": []}, "service_tier": "default",
                    "system_fingerprint": "fp_fc9f1d7035"}, extras_protocol="openai-chat")),
    ("openai tool calls", {
        "id": "chatcmpl-tc", "object": "chat.completion", "created": 1, "model": "gpt-4.1",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": None, "refusal": None,
                                             "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "w", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "call_b", "type": "function", "function": {"name": "w", "arguments": "{\"city\":\"Rome\"}"}}]},
                     "logprobs": None, "finish_reason": "tool_calls"}],
        "usage": {**OPENAI_USAGE, "prompt_tokens": 2000, "prompt_tokens_details": {"cached_tokens": 1920}}},
     Answer(id="chatcmpl-tc", model="gpt-4.1", created=1, finish="tool_calls",
            parts=[ToolCall("call_a", "w", '{"city":"Paris"}'), ToolCall("call_b", "w", '{"city":"Rome"}')],
            usage=Usage(2000, 10, cache_read_tokens=1920, reasoning_tokens=0), extras_protocol="openai-chat")),
    ("openai refusal", {
        "id": "r", "object": "chat.completion", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": None,
                                             "refusal": "I can't help with that."},
                     "logprobs": None, "finish_reason": "stop"}]},
     Answer(id="r", model="gpt-4o", created=1, parts=[], refusal="I can't help with that.",
            extras_protocol="openai-chat")),
    ("deepseek reasoner", {
        "id": "930c60df", "object": "chat.completion", "created": 1737020000, "model": "deepseek-reasoner",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "9.11 < 9.8",
                                             "reasoning_content": "Compare the decimals."},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 300, "total_tokens": 420,
                  "prompt_tokens_details": {"cached_tokens": 64},
                  "completion_tokens_details": {"reasoning_tokens": 250},
                  "prompt_cache_hit_tokens": 64, "prompt_cache_miss_tokens": 56},
        "system_fingerprint": "fp_7e73fd9a08"},
     Answer(id="930c60df", model="deepseek-reasoner", created=1737020000,
            parts=[Reasoning("Compare the decimals."), Text("9.11 < 9.8")],
            usage=Usage(120, 300, cache_read_tokens=64, reasoning_tokens=250),
            extras={"system_fingerprint": "fp_7e73fd9a08"}, extras_protocol="openai-chat")),
    ("deepseek resource stop", {
        "id": "d", "object": "chat.completion", "created": 1, "model": "deepseek-chat",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "partial"},
                     "logprobs": None, "finish_reason": "insufficient_system_resource"}],
        "usage": {"prompt_cache_hit_tokens": 10, "prompt_cache_miss_tokens": 5, "completion_tokens": 3}},
     Answer(id="d", model="deepseek-chat", created=1, parts=[Text("partial")], finish="error",
            usage=Usage(15, 3, cache_read_tokens=10), extras_protocol="openai-chat")),
    ("groq", {
        "id": "chatcmpl-g", "object": "chat.completion", "created": 1730000000,
        "model": "llama-3.3-70b-versatile",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": {"queue_time": 0.02, "prompt_tokens": 40, "prompt_time": 0.002, "completion_tokens": 12,
                  "completion_time": 0.01, "total_tokens": 52, "total_time": 0.012},
        "system_fingerprint": "fp_c", "x_groq": {"id": "req_01"}},
     Answer(id="chatcmpl-g", model="llama-3.3-70b-versatile", created=1730000000, parts=[Text("Hi")],
            usage=Usage(40, 12), extras={"system_fingerprint": "fp_c", "x_groq": {"id": "req_01"}},
            extras_protocol="openai-chat")),
    ("vllm n=2 with reasoning", {
        "id": "chatcmpl-v", "object": "chat.completion", "created": 5, "model": "Qwen/Qwen3-8B",
        "choices": [
            {"index": 1, "message": {"role": "assistant", "content": "B", "tool_calls": []},
             "logprobs": None, "finish_reason": "length", "stop_reason": None},
            {"index": 0, "message": {"role": "assistant", "reasoning_content": "r", "content": "A",
                                     "tool_calls": []},
             "logprobs": {"content": []}, "finish_reason": "stop", "stop_reason": None}],
        "usage": {"prompt_tokens": 10, "total_tokens": 30, "completion_tokens": 20,
                  "prompt_tokens_details": None},
        "prompt_logprobs": None},
     Answer(id="chatcmpl-v", model="Qwen/Qwen3-8B", created=5, parts=[Reasoning("r"), Text("A")],
            usage=Usage(10, 20), extras={"logprobs": {"content": []}, "prompt_logprobs": None},
            extras_protocol="openai-chat",
            choices=[Answer(id="chatcmpl-v", model="Qwen/Qwen3-8B", created=5, parts=[Text("B")],
                            finish="length", extras_protocol="openai-chat")])),
    ("legacy function_call", {
        "id": "f", "object": "chat.completion", "created": 1, "model": "gpt-3.5-turbo-0613",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": None,
                                             "function_call": {"name": "w", "arguments": "{}"}},
                     "finish_reason": "function_call"}]},
     Answer(id="f", model="gpt-3.5-turbo-0613", created=1, finish="tool_calls",
            parts=[ToolCall("call_legacy_0", "w", "{}")], extras_protocol="openai-chat")),
]  # fmt: skip


@pytest.mark.parametrize("case", ANSWERS, ids=[c[0] for c in ANSWERS])
def test_answer_decode_and_round_trip(case: tuple) -> None:
    _, raw, expected = case
    answer = CODEC.decode_answer(raw)
    assert answer == expected
    for a in (answer, *answer.choices):
        a.model = "router-name"  # the caller sets the answer's model
    out = CODEC.encode_answer(answer)
    ChatCompletion.model_validate(out)
    assert out["model"] == "router-name" and out["object"] == "chat.completion"
    again = CODEC.decode_answer(out)
    # the encoder states every usage class (0 where the provider said nothing)
    assert (again.usage is None) == (answer.usage is None)
    if answer.usage:
        assert (again.usage.input_tokens, again.usage.output_tokens) == (
            answer.usage.input_tokens,
            answer.usage.output_tokens,
        )
    again.usage = answer.usage
    if answer.finish == "error":
        assert out["choices"][0]["finish_reason"] == "stop"
        again.finish = "error"
    assert again == answer


def test_encode_claude_answer() -> None:
    claude = Answer(
        id="msg_01", model="claude-x", created=7, finish="tool_calls",
        parts=[Reasoning("why", signature="sig", origin="anthropic-messages"), Text("Let me"),
               Text(" check."), ToolCall("toolu_1", "w", '{"c":"P"}')],
        usage=Usage(input_tokens=1000, output_tokens=50, cache_read_tokens=600,
                    cache_write_tokens=300, reasoning_tokens=None),
        extras={"stop_sequence": None}, extras_protocol="anthropic-messages",
    )  # fmt: skip
    out = CODEC.encode_answer(claude)
    ChatCompletion.model_validate(out)
    assert out == {
        "id": "msg_01", "object": "chat.completion", "created": 7, "model": "claude-x",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": None, "message": {
            "role": "assistant", "content": "Let me check.", "refusal": None, "reasoning_content": "why",
            "tool_calls": [{"id": "toolu_1", "type": "function",
                            "function": {"name": "w", "arguments": '{"c":"P"}'}}]}}],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 50, "total_tokens": 1050,
                  "prompt_tokens_details": {"cached_tokens": 600, "cache_write_tokens": 300},
                  "completion_tokens_details": {"reasoning_tokens": 0},
                  "x_router_no_reasoning": True},
    }  # fmt: skip
    # The writes chat has no field for come back out of the router's own names, and the
    # reasoning Claude did not count comes back as not reported (chat clients read 0).
    back = CODEC.decode_answer(out).usage
    assert (back.cache_read_tokens, back.cache_write_tokens, back.uncached_input_tokens) == (
        600, 300, 100,
    )  # fmt: skip
    assert back.reasoning_tokens is None
    assert without_marks(out["usage"])["completion_tokens_details"] == {"reasoning_tokens": 0}
    assert "x_router_no_reasoning" not in without_marks(out["usage"])


@pytest.mark.parametrize(("finish", "refusal", "wire"), [
    ("refusal", "no", "stop"), ("refusal", None, "content_filter"), ("error", None, "stop"),
    ("length", None, "length"), ("content_filter", None, "content_filter"),
])  # fmt: skip
def test_finish_reasons_out(finish: str, refusal: str | None, wire: str) -> None:
    out = CODEC.encode_answer(Answer(id="a", model="m", parts=[], finish=finish, refusal=refusal))  # type: ignore[arg-type]
    assert out["choices"][0]["finish_reason"] == wire
    ChatCompletion.model_validate(out)


@pytest.mark.parametrize("raw", [None, [], {"id": "x"}, {"choices": "no"}])
def test_answer_not_a_completion(raw: Any) -> None:
    with pytest.raises(UpstreamError):
        CODEC.decode_answer(raw)


# ---------------------------------------------------------------- usage

USAGES = [
    (None, None), ("12", None), ({}, None), ({"prompt_tokens": None, "completion_tokens": None}, None),
    ({"prompt_tokens": -3, "completion_tokens": "x"}, None),
    ({"prompt_tokens": 5, "completion_tokens": 2}, Usage(5, 2)),
    ({"prompt_tokens": "5", "completion_tokens": 2.0}, Usage(5, 2, doubtful=True)),
    ({"prompt_tokens": "¹", "completion_tokens": "9" * 5000}, None),
    ({"prompt_tokens": 5.5, "completion_tokens": True, "total_tokens": 9}, None),
    ({"prompt_tokens": -1, "completion_tokens": 4, "total_tokens": 10}, Usage(6, 4, doubtful=True)),
    ({"prompt_tokens": 10, "total_tokens": 25}, Usage(10, 15, doubtful=True)),
    ({"completion_tokens": 7}, Usage(0, 7, doubtful=True)),
    ({"prompt_tokens": 10, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 50}},
     Usage(10, 1, cache_read_tokens=10, doubtful=True)),
    ({"prompt_tokens": 10, "completion_tokens": 1, "completion_tokens_details": {"reasoning_tokens": 9}},
     Usage(10, 1, reasoning_tokens=1, doubtful=True)),
    ({"prompt_tokens": 10, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": -2}},
     Usage(10, 1, doubtful=True)),
    ({"prompt_cache_hit_tokens": 64, "prompt_cache_miss_tokens": 36, "completion_tokens": 3},
     Usage(100, 3, cache_read_tokens=64)),
    ({"prompt_tokens": 100, "completion_tokens": 3, "prompt_cache_hit_tokens": 64}, Usage(100, 3, cache_read_tokens=64)),
    ({"prompt_tokens": 10, "completion_tokens": 1, "prompt_tokens_details": None,
      "completion_tokens_details": "n/a"}, Usage(10, 1)),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "usage"), USAGES, ids=[str(i) for i in range(len(USAGES))])
def test_normalize_usage(raw: Any, usage: Usage | None) -> None:
    assert normalize_usage(raw) == usage


NUMBERISH = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**12), max_value=10**15),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)  # fmt: skip
USAGE_OBJECTS = st.one_of(
    NUMBERISH,
    st.fixed_dictionaries({}, optional={
        "prompt_tokens": NUMBERISH, "completion_tokens": NUMBERISH, "total_tokens": NUMBERISH,
        "prompt_cache_hit_tokens": NUMBERISH, "prompt_cache_miss_tokens": NUMBERISH,
        "prompt_tokens_details": st.one_of(NUMBERISH, st.fixed_dictionaries({"cached_tokens": NUMBERISH})),
        "completion_tokens_details": st.one_of(
            NUMBERISH, st.fixed_dictionaries({"reasoning_tokens": NUMBERISH})),
    }),
)  # fmt: skip


@given(USAGE_OBJECTS)
def test_usage_fuzz_never_raises_and_stays_sane(raw: Any) -> None:
    usage = normalize_usage(raw)
    if usage is not None:
        assert usage.input_tokens >= 0 and usage.output_tokens >= 0
        assert 0 <= (usage.cache_read_tokens or 0) <= usage.input_tokens
        assert 0 <= (usage.reasoning_tokens or 0) <= usage.output_tokens
        assert usage.uncached_input_tokens >= 0
    answer = CODEC.decode_answer({"id": "a", "model": "m", "choices": [], "usage": raw})
    assert answer.usage == usage
    ChatCompletion.model_validate(CODEC.encode_answer(answer))


# ---------------------------------------------------------------- streams


def chunks(head: dict[str, Any], *rows: tuple[Any, ...], usage_null: bool = False) -> list[dict]:
    """Recorded chunks: rows of (index, delta, finish_reason) or ("usage", obj) / ("raw", extra)."""
    out = []
    for row in rows:
        if row[0] == "usage":
            out.append({**head, "choices": [], "usage": row[1]})
            continue
        if row[0] == "raw":
            out.append({**head, **row[1]})
            continue
        index, delta, finish = row
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        out.append({**head, "choices": [choice], **({"usage": None} if usage_null else {})})
    return out


OA = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1741570000,
      "model": "gpt-4o-mini-2024-07-18", "system_fingerprint": "fp_06737a9306"}  # fmt: skip
START = StreamStart("chatcmpl-1", "gpt-4o-mini-2024-07-18", 1741570000)
OA_USAGE = {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}}  # fmt: skip
DS = {"id": "5f8e", "object": "chat.completion.chunk", "created": 1737000000,
      "model": "deepseek-reasoner", "system_fingerprint": "fp_5417b77867_prod0225"}  # fmt: skip


def call(i: int, id: str | None = None, name: str | None = None, args: str | None = "") -> dict:
    fn = {"name": name, "arguments": args} if name else {"arguments": args}
    return (
        {"index": i, "id": id, "type": "function", "function": fn}
        if id
        else {"index": i, "function": fn}
    )


STREAMS = [
    ("openai text with usage", True, chunks(
        OA, (0, {"role": "assistant", "content": "", "refusal": None}, None),
        (0, {"content": "Hel"}, None), (0, {"content": "lo"}, None), (0, {}, "stop"),
        ("usage", OA_USAGE), usage_null=True),
     [START, TextDelta("Hel"), TextDelta("lo"), Finish("stop"),
      UsageEvent(Usage(9, 2, cache_read_tokens=0, reasoning_tokens=0))]),
    ("openai text, no usage asked", False, chunks(
        OA, (0, {"role": "assistant", "content": "", "refusal": None}, None),
        (0, {"content": "Hi"}, None), (0, {}, "length")),
     [START, TextDelta("Hi"), Finish("length")]),
    ("openai parallel tool calls", True, chunks(
        OA, (0, {"role": "assistant", "content": None, "refusal": None}, None),
        (0, {"tool_calls": [call(0, "call_a", "get_weather")]}, None),
        (0, {"tool_calls": [call(0, args='{"ci')]}, None),
        (0, {"tool_calls": [call(0, args='ty": "Paris"}')]}, None),
        (0, {"tool_calls": [call(1, "call_b", "get_weather")]}, None),
        (0, {"tool_calls": [call(1, args='{"city"')]}, None),
        (0, {"tool_calls": [call(1, args=': "Rome"}')]}, None),
        (0, {}, "tool_calls"), ("usage", OA_USAGE), usage_null=True),
     [START, ToolCallStart(0, "call_a", "get_weather"), ToolCallDelta(0, '{"ci'),
      ToolCallDelta(0, 'ty": "Paris"}'), ToolCallStart(1, "call_b", "get_weather"),
      ToolCallDelta(1, '{"city"'), ToolCallDelta(1, ': "Rome"}'), ToolCallEnd(0), ToolCallEnd(1),
      Finish("tool_calls"), UsageEvent(Usage(9, 2, cache_read_tokens=0, reasoning_tokens=0))]),
    ("openai n=2", False, chunks(
        OA, (0, {"role": "assistant", "content": ""}, None), (1, {"role": "assistant", "content": ""}, None),
        (0, {"content": "A"}, None), (1, {"content": "B"}, None), (1, {}, "stop"), (0, {}, "stop")),
     [START, TextDelta("A"), TextDelta("B", index=1), Finish("stop", index=1), Finish("stop")]),
]  # fmt: skip

PROVIDER_ONLY = [
    ("deepseek reasoner", chunks(
        DS, (0, {"role": "assistant", "content": None, "reasoning_content": ""}, None),
        (0, {"content": None, "reasoning_content": "Okay"}, None),
        (0, {"content": None, "reasoning_content": ", so"}, None),
        (0, {"content": "Hi", "reasoning_content": None}, None),
        ("raw", {"choices": [{"index": 0, "delta": {"content": "", "reasoning_content": None},
                              "logprobs": None, "finish_reason": "stop"}],
                 "usage": {"prompt_tokens": 12, "completion_tokens": 40, "total_tokens": 52,
                           "prompt_tokens_details": {"cached_tokens": 0},
                           "completion_tokens_details": {"reasoning_tokens": 30},
                           "prompt_cache_hit_tokens": 0, "prompt_cache_miss_tokens": 12}})),
     [StreamStart("5f8e", "deepseek-reasoner", 1737000000), ReasoningDelta("Okay"), ReasoningDelta(", so"),
      TextDelta("Hi"), Finish("stop"), UsageEvent(Usage(12, 40, cache_read_tokens=0, reasoning_tokens=30))]),
    ("groq x_groq usage", chunks(
        {"id": "chatcmpl-g", "object": "chat.completion.chunk", "created": 3, "model": "llama-3.1-8b-instant",
         "x_groq": {"id": "req_1"}},
        (0, {"role": "assistant", "content": ""}, None), (0, {"content": "yo"}, None),
        ("raw", {"choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}],
                 "x_groq": {"id": "req_1", "usage": {"queue_time": 0.1, "prompt_tokens": 8, "prompt_time": 0.001,
                                                     "completion_tokens": 1, "completion_time": 0.001,
                                                     "total_tokens": 9, "total_time": 0.002}}})),
     [StreamStart("chatcmpl-g", "llama-3.1-8b-instant", 3), TextDelta("yo"), Finish("stop"),
      UsageEvent(Usage(8, 1))]),
    ("vllm hermes: name first, no arguments, then pieces; eos", chunks(
        {"id": "chatcmpl-v", "object": "chat.completion.chunk", "created": 9, "model": "Qwen/Qwen3-8B"},
        (0, {"role": "assistant", "content": ""}, None),
        (0, {"reasoning": "plan"}, None),
        (0, {"tool_calls": [{"id": "chatcmpl-tool-1", "type": "function", "index": 0,
                             "function": {"name": "f"}}]}, None),
        (0, {"tool_calls": [{"index": 0, "function": {"arguments": "{\"q\": "}}]}, None),
        (0, {"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}, None),
        (0, {"content": ""}, "tool_calls")),
     [StreamStart("chatcmpl-v", "Qwen/Qwen3-8B", 9), ReasoningDelta("plan"),
      ToolCallStart(0, "chatcmpl-tool-1", "f"), ToolCallDelta(0, '{"q": '), ToolCallDelta(0, "1}"),
      ToolCallEnd(0), Finish("tool_calls")]),
    ("arguments before the name, calls without index (Gemini-style), legacy function_call", chunks(
        {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m"},
        (0, {"tool_calls": [{"id": "c1", "function": {"arguments": "{}"}}]}, None),
        (0, {"tool_calls": [{"function": {"name": "f"}}]}, None),
        (0, {"tool_calls": [{"id": "c2", "function": {"name": "g", "arguments": "{\"a\":1}"}}]}, None),
        (1, {"function_call": {"name": "h", "arguments": "{"}}, None),
        (1, {"function_call": {"arguments": "}"}}, "function_call"),
        (0, {}, "stop")),
     [StreamStart("x", "m", 1), ToolCallStart(0, "c1", "f"), ToolCallDelta(0, "{}"),
      ToolCallStart(1, "c2", "g"), ToolCallDelta(1, '{"a":1}'),
      ToolCallStart(0, "call_legacy_0", "h", index=1), ToolCallDelta(0, "{", index=1),
      ToolCallDelta(0, "}", index=1), ToolCallEnd(0, index=1), Finish("tool_calls", index=1),
      ToolCallEnd(0), ToolCallEnd(1), Finish("stop")]),
]  # fmt: skip


def decode_all(recorded: list[dict]) -> list[Any]:
    return decode_frames(CODEC, [(None, c) for c in recorded] + [(None, "[DONE]")])


@pytest.mark.parametrize(
    "case",
    STREAMS + [(n, False, r, e) for n, r, e in PROVIDER_ONLY],
    ids=[c[0] for c in STREAMS + PROVIDER_ONLY],
)
def test_stream_decode(case: tuple) -> None:
    _, _, recorded, expected = case
    assert decode_all(recorded) == expected


def shape(chunk: dict[str, Any], model: str) -> dict[str, Any]:
    """A recorded chunk as the router sends it: its model, OpenAI's own fields only, and
    null or empty role-chunk content (OpenAI sends either) written as ""."""
    out = {k: v for k, v in chunk.items() if k in ("id", "object", "created", "choices", "usage")}
    out["model"] = model
    out["choices"] = []
    for c in chunk["choices"]:
        delta = {k: v for k, v in c["delta"].items() if v is not None or k == "content"}
        if "role" in delta:
            delta["content"] = ""
        elif delta.get("content") is None:
            delta.pop("content", None)
        out["choices"].append({**c, "delta": delta})
    if out.get("usage"):
        u = out["usage"]
        out["usage"] = {
            **{k: u[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")},
            "prompt_tokens_details": {"cached_tokens": u["prompt_tokens_details"]["cached_tokens"]},
            "completion_tokens_details": {
                "reasoning_tokens": u["completion_tokens_details"]["reasoning_tokens"]
            },
        }
    return out


def encode_all(req: ChatRequest, events: list[Any], extra: dict | None = None) -> list[Any]:
    start = events[0]
    frames = encode_events(
        CODEC.stream_encoder(req), (start.id, "router-name", start.created), events, extra
    )
    assert all(event is None for event, _ in frames)
    return [data for _, data in frames]


@pytest.mark.parametrize("case", STREAMS, ids=[c[0] for c in STREAMS])
def test_stream_encode_gives_the_recorded_chunks(case: tuple) -> None:
    _, wants_usage, recorded, expected = case
    n = 1 + max(getattr(e, "index", 0) for e in expected)
    req = ChatRequest(model="m", messages=[], stream=True, stream_usage=wants_usage, n=n)
    out = encode_all(req, expected)
    assert out[-1] == "[DONE]"
    assert out[:-1] == [shape(c, "router-name") for c in recorded]
    for c in out[:-1]:
        ChatCompletionChunk.model_validate(c)


@pytest.mark.parametrize("wants_usage", [False, True])
@pytest.mark.parametrize("case", PROVIDER_ONLY, ids=[c[0] for c in PROVIDER_ONLY])
def test_stream_encode_ends_like_the_router(case: tuple, wants_usage: bool) -> None:
    _, recorded, expected = case
    req = ChatRequest(model="m", messages=[], stream=True, stream_usage=wants_usage)
    decision = {"decision_id": "d1", "model": "router-name", "cost_usd": 0.001}
    out = encode_all(req, expected, decision)
    for c in out[:-1]:
        ChatCompletionChunk.model_validate(c)
    assert len({(c["id"], c["object"], c["created"], c["model"]) for c in out[:-1]}) == 1
    head = {"id": expected[0].id, "object": "chat.completion.chunk",
            "created": expected[0].created, "model": "router-name"}  # fmt: skip
    assert out[-2:] == [{**head, "choices": [], "router": decision}, "[DONE]"]
    has_usage = any(isinstance(e, UsageEvent) for e in expected)
    usage_chunks = [c for c in out[:-2] if c.get("usage")]
    assert len(usage_chunks) == (1 if wants_usage and has_usage else 0)
    assert all("usage" not in c for c in out[:-1]) or wants_usage
    if usage_chunks:
        assert usage_chunks[0]["choices"] == [] and out.index(usage_chunks[0]) == len(out) - 3
    text = frames_text([(None, c) for c in out]).decode()
    assert text.startswith("data: {") and text.endswith("data: [DONE]\n\n")


def test_stream_encoder_maps_other_protocols_events() -> None:
    """Anthropic-shaped events: reasoning signatures have no chat field, call indexes
    count content blocks (renumbered), a refusal stop is content_filter."""
    encoder = CODEC.stream_encoder(ChatRequest(model="m", messages=[]))
    out = encoder.start("msg_1", "router-name", 5)
    for event in [
        StreamStart("msg_1", "claude-x", 0), ReasoningDelta("think"), ReasoningDelta(signature="sig"),
        TextDelta("ok"), ToolCallStart(2, "toolu_1", "f"), ToolCallDelta(2, "{}"), ToolCallEnd(2),
        ToolCallDelta(9, "orphan"), Finish("refusal"),
    ]:  # fmt: skip
        out += encoder.feed(event)
    out += encoder.finish()
    deltas = [d["choices"][0]["delta"] for _, d in out[:-1]]
    assert deltas == [
        {"role": "assistant", "content": ""}, {"reasoning_content": "think"}, {"content": "ok"},
        {"tool_calls": [{"index": 0, "id": "toolu_1", "type": "function",
                         "function": {"name": "f", "arguments": ""}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}, {},
    ]  # fmt: skip
    assert out[-2][1]["choices"][0]["finish_reason"] == "content_filter"
    assert out[-1] == (None, "[DONE]")
    with pytest.raises(RuntimeError):
        CODEC.stream_encoder(ChatRequest(model="m", messages=[])).feed(TextDelta("x"))


CLOSES = [
    ("nothing came", [], []),
    ("only a start", [{"id": "a", "model": "m", "created": 1, "choices": []}],
     [StreamStart("a", "m", 1), Finish("stop")]),
    ("cut inside a tool call", [{"id": "a", "model": "m", "choices": [
        {"index": 0, "delta": {"tool_calls": [call(0, "c", "f", '{"x')]}}]}],
     [StreamStart("a", "m", 0), ToolCallStart(0, "c", "f"), ToolCallDelta(0, '{"x'), ToolCallEnd(0),
      Finish("tool_calls")]),
    ("finished stream owes nothing", chunks(OA, (0, {"content": "x"}, "stop")),
     [START, TextDelta("x"), Finish("stop")]),
]  # fmt: skip


@pytest.mark.parametrize("case", CLOSES, ids=[c[0] for c in CLOSES])
def test_stream_close_owes_the_end(case: tuple) -> None:
    _, recorded, expected = case
    assert decode_all(recorded) == expected


def test_stream_error_chunk_raises() -> None:
    decoder = CODEC.stream_decoder()
    decoder.feed(None, {"id": "a", "model": "m", "choices": []})
    with pytest.raises(UpstreamError) as err:
        decoder.feed(None, {"error": {"message": "overloaded", "code": 502}})
    assert err.value.code == "stream_error"


def test_codec_surface() -> None:
    assert CODEC.name == "openai-chat"
    req = CODEC.decode_request(body(stream=True))
    assert CODEC.stream_encoder(req) is not CODEC.stream_encoder(req)
    assert CODEC.stream_decoder() is not CODEC.stream_decoder()
