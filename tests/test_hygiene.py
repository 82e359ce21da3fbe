"""Switch hygiene: a history made valid for the protocol that serves the next turn."""

from __future__ import annotations

import re

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
