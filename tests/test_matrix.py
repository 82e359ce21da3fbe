"""The protocol matrix: every front (chat, Messages, Responses) × every upstream protocol
(``api: openai-chat | anthropic-messages | openai-responses``) × {whole, stream} ×
{text, tool round trip, JSON schema output, image}, one test per cell.

Clients are the real SDKs (``openai`` for chat and Responses, ``anthropic`` for
Messages, their stream helpers where they have them); the upstream is the validating fake
(tests/fake_upstream.py), so a request the provider would reject fails the cell. Each
cell either answers correctly — the content right, the tool call's id, name and arguments
round-tripped (the provider checks that the result answers its call), the JSON-schema
output parsed and valid, the image at the provider in its protocol's form — or is
refused with a 400 naming the field before anything is sent (:data:`REFUSED`; none
today: every codec can express all four). One router per upstream protocol serves the
whole module (the front is only the path).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import jsonschema
import openai
import pytest
from conftest import PRICES, TEAM_KEY, RouterHandle, ThreadServer, launch_router
from fake_upstream import FakeUpstream

MINI = "gpt-4o-mini-2024-07-18"
FRONTS = ("chat", "messages", "responses")
UPSTREAMS = ("openai-chat", "anthropic-messages", "openai-responses")
MODES = ("whole", "stream")
FEATURES = ("text", "tool", "json_schema", "image")

# Cells refused before anything is sent: (front, upstream, feature) -> the field named.
REFUSED: dict[tuple[str, str, str], str] = {}

TOOL = "get_weather"
PARAMS = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["city", "population"],
    "additionalProperties": False,
}
# A 1×1 PNG.
PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d4944415478da63f8cfc0f01f0005000201e2c3f1b80000000049454e44ae426082"
    )
).decode()
DATA_URL = f"data:image/png;base64,{PNG}"
ASK = {
    "text": "Say hello to the protocol matrix",
    "tool": f"Please call tool {TOOL} for Paris",
    "json_schema": "Describe Paris as JSON",
    "image": "What is in this picture",
}
RESULT = "Sunny, 21 degrees"
PRICE_IN, PRICE_OUT = PRICES[MINI]  # USD per 1M tokens; no class prices in the catalog


@dataclass
class Call:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass
class Reply:
    """What a client read, whatever its protocol."""

    text: str = ""
    calls: list[Call] = field(default_factory=list)
    model: str = ""  # the model the answer says served it


@dataclass
class Turn:
    """One request, protocol-neutral: the user's text, and what goes with it."""

    user: str
    image: bool = False
    tools: bool = False
    schema: bool = False
    answered: Call | None = None  # a tool call to give back with its result
    extra: dict[str, Any] = field(default_factory=dict)  # more fields, in the front's protocol


# ---------------------------------------------------------------- the fronts' clients


def chat_ask(r: RouterHandle, turn: Turn, stream: bool) -> Reply:
    content: Any = turn.user
    if turn.image:
        content = [
            {"type": "text", "text": turn.user},
            {"type": "image_url", "image_url": {"url": DATA_URL}},
        ]
    messages: list[dict[str, Any]] = [{"role": "user", "content": content}]
    if turn.answered is not None:
        c = turn.answered
        fn = {"name": c.name, "arguments": json.dumps(c.arguments)}
        messages += [
            {"role": "assistant", "content": None,
             "tool_calls": [{"id": c.id, "type": "function", "function": fn}]},
            {"role": "tool", "tool_call_id": c.id, "content": RESULT},
        ]  # fmt: skip
    kw: dict[str, Any] = {"model": MINI, "messages": messages}
    if turn.tools:
        fn = {"name": TOOL, "description": "The weather in a city", "parameters": PARAMS}
        kw["tools"] = [{"type": "function", "function": fn}]
    if turn.schema:
        spec = {"name": "city", "schema": SCHEMA, "strict": True}
        kw["response_format"] = {"type": "json_schema", "json_schema": spec}
    kw.update(turn.extra)
    client = r.openai()
    if not stream:
        completion = client.chat.completions.create(**kw)
        msg = completion.choices[0].message
        calls = [
            Call(tc.id, tc.function.name, json.loads(tc.function.arguments))
            for tc in msg.tool_calls or []
        ]
        return Reply(msg.content or "", calls, completion.model)
    text, parts = [], {}  # tool calls by index: [id, name, arguments]
    finish = model = None
    for chunk in client.chat.completions.create(**kw, stream=True):
        model = model or chunk.model
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            for tc in choice.delta.tool_calls or []:
                part = parts.setdefault(tc.index, ["", "", ""])
                part[0] += tc.id or ""
                part[1] += (tc.function and tc.function.name) or ""
                part[2] += (tc.function and tc.function.arguments) or ""
            finish = choice.finish_reason or finish
    assert finish in ("stop", "tool_calls"), finish
    calls = [Call(i, n, json.loads(a)) for i, n, a in parts.values()]
    return Reply("".join(text), calls, model or "")


def messages_ask(r: RouterHandle, turn: Turn, stream: bool) -> Reply:
    content: Any = turn.user
    if turn.image:
        image = {"type": "base64", "media_type": "image/png", "data": PNG}
        content = [{"type": "text", "text": turn.user}, {"type": "image", "source": image}]
    messages: list[dict[str, Any]] = [{"role": "user", "content": content}]
    if turn.answered is not None:
        c = turn.answered
        use = {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
        result = {"type": "tool_result", "tool_use_id": c.id, "content": RESULT}
        messages += [
            {"role": "assistant", "content": [use]},
            {"role": "user", "content": [result]},
        ]
    kw: dict[str, Any] = {"model": MINI, "max_tokens": 300, "messages": messages}
    if turn.tools:
        kw["tools"] = [
            {"name": TOOL, "description": "The weather in a city", "input_schema": PARAMS}
        ]
    if turn.schema:
        kw["output_config"] = {"format": {"type": "json_schema", "schema": SCHEMA}}
    kw.update(turn.extra)
    client = anthropic.Anthropic(base_url=r.root, api_key=TEAM_KEY, max_retries=0)
    if stream:
        with client.messages.stream(**kw) as s:
            for _ in s:
                pass
            msg = s.get_final_message()
    else:
        msg = client.messages.create(**kw)
    text = "".join(b.text for b in msg.content if b.type == "text")
    calls = [Call(b.id, b.name, dict(b.input)) for b in msg.content if b.type == "tool_use"]
    assert msg.stop_reason == ("tool_use" if calls else "end_turn"), msg.stop_reason
    return Reply(text, calls, msg.model)


def responses_ask(r: RouterHandle, turn: Turn, stream: bool) -> Reply:
    content: list[dict[str, Any]] = [{"type": "input_text", "text": turn.user}]
    if turn.image:
        content.append({"type": "input_image", "image_url": DATA_URL, "detail": "auto"})
    items: list[dict[str, Any]] = [{"role": "user", "content": content}]
    if turn.answered is not None:
        c = turn.answered
        items += [
            {"type": "function_call", "call_id": c.id, "name": c.name,
             "arguments": json.dumps(c.arguments)},
            {"type": "function_call_output", "call_id": c.id, "output": RESULT},
        ]  # fmt: skip
    kw: dict[str, Any] = {"model": MINI, "input": items}
    if turn.tools:
        kw["tools"] = [{"type": "function", "name": TOOL, "description": "The weather in a city",
                        "parameters": PARAMS, "strict": False}]  # fmt: skip
    if turn.schema:
        fmt = {"type": "json_schema", "name": "city", "schema": SCHEMA, "strict": True}
        kw["text"] = {"format": fmt}
    kw.update(turn.extra)
    client = r.openai()
    if stream:
        with client.responses.stream(**kw) as s:
            for _ in s:
                pass
            resp = s.get_final_response()
    else:
        resp = client.responses.create(**kw)
    assert resp.status == "completed", resp.status
    calls = [
        Call(it.call_id, it.name, json.loads(it.arguments))
        for it in resp.output
        if it.type == "function_call"
    ]
    return Reply(resp.output_text, calls, resp.model)


ASKS: dict[str, Callable[[RouterHandle, Turn, bool], Reply]] = {
    "chat": chat_ask,
    "messages": messages_ask,
    "responses": responses_ask,
}
PATHS = {"chat": "/v1/chat/completions", "messages": "/v1/messages", "responses": "/v1/responses"}


# ---------------------------------------------------------------- the upstream's view


def sent_images(api: str, body: dict) -> list[Any]:
    """The image parts of a request as the provider got it."""
    if api == "openai-chat":
        parts = [
            p for m in body["messages"] if isinstance(m["content"], list) for p in m["content"]
        ]
        return [p for p in parts if p.get("type") == "image_url"]
    if api == "anthropic-messages":
        parts = [
            p for m in body["messages"] if isinstance(m["content"], list) for p in m["content"]
        ]
        return [p for p in parts if p.get("type") == "image"]
    items = [it for it in body["input"] if isinstance(it.get("content"), list)]
    return [p for it in items for p in it["content"] if p.get("type") == "input_image"]


def sent_tools(api: str, body: dict) -> list[tuple[str, dict]]:
    """(name, parameters schema) of each tool the provider got."""
    if api == "openai-chat":
        return [(t["function"]["name"], t["function"]["parameters"]) for t in body["tools"]]
    if api == "anthropic-messages":
        return [(t["name"], t["input_schema"]) for t in body["tools"]]
    return [(t["name"], t["parameters"]) for t in body["tools"]]


def sent_call_and_result(api: str, body: dict) -> tuple[Call, str, str]:
    """The tool call given back to the provider, the id its result answers, the result."""
    if api == "openai-chat":
        [call] = next(m["tool_calls"] for m in body["messages"] if m.get("tool_calls"))
        tool = next(m for m in body["messages"] if m["role"] == "tool")
        fn = call["function"]
        got = Call(call["id"], fn["name"], json.loads(fn["arguments"]))
        return got, tool["tool_call_id"], text_of(tool["content"])
    if api == "anthropic-messages":
        blocks = [
            b for m in body["messages"] if isinstance(m["content"], list) for b in m["content"]
        ]
        use = next(b for b in blocks if b["type"] == "tool_use")
        result = next(b for b in blocks if b["type"] == "tool_result")
        got = Call(use["id"], use["name"], use["input"])
        return got, result["tool_use_id"], text_of(result["content"])
    call = next(it for it in body["input"] if it.get("type") == "function_call")
    out = next(it for it in body["input"] if it.get("type") == "function_call_output")
    got = Call(call["call_id"], call["name"], json.loads(call["arguments"]))
    return got, out["call_id"], text_of(out["output"])


def sent_schema(api: str, body: dict) -> dict:
    if api == "openai-chat":
        assert body["response_format"]["type"] == "json_schema"
        return body["response_format"]["json_schema"]["schema"]
    if api == "anthropic-messages":
        return body["output_config"]["format"]["schema"]
    assert body["text"]["format"]["type"] == "json_schema"
    return body["text"]["format"]["schema"]


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if isinstance(p, dict))


# ---------------------------------------------------------------- the routers


@pytest.fixture(scope="module")
def routers(
    tmp_path_factory: pytest.TempPathFactory, p2l_model: Any, fake_upstream_server: FakeUpstream
) -> Iterator[Callable[[str], RouterHandle]]:
    """One router per upstream protocol for the whole module, started when first asked."""
    folder: Path = tmp_path_factory.mktemp("matrix")
    servers: list[ThreadServer] = []
    started: dict[str, RouterHandle] = {}

    def get(api: str) -> RouterHandle:
        if api not in started:
            root = folder / api
            started[api] = launch_router(
                root, fake_upstream_server, p2l_model, servers, provider={"api": api}
            )
        return started[api]

    yield get
    for srv in servers:
        srv.__exit__(None, None, None)


def cells() -> Iterator[Any]:
    for front in FRONTS:
        for api in UPSTREAMS:
            for mode in MODES:
                for feature in FEATURES:
                    yield pytest.param(
                        front, api, mode, feature, id=f"{front}/{api}/{mode}/{feature}"
                    )


@pytest.mark.parametrize(("front", "api", "mode", "feature"), list(cells()))
def test_cell(routers, fake, front: str, api: str, mode: str, feature: str) -> None:
    r = routers(api)
    ask = ASKS[front]
    stream = mode == "stream"
    turn = Turn(
        ASK[feature],
        image=feature == "image",
        tools=feature == "tool",
        schema=feature == "json_schema",
    )
    refused = REFUSED.get((front, api, feature))
    if refused is not None:
        assert_refused(front, lambda: ask(r, turn, stream), refused, fake)
        return

    reply = ask(r, turn, stream)
    assert reply.model == MINI
    [req] = fake.requests
    assert req.protocol == api and req.method == "POST"
    assert bool(req.json.get("stream")) is stream
    if feature == "text":
        assert not reply.calls
        assert f"echo: {ASK['text']}" in reply.text, reply.text
        assert ASK["text"] in json.dumps(req.json)
    elif feature == "image":
        assert f"echo: {ASK['image']}" in reply.text, reply.text
        [image] = sent_images(api, req.json)
        if api == "openai-chat":
            assert image["image_url"]["url"] == DATA_URL
        elif api == "anthropic-messages":
            source = {"type": "base64", "media_type": "image/png", "data": PNG}
            assert image["source"] == source
        else:
            assert image["image_url"] == DATA_URL
    elif feature == "json_schema":
        assert not reply.calls
        assert sent_schema(api, req.json) == SCHEMA
        jsonschema.validate(json.loads(reply.text), SCHEMA)
    else:
        tool_round_trip(r, fake, ask, turn, reply, api, stream)
    assert_billed_once(r, fake)


def assert_billed_once(r: RouterHandle, fake: FakeUpstream) -> None:
    """The last request's decision carries the usage the provider billed, priced."""
    [req] = fake.requests
    billed = req.line
    assert billed is not None and not billed.cut
    line = r.decisions()[-1]
    assert line["status"] == 200 and line["usage_source"] == "upstream"
    prompt = billed.input + billed.cache_read + billed.cache_write_5m + billed.cache_write_1h
    assert (line["prompt_tokens"], line["completion_tokens"]) == (prompt, billed.output)
    cost = (prompt * PRICE_IN + billed.output * PRICE_OUT) / 1e6
    assert line["cost_usd"] == pytest.approx(cost, abs=1e-12)


def tool_round_trip(
    r: RouterHandle,
    fake: FakeUpstream,
    ask: Callable[[RouterHandle, Turn, bool], Reply],
    turn: Turn,
    reply: Reply,
    api: str,
    stream: bool,
) -> None:
    """The first turn asked for the tool: the client got the call; its result goes back,
    with the call, and the provider (which checks the pairing) answers in text."""
    assert sent_tools(api, fake.requests[0].json) == [(TOOL, PARAMS)]
    [call] = reply.calls
    assert call.name == TOOL and call.id
    jsonschema.validate(call.arguments, PARAMS)
    assert not reply.text
    assert_billed_once(r, fake)
    fake.clear()
    second = ask(r, Turn(turn.user, tools=True, answered=call), stream)
    [req] = fake.requests
    got, answered_id, result = sent_call_and_result(api, req.json)
    assert got == call and answered_id == call.id and result == RESULT
    assert not second.calls and "echo" in second.text


def assert_refused(front: str, send: Callable[[], Any], name: str, fake: FakeUpstream) -> None:
    """``send`` is answered 400 in the front's error shape, naming the field ``name``
    (as ``param`` and in the message), and the provider got nothing."""
    with pytest.raises((openai.BadRequestError, anthropic.BadRequestError)) as info:
        send()
    exc = info.value
    assert exc.status_code == 400
    body = exc.body if isinstance(exc.body, dict) else {}
    if front == "messages":  # Anthropic's shape: {"type": "error", "error": {...}}
        assert isinstance(exc, anthropic.BadRequestError)
        assert body["type"] == "error"
        err = body["error"]
        assert err["type"] == "invalid_request_error"
    else:  # the openai SDK hands over the body's "error" object
        assert isinstance(exc, openai.BadRequestError)
        err = body
    assert err["param"] == name and name in err["message"], err
    assert fake.requests == []  # refused before anything was sent


# A field of the front's protocol that the upstream's cannot express, per (front,
# upstream): the cell is refused before sending, naming the field as the client spelt it.
INEXPRESSIBLE = [
    ("chat", "anthropic-messages", {"n": 2}, "n"),
    ("chat", "openai-responses", {"stop": ["END"]}, "stop"),
    ("messages", "openai-chat", {"extra_body": {"top_k": 5}}, "top_k"),  # not in SDK 2.x
    ("messages", "openai-responses", {"stop_sequences": ["END"]}, "stop_sequences"),
    (
        "responses",
        "anthropic-messages",
        {"text": {"format": {"type": "json_object"}}},
        "text.format",
    ),
    ("responses", "openai-chat", {"tools": [{"type": "web_search"}]}, "tools"),
]


@pytest.mark.parametrize(
    ("front", "api", "extra", "name", "mode"),
    [
        pytest.param(f, a, e, n, m, id=f"{f}/{a}/{m}/{n}")
        for f, a, e, n in INEXPRESSIBLE
        for m in MODES
    ],
)
def test_a_field_the_upstream_cannot_express_is_refused_before_sending(
    routers, fake, front: str, api: str, extra: dict, name: str, mode: str
) -> None:
    r = routers(api)
    turn = Turn(ASK["text"], extra=extra)
    assert_refused(front, lambda: ASKS[front](r, turn, mode == "stream"), name, fake)
