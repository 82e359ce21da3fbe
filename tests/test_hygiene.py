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
