"""The typed request as a Chat Completions body for a provider, and what chat cannot say.

Choices made here:

- The system prompt goes first as one ``system`` message; text-only content is one
  string (parts joined by a blank line), which every OpenAI-compatible provider takes.
- A user message's ``ToolResult`` parts become ``tool`` messages, in order, right after
  the assistant turn; its other parts follow as one user message. ``is_error`` has no
  chat field and is left out (the result's text says what failed).
- ``Reasoning`` parts are never sent: chat has no field for them, and DeepSeek rejects
  ``reasoning_content`` in input messages.
- ``max_output_tokens`` goes out as ``max_tokens`` (DeepSeek, Groq and vLLM take only
  that name) unless the client itself sent ``max_completion_tokens`` (marked in
  ``extras``), which OpenAI's reasoning models require. ``default_max_tokens`` is not
  used: chat needs no limit.
- A ``ReasoningHint`` maps to ``reasoning_effort``: its effort, else its token budget
  bucketed (under 4096: low; under 16384: medium; more: high); disabled or empty hints
  are left out (the model's default).
- A streamed request always asks for ``stream_options.include_usage``: the router bills
  from the usage chunk, whether or not the client wanted it.
- ``extras`` go out only when they are chat's own; of another protocol's, the keys in
  ``CARRIED`` are renamed and sent, those in ``IGNORED`` (which do not change the
  answer) left out, and any other makes chat ineligible (``unsupported``).
"""

from __future__ import annotations

from typing import Any

from router.chat.codecs._common import anthropic_neutral
from router.chat.codecs._custom import functions_only
from router.chat.codecs.openai_chat.parts import encode_text, encode_user_parts, sendable_document
from router.chat.model import (
    ChatRequest,
    Document,
    Image,
    Message,
    OutputFormat,
    Protocol,
    ReasoningHint,
    Text,
    ToolCall,
    ToolResult,
    Unsupported,
)

NAME: Protocol = "openai-chat"

# Another protocol's extras keys that mean the same in chat: protocol -> {key: chat key}.
CARRIED: dict[str, dict[str, str]] = {
    "openai-responses": {
        "store": "store",
        "metadata": "metadata",
        "service_tier": "service_tier",
        "prompt_cache_key": "prompt_cache_key",
        "safety_identifier": "safety_identifier",
    },
}
# Another protocol's extras keys that do not change the answer: left out.
IGNORED: dict[str, frozenset[str]] = {
    "anthropic-messages": frozenset({"metadata", "service_tier"}),
    # include: extra output (encrypted reasoning, logprobs) that chat does not return;
    # previous_response_id: the router resolved it (the stored conversation is in the
    # messages).
    "openai-responses": frozenset({"include", "previous_response_id"}),
}
# Chat's own extras that the encoder reads as markers rather than sends as they are.
_MARKERS = ("max_completion_tokens", "stream_options", "reasoning_effort")


def unsupported(req: ChatRequest) -> list[Unsupported]:
    out = []

    def no(field: str, why: str) -> None:
        out.append(Unsupported(field=field, protocol=NAME, why=why))

    if req.top_k is not None:
        no("top_k", "OpenAI chat has no top_k")
    for i, msg in enumerate(req.messages):
        for j, part in enumerate(msg.parts):
            where = f"messages[{i}].content[{j}]"
            if isinstance(part, Document) and not sendable_document(part):
                no(where, "chat's file part takes inline data or a file id, not a URL")
            elif msg.role == "assistant" and isinstance(part, Image | Document):
                no(where, "chat's assistant messages hold only text and tool calls")
            elif isinstance(part, ToolResult) and any(
                not isinstance(c, Text) for c in part.content
            ):
                no(where, "chat's tool messages hold only text")
    if req.extras_protocol not in (None, NAME):
        carried = CARRIED.get(req.extras_protocol, {})
        ignored = IGNORED.get(req.extras_protocol, frozenset())
        for key, value in req.extras.items():
            if key in carried or key in ignored:
                continue
            if req.extras_protocol == "anthropic-messages" and anthropic_neutral(key, value):
                continue
            if req.extras_protocol == "openai-responses" and key == "text" and _verbosity(value):
                continue
            no(key, f"an {req.extras_protocol} field OpenAI chat cannot express")
    return out


def _verbosity(text: Any) -> str | None:
    """Responses' ``text.verbosity``, when that is all ``text`` holds."""
    if isinstance(text, dict) and set(text) == {"verbosity"}:
        return text["verbosity"]
    return None


def encode_request(
    req: ChatRequest, upstream_model: str, *, default_max_tokens: int | None = None
) -> dict[str, Any]:
    req = functions_only(req)  # custom tools as one-string functions (codecs/_custom.py)
    body: dict[str, Any] = {"model": upstream_model, "messages": _messages(req)}
    extras = req.extras if req.extras_protocol == NAME else {}
    body.update((k, v) for k, v in extras.items() if k not in _MARKERS)
    if req.extras_protocol in CARRIED:
        for key, chat_key in CARRIED[req.extras_protocol].items():
            if key in req.extras:
                body[chat_key] = req.extras[key]
        if verbosity := _verbosity(req.extras.get("text")):
            body["verbosity"] = verbosity

    if req.tools:
        body["tools"] = [_tool(t) for t in req.tools]
    choice = req.tool_choice
    if choice is not None:
        if choice.mode == "tool":
            body["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
        elif choice.mode != "auto" or req.tools:
            body["tool_choice"] = choice.mode
        if choice.parallel is not None:
            body["parallel_tool_calls"] = choice.parallel
    if req.output is not None:
        body["response_format"] = _output(req.output)
    effort = reasoning_effort(req.reasoning)
    if effort is None and isinstance(extras.get("reasoning_effort"), str):
        effort = extras["reasoning_effort"]
    if effort is not None:
        body["reasoning_effort"] = effort
    if req.max_output_tokens is not None:
        key = "max_completion_tokens" if "max_completion_tokens" in extras else "max_tokens"
        body[key] = req.max_output_tokens
    for key in ("temperature", "top_p", "n", "seed", "user"):
        value = getattr(req, key)
        if value is not None:
            body[key] = value
    if req.stop:
        body["stop"] = list(req.stop)
    if req.stream:
        body["stream"] = True
        opts = extras.get("stream_options")
        body["stream_options"] = {**(opts if isinstance(opts, dict) else {}), "include_usage": True}
    return body


def reasoning_effort(hint: ReasoningHint | None) -> str | None:
    if hint is None or not hint.enabled:
        return None
    if hint.effort is not None:
        return hint.effort
    if hint.budget_tokens is None:
        return None
    if hint.budget_tokens < 4096:
        return "low"
    return "medium" if hint.budget_tokens < 16384 else "high"


def _messages(req: ChatRequest) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if req.system:
        out.append({"role": "system", "content": encode_text(req.system)})
    for msg in req.messages:
        if msg.role == "assistant":
            out.append(_assistant(msg))
            continue
        rest: list[Text | Image | Document] = []
        results = False
        for part in msg.parts:
            if isinstance(part, ToolResult):
                results = True
                texts = [c for c in part.content if isinstance(c, Text)]
                out.append(
                    {"role": "tool", "tool_call_id": part.call_id, "content": encode_text(texts)}
                )
            elif isinstance(part, Text | Image | Document):
                rest.append(part)
        if rest or not results:
            user: dict[str, Any] = {"role": "user", "content": encode_user_parts(rest)}
            if msg.name:
                user["name"] = msg.name
            out.append(user)
    return out


def _assistant(msg: Message) -> dict[str, Any]:
    texts = [p for p in msg.parts if isinstance(p, Text)]
    calls = [p for p in msg.parts if isinstance(p, ToolCall)]
    out: dict[str, Any] = {"role": "assistant", "content": encode_text(texts) if texts else None}
    if calls:
        out["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments},
            }
            for c in calls
        ]
    elif out["content"] is None:
        out["content"] = ""
    if msg.name:
        out["name"] = msg.name
    return out


def _tool(tool: Any) -> dict[str, Any]:
    fn: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        fn["description"] = tool.description
    fn["parameters"] = tool.parameters
    if tool.strict is not None:
        fn["strict"] = tool.strict
    return {"type": "function", "function": fn}


def _output(fmt: OutputFormat) -> dict[str, Any]:
    if fmt.kind != "json_schema":
        return {"type": fmt.kind}
    spec: dict[str, Any] = {"name": fmt.name or "response"}
    if fmt.description is not None:
        spec["description"] = fmt.description
    spec["schema"] = fmt.schema if fmt.schema is not None else {"type": "object"}
    if fmt.strict is not None:
        spec["strict"] = fmt.strict
    return {"type": "json_schema", "json_schema": spec}
