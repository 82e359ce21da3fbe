"""A client's Chat Completions request into the typed model.

Every field is mapped, kept verbatim in ``extras`` (carried only to an OpenAI chat
upstream), or refused with a 400 naming it. Choices made here:

- ``system`` and ``developer`` messages, wherever they stand, become ``req.system`` in
  order (the model has one system prompt; a later system message moves to the front).
  Their ``name`` is not kept.
- Consecutive ``tool`` (and legacy ``function``) messages become one user message of
  ``ToolResult`` parts; a tool message whose call is absent is not an error here.
- An assistant's ``refusal`` (field or part) becomes text: the model's message has no
  refusal, and the next turn reads the same. ``reasoning_content`` (DeepSeek; vLLM's
  ``reasoning``) becomes ``Reasoning`` with no origin.
- Legacy ``functions`` / ``function_call`` become tools and a tool choice; legacy
  assistant ``function_call`` turns get ids (``call_legacy_<message index>``), which the
  following ``function`` message answers.
- ``reasoning_effort`` outside the model's four values (``none``, ``xhigh``, future
  ones) stays in ``extras`` verbatim rather than being guessed at.
- ``max_completion_tokens`` is kept in ``extras`` as well (a marker: the encoder then
  sends that name instead of ``max_tokens``); its value is ``max_output_tokens``.
- ``stream_options`` keys other than ``include_usage`` stay in ``extras``.
- Unknown keys on a message (``audio``, ``annotations``, ``id``) are ignored.
"""

from __future__ import annotations

import json
from typing import Any

from router.chat.codecs.openai_chat.parts import (
    bad,
    decode_text_parts,
    decode_user_parts,
    expect_bool,
    expect_dict,
    expect_int,
    expect_list,
    expect_number,
    expect_str,
    optional_str,
)
from router.chat.model import (
    MAX_MESSAGES,
    ChatRequest,
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

# Top-level fields this decoder maps; every other one goes to ``extras`` verbatim.
MAPPED = frozenset(
    {
        "model",
        "messages",
        "tools",
        "functions",
        "tool_choice",
        "function_call",
        "parallel_tool_calls",
        "response_format",
        "reasoning_effort",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
        "n",
        "seed",
        "stream",
        "stream_options",
        "user",
        "router",
    }
)
_EFFORTS = ("minimal", "low", "medium", "high")


def decode_request(body: Any) -> ChatRequest:
    if not isinstance(body, dict):
        raise InvalidRequestError("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        bad("'model' is required: a non-empty string", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        bad("'messages' is required: a non-empty array", "messages")
    if len(messages) > MAX_MESSAGES:
        bad(f"'messages' has {len(messages)} entries; at most {MAX_MESSAGES}", "messages")

    extras = {k: v for k, v in body.items() if k not in MAPPED}
    req = ChatRequest(model=model, messages=[], extras=extras, extras_protocol="openai-chat")
    _messages(req, messages)
    _tools(req, body)
    _output(req, body.get("response_format"))
    _sampling(req, body)
    return req


# ---------------------------------------------------------------- messages


def _messages(req: ChatRequest, messages: list[Any]) -> None:
    out = req.messages
    legacy_calls: dict[str, str] = {}  # function name -> id given to its last legacy call
    for i, raw in enumerate(messages):
        p = f"messages[{i}]"
        msg = expect_dict(raw, p)
        role = msg.get("role")
        name = optional_str(msg.get("name"), f"{p}.name")
        content = msg.get("content")
        if role in ("system", "developer"):
            req.system.extend(decode_text_parts(content, f"{p}.content"))
        elif role == "user":
            if content is None:
                bad(f"'{p}.content' is required", f"{p}.content")
            out.append(Message("user", list(decode_user_parts(content, f"{p}.content")), name))
        elif role == "assistant":
            out.append(_assistant(msg, p, name, i, legacy_calls))
        elif role in ("tool", "function"):
            result = _tool_result(msg, p, role, legacy_calls)
            last = out[-1] if out else None
            if last and last.role == "user" and all(isinstance(x, ToolResult) for x in last.parts):
                last.parts.append(result)
            else:
                out.append(Message("user", [result]))
        else:
            bad(f"'{p}.role' {role!r} is not a chat role", f"{p}.role")
    if not out:
        bad("'messages' holds only system messages; add a user message", "messages")


def _assistant(
    msg: dict[str, Any], p: str, name: str | None, i: int, legacy_calls: dict[str, str]
) -> Message:
    parts: list[Part] = []
    reasoning = msg.get("reasoning_content") or msg.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        parts.append(Reasoning(text=reasoning))
    content = msg.get("content")
    if isinstance(content, str):
        if content:
            parts.append(Text(content))
    elif content is not None:
        for j, part in enumerate(expect_list(content, f"{p}.content")):
            q = f"{p}.content[{j}]"
            part = expect_dict(part, q)
            if part.get("type") == "text":
                parts.append(Text(expect_str(part.get("text"), f"{q}.text")))
            elif part.get("type") == "refusal":
                parts.append(Text(expect_str(part.get("refusal"), f"{q}.refusal")))
            else:
                bad(f"'{q}.type' must be 'text' or 'refusal'", f"{q}.type")
    refusal = optional_str(msg.get("refusal"), f"{p}.refusal")
    if refusal:
        parts.append(Text(refusal))
    for j, call in enumerate(expect_list(msg.get("tool_calls") or [], f"{p}.tool_calls")):
        parts.append(_tool_call(call, f"{p}.tool_calls[{j}]"))
    if msg.get("function_call") is not None:
        fn = expect_dict(msg["function_call"], f"{p}.function_call")
        fname = expect_str(fn.get("name"), f"{p}.function_call.name")
        args = expect_str(fn.get("arguments", ""), f"{p}.function_call.arguments")
        legacy_calls[fname] = call_id = f"call_legacy_{i}"
        parts.append(ToolCall(call_id, fname, args))
    return Message("assistant", parts, name)


def _tool_call(call: Any, p: str) -> ToolCall:
    call = expect_dict(call, p)
    if call.get("type", "function") != "function":
        bad(f"'{p}.type' must be 'function'", f"{p}.type")
    call_id = expect_str(call.get("id"), f"{p}.id")
    fn = expect_dict(call.get("function"), f"{p}.function")
    fname = expect_str(fn.get("name"), f"{p}.function.name")
    args = fn.get("arguments", "")
    if isinstance(args, dict):  # some clients echo arguments back parsed
        args = json.dumps(args, separators=(",", ":"))
    args = expect_str(args, f"{p}.function.arguments")
    return ToolCall(call_id, fname, args)


def _tool_result(
    msg: dict[str, Any], p: str, role: str, legacy_calls: dict[str, str]
) -> ToolResult:
    if role == "tool":
        call_id = expect_str(msg.get("tool_call_id"), f"{p}.tool_call_id")
    else:
        fname = expect_str(msg.get("name"), f"{p}.name")
        call_id = legacy_calls.get(fname, f"call_legacy_{fname}")
    content = msg.get("content")
    parts = [] if content is None else decode_text_parts(content, f"{p}.content")
    return ToolResult(call_id, list(parts))


# ---------------------------------------------------------------- tools


def _tools(req: ChatRequest, body: dict[str, Any]) -> None:
    for j, tool in enumerate(expect_list(body.get("tools") or [], "tools")):
        p = f"tools[{j}]"
        tool = expect_dict(tool, p)
        if tool.get("type") != "function":
            bad(f"'{p}.type' {tool.get('type')!r}: only 'function' tools are supported", "tools")
        req.tools.append(_function(tool.get("function"), f"{p}.function"))
    for j, fn in enumerate(expect_list(body.get("functions") or [], "functions")):
        req.tools.append(_function(fn, f"functions[{j}]"))

    choice = body.get("tool_choice")
    if choice is None and body.get("function_call") is not None:
        choice, param = body["function_call"], "function_call"
        if isinstance(choice, dict):
            choice = {"type": "function", "function": choice}
    else:
        param = "tool_choice"
    if choice is not None:
        if choice in ("auto", "none", "required"):
            req.tool_choice = ToolChoice(mode=choice)
        elif isinstance(choice, dict) and choice.get("type") == "function":
            fn = expect_dict(choice.get("function"), f"{param}.function")
            name = expect_str(fn.get("name"), f"{param}.function.name")
            req.tool_choice = ToolChoice(mode="tool", name=name)
        else:
            bad(f"'{param}' must be 'auto', 'none', 'required' or a function", param)
    parallel = expect_bool(body.get("parallel_tool_calls"), "parallel_tool_calls")
    if parallel is not None:
        req.tool_choice = req.tool_choice or ToolChoice()
        req.tool_choice.parallel = parallel


def _function(fn: Any, p: str) -> Tool:
    fn = expect_dict(fn, p)
    name = expect_str(fn.get("name"), f"{p}.name")
    desc = optional_str(fn.get("description"), f"{p}.description")
    params = fn.get("parameters")
    params = {"type": "object"} if params is None else expect_dict(params, f"{p}.parameters")
    strict = expect_bool(fn.get("strict"), f"{p}.strict")
    return Tool(name=name, description=desc, parameters=params, strict=strict)


def _output(req: ChatRequest, fmt: Any) -> None:
    if fmt is None:
        return
    fmt = expect_dict(fmt, "response_format")
    kind = fmt.get("type")
    if kind in ("text", "json_object"):
        req.output = OutputFormat(kind=kind)
    elif kind == "json_schema":
        spec = expect_dict(fmt.get("json_schema"), "response_format.json_schema")
        p = "response_format.json_schema"
        schema = spec.get("schema")
        req.output = OutputFormat(
            kind="json_schema",
            name=optional_str(spec.get("name"), f"{p}.name"),
            schema=None if schema is None else expect_dict(schema, f"{p}.schema"),
            strict=expect_bool(spec.get("strict"), f"{p}.strict"),
            description=optional_str(spec.get("description"), f"{p}.description"),
        )
    else:
        bad(
            "'response_format.type' must be 'text', 'json_object' or 'json_schema'",
            "response_format.type",
        )


# ---------------------------------------------------------------- sampling and the rest


def _sampling(req: ChatRequest, body: dict[str, Any]) -> None:
    effort = body.get("reasoning_effort")
    if effort is not None:
        expect_str(effort, "reasoning_effort")
        if effort in _EFFORTS:
            req.reasoning = ReasoningHint(effort=effort)
        else:
            req.extras["reasoning_effort"] = effort
    mct = expect_int(body.get("max_completion_tokens"), "max_completion_tokens", minimum=1)
    mt = expect_int(body.get("max_tokens"), "max_tokens", minimum=1)
    if mct is not None:
        req.extras["max_completion_tokens"] = mct
    req.max_output_tokens = mct if mct is not None else mt
    req.temperature = expect_number(body.get("temperature"), "temperature")
    req.top_p = expect_number(body.get("top_p"), "top_p")
    stop = body.get("stop")
    if isinstance(stop, str):
        req.stop = [stop]
    elif stop is not None:
        req.stop = [expect_str(s, f"stop[{k}]") for k, s in enumerate(expect_list(stop, "stop"))]
    req.n = expect_int(body.get("n"), "n", minimum=1)
    req.seed = expect_int(body.get("seed"), "seed")
    req.stream = bool(expect_bool(body.get("stream"), "stream"))
    opts = body.get("stream_options")
    if opts is not None:
        opts = expect_dict(opts, "stream_options")
        usage = expect_bool(opts.get("include_usage"), "stream_options.include_usage")
        req.stream_usage = bool(usage)
        rest = {k: v for k, v in opts.items() if k != "include_usage"}
        if rest:
            req.extras["stream_options"] = rest
    req.user = optional_str(body.get("user"), "user")
    router = body.get("router")
    req.router = None if router is None else expect_dict(router, "router")
