"""A client's Messages API request (Claude Code and friends) as a :class:`ChatRequest`.

Everything is checked here, once, with the error naming the exact field to fix
(``messages.3.content.0.tool_use_id``), so the rest of the router trusts the model.
Fields the model has no slot for go to ``extras`` verbatim (they reach only an
Anthropic upstream); server tools (``web_search_20250305``, ``bash``, …) too, under
``extras["server_tools"]``, because a ``Tool`` is a function the client runs.
Per-block fields that would change the answer and have nowhere to go (document
``citations`` / ``context``, server-tool result blocks in the history) are refused with a
400 rather than dropped.
"""

from __future__ import annotations

import base64
from typing import Any

from router.chat.codecs._common import bad, want_dict, want_int, want_str
from router.chat.codecs.anthropic._wire import NAME, compact_json
from router.chat.model import (
    ChatRequest,
    Document,
    Image,
    Message,
    OutputFormat,
    Part,
    Reasoning,
    ReasoningHint,
    Text,
    Tool,
    ToolCall,
    ToolChoice,
    ToolResult,
)
from router.errors import InvalidRequestError

# Top-level fields mapped into the model; every other one is carried in extras.
_MAPPED = {
    "model",
    "max_tokens",
    "system",
    "messages",
    "tools",
    "tool_choice",
    "thinking",
    "stop_sequences",
    "temperature",
    "top_p",
    "top_k",
    "stream",
    "metadata",
    "router",
    "output_config",
}
_EFFORTS = ("low", "medium", "high")


def _str(obj: dict[str, Any], key: str, param: str, *, optional: bool = False) -> Any:
    return want_str(obj.get(key), f"{param}.{key}", optional=optional)


def _number(value: Any, param: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        bad(param, "must be a number")
    return float(value)


def _cache(block: dict[str, Any], param: str) -> dict[str, Any] | None:
    value = block.get("cache_control")
    return None if value is None else want_dict(value, f"{param}.cache_control")


def _text(block: dict[str, Any], param: str) -> Text:
    return Text(_str(block, "text", param), cache_control=_cache(block, param))


def _image(block: dict[str, Any], param: str) -> Image:
    source = want_dict(block.get("source"), f"{param}.source")
    kind = source.get("type")
    cache = _cache(block, param)
    if kind == "base64":
        sp = f"{param}.source"
        return Image(
            data=_str(source, "data", sp),
            media_type=_str(source, "media_type", sp),
            cache_control=cache,
        )
    if kind == "url":
        return Image(url=_str(source, "url", f"{param}.source"), cache_control=cache)
    bad(f"{param}.source.type", "must be 'base64' or 'url'")


def _document(block: dict[str, Any], param: str) -> Document:
    for key in ("citations", "context"):
        if block.get(key):
            bad(f"{param}.{key}", "is not supported by this router")
    source = want_dict(block.get("source"), f"{param}.source")
    sp = f"{param}.source"
    doc = Document(
        title=_str(block, "title", param, optional=True), cache_control=_cache(block, param)
    )
    kind = source.get("type")
    if kind == "base64":
        doc.data, doc.media_type = _str(source, "data", sp), _str(source, "media_type", sp)
    elif kind == "text":
        # Document.data is base64 in the model (what OpenAI's file parts carry too).
        doc.data = base64.b64encode(_str(source, "data", sp).encode()).decode()
        doc.media_type = "text/plain"
    elif kind == "url":
        doc.url = _str(source, "url", sp)
    elif kind == "file":
        doc.file_id = _str(source, "file_id", sp)
    else:
        bad(f"{sp}.type", "must be 'base64', 'text', 'url' or 'file'")
    return doc


def _tool_result(block: dict[str, Any], param: str) -> ToolResult:
    call_id = _str(block, "tool_use_id", param)
    content = block.get("content")
    parts: list[Text | Image | Document] = []
    if isinstance(content, str):
        parts = [Text(content)] if content else []
    elif isinstance(content, list):
        for i, item in enumerate(content):
            ip = f"{param}.content.{i}"
            item = want_dict(item, ip)
            kind = item.get("type")
            if kind == "text":
                parts.append(_text(item, ip))
            elif kind == "image":
                parts.append(_image(item, ip))
            elif kind == "document":
                parts.append(_document(item, ip))
            else:
                bad(f"{ip}.type", "must be 'text', 'image' or 'document'")
    elif content is not None:
        bad(f"{param}.content", "must be a string or a list of blocks")
    is_error = block.get("is_error") or False
    if not isinstance(is_error, bool):
        bad(f"{param}.is_error", "must be a boolean")
    return ToolResult(call_id, parts, is_error=is_error, cache_control=_cache(block, param))


def _block(block: Any, role: str, param: str) -> Part:
    block = want_dict(block, param)
    kind = block.get("type")
    if kind == "text":
        return _text(block, param)
    if kind == "image":
        return _image(block, param)
    if kind == "document":
        return _document(block, param)
    if kind == "tool_result" and role == "user":
        return _tool_result(block, param)
    if kind == "tool_use" and role == "assistant":
        args = block.get("input", {})
        if not isinstance(args, dict):
            bad(f"{param}.input", "must be an object")
        # cache_control on a tool_use has no slot: it changes the bill, not the answer.
        return ToolCall(_str(block, "id", param), _str(block, "name", param), compact_json(args))
    if kind == "thinking" and role == "assistant":
        signature = _str(block, "signature", param, optional=True)
        return Reasoning(text=_str(block, "thinking", param), signature=signature, origin=NAME)
    if kind == "redacted_thinking" and role == "assistant":
        return Reasoning(redacted=True, encrypted=_str(block, "data", param), origin=NAME)
    bad(f"{param}.type", f"block type {kind!r} is not supported in a {role} turn")


def _messages(value: Any, system: list[Text]) -> list[Message]:
    """The turns; a ``system`` turn among them (Claude Code sends its environment that
    way) is hoisted into ``system``, after the top-level blocks: every protocol has a
    system prompt, and Anthropic's API refuses the role inside ``messages``."""
    if not isinstance(value, list) or not value:
        bad("messages", "must be a non-empty list")
    out = []
    for i, msg in enumerate(value):
        param = f"messages.{i}"
        msg = want_dict(msg, param)
        role = msg.get("role")
        if role == "system":
            system += _system(msg.get("content"), f"{param}.content")
            continue
        if role not in ("user", "assistant"):
            bad(f"{param}.role", "must be 'user', 'assistant' or 'system'")
        content = msg.get("content")
        if isinstance(content, str):
            parts: list[Part] = [Text(content)] if content else []
        elif isinstance(content, list):
            parts = [_block(b, role, f"{param}.content.{j}") for j, b in enumerate(content)]
        else:
            bad(f"{param}.content", "must be a string or a list of blocks")
        out.append(Message(role=role, parts=parts))
    return out


def _system(value: Any, param: str = "system") -> list[Text]:
    if value is None:
        return []
    if isinstance(value, str):
        return [Text(value)] if value else []
    if not isinstance(value, list):
        bad(param, "must be a string or a list of text blocks")
    out = []
    for i, block in enumerate(value):
        block = want_dict(block, f"{param}.{i}")
        if block.get("type") != "text":
            bad(f"{param}.{i}.type", "must be 'text'")
        out.append(_text(block, f"{param}.{i}"))
    return out


def _tools(value: Any, extras: dict[str, Any]) -> list[Tool]:
    if value is None:
        return []
    if not isinstance(value, list):
        bad("tools", "must be a list")
    tools, server = [], []
    for i, tool in enumerate(value):
        param = f"tools.{i}"
        tool = want_dict(tool, param)
        if tool.get("type") not in (None, "custom"):
            server.append(tool)  # web_search_20250305, bash_20250124, …: Anthropic runs them
            continue
        strict = tool.get("strict")
        tools.append(
            Tool(
                name=_str(tool, "name", param),
                description=_str(tool, "description", param, optional=True),
                parameters=want_dict(tool.get("input_schema"), f"{param}.input_schema"),
                strict=strict if isinstance(strict, bool) else None,
                cache_control=_cache(tool, param),
            )
        )
    if server:
        extras["server_tools"] = server
    return tools


def _tool_choice(value: Any) -> ToolChoice | None:
    if value is None:
        return None
    value = want_dict(value, "tool_choice")
    kind = value.get("type")
    modes = {"auto": "auto", "any": "required", "none": "none", "tool": "tool"}
    if kind not in modes:
        bad("tool_choice.type", "must be 'auto', 'any', 'tool' or 'none'")
    name = _str(value, "name", "tool_choice") if kind == "tool" else None
    disable = value.get("disable_parallel_tool_use")
    if disable is not None and not isinstance(disable, bool):
        bad("tool_choice.disable_parallel_tool_use", "must be a boolean")
    return ToolChoice(
        mode=modes[kind], name=name, parallel=None if disable is None else not disable
    )


def _reasoning(thinking: Any, effort: Any, extras: dict[str, Any]) -> ReasoningHint | None:
    hint = None
    if thinking is not None:
        thinking = want_dict(thinking, "thinking")
        kind = thinking.get("type")
        if kind == "enabled":
            budget = want_int(thinking.get("budget_tokens"), "thinking.budget_tokens", minimum=1)
            hint = ReasoningHint(budget_tokens=budget)
        elif kind == "disabled":
            hint = ReasoningHint(enabled=False)
        elif isinstance(kind, str):
            # adaptive, between_tools, …: no budget to state; the original rides along.
            hint = ReasoningHint()
            extras["thinking"] = thinking
        else:
            bad("thinking.type", "must be a string")
    if effort in _EFFORTS and (hint is None or hint.enabled):
        hint = hint or ReasoningHint()
        hint.effort = effort
    return hint


def _output_config(value: Any, extras: dict[str, Any]) -> tuple[OutputFormat | None, Any]:
    """``output_config.format`` (structured outputs) → OutputFormat; the rest (effort
    included) stays in extras verbatim, so an Anthropic upstream gets it back as sent."""
    if value is None:
        return None, None
    value = dict(want_dict(value, "output_config"))
    fmt = value.pop("format", None)
    output = None
    if fmt is not None:
        fmt = want_dict(fmt, "output_config.format")
        if fmt.get("type") != "json_schema":
            bad("output_config.format.type", "must be 'json_schema'")
        schema = want_dict(fmt.get("schema"), "output_config.format.schema")
        output = OutputFormat(kind="json_schema", schema=schema, strict=True)
    if value:
        extras["output_config"] = value
    return output, value.get("effort")


def decode_request(body: dict[str, Any]) -> ChatRequest:
    if not isinstance(body, dict):
        raise InvalidRequestError("the body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        bad("model", "must be a non-empty string")
    if "max_tokens" not in body:
        bad("max_tokens", "is required")
    max_tokens = want_int(body["max_tokens"], "max_tokens", minimum=1)
    extras = {k: v for k, v in body.items() if k not in _MAPPED}
    stop = body.get("stop_sequences") or []
    if not isinstance(stop, list):
        bad("stop_sequences", "must be a list of strings")
    for i, s in enumerate(stop):
        if not isinstance(s, str):
            bad(f"stop_sequences.{i}", "must be a string")
    top_k = body.get("top_k")
    if top_k is not None:
        top_k = want_int(top_k, "top_k")
    stream = body.get("stream", False)
    if not isinstance(stream, bool | None):
        bad("stream", "must be a boolean")
    user = None
    metadata = body.get("metadata")
    if metadata is not None:
        metadata = dict(want_dict(metadata, "metadata"))
        user = _str(metadata, "user_id", "metadata", optional=True)
        metadata.pop("user_id", None)
        if metadata:
            extras["metadata"] = metadata
    router = body.get("router")
    if router is not None:
        router = want_dict(router, "router")
    output, effort = _output_config(body.get("output_config"), extras)
    system = _system(body.get("system"))
    messages = _messages(body.get("messages"), system)
    if not messages:
        bad("messages", "must hold a 'user' or 'assistant' turn")
    return ChatRequest(
        model=model,
        messages=messages,
        system=system,
        tools=_tools(body.get("tools"), extras),
        tool_choice=_tool_choice(body.get("tool_choice")),
        output=output,
        reasoning=_reasoning(body.get("thinking"), effort, extras),
        max_output_tokens=max_tokens,
        temperature=_number(body.get("temperature"), "temperature"),
        top_p=_number(body.get("top_p"), "top_p"),
        top_k=top_k,
        stop=list(stop),
        stream=bool(stream),
        user=user,
        router=router,
        extras=extras,
        extras_protocol=NAME,
    )
