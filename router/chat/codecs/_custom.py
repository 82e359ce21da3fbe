"""Custom (freeform) tools for protocols that have function tools only.

Codex sends ``apply_patch`` as a Responses ``custom`` tool: the model writes its input
as free text (constrained by a Lark grammar on OpenAI), not JSON arguments. A Responses
upstream gets the tool, its calls and their outputs verbatim. OpenAI chat and Anthropic
Messages have no such tool, so it is *mapped*, not refused: refusing would make Codex
unusable on every non-Responses model, and the mapping keeps everything the model needs
to answer (the tool, its description, the grammar as text, the call and its result):

- the tool is a function of one required string argument, ``input``, whose description
  carries the grammar (the constraint becomes an instruction: the one thing lost is the
  provider's enforcement of it, which the grammar's own text tells the model);
- a custom call in the history is a function call with arguments ``{"input": text}``;
  its output is an ordinary tool result;
- an answer's call of that function goes back to the client as a ``custom_tool_call``
  with the ``input`` unwrapped (router/chat/codecs/responses/answer.py, stream_encoder.py),
  because the client declared the tool custom.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from router.chat.model import ChatRequest, Message, Tool, ToolCall, ToolResult


def custom_parameters(tool: Tool) -> dict[str, Any]:
    fmt = tool.format or {}
    desc = "The tool's input as free text."
    if fmt.get("type") == "grammar":
        desc += (
            f" It must match this {fmt.get('syntax', 'lark')} grammar:\n{fmt.get('definition', '')}"
        )
    return {
        "type": "object",
        "properties": {"input": {"type": "string", "description": desc}},
        "required": ["input"],
    }


def wrap_input(text: str) -> str:
    return json.dumps({"input": text}, ensure_ascii=False)


def unwrap_input(arguments: str) -> str:
    """A mapped call's ``input``; the arguments as they are when they are not the
    one-string object (the client then sees what the model wrote)."""
    try:
        value = json.loads(arguments)
    except ValueError:
        return arguments
    if isinstance(value, dict) and isinstance(value.get("input"), str):
        return value["input"]
    return arguments


def functions_only(req: ChatRequest) -> ChatRequest:
    """``req`` with custom tools as functions and their calls as JSON calls (a copy;
    ``req`` itself when it has none)."""
    if not any(t.custom for t in req.tools) and not any(
        isinstance(p, ToolCall | ToolResult) and p.custom for m in req.messages for p in m.parts
    ):
        return req
    tools = [
        dataclasses.replace(t, custom=False, format=None, parameters=custom_parameters(t))
        if t.custom
        else t
        for t in req.tools
    ]
    messages = []
    for m in req.messages:
        parts = []
        for p in m.parts:
            if isinstance(p, ToolCall) and p.custom:
                p = dataclasses.replace(p, custom=False, arguments=wrap_input(p.arguments))
            elif isinstance(p, ToolResult) and p.custom:
                p = dataclasses.replace(p, custom=False)
            parts.append(p)
        messages.append(Message(m.role, parts, m.name))
    return dataclasses.replace(req, tools=tools, messages=messages)


def custom_names(req: ChatRequest | None) -> frozenset[str]:
    return frozenset(t.name for t in req.tools if t.custom) if req is not None else frozenset()
