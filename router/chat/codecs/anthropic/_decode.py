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


def _fail(message: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(f"{param}: {message}", param=param)


def _dict(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail("must be an object", param)
    return value


def _str(obj: dict[str, Any], key: str, param: str, *, optional: bool = False) -> Any:
    value = obj.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise _fail("must be a string", f"{param}.{key}")
    return value


def _int(value: Any, param: str, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(f"must be an integer >= {minimum}", param)
    return value


def _number(value: Any, param: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail("must be a number", param)
    return float(value)


def _cache(block: dict[str, Any], param: str) -> dict[str, Any] | None:
    value = block.get("cache_control")
    return None if value is None else _dict(value, f"{param}.cache_control")


def _text(block: dict[str, Any], param: str) -> Text:
    return Text(_str(block, "text", param), cache_control=_cache(block, param))


def _image(block: dict[str, Any], param: str) -> Image:
    source = _dict(block.get("source"), f"{param}.source")
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
    raise _fail("must be 'base64' or 'url'", f"{param}.source.type")


def _document(block: dict[str, Any], param: str) -> Document:
    for key in ("citations", "context"):
        if block.get(key):
            raise _fail("is not supported by this router", f"{param}.{key}")
    source = _dict(block.get("source"), f"{param}.source")
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
        raise _fail("must be 'base64', 'text', 'url' or 'file'", f"{sp}.type")
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
            item = _dict(item, ip)
            kind = item.get("type")
            if kind == "text":
                parts.append(_text(item, ip))
            elif kind == "image":
                parts.append(_image(item, ip))
            elif kind == "document":
                parts.append(_document(item, ip))
            else:
                raise _fail("must be 'text', 'image' or 'document'", f"{ip}.type")
    elif content is not None:
        raise _fail("must be a string or a list of blocks", f"{param}.content")
    is_error = block.get("is_error") or False
    if not isinstance(is_error, bool):
        raise _fail("must be a boolean", f"{param}.is_error")
    return ToolResult(call_id, parts, is_error=is_error, cache_control=_cache(block, param))


def _block(block: Any, role: str, param: str) -> Part:
    block = _dict(block, param)
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
            raise _fail("must be an object", f"{param}.input")
        # cache_control on a tool_use has no slot: it changes the bill, not the answer.
        return ToolCall(_str(block, "id", param), _str(block, "name", param), compact_json(args))
    if kind == "thinking" and role == "assistant":
        signature = _str(block, "signature", param, optional=True)
        return Reasoning(text=_str(block, "thinking", param), signature=signature, origin=NAME)
    if kind == "redacted_thinking" and role == "assistant":
        return Reasoning(redacted=True, encrypted=_str(block, "data", param), origin=NAME)
    raise _fail(f"block type {kind!r} is not supported in a {role} turn", f"{param}.type")


def _messages(value: Any) -> list[Message]:
    if not isinstance(value, list) or not value:
        raise _fail("must be a non-empty list", "messages")
    out = []
    for i, msg in enumerate(value):
        param = f"messages.{i}"
        msg = _dict(msg, param)
        role = msg.get("role")
        if role not in ("user", "assistant"):
            raise _fail("must be 'user' or 'assistant'", f"{param}.role")
        content = msg.get("content")
        if isinstance(content, str):
            parts: list[Part] = [Text(content)] if content else []
        elif isinstance(content, list):
            parts = [_block(b, role, f"{param}.content.{j}") for j, b in enumerate(content)]
        else:
            raise _fail("must be a string or a list of blocks", f"{param}.content")
        out.append(Message(role=role, parts=parts))
    return out


def _system(value: Any) -> list[Text]:
    if value is None:
        return []
    if isinstance(value, str):
        return [Text(value)] if value else []
    if not isinstance(value, list):
        raise _fail("must be a string or a list of text blocks", "system")
    out = []
    for i, block in enumerate(value):
        block = _dict(block, f"system.{i}")
        if block.get("type") != "text":
            raise _fail("must be 'text'", f"system.{i}.type")
        out.append(_text(block, f"system.{i}"))
    return out


def _tools(value: Any, extras: dict[str, Any]) -> list[Tool]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _fail("must be a list", "tools")
    tools, server = [], []
    for i, tool in enumerate(value):
        param = f"tools.{i}"
        tool = _dict(tool, param)
        if tool.get("type") not in (None, "custom"):
            server.append(tool)  # web_search_20250305, bash_20250124, …: Anthropic runs them
            continue
        strict = tool.get("strict")
        tools.append(
            Tool(
                name=_str(tool, "name", param),
                description=_str(tool, "description", param, optional=True),
                parameters=_dict(tool.get("input_schema"), f"{param}.input_schema"),
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
    value = _dict(value, "tool_choice")
    kind = value.get("type")
    modes = {"auto": "auto", "any": "required", "none": "none", "tool": "tool"}
    if kind not in modes:
        raise _fail("must be 'auto', 'any', 'tool' or 'none'", "tool_choice.type")
    name = _str(value, "name", "tool_choice") if kind == "tool" else None
    disable = value.get("disable_parallel_tool_use")
    if disable is not None and not isinstance(disable, bool):
        raise _fail("must be a boolean", "tool_choice.disable_parallel_tool_use")
    return ToolChoice(
        mode=modes[kind], name=name, parallel=None if disable is None else not disable
    )


def _reasoning(thinking: Any, effort: Any, extras: dict[str, Any]) -> ReasoningHint | None:
    hint = None
    if thinking is not None:
        thinking = _dict(thinking, "thinking")
        kind = thinking.get("type")
        if kind == "enabled":
            budget = _int(thinking.get("budget_tokens"), "thinking.budget_tokens", minimum=1)
            hint = ReasoningHint(budget_tokens=budget)
        elif kind == "disabled":
            hint = ReasoningHint(enabled=False)
        elif isinstance(kind, str):
            # adaptive, between_tools, …: no budget to state; the original rides along.
            hint = ReasoningHint()
            extras["thinking"] = thinking
        else:
            raise _fail("must be a string", "thinking.type")
    if effort in _EFFORTS and (hint is None or hint.enabled):
        hint = hint or ReasoningHint()
        hint.effort = effort
    return hint


def _output_config(value: Any, extras: dict[str, Any]) -> tuple[OutputFormat | None, Any]:
    """``output_config.format`` (structured outputs) → OutputFormat; the rest (effort
    included) stays in extras verbatim, so an Anthropic upstream gets it back as sent."""
    if value is None:
        return None, None
    value = dict(_dict(value, "output_config"))
    fmt = value.pop("format", None)
    output = None
    if fmt is not None:
        fmt = _dict(fmt, "output_config.format")
        if fmt.get("type") != "json_schema":
            raise _fail("must be 'json_schema'", "output_config.format.type")
        schema = _dict(fmt.get("schema"), "output_config.format.schema")
        output = OutputFormat(kind="json_schema", schema=schema, strict=True)
    if value:
        extras["output_config"] = value
    return output, value.get("effort")


def decode_request(body: dict[str, Any]) -> ChatRequest:
    if not isinstance(body, dict):
        raise InvalidRequestError("the body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _fail("must be a non-empty string", "model")
    if "max_tokens" not in body:
        raise _fail("is required", "max_tokens")
    max_tokens = _int(body["max_tokens"], "max_tokens", minimum=1)
    extras = {k: v for k, v in body.items() if k not in _MAPPED}
    stop = body.get("stop_sequences") or []
    if not isinstance(stop, list):
        raise _fail("must be a list of strings", "stop_sequences")
    for i, s in enumerate(stop):
        if not isinstance(s, str):
            raise _fail("must be a string", f"stop_sequences.{i}")
    top_k = body.get("top_k")
    if top_k is not None:
        top_k = _int(top_k, "top_k")
    stream = body.get("stream", False)
    if not isinstance(stream, bool | None):
        raise _fail("must be a boolean", "stream")
    user = None
    metadata = body.get("metadata")
    if metadata is not None:
        metadata = dict(_dict(metadata, "metadata"))
        user = _str(metadata, "user_id", "metadata", optional=True)
        metadata.pop("user_id", None)
        if metadata:
            extras["metadata"] = metadata
    router = body.get("router")
    if router is not None:
        router = _dict(router, "router")
    output, effort = _output_config(body.get("output_config"), extras)
    return ChatRequest(
        model=model,
        messages=_messages(body.get("messages")),
        system=_system(body.get("system")),
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
