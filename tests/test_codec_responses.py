"""The openai-responses codec, table by table, against recorded-shape payloads.

Every object and event the encoders produce is validated by the openai SDK's own models
(``Response``, the ``ResponseStreamEvent`` union) and, where it is installed, by the
Open Responses specification's models (``openresponses-types``); request bodies by the
latter (the SDK's input TypedDicts are narrower than the API: they want an ``id`` on
every assistant message and reasoning item, which a stateless client such as Codex does
not send).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from codec_helpers import decode_frames, encode_events
from hypothesis import given
from hypothesis import strategies as st
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from router.chat.codecs import frames_text
from router.chat.codecs.responses import (
    MAX_ITEMS,
    OpenAIResponsesCodec,
    UpstreamStreamError,
    budget_to_effort,
    normalize_usage,
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
from router.errors import InvalidRequestError

try:
    import openresponses_types as ort
except ImportError:  # pragma: no cover - the spec's models are optional
    ort = None

CODEC = OpenAIResponsesCodec()
EVENT = TypeAdapter(ResponseStreamEvent)

# ---------------------------------------------------------------- recorded shapes

CODEX_REQUEST: dict[str, Any] = {
    "model": "gpt-5-codex",
    "instructions": "You are Codex, based on GPT-5.",
    "input": [
        {
            "type": "message",
            "role": "developer",
            "content": [{"type": "input_text", "text": "<permissions>sandboxed</permissions>"}],
        },
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "<environment_context>cwd</environment_context>"}
            ],
        },
        {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "list files"}],
        },
        {
            "type": "reasoning",
            "summary": [{"type": "summary_text", "text": "**Listing files**"}],
            "content": None,
            "encrypted_content": "gAAAAABo-enc-1",
        },
        {
            "type": "function_call",
            "name": "shell",
            "arguments": '{"command":["ls"]}',
            "call_id": "call_A1",
        },
        {"type": "function_call_output", "call_id": "call_A1", "output": "README.md\nsrc"},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Two entries."}],
        },
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "thanks"}]},
    ],
    "tools": [
        {
            "type": "function",
            "name": "shell",
            "description": "Runs a shell command",
            "strict": False,
            "parameters": {
                "type": "object",
                "properties": {"command": {"type": "array", "items": {"type": "string"}}},
                "required": ["command"],
                "additionalProperties": False,
            },
        },
        {"type": "web_search"},
    ],
    "tool_choice": "auto",
    "parallel_tool_calls": False,
    "reasoning": {"effort": "medium", "summary": "auto"},
    "store": False,
    "stream": True,
    "include": ["reasoning.encrypted_content"],
    "prompt_cache_key": "019a-session",
    "text": {
        "verbosity": "low",
        "format": {
            "type": "json_schema",
            "name": "codex_output_schema",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {"answer": {"type": "string"}},
                "required": ["answer"],
                "additionalProperties": False,
            },
        },
    },
}

AGENTS_REQUEST: dict[str, Any] = {
    "model": "gpt-4.1",
    "instructions": "You are a weather agent.",
    "input": [
        {"content": "Weather in Paris?", "role": "user"},
        {
            "id": "fc_68a1",
            "call_id": "call_W1",
            "name": "get_weather",
            "arguments": '{"city":"Paris"}',
            "type": "function_call",
            "status": "completed",
        },
        {
            "type": "function_call_output",
            "call_id": "call_W1",
            "output": [
                {"type": "input_text", "text": "18C"},
                {
                    "type": "input_image",
                    "image_url": "data:image/png;base64,iVBORw0K",
                    "detail": "low",
                },
            ],
        },
    ],
    "tools": [
        {
            "type": "function",
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
                "additionalProperties": False,
            },
            "strict": True,
        }
    ],
    "tool_choice": {"type": "function", "name": "get_weather"},
    "temperature": 0.2,
    "top_p": 0.9,
    "max_output_tokens": 512,
    "metadata": {"trace": "t1"},
    "user": "u-7",
    "router": {"policy": "cheap"},
    "stream": False,
}

ANSWER_CALLS: dict[str, Any] = {
    "id": "resp_68a2",
    "object": "response",
    "created_at": 1755000000,
    "status": "completed",
    "model": "gpt-5-2025-08-07",
    "output": [
        {
            "id": "rs_68a2",
            "type": "reasoning",
            "summary": [{"type": "summary_text", "text": "Need weather."}],
            "encrypted_content": "gAAAAABo-enc-2",
        },
        {
            "id": "fc_68a2",
            "type": "function_call",
            "status": "completed",
            "arguments": '{"city":"Paris"}',
            "call_id": "call_P1",
            "name": "get_weather",
        },
    ],
    "usage": {
        "input_tokens": 1200,
        "input_tokens_details": {"cached_tokens": 1024},
        "output_tokens": 300,
        "output_tokens_details": {"reasoning_tokens": 256},
        "total_tokens": 1500,
    },
}

ANSWER_TEXT: dict[str, Any] = {
    "id": "resp_68a3",
    "object": "response",
    "created_at": 1755000001,
    "status": "incomplete",
    "incomplete_details": {"reason": "max_output_tokens"},
    "model": "gpt-4.1",
    "output": [
        {
            "id": "ws_1",
            "type": "web_search_call",
            "status": "completed",
            "action": {"type": "search", "query": "paris weather"},
        },
        {
            "id": "msg_68a3",
            "type": "message",
            "role": "assistant",
            "status": "incomplete",
            "content": [{"type": "output_text", "text": "Paris is", "annotations": []}],
        },
    ],
    "usage": {"input_tokens": 50, "output_tokens": 16, "total_tokens": 66},
}

# A recorded stream: reasoning, a function call, then text. Trimmed: the response
# objects keep only what a decoder reads.
RECORDED_STREAM: list[dict[str, Any]] = [
    {
        "type": "response.created",
        "sequence_number": 0,
        "response": {
            "id": "resp_S",
            "object": "response",
            "created_at": 1755000002,
            "status": "in_progress",
            "model": "gpt-5",
            "output": [],
        },
    },
    {
        "type": "response.in_progress",
        "sequence_number": 1,
        "response": {
            "id": "resp_S",
            "object": "response",
            "created_at": 1755000002,
            "status": "in_progress",
            "model": "gpt-5",
            "output": [],
        },
    },
    {
        "type": "response.output_item.added",
        "sequence_number": 2,
        "output_index": 0,
        "item": {"id": "rs_S", "type": "reasoning", "summary": []},
    },
    {
        "type": "response.reasoning_summary_part.added",
        "sequence_number": 3,
        "item_id": "rs_S",
        "output_index": 0,
        "summary_index": 0,
        "part": {"type": "summary_text", "text": ""},
    },
    {
        "type": "response.reasoning_summary_text.delta",
        "sequence_number": 4,
        "item_id": "rs_S",
        "output_index": 0,
        "summary_index": 0,
        "delta": "Checking",
    },
    {
        "type": "response.reasoning_summary_text.done",
        "sequence_number": 5,
        "item_id": "rs_S",
        "output_index": 0,
        "summary_index": 0,
        "text": "Checking",
    },
    {
        "type": "response.reasoning_summary_part.done",
        "sequence_number": 6,
        "item_id": "rs_S",
        "output_index": 0,
        "summary_index": 0,
        "part": {"type": "summary_text", "text": "Checking"},
    },
    {
        "type": "response.output_item.done",
        "sequence_number": 7,
        "output_index": 0,
        "item": {
            "id": "rs_S",
            "type": "reasoning",
            "summary": [{"type": "summary_text", "text": "Checking"}],
            "encrypted_content": "gAAA-enc-S",
        },
    },
    {
        "type": "response.output_item.added",
        "sequence_number": 8,
        "output_index": 1,
        "item": {
            "id": "fc_S",
            "type": "function_call",
            "status": "in_progress",
            "arguments": "",
            "call_id": "call_S1",
            "name": "get_weather",
        },
    },
    {
        "type": "response.function_call_arguments.delta",
        "sequence_number": 9,
        "item_id": "fc_S",
        "output_index": 1,
        "delta": '{"city":',
    },
    {
        "type": "response.function_call_arguments.delta",
        "sequence_number": 10,
        "item_id": "fc_S",
        "output_index": 1,
        "delta": '"Oslo"}',
    },
    {
        "type": "response.function_call_arguments.done",
        "sequence_number": 11,
        "item_id": "fc_S",
        "output_index": 1,
        "arguments": '{"city":"Oslo"}',
    },
    {
        "type": "response.output_item.done",
        "sequence_number": 12,
        "output_index": 1,
        "item": {
            "id": "fc_S",
            "type": "function_call",
            "status": "completed",
            "arguments": '{"city":"Oslo"}',
            "call_id": "call_S1",
            "name": "get_weather",
        },
    },
    {
        "type": "response.output_item.added",
        "sequence_number": 13,
        "output_index": 2,
        "item": {
            "id": "msg_S",
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        },
    },
    {
        "type": "response.content_part.added",
        "sequence_number": 14,
        "item_id": "msg_S",
        "output_index": 2,
        "content_index": 0,
        "part": {"type": "output_text", "text": "", "annotations": []},
    },
    {
        "type": "response.output_text.delta",
        "sequence_number": 15,
        "item_id": "msg_S",
        "output_index": 2,
        "content_index": 0,
        "delta": "Calling.",
        "logprobs": [],
    },
    {
        "type": "response.output_text.done",
        "sequence_number": 16,
        "item_id": "msg_S",
        "output_index": 2,
        "content_index": 0,
        "text": "Calling.",
        "logprobs": [],
    },
    {
        "type": "response.content_part.done",
        "sequence_number": 17,
        "item_id": "msg_S",
        "output_index": 2,
        "content_index": 0,
        "part": {"type": "output_text", "text": "Calling.", "annotations": []},
    },
    {
        "type": "response.output_item.done",
        "sequence_number": 18,
        "output_index": 2,
        "item": {
            "id": "msg_S",
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Calling.", "annotations": []}],
        },
    },
    {
        "type": "response.completed",
        "sequence_number": 19,
        "response": {
            "id": "resp_S",
            "object": "response",
            "created_at": 1755000002,
            "status": "completed",
            "model": "gpt-5",
            "output": [],
            "usage": {
                "input_tokens": 90,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": 40,
                "output_tokens_details": {"reasoning_tokens": 24},
                "total_tokens": 130,
            },
        },
    },
]


def spec_valid(model: str, obj: dict[str, Any]) -> None:
    """Validate against the Open Responses models when installed. Two differences
    from OpenAI are set aside: the generated ``JsonSchemaResponseFormat`` (response side)
    types ``schema`` as null, a generator defect; and the spec's request ``text.format``
    has no ``json_object``, which OpenAI accepts."""
    if ort is None:
        return
    obj = copy.deepcopy(obj)
    for holder in (obj, obj.get("response") or {}):
        text = holder.get("text") if isinstance(holder.get("text"), dict) else {}
        fmt = text.get("format") or {}
        if fmt.get("type") == "json_schema" and "schema" in fmt and model != "CreateResponseBody":
            fmt["schema"] = None
        if fmt.get("type") == "json_object" and model == "CreateResponseBody":
            del text["format"]
    getattr(ort, model).model_validate(obj)


def sdk_response(obj: dict[str, Any]) -> Response:
    resp = Response.model_validate(obj)
    spec_valid("ResponseResource", obj)
    return resp


# ---------------------------------------------------------------- decode_request


def test_codex_request_decodes() -> None:
    req = CODEC.decode_request(copy.deepcopy(CODEX_REQUEST))
    assert [t.text for t in req.system] == [
        "You are Codex, based on GPT-5.",
        "<permissions>sandboxed</permissions>",
    ]
    roles = [m.role for m in req.messages]
    assert roles == ["user", "user", "assistant", "user", "assistant", "user"]
    reasoning, call = req.messages[2].parts
    assert reasoning == Reasoning(
        origin="openai-responses", encrypted="gAAAAABo-enc-1", summary=["**Listing files**"]
    )
    assert call == ToolCall("call_A1", "shell", '{"command":["ls"]}')
    assert req.messages[3].parts == [ToolResult("call_A1", [Text("README.md\nsrc")])]
    assert req.tools[0].name == "shell" and req.tools[0].strict is False
    assert req.tool_choice == ToolChoice("auto", parallel=False)
    assert req.reasoning == ReasoningHint(effort="medium", summary="auto")
    assert req.output is not None and req.output.kind == "json_schema"
    assert req.output.name == "codex_output_schema" and req.output.strict is True
    assert req.stream is True
    assert req.extras == {
        "tools": [{"type": "web_search"}],
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "019a-session",
        "text.verbosity": "low",
    }
    assert req.extras_protocol == "openai-responses"


def test_agents_request_decodes() -> None:
    req = CODEC.decode_request(copy.deepcopy(AGENTS_REQUEST))
    assert req.messages[0] == Message("user", [Text("Weather in Paris?")])
    assert req.messages[1].parts == [ToolCall("call_W1", "get_weather", '{"city":"Paris"}')]
    (result,) = req.messages[2].parts
    assert result.content == [
        Text("18C"),
        Image(data="iVBORw0K", media_type="image/png", detail="low"),
    ]
    assert req.tool_choice == ToolChoice("tool", name="get_weather")
    assert (req.temperature, req.top_p, req.max_output_tokens) == (0.2, 0.9, 512)
    assert req.user == "u-7" and req.router == {"policy": "cheap"}
    assert req.extras == {"metadata": {"trace": "t1"}}


@pytest.mark.parametrize(
    ("input_", "expected"),
    [
        ("hi", [Message("user", [Text("hi")])]),
        (
            [
                {"role": "assistant", "content": "a"},
                {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "e"},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "1"},
                {"type": "function_call_output", "call_id": "c2", "output": "2"},
                {
                    "role": "user",
                    "content": [{"type": "input_file", "file_id": "file-1", "filename": "a.pdf"}],
                },
            ],
            [
                Message(
                    "assistant",
                    [
                        Text("a"),
                        Reasoning(origin="openai-responses", id="rs_1", encrypted="e"),
                        ToolCall("c1", "f", "{}"),
                        ToolCall("c2", "g", "{}"),
                    ],
                ),
                Message("user", [ToolResult("c1", [Text("1")]), ToolResult("c2", [Text("2")])]),
                Message("user", [Document(file_id="file-1", filename="a.pdf")]),
            ],
        ),
        (
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_file", "file_data": "data:application/pdf;base64,JVBE"}
                    ],
                }
            ],
            [Message("user", [Document(data="JVBE", media_type="application/pdf")])],
        ),
        (
            [{"role": "user", "content": [{"type": "input_image", "file_id": "file-2"}]}],
            [Message("user", [Image(file_id="file-2")])],
        ),
    ],
)
def test_input_items_become_turns(input_: Any, expected: list[Message]) -> None:
    assert CODEC.decode_request({"model": "m", "input": input_}).messages == expected


def _with(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(CODEX_REQUEST)
    body.update(changes)
    return body


def _item(index: int, **changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(CODEX_REQUEST)
    body["input"][index].update(changes)
    return body


MALFORMED = [
    ("body", []),
    ("model", _with(model="")),
    ("model", _with(model=None)),
    ("input", _with(input=None)),
    ("input", _with(input=[])),
    ("input", _with(input=[{"role": "user", "content": "x"}] * (MAX_ITEMS + 1))),
    ("input[2]", _with(input=[{"role": "user", "content": "x"}] * 2 + ["oops"])),
    ("input[4].call_id", _item(4, call_id=None)),
    ("input[4].name", _item(4, name=3)),
    ("input[4].arguments", _item(4, arguments={"command": ["ls"]})),
    ("input[5].output", _item(5, output=None)),
    ("input[5].output[0].type", _item(5, output=[{"type": "input_audio"}])),
    ("input[3].encrypted_content", _item(3, encrypted_content=7)),
    ("input[3].summary[0].text", _item(3, summary=[{"type": "summary_text"}])),
    ("input[2].role", _item(2, role="tool")),
    ("input[2].content[0].type", _item(2, content=[{"type": "input_audio", "input_audio": {}}])),
    ("input[2].content[0]", _item(2, content=[{"type": "input_image"}])),
    ("input[2].content", _item(2, content=7)),
    ("input[0].content", _item(0, content=[{"type": "input_image", "image_url": "http://x"}])),
    ("input[6].type", _item(6, type="local_shell_call")),
    ("instructions", _with(instructions=["a"])),
    ("tools", _with(tools={"type": "function"})),
    ("tools[0].name", _with(tools=[{"type": "function", "name": ""}])),
    ("tools[0].parameters", _with(tools=[{"type": "function", "name": "f", "parameters": "x"}])),
    ("tools[0].strict", _with(tools=[{"type": "function", "name": "f", "strict": "yes"}])),
    ("tools[0].type", _with(tools=[{"name": "f"}])),
    ("tool_choice", _with(tool_choice="any")),
    ("tool_choice.name", _with(tool_choice={"type": "function"})),
    ("parallel_tool_calls", _with(parallel_tool_calls="no")),
    ("text.format.type", _with(text={"format": {"type": "xml"}})),
    ("text.format.schema", _with(text={"format": {"type": "json_schema", "name": "n"}})),
    ("text.format.name", _with(text={"format": {"type": "json_schema", "schema": {}}})),
    ("reasoning.effort", _with(reasoning={"effort": "max"})),
    ("reasoning", _with(reasoning="high")),
    ("max_output_tokens", _with(max_output_tokens=0)),
    ("max_output_tokens", _with(max_output_tokens=True)),
    ("temperature", _with(temperature=3)),
    ("top_p", _with(top_p="1")),
    ("stream", _with(stream="yes")),
    ("router", _with(router=["x"])),
    ("user", _with(user=5)),
]


@pytest.mark.parametrize(("param", "body"), MALFORMED, ids=[p for p, _ in MALFORMED])
def test_malformed_request_names_the_field(param: str, body: Any) -> None:
    with pytest.raises(InvalidRequestError) as exc:
        CODEC.decode_request(body)
    assert exc.value.param == param
    assert exc.value.status == 400


# ---------------------------------------------------------------- encode_request


def test_codex_request_goes_back_out_token_for_token() -> None:
    out = CODEC.encode_request(CODEC.decode_request(copy.deepcopy(CODEX_REQUEST)), "gpt-5-codex")
    expected = copy.deepcopy(CODEX_REQUEST)
    # What changes, each by design: the reasoning item loses its null content, and the
    # tools are functions first, hosted after.
    del expected["input"][3]["content"]
    assert out.pop("tools") == expected.pop("tools")
    assert out == expected
    spec_valid("CreateResponseBody", out)


def test_agents_request_round_trip() -> None:
    out = CODEC.encode_request(CODEC.decode_request(copy.deepcopy(AGENTS_REQUEST)), "gpt-4.1-mini")
    assert out["model"] == "gpt-4.1-mini"
    assert out["input"] == [
        {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "Weather in Paris?"}],
        },
        {
            "type": "function_call",
            "call_id": "call_W1",
            "name": "get_weather",
            "arguments": '{"city":"Paris"}',
        },
        {
            "type": "function_call_output",
            "call_id": "call_W1",
            "output": AGENTS_REQUEST["input"][2]["output"],
        },
    ]
    assert out["tools"] == AGENTS_REQUEST["tools"]
    assert out["tool_choice"] == {"type": "function", "name": "get_weather"}
    assert out["store"] is False and "include" not in out and "router" not in out
    assert (out["temperature"], out["top_p"], out["max_output_tokens"]) == (0.2, 0.9, 512)
    assert out["metadata"] == {"trace": "t1"} and out["user"] == "u-7"
    spec_valid("CreateResponseBody", out)


FOREIGN = ChatRequest(
    model="auto",
    system=[Text("Be brief.", cache_control={"type": "ephemeral"}), Text("Use metric.")],
    messages=[
        Message(
            "user",
            [
                Text("Look:"),
                Image(url="https://x/cat.png"),
                Document(data="JVBE", media_type="application/pdf", filename="a.pdf"),
            ],
        ),
        Message(
            "assistant",
            [
                Reasoning(text="hmm", signature="sig", origin="anthropic-messages"),
                Reasoning(origin="openai-responses", id="rs_only_id"),
                Reasoning(origin="openai-responses", id="rs_2", encrypted="enc", summary=["s"]),
                ToolCall("toolu_1", "f", '{"a":1}'),
            ],
        ),
        Message(
            "user",
            [
                ToolResult(
                    "toolu_1",
                    [Text("done"), Image(data="AA", media_type="image/jpeg")],
                    is_error=True,
                )
            ],
        ),
    ],
    tools=[Tool("f", "does f", {"type": "object", "properties": {}})],
    tool_choice=ToolChoice("required", parallel=True),
    output=OutputFormat("json_object"),
    reasoning=ReasoningHint(budget_tokens=10000),
    max_output_tokens=1000,
    extras={"verbosity": "high", "logit_bias": {"1": 2}, "store": True},
    extras_protocol="openai-chat",
)


def test_foreign_request_encodes() -> None:
    out = CODEC.encode_request(FOREIGN, "o4-mini", default_max_tokens=4096)
    assert out == {
        "model": "o4-mini",
        "instructions": "Be brief.",
        "input": [
            {
                "type": "message",
                "role": "developer",
                "content": [{"type": "input_text", "text": "Use metric."}],
            },
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Look:"},
                    {"type": "input_image", "image_url": "https://x/cat.png"},
                    {
                        "type": "input_file",
                        "file_data": "data:application/pdf;base64,JVBE",
                        "filename": "a.pdf",
                    },
                ],
            },
            {
                "type": "reasoning",
                "id": "rs_2",
                "summary": [{"type": "summary_text", "text": "s"}],
                "encrypted_content": "enc",
            },
            {"type": "function_call", "call_id": "toolu_1", "name": "f", "arguments": '{"a":1}'},
            {
                "type": "function_call_output",
                "call_id": "toolu_1",
                "output": [
                    {"type": "input_text", "text": "done"},
                    {"type": "input_image", "image_url": "data:image/jpeg;base64,AA"},
                ],
            },
        ],
        "tools": [
            {
                "type": "function",
                "name": "f",
                "description": "does f",
                "parameters": {"type": "object", "properties": {}},
                "strict": False,
            }
        ],
        "tool_choice": "required",
        "parallel_tool_calls": True,
        "text": {"format": {"type": "json_object"}, "verbosity": "high"},
        "reasoning": {"effort": "medium"},
        "include": ["reasoning.encrypted_content"],
        "max_output_tokens": 1000,
        "stream": False,
        "store": False,
    }
    spec_valid("CreateResponseBody", out)


@pytest.mark.parametrize(
    ("budget", "effort"),
    [
        (1024, "low"),
        (4095, "low"),
        (4096, "medium"),
        (10000, "medium"),
        (16384, "high"),
        (31999, "high"),
    ],
)
def test_budget_to_effort(budget: int, effort: str) -> None:
    assert budget_to_effort(budget) == effort


@pytest.mark.parametrize(
    ("hint", "own", "expected"),
    [
        (ReasoningHint(effort="high"), False, {"effort": "high"}),
        (ReasoningHint(enabled=False), False, None),
        (ReasoningHint(enabled=False), True, {"effort": "none"}),
        (ReasoningHint(summary="detailed"), True, {"summary": "detailed"}),
    ],
)
def test_reasoning_hint_out(hint: ReasoningHint, own: bool, expected: Any) -> None:
    req = ChatRequest("m", [Message("user", [Text("x")])], reasoning=hint)
    req.extras_protocol = "openai-responses" if own else None
    assert CODEC.encode_request(req, "m").get("reasoning") == expected


def test_xhigh_effort_is_high_elsewhere_and_itself_at_home() -> None:
    req = CODEC.decode_request({"model": "m", "input": "x", "reasoning": {"effort": "xhigh"}})
    assert req.reasoning is not None and req.reasoning.effort == "high"
    assert CODEC.encode_request(req, "m")["reasoning"] == {"effort": "xhigh"}


@pytest.mark.parametrize(
    ("changes", "fields"),
    [
        ({}, []),
        ({"n": 2, "seed": 1, "top_k": 5, "stop": ["\n"]}, ["n", "stop", "seed", "top_k"]),
        ({"stop": ["x"], "extras_protocol": "anthropic-messages"}, ["stop_sequences"]),
        ({"n": 1}, []),
        (
            {
                "extras": {"verbosity": "low", "store": True, "logit_bias": {}, "logprobs": True},
                "extras_protocol": "openai-chat",
            },
            ["logit_bias", "logprobs"],
        ),
        (
            {"extras": {"container": "c", "metadata": {}}, "extras_protocol": "anthropic-messages"},
            ["container"],
        ),
        ({"extras": {"anything": 1}, "extras_protocol": "openai-responses"}, []),
    ],
)
def test_unsupported(changes: dict[str, Any], fields: list[str]) -> None:
    req = ChatRequest("m", [Message("user", [Text("x")])])
    for key, value in changes.items():
        setattr(req, key, value)
    found = CODEC.unsupported(req)
    assert [u.field for u in found] == fields
    assert all(u.protocol == "openai-responses" for u in found)


# ---------------------------------------------------------------- answers


@pytest.mark.parametrize(
    ("body", "finish", "parts", "usage"),
    [
        (
            ANSWER_CALLS,
            "tool_calls",
            [
                Reasoning(
                    origin="openai-responses",
                    id="rs_68a2",
                    encrypted="gAAAAABo-enc-2",
                    summary=["Need weather."],
                ),
                ToolCall("call_P1", "get_weather", '{"city":"Paris"}'),
            ],
            Usage(1200, 300, cache_read_tokens=1024, reasoning_tokens=256),
        ),
        (ANSWER_TEXT, "length", [Text("Paris is")], Usage(50, 16)),
    ],
)
def test_decode_answer(body: dict[str, Any], finish: str, parts: list[Any], usage: Usage) -> None:
    answer = CODEC.decode_answer(copy.deepcopy(body))
    assert (answer.finish, answer.parts, answer.usage) == (finish, parts, usage)
    assert answer.id == body["id"] and answer.created == body["created_at"]


@pytest.mark.parametrize(
    ("status", "details", "finish"),
    [
        ("completed", None, "stop"),
        ("incomplete", {"reason": "max_output_tokens"}, "length"),
        ("incomplete", {"reason": "content_filter"}, "content_filter"),
        ("failed", None, "error"),
        ("cancelled", None, "error"),
    ],
)
def test_answer_status(status: str, details: Any, finish: str) -> None:
    body = {"id": "r", "model": "m", "status": status, "incomplete_details": details, "output": []}
    assert CODEC.decode_answer(body).finish == finish


def test_refusal_and_hosted_items_survive() -> None:
    body = copy.deepcopy(ANSWER_TEXT)
    body["output"][1]["content"].append({"type": "refusal", "refusal": "No."})
    answer = CODEC.decode_answer(body)
    assert answer.refusal == "No."
    out = CODEC.encode_answer(answer)
    assert [i["type"] for i in out["output"]] == ["web_search_call", "message"]
    assert out["output"][1]["content"][-1] == {"type": "refusal", "refusal": "No."}
    Response.model_validate(out)  # the spec's models know no hosted tool items


ANSWERS = [
    Answer(
        "chatcmpl-1",
        "gpt-4o",
        [Text("Hello "), Text("world")],
        usage=Usage(10, 2),
        created=1755000003,
    ),
    Answer(
        "msg_01",
        "claude",
        [
            Reasoning(text="think", signature="s", origin="anthropic-messages"),
            ToolCall("toolu_9", "f", "{}"),
        ],
        finish="tool_calls",
        usage=Usage(100, 20, cache_read_tokens=60, cache_write_tokens=30),
        created=1755000004,
    ),
    Answer("resp_x", "m", [Text("cut")], finish="length", created=1),
    Answer("resp_y", "m", [Text("bad")], finish="content_filter", created=1),
    Answer("resp_z", "m", [], finish="error", created=1),
]


@pytest.mark.parametrize("answer", ANSWERS, ids=lambda a: f"{a.id}-{a.finish}")
def test_encode_answer_is_an_sdk_response(answer: Answer) -> None:
    out = CODEC.encode_answer(answer)
    resp = sdk_response(out)
    assert resp.id.startswith("resp_") and resp.object == "response"
    assert resp.output_text == "".join(p.text for p in answer.parts if isinstance(p, Text))
    again = CODEC.decode_answer(out)
    assert again.finish == answer.finish
    assert [p for p in again.parts if isinstance(p, Text | ToolCall)] == [
        p for p in answer.parts if isinstance(p, Text | ToolCall)
    ]
    if answer.usage:
        assert (
            out["usage"]["total_tokens"] == answer.usage.input_tokens + answer.usage.output_tokens
        )
        assert again.usage == Usage(
            answer.usage.input_tokens,
            answer.usage.output_tokens,
            cache_read_tokens=answer.usage.cache_read_tokens or 0,
            cache_write_tokens=(answer.usage.cache_write_tokens or 0)
            + (answer.usage.cache_write_1h_tokens or 0),
            reasoning_tokens=answer.usage.reasoning_tokens or 0,
        )


def test_encode_answer_echoes_the_request() -> None:
    req = CODEC.decode_request(copy.deepcopy(CODEX_REQUEST))
    answer = CODEC.decode_answer(copy.deepcopy(ANSWER_CALLS))
    out = CODEC.encode_answer_for(answer, req)
    resp = Response.model_validate(out)  # the spec's Tool is a function tool only
    spec_valid("ResponseResource", {**out, "tools": out["tools"][:1]})
    assert out["id"] == "resp_68a2" and out["status"] == "completed"
    assert out["output"] == [
        {
            "id": "rs_68a2",
            "type": "reasoning",
            "summary": [{"type": "summary_text", "text": "Need weather."}],
            "encrypted_content": "gAAAAABo-enc-2",
        },
        {
            "id": "fc_68a2_1",
            "type": "function_call",
            "call_id": "call_P1",
            "name": "get_weather",
            "arguments": '{"city":"Paris"}',
            "status": "completed",
        },
    ]
    assert out["instructions"] == "You are Codex, based on GPT-5."
    assert out["tools"][1] == {"type": "web_search"}
    assert (out["parallel_tool_calls"], out["store"], out["prompt_cache_key"]) == (
        False,
        False,
        "019a-session",
    )
    assert (
        out["text"]["verbosity"] == "low" and out["text"]["format"]["name"] == "codex_output_schema"
    )
    assert out["reasoning"] == {"effort": "medium", "summary": "auto"}
    assert resp.usage is not None and resp.usage.input_tokens_details.cached_tokens == 1024


# ---------------------------------------------------------------- usage


@pytest.mark.parametrize(
    ("raw", "usage"),
    [
        (ANSWER_CALLS["usage"], Usage(1200, 300, cache_read_tokens=1024, reasoning_tokens=256)),
        ({"input_tokens": 5, "output_tokens": 1}, Usage(5, 1)),
        (
            {
                "input_tokens": 5,
                "output_tokens": 1,
                "input_tokens_details": {"cached_tokens": None},
            },
            Usage(5, 1),
        ),
        ({"input_tokens": -3, "output_tokens": 2}, Usage(0, 2, doubtful=True)),
        (
            {"input_tokens": 10, "output_tokens": 2, "input_tokens_details": {"cached_tokens": 50}},
            Usage(10, 2, cache_read_tokens=10, doubtful=True),
        ),
        (
            {
                "input_tokens": 10,
                "output_tokens": 2,
                "output_tokens_details": {"reasoning_tokens": 9},
            },
            Usage(10, 2, reasoning_tokens=2, doubtful=True),
        ),
        ({"output_tokens": 4, "total_tokens": 10}, Usage(6, 4, doubtful=True)),
        ({"input_tokens": 4, "total_tokens": 3}, Usage(4, 0, doubtful=True)),
        ({"input_tokens": 7.0, "output_tokens": float("nan")}, Usage(7, 0, doubtful=True)),
        ({"input_tokens": True, "output_tokens": "3"}, None),
        ({}, None),
        (None, None),
        ([1, 2], None),
    ],
)
def test_normalize_usage(raw: Any, usage: Usage | None) -> None:
    assert normalize_usage(raw) == usage


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
COUNT = st.none() | st.integers() | st.floats() | st.booleans() | st.text(max_size=3) | JSONISH
USAGE_OBJECTS = st.fixed_dictionaries(
    {},
    optional={
        "input_tokens": COUNT,
        "output_tokens": COUNT,
        "total_tokens": COUNT,
        "input_tokens_details": st.none()
        | JSONISH
        | st.fixed_dictionaries({}, optional={"cached_tokens": COUNT}),
        "output_tokens_details": st.none()
        | JSONISH
        | st.fixed_dictionaries({}, optional={"reasoning_tokens": COUNT}),
    },
)


@given(USAGE_OBJECTS | JSONISH)
def test_normalize_usage_never_raises(raw: Any) -> None:
    usage = normalize_usage(raw)
    if usage is not None:
        assert usage.input_tokens >= 0 and usage.output_tokens >= 0
        assert 0 <= (usage.cache_read_tokens or 0) <= usage.input_tokens
        assert 0 <= (usage.reasoning_tokens or 0) <= usage.output_tokens
        assert usage.uncached_input_tokens >= 0


# ---------------------------------------------------------------- stream decoder


RECORDED_EVENTS = [
    StreamStart("resp_S", "gpt-5", 1755000002),
    ReasoningDelta(text="Checking"),
    ReasoningDelta(encrypted="gAAA-enc-S"),
    ToolCallStart(0, "call_S1", "get_weather"),
    ToolCallDelta(0, '{"city":'),
    ToolCallDelta(0, '"Oslo"}'),
    ToolCallEnd(0),
    TextDelta("Calling."),
    UsageEvent(Usage(90, 40, cache_read_tokens=0, reasoning_tokens=24)),
    Finish("tool_calls"),
]


def _decode(frames: list[dict[str, Any]]) -> list[Any]:
    return decode_frames(CODEC, [(data["type"], data) for data in frames])


def test_recorded_stream_decodes() -> None:
    assert _decode(RECORDED_STREAM) == RECORDED_EVENTS


def test_whole_items_without_deltas_decode() -> None:
    """A provider that sends only the ``.done`` items still yields every delta."""
    frames = [
        f
        for f in RECORDED_STREAM
        if not f["type"].endswith(".delta") and f["type"] != "response.output_item.added"
    ]
    whole = [e for e in RECORDED_EVENTS if not isinstance(e, ToolCallDelta)]
    whole.insert(4, ToolCallDelta(0, '{"city":"Oslo"}'))
    assert _decode(frames) == whole


@pytest.mark.parametrize(
    ("terminal", "tail"),
    [
        (
            {
                "type": "response.incomplete",
                "response": {
                    "status": "incomplete",
                    "incomplete_details": {"reason": "content_filter"},
                },
            },
            [Finish("content_filter")],
        ),
        (
            {
                "type": "response.failed",
                "response": {"status": "failed", "error": {"code": "server_error", "message": "x"}},
            },
            [Finish("error")],
        ),
        (None, [Finish("error")]),
    ],
)
def test_stream_endings(terminal: dict[str, Any] | None, tail: list[Any]) -> None:
    frames = RECORDED_STREAM[:9] + ([terminal] if terminal else [])
    events = _decode(frames)
    assert events[-len(tail) - 1 :] == [ToolCallEnd(0), *tail]


@pytest.mark.parametrize(
    "data",
    [
        {
            "type": "error",
            "code": "rate_limit_exceeded",
            "message": "slow down",
            "param": None,
            "sequence_number": 3,
        },
        {
            "type": "error",
            "sequence_number": 3,
            "error": {
                "type": "rate_limit",
                "code": "rate_limit_exceeded",
                "message": "slow down",
                "param": None,
            },
        },
    ],
)
def test_stream_error_event_raises(data: dict[str, Any]) -> None:
    dec = CODEC.stream_decoder()
    with pytest.raises(UpstreamStreamError) as exc:
        dec.feed("error", data)
    assert (exc.value.code, exc.value.message) == ("rate_limit_exceeded", "slow down")


# ---------------------------------------------------------------- stream encoder


def _encode(
    events: list[Any], req: ChatRequest | None = None, extra: Any = None
) -> list[tuple[str, dict[str, Any]]]:
    encoder = CODEC.stream_encoder(req or ChatRequest("m", []))
    return encode_events(encoder, ("resp_E", "gpt-5", 1755000005), events, extra)


ENCODER_CASES = [
    (
        [TextDelta("Hi"), TextDelta(" there"), UsageEvent(Usage(3, 2)), Finish("stop")],
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ],
    ),
    (
        RECORDED_EVENTS[1:],
        [e["type"] for e in RECORDED_STREAM],
    ),
    (
        [
            ToolCallStart(0, "c1", "f"),
            ToolCallStart(1, "c2", "g"),
            ToolCallDelta(1, "{}"),
            ToolCallDelta(0, "{}"),
            Finish("tool_calls"),
        ],
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ],
    ),
    (
        [
            ReasoningDelta(text="a", signature="sig"),
            ReasoningDelta(signature="sig"),
            ReasoningDelta(encrypted="red", redacted=True),
            TextDelta("x"),
            Finish("length"),
        ],
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.reasoning_summary_part.added",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.done",
            "response.reasoning_summary_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.incomplete",
        ],
    ),
    ([Finish("error")], ["response.created", "response.in_progress", "response.failed"]),
]


@pytest.mark.parametrize(("events", "types"), ENCODER_CASES)
def test_stream_encoder_sequence(events: list[Any], types: list[str]) -> None:
    frames = _encode(events, extra={"decision": "d1"})
    assert [name for name, _ in frames] == types
    assert [data["sequence_number"] for _, data in frames] == list(range(len(frames)))
    for name, data in frames:
        assert data["type"] == name
        parsed = EVENT.validate_python(data)
        assert parsed.type == name
        if ort is not None:
            spec_valid(
                "ResponseCompletedStreamingEvent"
                if name == "response.completed"
                else _spec_event(name),
                data,
            )
    last = EVENT.validate_python(frames[-1][1])
    assert frames[-1][1]["router"] == {"decision": "d1"}
    assert last.model_extra == {"router": {"decision": "d1"}}  # the SDK keeps it


def _spec_event(name: str) -> str:
    parts = name.removeprefix("response.").replace(".", "_").split("_")
    special = {
        "output_text_delta",
        "output_text_done",
        "reasoning_summary_text_delta",
        "reasoning_summary_text_done",
    }
    joined = "_".join(parts)
    if joined in special:
        body = {
            "output_text_delta": "OutputTextDelta",
            "output_text_done": "OutputTextDone",
            "reasoning_summary_text_delta": "ReasoningSummaryDelta",
            "reasoning_summary_text_done": "ReasoningSummaryDone",
        }[joined]
    else:
        body = "".join(p.capitalize() for p in parts)
    return f"Response{body}StreamingEvent"


def test_stream_round_trip_keeps_the_answer() -> None:
    """Provider stream → model → client stream: the same items, ids aside."""
    req = CODEC.decode_request(copy.deepcopy(CODEX_REQUEST))
    frames = _encode(_decode(RECORDED_STREAM)[1:], req)
    final = Response.model_validate(frames[-1][1]["response"])
    assert [i.type for i in final.output] == ["reasoning", "function_call", "message"]
    assert final.output_text == "Calling."
    assert final.output[0].encrypted_content == "gAAA-enc-S"
    assert final.output[1].arguments == '{"city":"Oslo"}' and final.output[1].call_id == "call_S1"
    assert final.usage is not None and final.usage.output_tokens_details.reasoning_tokens == 24
    assert final.parallel_tool_calls is False and final.tools[0].name == "shell"
    assert b"event: response.completed\ndata: {" in frames_text(frames)
    # Streamed and whole, the client sees the same object.
    whole = CODEC.encode_answer_for(
        Answer(
            "resp_E",
            "gpt-5",
            [
                Reasoning(origin="openai-responses", encrypted="gAAA-enc-S", summary=["Checking"]),
                ToolCall("call_S1", "get_weather", '{"city":"Oslo"}'),
                Text("Calling."),
            ],
            finish="tool_calls",
            usage=Usage(90, 40, cache_read_tokens=0, reasoning_tokens=24),
            created=1755000005,
        ),
        req,
    )
    assert frames[-1][1]["response"] == whole


def test_encoder_after_finish_says_nothing() -> None:
    enc = CODEC.stream_encoder(ChatRequest("m", []))
    enc.start("r", "m", 1)
    enc.finish()
    assert enc.feed(TextDelta("late")) == [] and enc.finish() == []
