"""The built-in echo provider, driven through httpx and the in-process transport."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from router.offline.echo import (
    StreamingASGITransport,
    completion_for,
    create_echo_app,
    stream_chunks_for,
)

MSGS = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "first question"},
    {"role": "assistant", "content": "an answer"},
    {
        "role": "user",
        "content": [{"type": "text", "text": "hello big"}, {"type": "text", "text": "world"}],
    },
]


@pytest.fixture
async def client():
    transport = StreamingASGITransport(create_echo_app(("echo", "other")))
    async with httpx.AsyncClient(transport=transport, base_url="http://echo.local/v1") as c:
        yield c


async def _sse(client: httpx.AsyncClient, body: dict) -> list:
    out = []
    async with client.stream("POST", "/chat/completions", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                data = line[6:]
                out.append(data if data == "[DONE]" else json.loads(data))
    return out


async def test_non_stream_names_model_and_counts_words(client):
    r = await client.post("/chat/completions", json={"model": "gpt-x", "messages": MSGS})
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "gpt-x"
    msg = body["choices"][0]["message"]
    assert msg == {"role": "assistant", "content": "[gpt-x] echo: hello big world"}
    assert body["choices"][0]["finish_reason"] == "stop"
    # prompt: 2 + 2 + 2 + 3 words; completion: 5 words
    assert body["usage"] == {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14}


async def test_both_paths_and_models_list(client):
    r = await client.post(
        "http://echo.local/chat/completions", json={"model": "m", "messages": MSGS}
    )
    assert r.status_code == 200
    models = (await client.get("/models")).json()
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == ["echo", "other"]
    assert (await client.get("/nope")).status_code == 404


async def test_bad_body_is_openai_error(client):
    r = await client.post("/chat/completions", content=b"{not json")
    assert r.status_code == 400
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = await client.post("/chat/completions", json={"model": "m"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"


async def test_stream_chunks_word_by_word_without_usage(client):
    events = await _sse(client, {"model": "m", "messages": MSGS, "stream": True})
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "m" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == "[m] echo: hello big world"
    assert len(chunks) == 5  # one per word
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * 4 + ["stop"]
    assert not any("usage" in c for c in chunks)


async def test_stream_usage_chunk_only_when_asked(client):
    body = {"model": "m", "messages": MSGS, "stream": True}
    events = await _sse(client, {**body, "stream_options": {"include_usage": True}})
    usage = events[-2]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 5
    assert events[-1] == "[DONE]"
    events = await _sse(client, {**body, "stream_options": {"include_usage": False}})
    assert not any(isinstance(e, dict) and "usage" in e for e in events)


@pytest.mark.parametrize("key", ["max_tokens", "max_completion_tokens"])
async def test_max_tokens_truncates(client, key):
    r = await client.post("/chat/completions", json={"model": "m", "messages": MSGS, key: 3})
    body = r.json()
    assert body["choices"][0]["message"]["content"] == "[m] echo: hello"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3
    events = await _sse(client, {"model": "m", "messages": MSGS, key: 3, "stream": True})
    assert [e["choices"][0]["finish_reason"] for e in events[:-1]] == [None, None, "length"]


async def test_tools_forced_call(client):
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    for choice, name in (
        ("required", "lookup"),
        ({"type": "function", "function": {"name": "x"}}, "x"),
    ):
        body = {"model": "m", "messages": MSGS, "tools": tools, "tool_choice": choice}
        out = (await client.post("/chat/completions", json=body)).json()
        choice0 = out["choices"][0]
        assert choice0["finish_reason"] == "tool_calls"
        call = choice0["message"]["tool_calls"][0]
        assert call["type"] == "function" and call["function"] == {"name": name, "arguments": "{}"}
        events = await _sse(client, {**body, "stream": True})
        delta = events[0]["choices"][0]["delta"]
        assert delta["tool_calls"][0]["function"]["name"] == name
        assert events[-2]["choices"][0]["finish_reason"] == "tool_calls"
    # offered, not forced: still a call of the first tool (agents drive the echo), but
    # text with tool_choice "none" and after a tool's result (so an agent loop ends)
    auto = {"model": "m", "messages": MSGS, "tools": tools}
    out = (await client.post("/chat/completions", json=auto)).json()
    assert out["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "lookup"
    for extra in (
        {"tool_choice": "none"},
        {"messages": [*MSGS, {"role": "tool", "tool_call_id": "c1", "content": "42"}]},
    ):
        out = (await client.post("/chat/completions", json={**auto, **extra})).json()
        assert out["choices"][0]["message"]["content"].startswith("[m] echo:")


SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 6},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "when": {"type": "string", "format": "date"},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
        "where": {"$ref": "#/$defs/Place"},
        "note": {"anyOf": [{"type": "null"}, {"type": "number", "exclusiveMinimum": 0}]},
        "optional": {"type": "string"},
    },
    "required": ["city", "unit", "days", "when", "tags", "where", "note"],
    "$defs": {
        "Place": {
            "type": "object",
            "properties": {"lat": {"type": "number"}, "ok": {"type": "boolean"}},
            "required": ["lat", "ok"],
        }
    },
}


async def test_tool_arguments_and_structured_output_fit_the_schema(client):
    import jsonschema

    tools = [{"type": "function", "function": {"name": "weather", "parameters": SCHEMA}}]
    body = {"model": "m", "messages": MSGS, "tools": tools}
    out = (await client.post("/chat/completions", json=body)).json()
    args = json.loads(out["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"])
    jsonschema.validate(args, SCHEMA)
    assert args["unit"] == "celsius" and args["days"] == 1 and "optional" not in args
    events = await _sse(client, {**body, "stream": True})
    streamed = events[0]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
    assert json.loads(streamed) == args

    rf = {"type": "json_schema", "json_schema": {"name": "w", "schema": SCHEMA, "strict": True}}
    body = {"model": "m", "messages": MSGS, "response_format": rf}
    out = (await client.post("/chat/completions", json=body)).json()
    jsonschema.validate(json.loads(out["choices"][0]["message"]["content"]), SCHEMA)
    events = await _sse(client, {**body, "stream": True})
    text = "".join(
        e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e["choices"]
    )
    jsonschema.validate(json.loads(text), SCHEMA)


async def test_json_mode_and_n(client):
    body = {"model": "m", "messages": MSGS, "response_format": {"type": "json_object"}, "n": 2}
    out = (await client.post("/chat/completions", json=body)).json()
    assert len(out["choices"]) == 2
    assert json.loads(out["choices"][1]["message"]["content"]) == {
        "answer": "[m] echo: hello big world"
    }
    events = await _sse(client, {**body, "stream": True})
    text = "".join(
        e["choices"][0]["delta"]["content"] for e in events[:-1] if e["choices"][0]["index"] == 0
    )
    assert json.loads(text)["answer"].startswith("[m] echo:")


def test_builders_agree():
    body = {"model": "m", "messages": MSGS, "stream_options": {"include_usage": True}}
    full = completion_for(body)
    chunks = stream_chunks_for(body)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == full["choices"][0]["message"]["content"]
    assert chunks[-1]["usage"] == full["usage"]


async def test_transport_streams_incrementally():
    """The response returns at the app's first byte, and each chunk when it is sent: the
    app sends the next chunk only after the client has read the previous one, so a
    transport that buffered the body would deadlock (and time out) instead."""
    read = [asyncio.Event() for _ in range(3)]

    async def lockstep(scope, receive, send):
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(3):
            await send({"type": "http.response.body", "body": b"x%d" % i, "more_body": True})
            await read[i].wait()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    got = []
    client = httpx.AsyncClient(transport=StreamingASGITransport(lockstep))
    async with client as c, asyncio.timeout(10), c.stream("GET", "http://app/") as r:
        async for chunk in r.aiter_raw():
            got.append(chunk)
            read[len(got) - 1].set()
    assert got == [b"x0", b"x1", b"x2"]


async def test_transport_close_early_cancels_app():
    cancelled = asyncio.Event()

    async def endless(scope, receive, send):
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            while True:
                await send({"type": "http.response.body", "body": b"x", "more_body": True})
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    transport = StreamingASGITransport(endless)
    async with httpx.AsyncClient(transport=transport) as c, c.stream("GET", "http://app/") as r:
        async for _ in r.aiter_raw():
            break
    await asyncio.wait_for(cancelled.wait(), 1)
