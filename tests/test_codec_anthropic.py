"""The anthropic-messages codec against recorded-shape Anthropic payloads.

Tables of literal JSON as Claude Code sends it and as the API answers and streams it;
what the encoders produce is checked against the ``anthropic`` SDK's own types (and its
own stream accumulator) when the SDK is installed.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from codec_helpers import decode_frames, encode_events
from hypothesis import given, settings
from hypothesis import strategies as st

from router.chat.codecs import frames_text
from router.chat.codecs.anthropic import (
    AnthropicMessagesCodec,
    UpstreamStreamError,
    normalize_usage,
    plan_thinking,
    safe_tool_id,
)
from router.chat.model import (
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
    Usage,
    UsageEvent,
)
from router.errors import InvalidRequestError, UpstreamError

codec = AnthropicMessagesCodec()
A = "anthropic-messages"
SIG = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"

# ---------------------------------------------------------------- recorded shapes

# A Claude Code turn: cached system blocks and tools, a server tool, a tool loop with
# thinking, the session in metadata.user_id, and fields the model has no slot for.
CLAUDE_CODE_REQUEST: dict[str, Any] = {
    "model": "claude-sonnet-4-5-20250929",
    "max_tokens": 32000,
    "stream": True,
    "system": [
        {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."},
        {
            "type": "text",
            "text": "Working directory: /repo\nIs a git repository: true",
            "cache_control": {"type": "ephemeral"},
        },
    ],
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "<system-reminder>todo list is empty</system-reminder>"},
                {"type": "text", "text": "run the tests"},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "I should run pytest.", "signature": SIG},
                {"type": "text", "text": "Running the tests."},
                {
                    "type": "tool_use",
                    "id": "toolu_01A09q90qw90lq917835lq9",
                    "name": "Bash",
                    "input": {"command": "pytest -q", "description": "Run tests"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_01A09q90qw90lq917835lq9",
                    "content": [{"type": "text", "text": "3 passed"}],
                    "cache_control": {"type": "ephemeral"},
                }
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4a"},
                {"type": "text", "text": "All 3 tests pass."},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
                },
                {
                    "type": "document",
                    "source": {"type": "url", "url": "https://example.com/spec.pdf"},
                    "title": "spec",
                },
                {"type": "text", "text": "now this", "cache_control": {"type": "ephemeral"}},
            ],
        },
    ],
    "tools": [
        {
            "name": "Bash",
            "description": "Executes a given bash command",
            "input_schema": {
                "type": "object",
                "properties": {"command": {"type": "string"}, "description": {"type": "string"}},
                "required": ["command"],
                "additionalProperties": False,
                "$schema": "http://json-schema.org/draft-07/schema#",
            },
        },
        {
            "name": "Read",
            "description": "Reads a file",
            "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}},
            "cache_control": {"type": "ephemeral"},
        },
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
    ],
    "tool_choice": {"type": "auto"},
    "thinking": {"type": "enabled", "budget_tokens": 31999},
    "metadata": {"user_id": "user_abc_account__session_7f3e"},
    "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
    "service_tier": "auto",
}

# A whole answer with the 5m/1h split of cache writes.
ANSWER_SPLIT: dict[str, Any] = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [
        {"type": "thinking", "thinking": "Check the weather.", "signature": SIG},
        {"type": "text", "text": "Let me look that up."},
        {
            "type": "tool_use",
            "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
            "name": "get_weather",
            "input": {"location": "San Francisco, CA", "unit": "celsius"},
        },
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 100,
        "cache_creation_input_tokens": 200,
        "cache_read_input_tokens": 1000,
        "cache_creation": {"ephemeral_5m_input_tokens": 150, "ephemeral_1h_input_tokens": 50},
        "output_tokens": 73,
        "service_tier": "standard",
    },
}

# An older-shape answer: cache writes as one total, no split object.
ANSWER_NO_SPLIT: dict[str, Any] = {
    "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
    "type": "message",
    "role": "assistant",
    "model": "claude-3-5-haiku-20241022",
    "content": [{"type": "text", "text": "Hello!"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 100,
        "cache_creation_input_tokens": 200,
        "cache_read_input_tokens": 1000,
        "output_tokens": 5,
    },
}

# An answer with server-tool blocks and citations, which the model has no part for.
ANSWER_SERVER_TOOL: dict[str, Any] = {
    "id": "msg_01WebSearch",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [
        {
            "type": "server_tool_use",
            "id": "srvtoolu_01",
            "name": "web_search",
            "input": {"query": "weather sf"},
        },
        {
            "type": "web_search_tool_result",
            "tool_use_id": "srvtoolu_01",
            "content": [
                {
                    "type": "web_search_result",
                    "url": "https://weather.example",
                    "title": "SF weather",
                    "encrypted_content": "Eo8BCioIAhgB",
                    "page_age": None,
                }
            ],
        },
        {"type": "text", "text": "It is sunny.", "citations": None},
    ],
    "stop_reason": "pause_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 10,
        "output_tokens": 20,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
        "server_tool_use": {"web_search_requests": 1},
    },
}

# A recorded stream: thinking with signature_delta, text, tool_use input_json_delta.
STREAM: list[tuple[str, dict[str, Any]]] = [
    (
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": "msg_01Stream",
                "type": "message",
                "role": "assistant",
                "model": "claude-sonnet-4-5-20250929",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": 12,
                    "cache_creation_input_tokens": 200,
                    "cache_read_input_tokens": 1000,
                    "cache_creation": {
                        "ephemeral_5m_input_tokens": 200,
                        "ephemeral_1h_input_tokens": 0,
                    },
                    "output_tokens": 1,
                    "service_tier": "standard",
                },
            },
        },
    ),
    (
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""},
        },
    ),
    ("ping", {"type": "ping"}),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "The user wants"},
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "thinking_delta", "thinking": " the weather."},
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "signature_delta", "signature": SIG},
        },
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    (
        "content_block_start",
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "text_delta", "text": "I'll check"},
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "text_delta", "text": " the weather."},
        },
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    (
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 2,
            "content_block": {
                "type": "tool_use",
                "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                "name": "get_weather",
                "input": {},
            },
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 2,
            "delta": {"type": "input_json_delta", "partial_json": ""},
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 2,
            "delta": {"type": "input_json_delta", "partial_json": '{"location": "San Fra'},
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 2,
            "delta": {"type": "input_json_delta", "partial_json": 'ncisco, CA"}'},
        },
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 2}),
    (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 89},
        },
    ),
    ("message_stop", {"type": "message_stop"}),
]

STREAM_USAGE_START = Usage(
    1212, 1, cache_read_tokens=1000, cache_write_tokens=200, cache_write_1h_tokens=0
)
STREAM_USAGE_FINAL = Usage(
    1212, 89, cache_read_tokens=1000, cache_write_tokens=200, cache_write_1h_tokens=0
)
STREAM_EVENTS = [
    StreamStart(id="msg_01Stream", model="claude-sonnet-4-5-20250929", usage=STREAM_USAGE_START),
    ReasoningDelta(text="The user wants"),
    ReasoningDelta(text=" the weather."),
    ReasoningDelta(signature=SIG),
    TextDelta("I'll check"),
    TextDelta(" the weather."),
    ToolCallStart(0, "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather"),
    ToolCallDelta(0, '{"location": "San Fra'),
    ToolCallDelta(0, 'ncisco, CA"}'),
    ToolCallEnd(0),
    Finish("tool_calls"),
    UsageEvent(STREAM_USAGE_FINAL),
]


def req(messages: list[Message], **kw: Any) -> ChatRequest:
    """A request as another protocol's codec would decode it."""
    kw.setdefault("extras_protocol", "openai-chat")
    return ChatRequest(model="gpt-4o", messages=messages, **kw)


def user(*parts: Any) -> Message:
    return Message("user", list(parts))


def assistant(*parts: Any) -> Message:
    return Message("assistant", list(parts))


# ---------------------------------------------------------------- requests: decode


def test_decode_claude_code_request() -> None:
    r = codec.decode_request(copy.deepcopy(CLAUDE_CODE_REQUEST))
    assert (r.model, r.max_output_tokens, r.stream) == ("claude-sonnet-4-5-20250929", 32000, True)
    assert r.user == "user_abc_account__session_7f3e"
    assert [t.cache_control for t in r.system] == [None, {"type": "ephemeral"}]
    assert [t.name for t in r.tools] == ["Bash", "Read"]
    assert r.tools[1].cache_control == {"type": "ephemeral"}
    assert r.extras == {
        "server_tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}],
        "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
        "service_tier": "auto",
    }
    assert r.extras_protocol == A
    assert r.tool_choice == ToolChoice("auto")
    assert r.reasoning == ReasoningHint(budget_tokens=31999)
    turn = r.messages[1].parts
    assert turn[0] == Reasoning(text="I should run pytest.", signature=SIG, origin=A)
    assert turn[2] == ToolCall(
        "toolu_01A09q90qw90lq917835lq9",
        "Bash",
        '{"command":"pytest -q","description":"Run tests"}',
    )
    result = r.messages[2].parts[0]
    assert result == ToolResult(
        "toolu_01A09q90qw90lq917835lq9", [Text("3 passed")], cache_control={"type": "ephemeral"}
    )
    assert r.messages[3].parts[0] == Reasoning(
        redacted=True, encrypted="EmwKAhgBEgy3va3pzix/LafPsn4a", origin=A
    )
    image, document, _ = r.messages[4].parts
    assert image == Image(data="iVBORw0KGgo=", media_type="image/png")
    assert document == Document(url="https://example.com/spec.pdf", title="spec")


def test_request_round_trip_is_identity_for_anthropic() -> None:
    """decode → encode for an Anthropic upstream gives back what Claude Code sent."""
    body = copy.deepcopy(CLAUDE_CODE_REQUEST)
    encoded = codec.encode_request(codec.decode_request(body), "claude-sonnet-4-5-20250929")
    assert encoded == CLAUDE_CODE_REQUEST
    assert body == CLAUDE_CODE_REQUEST  # the decoder did not mutate its input


DECODE_CASES = [
    ("string content", {"content": "hi"}, [Text("hi")]),
    ("empty string content", {"content": ""}, []),
    (
        "tool_result string content, is_error",
        {
            "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "boom", "is_error": True}
            ]
        },
        [ToolResult("t1", [Text("boom")], is_error=True)],
    ),
    (
        "tool_result without content",
        {"content": [{"type": "tool_result", "tool_use_id": "t1"}]},
        [ToolResult("t1", [])],
    ),
    (
        "image by url",
        {"content": [{"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]},
        [Image(url="https://x/y.png")],
    ),
    (
        "pdf by base64",
        {
            "content": [
                {
                    "type": "document",
                    "source": {
                        "type": "base64",
                        "media_type": "application/pdf",
                        "data": "JVBERi0x",
                    },
                }
            ]
        },
        [Document(data="JVBERi0x", media_type="application/pdf")],
    ),
    (
        "plain-text document becomes base64",
        {
            "content": [
                {
                    "type": "document",
                    "source": {"type": "text", "media_type": "text/plain", "data": "hello"},
                }
            ]
        },
        [Document(data="aGVsbG8=", media_type="text/plain")],
    ),
]


@pytest.mark.parametrize("name,message,parts", DECODE_CASES, ids=[c[0] for c in DECODE_CASES])
def test_decode_user_content(name: str, message: dict[str, Any], parts: list[Any]) -> None:
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", **message}]}
    assert codec.decode_request(body).messages[0].parts == parts


CONTROL_CASES = [
    ({"tool_choice": {"type": "any"}}, "tool_choice", ToolChoice("required")),
    (
        {"tool_choice": {"type": "tool", "name": "Bash", "disable_parallel_tool_use": True}},
        "tool_choice",
        ToolChoice("tool", "Bash", parallel=False),
    ),
    ({"tool_choice": {"type": "none"}}, "tool_choice", ToolChoice("none")),
    ({"thinking": {"type": "disabled"}}, "reasoning", ReasoningHint(enabled=False)),
    ({"thinking": {"type": "adaptive"}}, "reasoning", ReasoningHint()),
    ({"output_config": {"effort": "low"}}, "reasoning", ReasoningHint(effort="low")),
    (
        {"output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}},
        "output",
        OutputFormat("json_schema", schema={"type": "object"}, strict=True),
    ),
    ({"stop_sequences": ["\n\nHuman:"]}, "stop", ["\n\nHuman:"]),
    ({"temperature": 0, "top_p": 0.9, "top_k": 5}, "top_k", 5),
    ({"temperature": 0}, "temperature", 0.0),
    ({"metadata": {"user_id": None}}, "user", None),
    ({"router": {"max_cost_usd": 0.01}}, "router", {"max_cost_usd": 0.01}),
]


@pytest.mark.parametrize("fields,attr,value", CONTROL_CASES)
def test_decode_controls(fields: dict[str, Any], attr: str, value: Any) -> None:
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], **fields}
    r = codec.decode_request(body)
    assert getattr(r, attr) == value
    assert "router" not in r.extras


MALFORMED = [
    ({"max_tokens": None}, "max_tokens"),
    ({"max_tokens": "10"}, "max_tokens"),
    ({"max_tokens": True}, "max_tokens"),
    ({"model": ""}, "model"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0.role"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
    ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages.0.content.0.text"),
    (
        {"messages": [{"role": "user", "content": [{"type": "tool_result", "content": "x"}]}]},
        "messages.0.content.0.tool_use_id",
    ),
    (
        {"messages": [{"role": "user", "content": [{"type": "tool_use", "id": "a", "name": "b"}]}]},
        "messages.0.content.0.type",
    ),
    (
        {
            "messages": [
                {"role": "user", "content": "q"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "a", "name": "b", "input": "{}"}],
                },
            ]
        },
        "messages.1.content.0.input",
    ),
    (
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": [{"type": "server_tool_use", "id": "s"}]},
            ]
        },
        "messages.1.content.0.type",
    ),
    (
        {"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "x"}}]}]},
        "messages.0.content.0.source.type",
    ),
    (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image", "source": {"type": "base64", "data": "x"}}],
                }
            ]
        },
        "messages.0.content.0.source.media_type",
    ),
    (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "document",
                            "source": {"type": "url", "url": "u"},
                            "citations": {"enabled": True},
                        }
                    ],
                }
            ]
        },
        "messages.0.content.0.citations",
    ),
    (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "t", "is_error": "yes"}],
                }
            ]
        },
        "messages.0.content.0.is_error",
    ),
    ({"system": 5}, "system"),
    ({"system": [{"type": "image"}]}, "system.0.type"),
    ({"system": [{"type": "text", "text": "x", "cache_control": "yes"}]}, "system.0.cache_control"),
    ({"tools": {}}, "tools"),
    ({"tools": [{"name": "f"}]}, "tools.0.input_schema"),
    ({"tools": [{"input_schema": {}}]}, "tools.0.name"),
    ({"tool_choice": {"type": "required"}}, "tool_choice.type"),
    ({"tool_choice": {"type": "tool"}}, "tool_choice.name"),
    ({"thinking": {"type": "enabled"}}, "thinking.budget_tokens"),
    ({"thinking": []}, "thinking"),
    ({"stop_sequences": "END"}, "stop_sequences"),
    ({"stop_sequences": ["a", 1]}, "stop_sequences.1"),
    ({"temperature": "hot"}, "temperature"),
    ({"top_k": -1}, "top_k"),
    ({"stream": "yes"}, "stream"),
    ({"metadata": {"user_id": 5}}, "metadata.user_id"),
    ({"output_config": {"format": {"type": "json_object"}}}, "output_config.format.type"),
    ({"router": "cheap"}, "router"),
]


@pytest.mark.parametrize("fields,param", MALFORMED, ids=[p for _, p in MALFORMED])
def test_malformed_request_names_the_field(fields: dict[str, Any], param: str) -> None:
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    body.update(fields)
    body = {k: v for k, v in body.items() if v is not None or k != "max_tokens"}
    with pytest.raises(InvalidRequestError) as info:
        codec.decode_request(body)
    assert info.value.param == param
    assert info.value.status == 400


# ---------------------------------------------------------------- requests: encode


def _blocks(*texts: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": t} for t in texts]


ENCODE_MESSAGES = [
    (
        "consecutive same-role turns merge",
        [user(Text("a")), user(Text("b")), assistant(Text("c")), assistant(Text("d"))],
        [
            {"role": "user", "content": _blocks("a", "b")},
            {"role": "assistant", "content": _blocks("c", "d")},
        ],
    ),
    (
        "an opening assistant turn gets a user turn first",
        [assistant(Text("hello")), user(Text("hi"))],
        [
            {"role": "user", "content": _blocks(".")},
            {"role": "assistant", "content": _blocks("hello")},
            {"role": "user", "content": _blocks("hi")},
        ],
    ),
    (
        "tool results first in the user turn after the calls",
        [
            user(Text("weather?")),
            assistant(ToolCall("call_1", "w", '{"city":"SF"}'), ToolCall("call_2", "w", "")),
            user(ToolResult("call_1", [Text("sunny")])),
            user(Text("also this")),
            user(ToolResult("call_2", [], is_error=True)),
        ],
        [
            {"role": "user", "content": _blocks("weather?")},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "call_1", "name": "w", "input": {"city": "SF"}},
                    {"type": "tool_use", "id": "call_2", "name": "w", "input": {}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": _blocks("sunny")},
                    {"type": "tool_result", "tool_use_id": "call_2", "is_error": True},
                    {"type": "text", "text": "also this"},
                ],
            },
        ],
    ),
    (
        "tool ids outside [a-zA-Z0-9_-] are mapped alike in call and result",
        [
            user(Text("q")),
            assistant(ToolCall("functions.get:0", "get", "not json")),
            user(ToolResult("functions.get:0", [Text("r")])),
        ],
        [
            {"role": "user", "content": _blocks("q")},
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": safe_tool_id("functions.get:0"),
                        "name": "get",
                        "input": {},
                    }
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": safe_tool_id("functions.get:0"),
                        "content": _blocks("r"),
                    }
                ],
            },
        ],
    ),
    (
        "reasoning kept only when Anthropic made it and it can be verified",
        [
            user(Text("q")),
            assistant(
                Reasoning(text="mine", signature=SIG, origin=A),
                Reasoning(redacted=True, encrypted="Em0=", origin=A),
                Reasoning(text="unsigned", origin=A),
                Reasoning(text="gpt", encrypted="gAAAA", origin="openai-responses", id="rs_1"),
                Reasoning(text="unknown origin", signature="x"),
                Text("answer"),
            ),
        ],
        [
            {"role": "user", "content": _blocks("q")},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "mine", "signature": SIG},
                    {"type": "redacted_thinking", "data": "Em0="},
                    {"type": "text", "text": "answer"},
                ],
            },
        ],
    ),
    (
        "empty texts and turns left with nothing are left out, then turns merge",
        [
            user(Text("a")),
            assistant(Text(""), Reasoning(text="r", origin="openai-responses")),
            user(Text("b")),
        ],
        [{"role": "user", "content": _blocks("a", "b")}],
    ),
    ("no messages at all", [], [{"role": "user", "content": _blocks(".")}]),
    (
        "images and documents, cache_control kept",
        [
            user(
                Image(url="https://x/y.png", detail="high"),
                Image(data="/9j/4AAQ", cache_control={"type": "ephemeral", "ttl": "1h"}),
                Document(data="aGVsbG8=", media_type="text/plain", title="t"),
                Document(data="JVBERi0x", filename="a.pdf"),
            )
        ],
        [
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
                    {
                        "type": "image",
                        "source": {
                            "type": "base64",
                            "media_type": "image/jpeg",
                            "data": "/9j/4AAQ",
                        },
                        "cache_control": {"type": "ephemeral", "ttl": "1h"},
                    },
                    {
                        "type": "document",
                        "source": {"type": "text", "media_type": "text/plain", "data": "hello"},
                        "title": "t",
                    },
                    {
                        "type": "document",
                        "source": {
                            "type": "base64",
                            "media_type": "application/pdf",
                            "data": "JVBERi0x",
                        },
                    },
                ],
            }
        ],
    ),
]


@pytest.mark.parametrize(
    "name,messages,expected", ENCODE_MESSAGES, ids=[c[0] for c in ENCODE_MESSAGES]
)
def test_encode_messages(
    name: str, messages: list[Message], expected: list[dict[str, Any]]
) -> None:
    body = codec.encode_request(req(messages, max_output_tokens=100), "claude-x")
    assert body["messages"] == expected
    roles = [m["role"] for m in body["messages"]]
    assert roles[0] == "user" and all(a != b for a, b in zip(roles, roles[1:], strict=False))


def test_encode_request_fields_from_another_protocol() -> None:
    r = req(
        [user(Text("hi"))],
        system=[Text("be brief"), Text("")],
        tools=[
            Tool("f", "does f", {"properties": {"x": {"type": "string"}}}, strict=True),
            Tool("g"),
        ],
        tool_choice=ToolChoice("required", parallel=False),
        output=OutputFormat("json_schema", "out", {"type": "object"}),
        temperature=0.2,
        top_p=0.5,
        stop=["END"],
        user="u-1",
        stream=True,
        stream_usage=True,
        extras={"store": False, "prompt_cache_key": "k"},
    )
    assert codec.unsupported(r) == []
    assert codec.encode_request(r, "claude-haiku-4-5", default_max_tokens=8192) == {
        "model": "claude-haiku-4-5",
        "max_tokens": 8192,
        "system": [{"type": "text", "text": "be brief"}],
        "messages": [{"role": "user", "content": _blocks("hi")}],
        "tools": [
            {
                "name": "f",
                "description": "does f",
                "input_schema": {"type": "object", "properties": {"x": {"type": "string"}}},
                "strict": True,
            },
            {"name": "g", "input_schema": {"type": "object"}},
        ],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "stop_sequences": ["END"],
        "temperature": 0.2,
        "top_p": 0.5,
        "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}},
        "metadata": {"user_id": "u-1"},
        "stream": True,
    }


def test_max_tokens_is_required() -> None:
    r = req([user(Text("hi"))])
    with pytest.raises(ValueError):
        codec.encode_request(r, "claude-x")
    assert codec.encode_request(r, "claude-x", default_max_tokens=64)["max_tokens"] == 64
    r.max_output_tokens = 10
    assert codec.encode_request(r, "claude-x", default_max_tokens=64)["max_tokens"] == 10


def test_tool_choice_without_tools_is_left_out() -> None:
    body = codec.encode_request(
        req([user(Text("x"))], tool_choice=ToolChoice("none")), "c", default_max_tokens=5
    )
    assert "tool_choice" not in body and "tools" not in body


def test_extras_reach_only_an_anthropic_upstream() -> None:
    foreign = req([user(Text("x"))], extras={"service_tier": "flex"}, max_output_tokens=5)
    assert "service_tier" not in codec.encode_request(foreign, "c")
    native = req(
        [user(Text("x"))],
        extras={"service_tier": "auto", "metadata": {"tag": "t"}},
        extras_protocol=A,
        user="u",
        max_output_tokens=5,
    )
    body = codec.encode_request(native, "c")
    assert body["service_tier"] == "auto"
    assert body["metadata"] == {"tag": "t", "user_id": "u"}


def enabled(budget: int) -> dict[str, Any]:
    return {"type": "enabled", "budget_tokens": budget}


THINKING_CASES = [
    ("budget kept", ReasoningHint(budget_tokens=2048), {}, 8000, enabled(2048), None),
    ("effort low", ReasoningHint(effort="low"), {}, 8000, enabled(1024), "x"),
    ("effort medium", ReasoningHint(effort="medium"), {}, 8000, enabled(4096), "x"),
    ("effort high", ReasoningHint(effort="high"), {}, 32000, enabled(16384), "x"),
    ("minimal", ReasoningHint(effort="minimal"), {}, 8000, enabled(1024), "x"),
    ("below max_tokens", ReasoningHint(effort="high"), {}, 4000, enabled(3999), "x"),
    ("raised to 1024", ReasoningHint(budget_tokens=100), {}, 8000, enabled(1024), "x"),
    ("no room", ReasoningHint(effort="low"), {}, 1024, None, "x"),
    ("disabled", ReasoningHint(enabled=False), {}, 8000, {"type": "disabled"}, None),
    ("temperature", ReasoningHint(effort="low"), {"temperature": 0.3}, 8000, None, "x"),
    (
        "temperature 1 is fine",
        ReasoningHint(effort="low"),
        {"temperature": 1.0},
        8000,
        enabled(1024),
        "x",
    ),
    ("top_k", ReasoningHint(effort="low"), {"top_k": 5}, 8000, None, "x"),
    ("low top_p", ReasoningHint(effort="low"), {"top_p": 0.5}, 8000, None, "x"),
    (
        "forced tool",
        ReasoningHint(effort="low"),
        {"tool_choice": ToolChoice("tool", "f")},
        8000,
        None,
        "x",
    ),
    ("no magnitude", ReasoningHint(summary="auto"), {}, 8000, None, "x"),
    ("no hint", None, {}, 8000, None, None),
]


@pytest.mark.parametrize(
    "name,hint,fields,max_tokens,thinking,why", THINKING_CASES, ids=[c[0] for c in THINKING_CASES]
)
def test_thinking_from_the_hint(
    name: str, hint: Any, fields: dict[str, Any], max_tokens: int, thinking: Any, why: Any
) -> None:
    r = req([user(Text("q"))], reasoning=hint, max_output_tokens=max_tokens, **fields)
    body = codec.encode_request(r, "claude-x")
    assert body.get("thinking") == thinking
    got_thinking, got_why = plan_thinking(r, max_tokens, body["messages"])
    assert got_thinking == thinking
    assert (got_why is None) == (why is None)
    if thinking is None and "temperature" in fields:
        assert body["temperature"] == fields["temperature"]  # the hint yields, not the field


def test_thinking_left_out_in_a_foreign_tool_loop() -> None:
    """A tool loop begun by another provider has no thinking block to lead with."""
    messages = [
        user(Text("q")),
        assistant(ToolCall("call_1", "f", "{}")),
        user(ToolResult("call_1", [Text("r")])),
    ]
    r = req(messages, reasoning=ReasoningHint(effort="high"), max_output_tokens=32000)
    assert "thinking" not in codec.encode_request(r, "c")
    messages[1].parts.insert(0, Reasoning(text="t", signature=SIG, origin=A))
    assert codec.encode_request(r, "c")["thinking"] == {"type": "enabled", "budget_tokens": 16384}


@pytest.mark.parametrize(
    "fields",
    [
        {"thinking": {"type": "enabled", "budget_tokens": 64000}, "max_tokens": 32000},
        {"thinking": {"type": "enabled", "budget_tokens": 2000}, "temperature": 0.5},
        {"thinking": {"type": "enabled", "budget_tokens": 500}},
    ],
)
def test_native_thinking_goes_as_sent(fields: dict[str, Any]) -> None:
    """An Anthropic client's own thinking is not second-guessed (interleaved thinking
    allows a budget over max_tokens; a real conflict is the provider's 400 to give)."""
    body = {"model": "m", "max_tokens": 4000, "messages": [{"role": "user", "content": "x"}]}
    body.update(fields)
    encoded = codec.encode_request(codec.decode_request(copy.deepcopy(body)), "m")
    assert encoded["thinking"] == fields["thinking"]


def test_native_thinking_left_out_after_a_turn_another_provider_served() -> None:
    """Claude Code's history after GPT served the tool call: its thinking block came
    with an empty signature, so the turn has none Anthropic can check."""
    body = {
        "model": "m",
        "max_tokens": 32000,
        "thinking": {"type": "enabled", "budget_tokens": 31999},
        "messages": [
            {"role": "user", "content": "q"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "gpt summary", "signature": ""},
                    {"type": "tool_use", "id": "call_1", "name": "f", "input": {}},
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "ok"}],
            },
        ],
    }
    encoded = codec.encode_request(codec.decode_request(body), "m")
    assert "thinking" not in encoded
    assert encoded["messages"][1]["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "f", "input": {}}
    ]


def test_native_adaptive_thinking_and_effort_ride_as_sent() -> None:
    body = {
        "model": "m",
        "max_tokens": 5000,
        "messages": [{"role": "user", "content": "x"}],
        "thinking": {"type": "adaptive", "display": "summarized"},
        "output_config": {"effort": "medium"},
    }
    encoded = codec.encode_request(codec.decode_request(copy.deepcopy(body)), "m")
    assert encoded["thinking"] == body["thinking"]
    assert encoded["output_config"] == {"effort": "medium"}


UNSUPPORTED = [
    ("n", {"n": 2}, ["n"]),
    ("n 1 is fine", {"n": 1}, []),
    ("seed", {"seed": 7}, ["seed"]),
    ("json_object (chat)", {"output": OutputFormat("json_object")}, ["response_format"]),
    (
        "json_object (responses)",
        {"output": OutputFormat("json_object"), "extras_protocol": "openai-responses"},
        ["text.format"],
    ),
    ("json_schema maps to output_config", {"output": OutputFormat("json_schema", schema={})}, []),
    (
        "foreign extras",
        {"extras": {"logprobs": True, "frequency_penalty": 0.5}},
        ["logprobs", "frequency_penalty"],
    ),
    (
        "foreign extras at their defaults",
        {"extras": {"logprobs": False, "presence_penalty": 0}},
        [],
    ),
    (
        "harmless foreign extras",
        {"extras": {"store": True, "prompt_cache_key": "k", "user": "u"}},
        [],
    ),
    ("native extras", {"extras": {"container": "c"}, "extras_protocol": A}, []),
    ("required without parallel", {"tool_choice": ToolChoice("required", parallel=False)}, []),
]


@pytest.mark.parametrize("name,fields,unsupported", UNSUPPORTED, ids=[c[0] for c in UNSUPPORTED])
def test_unsupported(name: str, fields: dict[str, Any], unsupported: list[str]) -> None:
    got = codec.unsupported(req([user(Text("q"), Image(url="https://x/y.png"))], **fields))
    assert [u.field for u in got] == unsupported
    assert all(u.protocol == A and u.why for u in got)


UNSUPPORTED_PARTS = [
    (Document(file_id="file-abc"), True),
    (Document(data="UEsDBBQ", media_type="application/vnd.openxmlformats"), True),
    (Document(data="not base64!", media_type="text/plain"), True),
    (Document(data="JVBERi0x"), False),
    (Document(url="https://x/a.pdf"), False),
]


@pytest.mark.parametrize("part,bad", UNSUPPORTED_PARTS)
def test_unsupported_documents(part: Document, bad: bool) -> None:
    got = codec.unsupported(req([user(Text("q"), part)]))
    assert [u.field for u in got] == (["messages.0.content.1"] if bad else [])


# ---------------------------------------------------------------- answers and usage

try:
    import anthropic  # noqa: F401
    from anthropic.lib.streaming._messages import accumulate_event
    from anthropic.types import Message as SDKMessage
    from anthropic.types import RawMessageStreamEvent
    from pydantic import TypeAdapter

    STREAM_EVENT = TypeAdapter(RawMessageStreamEvent)
except ImportError:  # the SDK is a test extra: the checks that need it are skipped
    SDKMessage = None

needs_sdk = pytest.mark.skipif(SDKMessage is None, reason="anthropic SDK not installed")

USAGE_CASES = [
    (
        "split",
        ANSWER_SPLIT["usage"],
        Usage(1300, 73, cache_read_tokens=1000, cache_write_tokens=150, cache_write_1h_tokens=50),
    ),
    (
        "no split: all writes at the 5-minute rate",
        ANSWER_NO_SPLIT["usage"],
        Usage(1300, 5, cache_read_tokens=1000, cache_write_tokens=200),
    ),
    ("no cache fields", {"input_tokens": 7, "output_tokens": 3}, Usage(7, 3)),
    (
        "zero cache classes are reported, not None",
        {
            "input_tokens": 7,
            "output_tokens": 3,
            "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 0,
        },
        Usage(7, 3, cache_read_tokens=0, cache_write_tokens=0),
    ),
    (
        "split larger than total: the split wins",
        {
            "input_tokens": 1,
            "output_tokens": 1,
            "cache_creation_input_tokens": 10,
            "cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 5},
        },
        Usage(16, 1, cache_write_tokens=10, cache_write_1h_tokens=5),
    ),
    (
        "split smaller than total: the rest is 5-minute",
        {
            "input_tokens": 1,
            "output_tokens": 1,
            "cache_creation_input_tokens": 30,
            "cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 5},
        },
        Usage(31, 1, cache_write_tokens=25, cache_write_1h_tokens=5),
    ),
    (
        "negative and junk values",
        {
            "input_tokens": -5,
            "output_tokens": "12",
            "cache_read_input_tokens": None,
            "cache_creation": "x",
        },
        Usage(0, 0, doubtful=True),
    ),
    (
        "thinking tokens, capped at the output",
        {"input_tokens": 1, "output_tokens": 10, "output_tokens_details": {"thinking_tokens": 40}},
        Usage(1, 10, reasoning_tokens=10, doubtful=True),
    ),
    ("nothing usable", {"service_tier": "standard"}, None),
    ("not an object", [1, 2], None),
    ("null", None, None),
]


@pytest.mark.parametrize("name,wire,usage", USAGE_CASES, ids=[c[0] for c in USAGE_CASES])
def test_normalize_usage(name: str, wire: Any, usage: Usage | None) -> None:
    assert normalize_usage(wire) == usage


def test_usage_classes_arithmetic() -> None:
    u = normalize_usage(
        {
            "input_tokens": 100,
            "cache_read_input_tokens": 1000,
            "cache_creation_input_tokens": 200,
            "output_tokens": 1,
        }
    )
    assert u is not None
    assert (u.input_tokens, u.uncached_input_tokens) == (1300, 100)


ANSWER_CASES = [
    (
        "split",
        ANSWER_SPLIT,
        [
            Reasoning(text="Check the weather.", signature=SIG, origin=A),
            Text("Let me look that up."),
            ToolCall(
                "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                "get_weather",
                '{"location":"San Francisco, CA","unit":"celsius"}',
            ),
        ],
        "tool_calls",
    ),
    ("no split", ANSWER_NO_SPLIT, [Text("Hello!")], "stop"),
    ("server tool", ANSWER_SERVER_TOOL, [Text("It is sunny.")], "stop"),
]


@pytest.mark.parametrize("name,wire,parts,finish", ANSWER_CASES, ids=[c[0] for c in ANSWER_CASES])
def test_answer_decode_and_round_trip(
    name: str, wire: dict[str, Any], parts: list[Any], finish: str
) -> None:
    answer = codec.decode_answer(copy.deepcopy(wire))
    assert (answer.id, answer.model, answer.finish) == (wire["id"], wire["model"], finish)
    assert answer.parts == parts
    assert answer.usage == normalize_usage(wire["usage"])
    encoded = codec.encode_answer(answer)
    assert encoded["content"] == wire["content"]
    assert encoded["stop_reason"] == wire["stop_reason"]  # pause_turn survives for Anthropic
    again = codec.decode_answer(encoded).usage
    assert again is not None and answer.usage is not None
    # The split is always sent, so "1h not reported" comes back as 0: the same bill.
    answer.usage.cache_write_1h_tokens = answer.usage.cache_write_1h_tokens or 0
    assert again == answer.usage
    if SDKMessage is not None:
        SDKMessage.model_validate(encoded)


STOP_CASES = [
    ("end_turn", "stop"),
    ("stop_sequence", "stop"),
    ("max_tokens", "length"),
    ("model_context_window_exceeded", "length"),
    ("tool_use", "tool_calls"),
    ("refusal", "refusal"),
    ("pause_turn", "stop"),
    (None, "stop"),
    ("something_new", "stop"),
]


@pytest.mark.parametrize("stop,finish", STOP_CASES)
def test_stop_reasons(stop: str | None, finish: str) -> None:
    body = {**ANSWER_NO_SPLIT, "stop_reason": stop}
    assert codec.decode_answer(body).finish == finish


def test_stop_sequence_survives_for_an_anthropic_client() -> None:
    body = {**ANSWER_NO_SPLIT, "stop_reason": "stop_sequence", "stop_sequence": "END"}
    encoded = codec.encode_answer(codec.decode_answer(body))
    assert (encoded["stop_reason"], encoded["stop_sequence"]) == ("stop_sequence", "END")


@pytest.mark.parametrize("body", [[], {"type": "error", "error": {}}, "x"])
def test_malformed_answer(body: Any) -> None:
    with pytest.raises(UpstreamError):
        codec.decode_answer(body)


def test_encode_answer_from_another_protocol() -> None:
    """An OpenAI answer for Claude Code: its cached_tokens are a cache read here."""
    answer = Answer(
        id="chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        model="gpt-4o-2024-08-06",
        parts=[
            Reasoning(text="", encrypted="gAAAA", origin="openai-responses"),
            Reasoning(text="", summary=["Thought about it."], origin="openai-responses"),
            Text("Calling."),
            ToolCall("call_abc123", "get_weather", '{"city": "Paris"}'),
            ToolCall("fc.1:x", "noop", "{broken"),
        ],
        finish="tool_calls",
        usage=Usage(1300, 50, cache_read_tokens=1000, reasoning_tokens=20),
        extras={"system_fingerprint": "fp_x", "stop_sequence": "never"},
        extras_protocol="openai-chat",
    )
    encoded = codec.encode_answer(answer)
    assert encoded == {
        "id": "msg_chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "type": "message",
        "role": "assistant",
        "model": "gpt-4o-2024-08-06",
        "content": [
            {"type": "thinking", "thinking": "Thought about it.", "signature": ""},
            {"type": "text", "text": "Calling."},
            {
                "type": "tool_use",
                "id": "call_abc123",
                "name": "get_weather",
                "input": {"city": "Paris"},
            },
            {"type": "tool_use", "id": safe_tool_id("fc.1:x"), "name": "noop", "input": {}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 300,
            "output_tokens": 50,
            "cache_read_input_tokens": 1000,
            "cache_creation_input_tokens": 0,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            "output_tokens_details": {"thinking_tokens": 20},
        },
    }
    assert safe_tool_id("fc.1:x") != safe_tool_id("fc_1_x")
    if SDKMessage is not None:
        SDKMessage.model_validate(encoded)
    # The empty signature means the block never reaches an Anthropic upstream again.
    back = codec.decode_request(
        {
            "model": "m",
            "max_tokens": 5,
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": encoded["content"]},
            ],
        }
    )
    assert codec.encode_request(back, "c")["messages"][1]["content"][0]["type"] == "text"


@pytest.mark.parametrize(
    "finish,refusal,stop_reason,texts",
    [
        ("refusal", "I can't help with that.", "refusal", ["I can't help with that."]),
        ("content_filter", None, "refusal", []),
        ("length", None, "max_tokens", []),
        ("stop", None, "end_turn", []),
    ],
)
def test_encode_answer_finish(
    finish: Any, refusal: Any, stop_reason: str, texts: list[str]
) -> None:
    encoded = codec.encode_answer(
        Answer(id="msg_1", model="m", parts=[], finish=finish, refusal=refusal)
    )
    assert encoded["stop_reason"] == stop_reason
    assert [b["text"] for b in encoded["content"]] == texts
    assert encoded["usage"]["input_tokens"] == 0


# ---------------------------------------------------------------- streams


def decode_stream(frames: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    return decode_frames(codec, frames)


def test_stream_decode_recorded() -> None:
    assert decode_stream(STREAM) == STREAM_EVENTS


DECODER_CASES = [
    (
        "ended after message_start: usage and an error finish are owed",
        STREAM[:3],
        [STREAM_EVENTS[0], UsageEvent(STREAM_USAGE_START), Finish("error")],
    ),
    ("nothing at all", [], []),
    (
        "a message_delta without usage still owes message_start's",
        [
            STREAM[0],
            ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}}),
        ],
        [STREAM_EVENTS[0], Finish("stop"), UsageEvent(STREAM_USAGE_START)],
    ),
    (
        "data that is not an object is ignored",
        [STREAM[0], ("message_stop", "[DONE]")],
        [STREAM_EVENTS[0], UsageEvent(STREAM_USAGE_START), Finish("error")],
    ),
    (
        "finish without message_stop owes nothing",
        STREAM[:1] + STREAM[-2:-1],
        [STREAM_EVENTS[0], Finish("tool_calls"), UsageEvent(STREAM_USAGE_FINAL)],
    ),
    (
        "message_delta counts replace message_start's",
        [
            STREAM[0],
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn"},
                    "usage": {
                        "output_tokens": 5,
                        "input_tokens": 20,
                        "cache_read_input_tokens": None,
                    },
                },
            ),
        ],
        [
            STREAM_EVENTS[0],
            Finish("stop"),
            UsageEvent(
                Usage(
                    1220, 5, cache_read_tokens=1000, cache_write_tokens=200, cache_write_1h_tokens=0
                )
            ),
        ],
    ),
    (
        "server tool blocks and citations are skipped",
        [
            STREAM[0],
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {
                        "type": "server_tool_use",
                        "id": "srvtoolu_1",
                        "name": "web_search",
                        "input": {},
                    },
                },
            ),
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "input_json_delta", "partial_json": '{"q":1}'},
                },
            ),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 1,
                    "content_block": {"type": "redacted_thinking", "data": "Em0="},
                },
            ),
            ("content_block_stop", {"type": "content_block_stop", "index": 1}),
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 2,
                    "content_block": {"type": "text", "text": "Hi"},
                },
            ),
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 2,
                    "delta": {"type": "citations_delta", "citation": {}},
                },
            ),
            ("some_future_event", {"type": "some_future_event"}),
        ],
        [
            STREAM_EVENTS[0],
            ReasoningDelta(redacted=True, encrypted="Em0="),
            TextDelta("Hi"),
            UsageEvent(STREAM_USAGE_START),
            Finish("error"),
        ],
    ),
]


@pytest.mark.parametrize("name,frames,events", DECODER_CASES, ids=[c[0] for c in DECODER_CASES])
def test_stream_decoder_cases(name: str, frames: list[Any], events: list[Any]) -> None:
    assert decode_stream(frames) == events


def test_stream_error_event_raises() -> None:
    decoder = codec.stream_decoder()
    decoder.feed(*STREAM[0])
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    with pytest.raises(UpstreamStreamError) as info:
        decoder.feed("error", error)
    assert (info.value.type, info.value.message) == ("overloaded_error", "Overloaded")


def encode_stream(events: list[Any], extra: dict[str, Any] | None = None) -> list[tuple[str, Any]]:
    encoder = codec.stream_encoder(req([user(Text("q"))]))
    return encode_events(encoder, ("msg_router01", "claude-sonnet-4-5", 0), events, extra)


def accumulate(frames: list[tuple[str, Any]]) -> Any:
    """What the SDK's own MessageStream builds from our frames (each validated first)."""
    snapshot, bufs = None, {}
    for event, data in frames:
        assert data["type"] == event
        if event == "ping":
            continue
        parsed = STREAM_EVENT.validate_python(data)
        snapshot = accumulate_event(event=parsed, current_snapshot=snapshot, json_bufs=bufs)
    return snapshot


def test_stream_encode_sequence() -> None:
    frames = encode_stream(STREAM_EVENTS, extra={"decision_id": "d1"})
    assert [(e, d.get("index")) for e, d in frames] == [
        ("message_start", None),
        ("ping", None),
        ("content_block_start", 0),
        ("content_block_delta", 0),
        ("content_block_delta", 0),
        ("content_block_delta", 0),
        ("content_block_stop", 0),
        ("content_block_start", 1),
        ("content_block_delta", 1),
        ("content_block_delta", 1),
        ("content_block_stop", 1),
        ("content_block_start", 2),
        ("content_block_delta", 2),
        ("content_block_delta", 2),
        ("content_block_stop", 2),
        ("message_delta", None),
        ("message_stop", None),
    ]
    start = frames[0][1]["message"]
    assert start["id"] == "msg_router01" and start["content"] == []
    assert start["usage"]["input_tokens"] == 12 and start["usage"]["output_tokens"] == 1
    delta = frames[-2][1]
    assert delta["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert delta["router"] == {"decision_id": "d1"}
    assert delta["usage"]["output_tokens"] == 89
    assert delta["usage"]["cache_read_input_tokens"] == 1000
    assert frames_text(frames).endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')


@needs_sdk
def test_stream_round_trip_through_the_sdk() -> None:
    """Recorded upstream stream → our events → our client stream → the SDK's Message,
    which decodes to the same answer as the upstream's own content."""
    message = accumulate(encode_stream(decode_stream(STREAM)))
    assert [b.type for b in message.content] == ["thinking", "text", "tool_use"]
    assert message.content[0].thinking == "The user wants the weather."
    assert message.content[0].signature == SIG
    assert message.content[1].text == "I'll check the weather."
    assert message.content[2].input == {"location": "San Francisco, CA"}
    assert message.stop_reason == "tool_use"
    answer = codec.decode_answer(message.to_dict())
    assert answer.usage == STREAM_USAGE_FINAL


ENCODER_CASES = [
    (
        "an OpenAI-like stream without StreamStart usage",
        [
            StreamStart("chatcmpl-1", "gpt-4o"),
            TextDelta(""),
            TextDelta("Hel"),
            TextDelta("lo"),
            ToolCallStart(0, "call_1", "f"),
            ToolCallStart(1, "call:2", "g"),
            ToolCallDelta(0, '{"a":'),
            ToolCallDelta(1, "{}"),
            ToolCallDelta(0, "1}"),
            TextDelta("ignored choice", index=1),
            Finish("tool_calls"),
            UsageEvent(Usage(1300, 7, cache_read_tokens=1000)),
        ],
        ["text", "tool_use", "tool_use"],
        "tool_use",
    ),
    (
        "reasoning of two blocks and a redacted one",
        [
            ReasoningDelta(text="one"),
            ReasoningDelta(signature="s1"),
            ReasoningDelta(redacted=True, encrypted="Em0="),
            ReasoningDelta(text="two"),
            ReasoningDelta(encrypted="gAAAA"),
            ReasoningDelta(signature="s2"),
            TextDelta("done"),
            Finish("length"),
        ],
        ["thinking", "redacted_thinking", "thinking", "text"],
        "max_tokens",
    ),
    ("nothing at all", [], [], "end_turn"),
]


@needs_sdk
@pytest.mark.parametrize(
    "name,events,blocks,stop", ENCODER_CASES, ids=[c[0] for c in ENCODER_CASES]
)
def test_stream_encoder_cases(name: str, events: list[Any], blocks: list[str], stop: str) -> None:
    frames = encode_stream(events)
    message = accumulate(frames)
    assert [b.type for b in message.content] == blocks
    assert message.stop_reason == stop
    starts = [d["index"] for e, d in frames if e == "content_block_start"]
    stops = [d["index"] for e, d in frames if e == "content_block_stop"]
    assert starts == list(range(len(blocks))) and sorted(stops) == starts
    if name.startswith("an OpenAI"):
        assert message.content[0].text == "Hello"
        assert message.content[1].input == {"a": 1}
        assert message.content[2].id == safe_tool_id("call:2")
        assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (300, 1000)


def test_stream_encoder_error_finish_is_an_error_event() -> None:
    frames = encode_stream(
        [StreamStart("x", "m"), TextDelta("partial"), Finish("error")], extra={"d": 1}
    )
    assert [e for e, _ in frames][-2:] == ["content_block_stop", "error"]
    assert frames[-1][1]["error"]["type"] == "api_error"
    assert frames[-1][1]["router"] == {"d": 1}


# ---------------------------------------------------------------- fuzz

_junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
)
_usage_keys = st.sampled_from(
    [
        "input_tokens",
        "output_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
        "cache_creation",
        "output_tokens_details",
        "service_tier",
    ]
)
_split = st.dictionaries(
    st.sampled_from(["ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens"]), _junk, max_size=2
)
_usage_obj = st.one_of(
    _junk,
    st.dictionaries(
        _usage_keys,
        st.one_of(_junk, _split, st.fixed_dictionaries({"thinking_tokens": _junk})),
        max_size=7,
    ),
)


@settings(max_examples=400, deadline=None)
@given(_usage_obj)
def test_fuzz_normalize_usage_never_raises(obj: Any) -> None:
    usage = normalize_usage(obj)
    if usage is not None:
        assert usage.input_tokens >= 0 and usage.output_tokens >= 0
        assert usage.uncached_input_tokens >= 0
        classes = [usage.cache_read_tokens, usage.cache_write_tokens, usage.cache_write_1h_tokens]
        assert sum(c or 0 for c in classes) <= usage.input_tokens
        assert all(c is None or c >= 0 for c in classes)
        json.dumps(codec.encode_answer(Answer(id="a", model="m", parts=[], usage=usage)))


@settings(max_examples=200, deadline=None)
@given(_usage_obj, _usage_obj)
def test_fuzz_stream_usage_never_raises(start: Any, delta: Any) -> None:
    decoder = codec.stream_decoder()
    decoder.feed(
        "message_start",
        {"type": "message_start", "message": {"id": "m", "model": "x", "usage": start}},
    )
    decoder.feed(
        "message_delta",
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": delta},
    )
    decoder.close()


def test_a_system_turn_inside_messages_joins_the_system_prompt() -> None:
    # Claude Code sends its environment as a system turn after the first user turn.
    body = {
        "model": "m",
        "max_tokens": 5,
        "system": [{"type": "text", "text": "top", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "system", "content": [{"type": "text", "text": "env"}]},
            {"role": "user", "content": "go"},
        ],
    }
    got = codec.decode_request(body)
    assert got.system == [Text("top", cache_control={"type": "ephemeral"}), Text("env")]
    assert [m.role for m in got.messages] == ["user", "user"]
    sent = codec.encode_request(got, "c")
    assert [m["role"] for m in sent["messages"]] == ["user"]  # merged: roles alternate
    assert [b["text"] for b in sent["system"]] == ["top", "env"]


@pytest.mark.parametrize(
    "messages,param",
    [
        ([{"role": "system", "content": "only"}], "messages"),
        ([{"role": "system", "content": [{"type": "image"}]}], "messages.0.content.0.type"),
        ([{"role": "tool", "content": "x"}], "messages.0.role"),
    ],
)
def test_malformed_system_turns_name_the_field(messages: list[dict], param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        codec.decode_request({"model": "m", "max_tokens": 5, "messages": messages})
    assert info.value.param == param


NEUTRAL_CASES = [
    ("thinking", {"type": "adaptive", "display": "omitted"}, True),
    ("output_config", {"effort": "high"}, True),
    ("output_config", {"effort": "high", "task_budget": 5}, False),
    ("context_management", {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]}, True),
    ("context_management", {"edits": [{"type": "clear_tool_uses_20250919"}]}, False),
    ("context_management", {"edits": "x"}, False),
    ("metadata", {"tag": "t"}, True),
    ("container", "c1", False),
]


@pytest.mark.parametrize("key,value,neutral", NEUTRAL_CASES)
def test_answer_neutral_extras_leave_other_protocols_eligible(
    key: str, value: Any, neutral: bool
) -> None:
    from router.chat.codecs.openai_chat import OpenAIChatCodec
    from router.chat.codecs.responses import OpenAIResponsesCodec

    r = req([user(Text("x"))], extras={key: value}, extras_protocol=A, max_output_tokens=5)
    for other in (OpenAIChatCodec(), OpenAIResponsesCodec()):
        assert (other.unsupported(r) == []) is neutral, (other, key, value)
        if neutral:
            assert key not in other.encode_request(r, "up")
