"""Switch hygiene: a history made valid for the protocol that serves the next turn."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from router.chat.codecs.anthropic import AnthropicMessagesCodec, safe_tool_id
from router.chat.hygiene import mapped_tool_id, prepare_for, restore_tool_ids
from router.chat.model import (
    Answer,
    ChatRequest,
    Message,
    Reasoning,
    ReasoningHint,
    Text,
    ToolCall,
    ToolResult,
)

ANTHROPIC_ID = re.compile(r"^[a-zA-Z0-9_-]+$")


def history(*, signed: bool, origin: str = "anthropic-messages", call_id: str = "call.1:x"):
    thinking = Reasoning(text="let me look", signature="sig-abc" if signed else None, origin=origin)
    return ChatRequest(
        model="m",
        messages=[
            Message("user", [Text("list the files")]),
            Message("assistant", [thinking, ToolCall(call_id, "ls", "{}")]),
            Message("user", [ToolResult(call_id, [Text("a.py")])]),
        ],
        reasoning=ReasoningHint(budget_tokens=2048),
    )


@pytest.mark.parametrize(
    "origin, target, kept",
    [
        ("anthropic-messages", "anthropic-messages", True),
        ("anthropic-messages", "openai-responses", False),
        ("anthropic-messages", "openai-chat", False),
        ("openai-responses", "anthropic-messages", False),
    ],
)
def test_reasoning_goes_back_only_to_its_own_protocol(origin, target, kept):
    req = history(signed=True, origin=origin)
    if origin == "openai-responses":
        req.messages[1].parts[0] = Reasoning(encrypted="enc", id="rs_1", origin=origin)
    out, notes = prepare_for(req, target)
    reasoning = [p for p in out.messages[1].parts if isinstance(p, Reasoning)]
    assert bool(reasoning) is kept
    assert notes.dropped_reasoning == (0 if kept else 1)
    assert len(req.messages[1].parts) == 2  # the input is not changed in place


def test_thinking_off_when_the_last_tool_use_turn_has_no_signed_thinking():
    out, notes = prepare_for(history(signed=False), "anthropic-messages")
    assert out.reasoning is None and "thinking off" in (notes.thinking_off or "")
    # A history Anthropic signed keeps thinking on.
    out, notes = prepare_for(history(signed=True, call_id="toolu_1"), "anthropic-messages")
    assert out.reasoning is not None and not notes
    # Thinking that came from another provider counts as none.
    out, notes = prepare_for(history(signed=True, origin="openai-responses"), "anthropic-messages")
    assert out.reasoning is None and notes.dropped_reasoning == 1


def test_tool_ids_mapped_consistently_and_restored():
    req = history(signed=True, call_id="call.1:x")
    out, notes = prepare_for(req, "anthropic-messages")
    call = out.messages[1].parts[1]
    result = out.messages[2].parts[0]
    assert isinstance(call, ToolCall) and isinstance(result, ToolResult)
    assert ANTHROPIC_ID.match(call.id) and call.id == result.call_id
    assert call.id == safe_tool_id("call.1:x")  # the encoder's own mapping, so they agree
    assert notes.tool_ids == {call.id: "call.1:x"}
    # Distinct ids stay distinct.
    assert mapped_tool_id("a.b", ANTHROPIC_ID) != mapped_tool_id("a:b", ANTHROPIC_ID)
    # Other protocols take any id: nothing mapped.
    assert not prepare_for(req, "openai-chat")[1].tool_ids
    # The answer's ids go back to the client's.
    answer = Answer(id="a", model="m", parts=[ToolCall(call.id, "ls", "{}")])
    assert restore_tool_ids(answer, notes.tool_ids).parts[0].id == "call.1:x"
    # The prepared request encodes for Anthropic with paired ids and no thinking refusal.
    body = AnthropicMessagesCodec().encode_request(out, "claude", default_max_tokens=4096)
    use = body["messages"][1]["content"][-1]
    res = body["messages"][2]["content"][0]
    assert use["id"] == res["tool_use_id"] == call.id


# ---------------------------------------------------------------- through the router

CLAUDE, MINI = "claude-3-5-haiku-20241022", "gpt-4o-mini-2024-07-18"
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


def test_a_conversation_moves_anthropic_openai_anthropic_without_a_provider_400(make_router, fake):
    """Through the chat front: an Anthropic upstream calls a tool, an OpenAI chat upstream
    answers its result and calls one of its own, then Anthropic, asked to think, answers
    that OpenAI call (no signed thinking to lead with: it must run without thinking).
    The validating fakes take every request; the client sees its own tool-call ids."""
    models = {
        CLAUDE: {"provider": "claude", "upstream_model": "up-claude",
                 "input_usd_per_mtok": 1, "output_usd_per_mtok": 5, "supports": ["tools"]},
        MINI: {"provider": "fake", "upstream_model": "up-mini",
               "input_usd_per_mtok": 0.15, "output_usd_per_mtok": 0.6, "supports": ["tools"]},
    }  # fmt: skip
    r = make_router(models=models, more_providers={"claude": {"api": "anthropic-messages"}})
    client = r.openai()
    history: list = [{"role": "user", "content": "call tool lookup"}]
    seen_ids: list[str] = []
    plan = [CLAUDE, MINI, MINI, CLAUDE]
    for model in plan:
        extra = {"reasoning_effort": "low"} if model == CLAUDE else {}
        got = client.chat.completions.create(
            model=model, messages=history, tools=TOOLS, max_tokens=3000,
            extra_headers={"x-session-id": "hop-1"}, **extra,
        )  # fmt: skip
        msg = got.choices[0].message
        assert got.model == model
        calls = msg.tool_calls or []
        history.append(
            {"role": "assistant", "content": msg.content,
             **({"tool_calls": [c.model_dump() for c in calls]} if calls else {})}
        )  # fmt: skip
        for c in calls:
            seen_ids.append(c.id)
            history.append({"role": "tool", "tool_call_id": c.id, "content": "a word"})
        if not calls:
            history.append({"role": "user", "content": "call tool lookup again"})
    assert [q.protocol for q in fake.requests] == [
        "anthropic-messages",
        "openai-chat",
        "openai-chat",
        "anthropic-messages",
    ]
    lines = r.decisions()
    assert [ln["status"] for ln in lines] == [200] * 4
    assert [ln["session"]["previous_model"] for ln in lines] == [None, CLAUDE, MINI, MINI]
    # The tool calls the client holds are the ones it sent back, unchanged, each time.
    sent_back = [m["tool_call_id"] for m in history if m.get("role") == "tool"]
    assert sent_back == seen_ids and seen_ids
    # The last Anthropic request answered OpenAI's tool call, and ran without thinking.
    last = fake.requests[-1].json
    assert last["messages"][-1]["content"][0]["type"] == "tool_result"
    assert last["messages"][-1]["content"][0]["tool_use_id"] == seen_ids[-1]
    assert "thinking" not in last
    assert lines[-1]["session"]["history"] == {
        "dropped_reasoning": 0, "thinking_off": True, "tool_ids_mapped": 0
    }  # fmt: skip
    assert "history" not in lines[1]["session"]  # the chat upstream took it as it was
    # The first Anthropic request thought (nothing pending), so the hint was honoured there.
    assert fake.requests[0].json["thinking"]["type"] == "enabled"


# ---------------------------------------------------------------- ids mapped back


CLIENT_ID = "call.1:a"  # outside Anthropic's form
WEATHER = "get_weather"
CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def history_with_call(front: str, ask: str) -> dict[str, Any]:
    """The request fields of ``front`` for a history whose tool call has the client's id
    :data:`CLIENT_ID` (answered), then the user's ``ask``."""
    args = '{"city": "Paris"}'
    if front == "chat":
        fn = {"name": WEATHER, "arguments": args}
        return {"messages": [
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": None,
             "tool_calls": [{"id": CLIENT_ID, "type": "function", "function": fn}]},
            {"role": "tool", "tool_call_id": CLIENT_ID, "content": "Sunny"},
            {"role": "user", "content": ask},
        ]}  # fmt: skip
    if front == "messages":
        use = {"type": "tool_use", "id": CLIENT_ID, "name": WEATHER, "input": {"city": "Paris"}}
        result = {"type": "tool_result", "tool_use_id": CLIENT_ID, "content": "Sunny"}
        return {"messages": [
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": [use]},
            {"role": "user", "content": [result, {"type": "text", "text": ask}]},
        ]}  # fmt: skip
    return {"input": [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"type": "function_call", "call_id": CLIENT_ID, "name": WEATHER, "arguments": args},
        {"type": "function_call_output", "call_id": CLIENT_ID, "output": "Sunny"},
        {"role": "user", "content": ask},
    ]}  # fmt: skip


def ask_for_call(r: Any, front: str, ask: str, stream: bool) -> str:
    """The id of the one tool call the client reads in the answer to ``ask``."""
    from test_matrix import ASKS, Turn

    turn = Turn(ask, tools=True, extra={"model": CLAUDE, **history_with_call(front, ask)})
    reply = ASKS[front](r, turn, stream)
    [call] = reply.calls
    assert call.name == WEATHER and set(call.arguments) == {"city"}
    return call.id


@pytest.mark.parametrize("front", ["chat", "messages", "responses"])
def test_an_answer_names_the_clients_tool_ids_on_every_front(make_router, fake, front: str):
    """A client whose history holds a tool-call id Anthropic would refuse: the Anthropic
    upstream gets it mapped (the call and its result still pair); an answer that names
    that id (the fake repeats it when asked) reaches the client as the client wrote it,
    streamed and not (on the Messages front in that protocol's form, which is the mapping
    itself); an answer's new id reaches it as the
    provider made it."""
    models = {CLAUDE: {"provider": "claude", "upstream_model": "up-claude",
                       "input_usd_per_mtok": 1, "output_usd_per_mtok": 5, "supports": ["tools"]}}  # fmt: skip
    r = make_router(models=models, more_providers={"claude": {"api": "anthropic-messages"}})
    mapped = mapped_tool_id(CLIENT_ID, ANTHROPIC_ID)
    assert mapped != CLIENT_ID and ANTHROPIC_ID.match(mapped)
    for stream in (False, True):
        fake.clear()
        fresh = ask_for_call(r, front, f"call tool {WEATHER}", stream)
        same = ask_for_call(r, front, f"call tool {WEATHER} with the same id", stream)
        # The Messages front answers in its own protocol's form, which is the mapping
        # itself: the client gets back the id the router sends for its own, so it pairs.
        assert same == (mapped if front == "messages" else CLIENT_ID), (stream, same)
        assert fresh != CLIENT_ID and fresh.startswith("toolu_fake")
        # What the provider got: the client's id in its form, the call and result paired.
        for req in fake.requests:
            assert req.protocol == "anthropic-messages" and bool(req.json.get("stream")) is stream
            assert CLIENT_ID not in json.dumps(req.json)
            use = req.json["messages"][1]["content"][0]
            result = req.json["messages"][2]["content"][0]
            assert use["id"] == result["tool_use_id"] == mapped
    lines = r.decisions()
    assert [ln["status"] for ln in lines] == [200] * 4
    assert all(ln["session"]["history"]["tool_ids_mapped"] == 1 for ln in lines)
