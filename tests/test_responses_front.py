"""The Responses front (``/v1/responses``) with real clients over real sockets: the
openai SDK (create, stream, function round trip, ``previous_response_id`` chains, GET /
DELETE), stored responses shared by two routers on one Redis and on one SQLite file,
the OpenAI Agents SDK, and Codex. Every Response object and stream event is validated
with the Open Responses specification's models (``openresponses-types``) as well as
parsed by the openai SDK."""

from __future__ import annotations

import json
from typing import Any

import openai
import openresponses_types as ort
import pytest
from conftest import OTHER_KEY, TEAM_KEY

MINI = "gpt-4o-mini-2024-07-18"
APIS = ["openai-chat", "anthropic-messages", "openai-responses"]
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}

# Open Responses streaming event models by their ``type``.
EVENT_MODELS = {
    next(iter(cls.model_fields["type"].annotation)).value: cls
    for name in dir(ort)
    if name.endswith("StreamingEvent")
    and (cls := getattr(ort, name))
    and "type" in getattr(cls, "model_fields", {})
}


def spec_response(obj: Any) -> ort.ResponseResource:
    data = obj.model_dump(mode="json") if hasattr(obj, "model_dump") else obj
    data = {k: v for k, v in data.items() if k != "router"}
    return ort.ResponseResource.model_validate(data)


def spec_events(events: list[Any]) -> list[str]:
    """Each SDK-parsed event validated with the spec's model; their types, in order, and
    their sequence numbers 0, 1, 2, ..."""
    kinds = []
    for i, ev in enumerate(events):
        data = ev.model_dump(mode="json")
        assert data["sequence_number"] == i, (i, data["type"])
        data.pop("router", None)
        EVENT_MODELS[data["type"]].model_validate(data)
        kinds.append(data["type"])
    return kinds


def fc_outputs(resp: Any, output: str) -> list[dict[str, Any]]:
    return [
        {"type": "function_call_output", "call_id": item.call_id, "output": output}
        for item in resp.output
        if item.type == "function_call"
    ]


# ---------------------------------------------------------------- create / stream / tools


@pytest.mark.parametrize("api", APIS)
def test_create_stream_and_function_round_trip(make_router, fake, api):
    r = make_router(provider={"api": api})
    client = r.openai()

    got = client.responses.create(model=MINI, input="Say hello", instructions="Be brief.")
    spec_response(got)
    assert got.id.startswith("resp_") and got.status == "completed"
    assert "hello" in got.output_text.lower() and got.usage.input_tokens > 0
    assert got.model == MINI and got.instructions == "Be brief."

    events = list(client.responses.create(model=MINI, input="Say hello", stream=True))
    kinds = spec_events(events)
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds
    done = events[-1].response
    spec_response(done)
    assert done.id == events[0].response.id and "hello" in done.output_text.lower()
    assert done.usage is not None and done.usage.output_tokens > 0

    first = client.responses.create(
        model=MINI, input="call tool get_weather for Paris", tools=[WEATHER]
    )
    spec_response(first)
    calls = [i for i in first.output if i.type == "function_call"]
    assert [c.name for c in calls] == ["get_weather"] and json.loads(calls[0].arguments)
    history = [{"role": "user", "content": "call tool get_weather for Paris"}]
    history += [c.model_dump(exclude_none=True) for c in calls] + fc_outputs(first, "sunny")
    second = client.responses.create(model=MINI, input=history, tools=[WEATHER])
    spec_response(second)
    assert second.output_text and not [i for i in second.output if i.type == "function_call"]

    streamed = list(
        client.responses.create(
            model=MINI, input="call tool get_weather for Rome", tools=[WEATHER], stream=True
        )
    )
    kinds = spec_events(streamed)
    assert "response.function_call_arguments.delta" in kinds
    assert "response.function_call_arguments.done" in kinds
    final = streamed[-1].response
    assert [i.type for i in final.output if i.type == "function_call"] == ["function_call"]


# ---------------------------------------------------------------- stored responses


@pytest.mark.parametrize("api", APIS)
def test_previous_response_id_chain_get_and_delete(make_router, fake, api):
    r = make_router(provider={"api": api})
    client = r.openai()
    one = client.responses.create(model=MINI, input="My name is Ada.")
    two = client.responses.create(model=MINI, input="What is my name?", previous_response_id=one.id)
    spec_response(two)
    assert two.previous_response_id == one.id
    three = list(
        client.responses.create(
            model=MINI, input="And again?", previous_response_id=two.id, stream=True
        )
    )
    spec_events(three)
    last = three[-1].response
    # The upstream saw the whole conversation: three user turns and two answers.
    sent = fake.requests[-1].json
    blob = json.dumps(sent)
    for text in ("My name is Ada.", "What is my name?", "And again?", one.output_text):
        assert text in blob, text

    fetched = client.responses.retrieve(last.id)
    spec_response(fetched)
    assert fetched.id == last.id and fetched.output_text == last.output_text
    assert fetched.previous_response_id == two.id

    deleted = r.http().delete(f"/v1/responses/{one.id}")
    assert deleted.status_code == 200
    assert deleted.json() == {"id": one.id, "object": "response.deleted", "deleted": True}
    client.responses.delete(two.id)  # the SDK's delete parses the same answer
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(one.id)
    # A chain with a missing link is a 404 naming the field, not half a conversation.
    with pytest.raises(openai.NotFoundError) as err:
        client.responses.create(model=MINI, input="more", previous_response_id=last.id)
    assert err.value.body["param"] == "previous_response_id"


def test_other_team_and_unknown_ids_are_404_and_store_false_keeps_nothing(make_router, fake):
    r = make_router()
    mine = r.openai().responses.create(model=MINI, input="secret plan")
    other = r.openai(key=OTHER_KEY)
    for call in (
        lambda: other.responses.retrieve(mine.id),
        lambda: other.responses.delete(mine.id),
        lambda: other.responses.create(model=MINI, input="hi", previous_response_id=mine.id),
        lambda: r.openai().responses.create(
            model=MINI, input="hi", previous_response_id="resp_unknown"
        ),
    ):
        with pytest.raises(openai.NotFoundError) as err:
            call()
        assert err.value.status_code == 404
        assert err.value.body["type"] == "invalid_request_error"
    assert r.openai().responses.retrieve(mine.id).id == mine.id  # still there for its team

    kept_out = r.openai().responses.create(model=MINI, input="forget me", store=False)
    assert kept_out.store is False
    with pytest.raises(openai.NotFoundError):
        r.openai().responses.retrieve(kept_out.id)
    with pytest.raises(openai.NotFoundError):
        r.openai().responses.create(model=MINI, input="x", previous_response_id=kept_out.id)
    bad = r.http().post("/v1/responses", json={"model": MINI, "input": "x", "store": "yes"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "store"


# ---------------------------------------------------------------- replicas and bounds


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_previous_response_id_across_two_routers(make_router, fake, tmp_path, request, backend):
    """Stored responses live in the shared ledger: a conversation continues on whichever
    replica takes the next turn, and GET / DELETE answer on both."""
    if backend == "redis":
        ledger = request.getfixturevalue("redis_url")
    else:
        ledger = f"sqlite:///{tmp_path / 'shared.db'}"
    a, b = make_router(ledger=ledger), make_router(ledger=ledger)
    one = a.openai().responses.create(model=MINI, input="My name is Ada.")
    two = b.openai().responses.create(model=MINI, input="Who am I?", previous_response_id=one.id)
    three = a.openai().responses.create(model=MINI, input="Again?", previous_response_id=two.id)
    blob = json.dumps(fake.requests[-1].json)
    assert "My name is Ada." in blob and "Who am I?" in blob and "Again?" in blob
    # One session across both replicas: each later turn continues the first one's.
    lines = sorted((ln for r in (a, b) for ln in r.decisions()), key=lambda ln: ln["ts"])
    first, second, third = (ln["session"] for ln in lines)
    assert second["source"] == third["source"] == "previous_response"
    assert first["id"] == second["id"] == third["id"]
    assert b.openai().responses.retrieve(three.id).output_text == three.output_text
    b.openai().responses.delete(one.id)
    with pytest.raises(openai.NotFoundError):
        a.openai().responses.retrieve(one.id)


def test_retention_and_byte_cap(make_router, fake):
    from router.serving.stored import StoreConfig

    now = [1_900_000_000.0]
    r = make_router(clock=lambda: now[0], team={"response_retention_s": 60})
    kept = r.openai().responses.create(model=MINI, input="short-lived")
    assert r.openai().responses.retrieve(kept.id).id == kept.id
    now[0] += 61
    with pytest.raises(openai.NotFoundError):
        r.openai().responses.retrieve(kept.id)
    with pytest.raises(openai.NotFoundError):
        r.openai().responses.create(model=MINI, input="x", previous_response_id=kept.id)

    capped = make_router(service_kw={"response_store": StoreConfig(max_bytes=300)})
    big = capped.openai().responses.create(model=MINI, input="too big to keep")
    assert big.output_text  # the answer is not failed by a refusal to store it
    with pytest.raises(openai.NotFoundError):
        capped.openai().responses.retrieve(big.id)
    metrics = capped.service.metrics.render()[0].decode()
    assert 'router_stored_responses_total{outcome="too_large"} 1.0' in metrics


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("api", APIS)
def test_errors_in_openai_shape_and_mid_stream_failure(make_router, fake, api):
    r = make_router(provider={"api": api})
    client = r.openai()
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(
            model=MINI, input=[{"type": "message", "role": "robot", "content": "hi"}]
        )
    assert err.value.body["param"] == "input[0].role"
    with pytest.raises(openai.AuthenticationError):
        r.openai(key="sk-wrong").responses.create(model=MINI, input="hi")
    with pytest.raises(openai.NotFoundError) as err:
        client.responses.create(model="no-such-model", input="hi")
    assert err.value.body["code"] == "model_not_found"

    fake.behave("up-" + MINI, cut_after_events=4)
    events = list(client.responses.create(model=MINI, input="Say hello there", stream=True))
    kinds = spec_events(events)
    assert kinds[0] == "response.created" and kinds[-1] == "response.failed"
    failed = events[-1].response
    assert failed.status == "failed" and failed.error is not None
    assert r.decisions()[-1]["status"] == 502


# ---------------------------------------------------------------- Codex's custom tools

APPLY_PATCH = {
    "type": "custom",
    "name": "apply_patch",
    "description": "Use the `apply_patch` tool to edit files.",
    "format": {"type": "grammar", "syntax": "lark", "definition": "start: /(.|\\n)+/"},
}


@pytest.mark.parametrize("api", APIS)
def test_custom_tool_round_trip(make_router, fake, api):
    """A custom (freeform) tool: verbatim to a Responses upstream, a one-string function
    elsewhere, and a custom_tool_call for the client either way."""
    r = make_router(provider={"api": api})
    client = r.openai()
    ask = "call tool apply_patch to add hi.txt"
    first = client.responses.create(model=MINI, input=ask, tools=[APPLY_PATCH])
    (call,) = [i for i in first.output if i.type != "reasoning"]
    assert call.type == "custom_tool_call" and call.name == "apply_patch"
    assert isinstance(call.input, str) and call.call_id
    sent = fake.requests[-1].json
    if api == "openai-responses":
        assert sent["tools"] == [APPLY_PATCH] and call.input.startswith("*** Begin Patch")
    else:
        tools = json.dumps(sent["tools"])
        assert '"input"' in tools and "lark grammar" in tools  # the mapped function

    history = [
        {"role": "user", "content": ask},
        call.model_dump(exclude_none=True),
        {"type": "custom_tool_call_output", "call_id": call.call_id, "output": "Done!"},
    ]
    second = client.responses.create(model=MINI, input=history, tools=[APPLY_PATCH])
    assert second.output_text and second.status == "completed"

    events = list(client.responses.create(model=MINI, input=ask, tools=[APPLY_PATCH], stream=True))
    kinds = [e.type for e in events]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "response.custom_tool_call_input.done" in kinds
    done = [e for e in events if e.type == "response.custom_tool_call_input.done"][0]
    deltas = "".join(e.delta for e in events if e.type == "response.custom_tool_call_input.delta")
    assert deltas == done.input
    (streamed,) = [i for i in events[-1].response.output if i.type == "custom_tool_call"]
    assert streamed.input == done.input


# ---------------------------------------------------------------- agents


def test_openai_agents_sdk_runs_a_function_tool(make_router, fake):
    """The Agents SDK with its default model settings (the Responses API) through the
    router: the agent calls a function tool, gets its result and answers."""
    import agents

    r = make_router()
    client = r.async_openai()
    agents.set_default_openai_client(client, use_for_tracing=False)
    agents.set_tracing_disabled(True)
    seen: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        seen.append(city)
        return f"sunny in {city}"

    agent = agents.Agent(
        name="weather", instructions="Answer briefly.", model=MINI, tools=[get_weather]
    )
    result = r.run(agents.Runner.run(agent, "call tool get_weather for Paris"), timeout=60)
    assert len(seen) == 1  # the tool ran once, with the arguments the model wrote
    assert result.final_output and "echo" in result.final_output
    kinds = [i.type for i in result.new_items]
    assert kinds[:2] == ["tool_call_item", "tool_call_output_item"]
    assert kinds[-1] == "message_output_item"
    decisions = [d for d in r.decisions() if d["status"] == 200]
    assert len(decisions) == 2


def test_codex_exec_completes_a_task_through_the_router(make_router, fake):
    """Codex (``codex exec``, a custom model_provider with wire_api = "responses") runs a
    shell tool the fake model asks for and finishes, every model call through the router."""
    from agent_clis import codex_bin, run_codex

    if codex_bin() is None:
        pytest.skip("Codex not installed in .cache/agent-clis (run `make agent-clis`)")
    r = make_router(provider={"api": "openai-responses"})
    p = run_codex(r.root, TEAM_KEY, "call tool exec_command, then say DONE", model=MINI, timeout=90)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "echo" in p.stdout
    calls = [q.json for q in fake.requests if q.path.endswith("/responses")]
    assert len(calls) >= 2  # the tool call, then the answer after its output
    kinds = [i.get("type") for i in calls[-1]["input"]]
    assert "function_call" in kinds and "function_call_output" in kinds
    assert all(d["status"] == 200 for d in r.decisions())


def test_the_events_of_one_upstream_event_go_out_in_one_send(make_router):
    """A streamed Responses answer is sent one batch of events per upstream event (each
    HTTP chunk holds whole events), not one send per event; the events are unchanged."""
    import socket
    from urllib.parse import urlsplit

    r = make_router()
    url = urlsplit(r.root)
    body = json.dumps({"model": MINI, "input": "Say hello to everyone", "stream": True})
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(
            f"POST /v1/responses HTTP/1.1\r\nHost: x\r\nconnection: close\r\n"
            f"authorization: Bearer {TEAM_KEY}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n{body}".encode()
        )
        raw = b""
        while piece := sock.recv(65536):
            raw += piece
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0] and b"transfer-encoding: chunked" in head.lower()
    chunks = []
    while True:  # HTTP/1.1 chunked framing: one chunk per send of the router
        size, _, rest = rest.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            break
        chunks.append(rest[:n])
        rest = rest[n + 2 :]
    events = b"".join(chunks).decode().split("\n\n")[:-1]
    assert all(c.startswith(b"event: ") and c.endswith(b"\n\n") for c in chunks)
    names = [e.split("\n", 1)[0].removeprefix("event: ") for e in events]
    assert names[0] == "response.created" and names[-1] == "response.completed"
    deltas = names.count("response.output_text.delta")
    assert deltas >= 2
    # The opening events come with the first delta; each later delta is a send of its own.
    assert len(chunks) < len(events) and len(chunks) <= deltas + 2
