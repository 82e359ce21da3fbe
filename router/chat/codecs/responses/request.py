"""A client's ``POST /v1/responses`` body → ``ChatRequest``.

Written against what Codex CLI and the OpenAI Agents SDK send: ``instructions`` plus an
``input`` list of message, function_call, function_call_output and reasoning items, and
Codex's ``custom`` tool (``apply_patch``) with its custom_tool_call and
custom_tool_call_output items (``Tool.custom``, ``ToolCall.custom``: carried verbatim to a
Responses upstream, mapped to a one-string function elsewhere, codecs/_custom.py).
Items become turns the way the other protocols have them: consecutive assistant-side
items (messages, calls, reasoning) are one assistant ``Message``; consecutive
function_call_output items one user ``Message`` of ``ToolResult`` parts.

Every top-level field the model has no slot for goes to ``extras`` verbatim (so a
Responses upstream gets it back, and other protocols can report it); nothing is dropped
silently. Input item types the model cannot hold (hosted tool calls, custom and
local_shell calls, item references) are refused with a 400 naming the item, not lost.
Hosted tools and Codex's ``namespace`` / ``tool_search`` tools travel in ``extras`` to a
Responses upstream only; other protocols' candidates are ineligible for them (a 400
naming ``tools`` when none is left).
"""

from __future__ import annotations

from typing import Any

from router.chat.codecs._common import bad, want_dict, want_int, want_list, want_str
from router.chat.codecs.responses.common import PROTOCOL, decode_content
from router.chat.model import (
    MAX_MESSAGES,
    ChatRequest,
    Message,
    OutputFormat,
    Reasoning,
    ReasoningHint,
    Text,
    Tool,
    ToolCall,
    ToolChoice,
    ToolResult,
)

MAX_ITEMS = MAX_MESSAGES  # input items are the turns: the same bound as chat's messages
EFFORTS = ("minimal", "low", "medium", "high")

# Fields this module maps into the model; every other top-level field goes to extras.
MAPPED = frozenset(
    {
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "text",
        "reasoning",
        "max_output_tokens",
        "temperature",
        "top_p",
        "stream",
        "user",
        "router",
    }
)

# Extras of a Responses request that change nothing in the answer (bookkeeping, caching,
# billing, or a hint the model already holds): another protocol's ``unsupported`` can
# let them pass instead of making its candidates ineligible for them.
ANSWER_NEUTRAL_EXTRAS = frozenset(
    {
        "store",
        "include",
        "metadata",
        "prompt_cache_key",
        "prompt_cache_retention",
        "safety_identifier",
        "service_tier",
        "stream_options",
        "background",
        "reasoning.effort",  # "xhigh": the hint says "high"
        "previous_response_id",  # resolved by the router (router/serving/stored.py)
    }
)


def decode_request(body: Any) -> ChatRequest:
    body = want_dict(body, "body")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        bad("model", "must be a non-empty string")
    req = ChatRequest(model=model, messages=[], extras_protocol=PROTOCOL)
    extras: dict[str, Any] = {k: v for k, v in body.items() if k not in MAPPED}

    if "instructions" in body and body["instructions"] is not None:
        req.system.append(Text(want_str(body["instructions"], "instructions") or ""))
    _decode_input(body.get("input"), req)
    _decode_tools(body, req, extras)
    _decode_text(body.get("text"), req, extras)
    _decode_reasoning(body.get("reasoning"), req, extras)

    req.max_output_tokens = _int(body.get("max_output_tokens"), "max_output_tokens", low=1)
    req.temperature = _number(body.get("temperature"), "temperature", 0.0, 2.0)
    req.top_p = _number(body.get("top_p"), "top_p", 0.0, 1.0)
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        bad("stream", "must be a boolean")
    req.stream = bool(stream)
    req.user = want_str(body.get("user"), "user", optional=True)
    if body.get("router") is not None:
        req.router = want_dict(body["router"], "router")
    req.extras = extras
    return req


# ---------------------------------------------------------------- input items


def _decode_input(value: Any, req: ChatRequest) -> None:
    if isinstance(value, str):
        req.messages.append(Message("user", [Text(value)]))
        return
    items = want_list(value, "input")
    if not items:
        bad("input", "must not be empty")
    if len(items) > MAX_ITEMS:
        bad("input", f"at most {MAX_ITEMS} items")
    for i, item in enumerate(items):
        _decode_item(want_dict(item, f"input[{i}]"), f"input[{i}]", req)


def _turn(req: ChatRequest, role: str, *, tool_results: bool = False) -> Message:
    """The message to append to: the last one when it is on the same side (for the user
    side, only a run of tool results merges)."""
    last = req.messages[-1] if req.messages else None
    mergeable = role == "assistant" or (
        tool_results
        and last is not None
        and bool(last.parts)
        and isinstance(last.parts[-1], ToolResult)
    )
    if last is not None and last.role == role and mergeable:
        return last
    msg = Message(role, [])  # type: ignore[arg-type]
    req.messages.append(msg)
    return msg


def _decode_item(item: dict[str, Any], param: str, req: ChatRequest) -> None:
    kind = item.get("type")
    if kind is None and "role" in item:
        kind = "message"  # EasyInputMessage: {role, content}
    if kind == "message":
        role = item.get("role")
        content = decode_content(item.get("content"), f"{param}.content")
        if role in ("system", "developer"):
            for part in content:
                if not isinstance(part, Text):
                    bad(f"{param}.content", f"a {role} message takes text only")
                req.system.append(part)
        elif role == "user":
            req.messages.append(Message("user", list(content)))
        elif role == "assistant":
            _turn(req, "assistant").parts.extend(content)
        else:
            bad(f"{param}.role", "must be user, assistant, system or developer")
    elif kind == "function_call":
        call = ToolCall(
            id=want_str(item.get("call_id"), f"{param}.call_id") or "",
            name=want_str(item.get("name"), f"{param}.name") or "",
            arguments=want_str(item.get("arguments"), f"{param}.arguments") or "",
        )
        _turn(req, "assistant").parts.append(call)
    elif kind == "custom_tool_call":
        call = ToolCall(
            id=want_str(item.get("call_id"), f"{param}.call_id") or "",
            name=want_str(item.get("name"), f"{param}.name") or "",
            arguments=want_str(item.get("input"), f"{param}.input") or "",
            custom=True,
        )
        _turn(req, "assistant").parts.append(call)
    elif kind in ("function_call_output", "custom_tool_call_output"):
        call_id = want_str(item.get("call_id"), f"{param}.call_id") or ""
        output = item.get("output")
        if output is None:
            bad(f"{param}.output", "is required")
        result = ToolResult(
            call_id=call_id,
            content=decode_content(output, f"{param}.output"),
            custom=kind == "custom_tool_call_output",
        )
        _turn(req, "user", tool_results=True).parts.append(result)
    elif kind == "reasoning":
        _turn(req, "assistant").parts.append(_decode_reasoning_item(item, param))
    else:
        bad(f"{param}.type", f"input item type {kind!r} is not supported by the router")


def _decode_reasoning_item(item: dict[str, Any], param: str) -> Reasoning:
    summary = []
    for j, s in enumerate(want_list(item.get("summary", []), f"{param}.summary")):
        s = want_dict(s, f"{param}.summary[{j}]")
        summary.append(want_str(s.get("text"), f"{param}.summary[{j}].text") or "")
    texts = []
    for j, c in enumerate(want_list(item.get("content") or [], f"{param}.content")):
        c = want_dict(c, f"{param}.content[{j}]")
        texts.append(want_str(c.get("text"), f"{param}.content[{j}].text") or "")
    return Reasoning(
        text="".join(texts),
        encrypted=want_str(
            item.get("encrypted_content"), f"{param}.encrypted_content", optional=True
        ),
        origin=PROTOCOL,
        id=want_str(item.get("id"), f"{param}.id", optional=True),
        summary=summary,
    )


# ---------------------------------------------------------------- tools and controls


def _decode_tools(body: dict[str, Any], req: ChatRequest, extras: dict[str, Any]) -> None:
    builtin = []
    for i, tool in enumerate(want_list(body.get("tools") or [], "tools")):
        tool = want_dict(tool, f"tools[{i}]")
        if tool.get("type") == "custom":
            name = want_str(tool.get("name"), f"tools[{i}].name") or ""
            if not name:
                bad(f"tools[{i}].name", "must not be empty")
            fmt = tool.get("format")
            req.tools.append(
                Tool(
                    name=name,
                    description=want_str(
                        tool.get("description"), f"tools[{i}].description", optional=True
                    ),
                    custom=True,
                    format=want_dict(fmt, f"tools[{i}].format") if fmt is not None else None,
                )
            )
            continue
        if tool.get("type") != "function":
            want_str(tool.get("type"), f"tools[{i}].type")
            builtin.append(tool)  # hosted and custom tools travel as given
            continue
        name = want_str(tool.get("name"), f"tools[{i}].name") or ""
        if not name:
            bad(f"tools[{i}].name", "must not be empty")
        params = tool.get("parameters")
        strict = tool.get("strict")
        if strict is not None and not isinstance(strict, bool):
            bad(f"tools[{i}].strict", "must be a boolean")
        req.tools.append(
            Tool(
                name=name,
                description=want_str(
                    tool.get("description"), f"tools[{i}].description", optional=True
                ),
                parameters=want_dict(params, f"tools[{i}].parameters")
                if params is not None
                else {"type": "object"},
                strict=strict,
            )
        )
    if builtin:
        extras["tools"] = builtin

    choice = body.get("tool_choice")
    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        bad("parallel_tool_calls", "must be a boolean")
    if choice in ("auto", "none", "required"):
        req.tool_choice = ToolChoice(mode=choice)
    elif isinstance(choice, dict) and choice.get("type") in ("function", "custom"):
        name = want_str(choice.get("name"), "tool_choice.name")
        req.tool_choice = ToolChoice(mode="tool", name=name)
    elif isinstance(choice, dict):
        want_str(choice.get("type"), "tool_choice.type")
        extras["tool_choice"] = choice  # allowed_tools, a hosted tool, mcp, custom
    elif choice is not None:
        bad("tool_choice", "must be auto, none, required or an object")
    if parallel is not None:
        if req.tool_choice is None:
            req.tool_choice = ToolChoice()
        req.tool_choice.parallel = parallel


def _decode_text(text: Any, req: ChatRequest, extras: dict[str, Any]) -> None:
    if text is None:
        return
    text = want_dict(text, "text")
    if text.get("verbosity") is not None:
        extras["text.verbosity"] = want_str(text["verbosity"], "text.verbosity")
    fmt = text.get("format")
    if fmt is None:
        return
    fmt = want_dict(fmt, "text.format")
    kind = fmt.get("type")
    if kind in ("text", "json_object"):
        req.output = OutputFormat(kind=kind)
    elif kind == "json_schema":
        strict = fmt.get("strict")
        if strict is not None and not isinstance(strict, bool):
            bad("text.format.strict", "must be a boolean")
        req.output = OutputFormat(
            kind="json_schema",
            name=want_str(fmt.get("name"), "text.format.name"),
            schema=want_dict(fmt.get("schema"), "text.format.schema"),
            strict=strict,
        )
        if fmt.get("description") is not None:
            extras["text.format.description"] = want_str(
                fmt["description"], "text.format.description"
            )
    else:
        bad("text.format.type", "must be text, json_object or json_schema")


def _decode_reasoning(value: Any, req: ChatRequest, extras: dict[str, Any]) -> None:
    if value is None:
        return
    value = want_dict(value, "reasoning")
    effort = value.get("effort")
    hint = ReasoningHint(summary=want_str(value.get("summary"), "reasoning.summary", optional=True))
    if effort in EFFORTS:
        hint.effort = effort
    elif effort == "none":
        hint.enabled = False
    elif effort == "xhigh":
        # Beyond the model's scale: the hint says "high" to other protocols, and a
        # Responses upstream gets the client's own value back.
        hint.effort = "high"
        extras["reasoning.effort"] = effort
    elif effort is not None:
        bad("reasoning.effort", "must be none, minimal, low, medium, high or xhigh")
    # generate_summary is the older name of summary
    if hint.summary is None and value.get("generate_summary") is not None:
        hint.summary = want_str(value["generate_summary"], "reasoning.generate_summary")
    req.reasoning = hint


def _int(value: Any, param: str, *, low: int) -> int | None:
    return None if value is None else want_int(value, param, minimum=low)


def _number(value: Any, param: str, low: float, high: float) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        bad(param, f"must be a number in [{low}, {high}]")
    return float(value)
