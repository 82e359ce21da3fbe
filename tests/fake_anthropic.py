"""Anthropic Messages (``POST /v1/messages``) for the fake upstream.

Checked as Anthropic checks, independently of the router's codec: ``x-api-key`` or a
Bearer key, as the anthropic SDK 2.x sends it (401 ``authentication_error``) and ``anthropic-version`` (400); ``max_tokens`` an integer
>= 1; roles ``user``/``assistant`` alternating from ``user`` (``system`` is a top-level
field); tool ids match ``^[a-zA-Z0-9_-]+$``; every ``tool_result`` answers a
``tool_use`` of the message just before, and every ``tool_use`` followed by a message is
answered there; ``thinking`` and ``redacted_thinking`` blocks carry a signature / data
this fake issued; with thinking enabled, ``1024 <= budget_tokens < max_tokens``, no
forced tool choice, no ``temperature`` other than 1, and the last assistant turn that
used a tool starts with a thinking block; at most 4 ``cache_control`` breakpoints, ttl
``5m``/``1h``, no 1h after a 5m.

Answers: thinking first when enabled (``redacted_thinking`` when the last user text holds
Anthropic's test trigger), then a ``tool_use`` when ``tool_choice`` forces one or the
last user text says ``call tool <name>`` (reusing the id of the request's last
``tool_use`` when it also says ``with the same id``: a test's way to get an answer that
names an id of the request), else JSON for ``output_config.format``
json_schema, else ``[<model>] echo: <words>`` (cut at ``max_tokens``). Usage and caching:
:mod:`fake_billing`.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from dataclasses import replace
from typing import Any

from fake_billing import Block, Line, canonical, tokens
from fake_wire import Event, ProviderError, ProviderState, Reply

from router.offline.schema_instance import minimal_instance

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
TRIGGER = re.compile(r"call tool ([a-zA-Z0-9_-]+)")
SAME_ID = "with the same id"
REDACT = "ANTHROPIC_MAGIC_STRING_TRIGGER_REDACTED_THINKING_46C9A13E193C177646C7398A98432ECCCE4C1253"
MAX_BREAKPOINTS = 4
ECHO_WORDS = 48
BLOCK_TYPES = {"text", "image", "document", "tool_use", "tool_result", "thinking",
               "redacted_thinking", "search_result"}  # fmt: skip
THINKING_FIRST = (
    "Expected `thinking` or `redacted_thinking`, but found `{}`. When `thinking` is "
    "enabled, a final `assistant` message must start with a thinking block (preceeding the "
    "lastmost set of `tool_use` and `tool_result` blocks). We recommend you include thinking "
    "blocks from previous turns. To avoid this requirement, disable `thinking`."
)

_ids = itertools.count(1)
_prefix = os.urandom(4).hex()


def _new_id(kind: str) -> str:
    return f"{kind}_fake{_prefix}{next(_ids):08d}"


def error_body(status: int, message: str) -> dict:
    return {
        "type": "error",
        "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message},
    }


def _bad(message: str) -> ProviderError:
    return ProviderError(400, error_body(400, message))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _blocks(content: Any, where: str) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list) or not all(isinstance(b, dict) for b in content):
        raise _bad(f"{where}: Input should be a valid string or a list of content blocks")
    return content


def _thinking_budget(body: dict) -> int | None:
    """The thinking budget when thinking is enabled (``adaptive``: -1), else None."""
    t = body.get("thinking")
    if t is None or (isinstance(t, dict) and t.get("type") == "disabled"):
        return None
    if not isinstance(t, dict) or t.get("type") not in ("enabled", "adaptive"):
        raise _bad(
            "thinking: Input tag found using 'type' does not match any of the expected tags: 'enabled', 'disabled', 'adaptive'"
        )
    if t["type"] == "adaptive":
        return -1
    budget = t.get("budget_tokens")
    if not _is_int(budget):
        raise _bad("thinking.enabled.budget_tokens: Field required")
    if budget < 1024:
        raise _bad("thinking.enabled.budget_tokens: Input should be greater than or equal to 1024")
    if budget >= body["max_tokens"]:
        raise _bad("`max_tokens` must be greater than `thinking.budget_tokens`.")
    return budget


def _tools(body: dict) -> dict[str, dict]:
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        raise _bad("tools: Input should be a valid list")
    out = {}
    for i, t in enumerate(tools):
        name = t.get("name") if isinstance(t, dict) else None
        if not isinstance(name, str) or not TOOL_NAME.match(name):
            raise _bad(
                f"tools.{i}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'"
            )
        if t.get("type") in (None, "custom") and not isinstance(t.get("input_schema"), dict):
            raise _bad(f"tools.{i}.custom.input_schema: Field required")
        out[name] = t
    return out


def _check_cache_controls(body: dict) -> None:
    marks: list[tuple[str, Any]] = []
    for i, t in enumerate(body.get("tools") or []):
        marks.append((f"tools.{i}", t.get("cache_control")))
    if isinstance(body.get("system"), list):
        for i, b in enumerate(body["system"]):
            marks.append((f"system.{i}", b.get("cache_control") if isinstance(b, dict) else None))
    for i, m in enumerate(body["messages"]):
        if isinstance(m.get("content"), list):
            for j, b in enumerate(m["content"]):
                marks.append((f"messages.{i}.content.{j}", b.get("cache_control")))
    marks = [(w, cc) for w, cc in marks if cc is not None]
    if len(marks) > MAX_BREAKPOINTS:
        raise _bad(
            f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. Found {len(marks)}."
        )
    seen_5m = False
    for where, cc in marks:
        if not isinstance(cc, dict) or cc.get("type") != "ephemeral":
            raise _bad(f"{where}.cache_control.type: Input should be 'ephemeral'")
        ttl = cc.get("ttl", "5m")
        if ttl not in ("5m", "1h"):
            raise _bad(f"{where}.cache_control.ttl: Input should be '5m' or '1h'")
        if ttl == "1h" and seen_5m:
            raise _bad(
                "a ttl='1h' cache_control block must not come after a ttl='5m' cache_control block"
            )
        seen_5m = seen_5m or ttl == "5m"


class Anthropic:
    name = "anthropic-messages"

    def error(self, status: int, message: str) -> dict:
        return error_body(status, message)

    def authenticate(self, headers: dict, keys: set[str] | None) -> None:
        # The anthropic SDK (2.x) sends the key as a Bearer token; the API takes both.
        auth = headers.get("authorization", "")
        bearer = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        key = headers.get("x-api-key") or bearer
        if not key or (keys is not None and key not in keys):
            raise ProviderError(401, error_body(401, "invalid x-api-key"))
        if not headers.get("anthropic-version"):
            raise _bad("anthropic-version: header is required")

    def validate(self, body: dict, state: ProviderState) -> None:
        if not isinstance(body.get("model"), str):
            raise _bad("model: Field required")
        if "max_tokens" not in body:
            raise _bad("max_tokens: Field required")
        if not _is_int(body["max_tokens"]) or body["max_tokens"] < 1:
            raise _bad("max_tokens: Input should be greater than or equal to 1")
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) for m in msgs):
            raise _bad("messages: Input should be a non-empty list of messages")
        budget = _thinking_budget(body)
        tools = _tools(body)
        choice = body.get("tool_choice") or {"type": "auto"}
        if not isinstance(choice, dict) or choice.get("type") not in (
            "auto",
            "any",
            "tool",
            "none",
        ):
            raise _bad(
                "tool_choice: Input tag found using 'type' does not match any of the expected tags"
            )
        if choice.get("type") == "tool" and choice.get("name") not in tools:
            raise _bad(f"Tool '{choice.get('name')}' not found in provided tools")
        if budget is not None and choice.get("type") in ("any", "tool"):
            raise _bad("Thinking may not be enabled when tool_choice forces tool use.")
        if budget is not None and body.get("temperature", 1) != 1:
            raise _bad("`temperature` may only be set to 1 when thinking is enabled.")
        _check_cache_controls(body)
        asked: list[str] = []  # tool_use ids of the previous (assistant) message
        for i, m in enumerate(msgs):
            role = m.get("role")
            if role == "system":
                raise _bad(
                    f'messages.{i}.role: Unexpected role "system". The Messages API accepts a '
                    'top-level `system` parameter, not "system" as an input message role.'
                )
            if role not in ("user", "assistant"):
                raise _bad(f"messages.{i}.role: Input should be 'user' or 'assistant'")
            if i == 0 and role != "user":
                raise _bad('messages: first message must use the "user" role')
            if i > 0 and role == msgs[i - 1].get("role"):
                raise _bad(
                    f'messages: roles must alternate between "user" and "assistant", but found multiple "{role}" roles in a row'
                )
            blocks = _blocks(m.get("content"), f"messages.{i}.content")
            asked = self._check_blocks(i, role, blocks, asked, state)
        if budget is not None:
            last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=None)
            if last is not None:
                blocks = _blocks(msgs[last]["content"], "")
                first = blocks[0].get("type") if blocks else "text"
                if any(b.get("type") == "tool_use" for b in blocks) and first not in (
                    "thinking",
                    "redacted_thinking",
                ):
                    raise _bad(f"messages.{last}.content.0.type: " + THINKING_FIRST.format(first))

    def _check_blocks(
        self, i: int, role: str, blocks: list[dict], asked: list[str], state: ProviderState
    ) -> list[str]:
        uses, answered = [], []
        for j, b in enumerate(blocks):
            where, kind = f"messages.{i}.content.{j}", b.get("type")
            if kind not in BLOCK_TYPES:
                raise _bad(
                    f"{where}.type: Input tag '{kind}' found using 'type' does not match any of the expected tags"
                )
            if kind == "text" and not isinstance(b.get("text"), str):
                raise _bad(f"{where}.text.text: Field required")
            if kind in ("tool_use", "thinking", "redacted_thinking") and role != "assistant":
                raise _bad(f"{where}: `{kind}` blocks are only allowed in `assistant` messages")
            if kind == "tool_result" and role != "user":
                raise _bad(f"{where}: `tool_result` blocks are only allowed in `user` messages")
            if kind == "tool_use":
                if not isinstance(b.get("id"), str) or not TOOL_ID.match(b["id"]):
                    raise _bad(
                        f"{where}.tool_use.id: String should match pattern '^[a-zA-Z0-9_-]+$'"
                    )
                if not isinstance(b.get("input"), dict):
                    raise _bad(f"{where}.tool_use.input: Input should be a valid dictionary")
                uses.append(b["id"])
            elif kind == "tool_result":
                tid = b.get("tool_use_id")
                if not isinstance(tid, str) or not TOOL_ID.match(tid):
                    raise _bad(
                        f"{where}.tool_result.tool_use_id: String should match pattern '^[a-zA-Z0-9_-]+$'"
                    )
                if tid not in asked:
                    raise _bad(
                        f"{where}: unexpected `tool_use_id` found in `tool_result` blocks: {tid}. Each "
                        "`tool_result` block must have a corresponding `tool_use` block in the previous message."
                    )
                answered.append(tid)
            elif kind == "thinking" and not state.signer.verify(
                b.get("signature"), b.get("thinking")
            ):
                raise _bad(f"{where}: Invalid `signature` in `thinking` block")
            elif kind == "redacted_thinking" and state.signer.unseal(b.get("data")) is None:
                raise _bad(f"{where}: Invalid `data` in `redacted_thinking` block")
        missing = [t for t in asked if t not in answered]
        if missing:
            raise _bad(
                f"messages.{i - 1}: `tool_use` ids were found without `tool_result` blocks immediately "
                f"after: {', '.join(missing)}. Each `tool_use` block must have a corresponding "
                "`tool_result` block in the next message."
            )
        return uses

    # ------------------------------------------------------------ the answer

    def reply(self, body: dict, state: ProviderState) -> Reply:
        model, max_tokens = body["model"], body["max_tokens"]
        msgs = body["messages"]
        last_text = ""
        if msgs[-1]["role"] == "user":
            last_text = "\n".join(
                b["text"] for b in _blocks(msgs[-1]["content"], "") if b.get("type") == "text"
            )
        content: list[dict] = []
        if _thinking_budget(body) is not None:
            thought = f"The user asks: {' '.join(last_text.split()[:12])}"
            if REDACT in last_text:
                content.append({"type": "redacted_thinking", "data": state.signer.seal(thought)})
            else:
                content.append(
                    {
                        "type": "thinking",
                        "thinking": thought,
                        "signature": state.signer.sign(thought),
                    }
                )
        tool = _wanted_tool(body, last_text)
        stop = "end_turn"
        if tool is not None:
            args = minimal_instance(tool.get("input_schema") or {}) or {}
            used = [b["id"] for m in msgs for b in _blocks(m["content"], "")
                    if b.get("type") == "tool_use"]  # fmt: skip
            call_id = used[-1] if SAME_ID in last_text and used else _new_id("toolu")
            content.append({"type": "tool_use", "id": call_id, "name": tool["name"], "input": args})
            stop = "tool_use"
        else:
            text = _json_text(body)
            if text is None:
                text = " ".join([f"[{model}]", "echo:", *last_text.split()[:ECHO_WORDS]])
            room = max_tokens - sum(_out_tokens(b) for b in content)
            if tokens(text) > room:
                text, stop = text[: max(0, room - 1) * 4], "max_tokens"
            content.append({"type": "text", "text": text})
        blocks = _input_blocks(body)
        use = state.cache.explicit(model, blocks)
        total = sum(b.tokens for b in blocks)
        out = sum(_out_tokens(b) for b in content)
        usage = {
            "input_tokens": total - use.read - use.write_5m - use.write_1h,
            "cache_creation_input_tokens": use.write_5m + use.write_1h,
            "cache_read_input_tokens": use.read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": use.write_5m,
                "ephemeral_1h_input_tokens": use.write_1h,
            },
            "output_tokens": out,
            "service_tier": "standard",
        }
        msg = {"id": _new_id("msg"), "type": "message", "role": "assistant", "model": model, "content": content,
               "stop_reason": stop, "stop_sequence": None, "usage": usage}  # fmt: skip
        line = Line(
            self.name, model, usage["input_tokens"], use.read, use.write_5m, use.write_1h, out
        )
        return Reply(msg, usage, line, _events(msg, line))


def _wanted_tool(body: dict, last_text: str) -> dict | None:
    tools = {t["name"]: t for t in body.get("tools") or []}
    choice = body.get("tool_choice") or {"type": "auto"}
    if not tools or choice.get("type") == "none":
        return None
    if choice.get("type") == "tool":
        return tools[choice["name"]]
    asked = TRIGGER.search(last_text)
    if asked and asked.group(1) in tools:
        return tools[asked.group(1)]
    return next(iter(tools.values())) if choice.get("type") == "any" else None


def _json_text(body: dict) -> str | None:
    fmt = (body.get("output_config") or {}).get("format") or body.get("output_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        return json.dumps(minimal_instance(fmt.get("schema") or {"type": "object"}))
    return None


def _out_tokens(block: dict) -> int:
    kind = block["type"]
    if kind == "text":
        return tokens(block["text"])
    if kind == "thinking":
        return tokens(block["thinking"])
    if kind == "tool_use":
        return tokens(block["name"] + json.dumps(block["input"]))
    return tokens(block.get("data", ""))


def _block(prefix: str, b: Any) -> Block:
    """A prompt block as the cache sees it: identified without its cache_control."""
    if not isinstance(b, dict):
        return Block(prefix + canonical(b), tokens(str(b)))
    cc = b.get("cache_control")
    rest = {k: v for k, v in b.items() if k != "cache_control"}
    text = (
        rest["text"]
        if rest.get("type") == "text" and isinstance(rest.get("text"), str)
        else canonical(rest)
    )
    return Block(
        prefix + canonical(rest),
        tokens(text),
        cc.get("ttl", "5m") if isinstance(cc, dict) else None,
    )


def _input_blocks(body: dict) -> list[Block]:
    """Tools, then system, then messages: Anthropic's cache order."""
    out = [_block("tool:", t) for t in body.get("tools") or []]
    system = body.get("system")
    if isinstance(system, str):
        out.append(_block("system:", {"type": "text", "text": system}))
    elif isinstance(system, list):
        out.extend(_block("system:", b) for b in system)
    for m in body["messages"]:
        out.extend(_block(f"{m['role']}:", b) for b in _blocks(m["content"], ""))
    return out


def _pieces(text: str, n: int = 3) -> list[str]:
    """``text`` in ``n`` roughly equal pieces (at least one, maybe empty)."""
    step = max(1, -(-len(text) // n))
    return [text[i : i + step] for i in range(0, len(text), step)] or [""]


def _events(msg: dict, line: Line) -> list[Event]:
    usage = msg["usage"]
    start_usage = {**usage, "output_tokens": 1}
    head = {**msg, "content": [], "stop_reason": None, "usage": start_usage}
    events = [
        Event("message_start", {"type": "message_start", "message": head}, replace(line, output=1)),
        Event("ping", {"type": "ping"}),
    ]

    def ev(name: str, **data: Any) -> None:
        events.append(Event(name, {"type": name, **data}))

    for i, b in enumerate(msg["content"]):
        kind = b["type"]
        if kind == "thinking":
            ev(
                "content_block_start",
                index=i,
                content_block={"type": "thinking", "thinking": "", "signature": ""},
            )
            for p in _pieces(b["thinking"]):
                ev("content_block_delta", index=i, delta={"type": "thinking_delta", "thinking": p})
            ev(
                "content_block_delta",
                index=i,
                delta={"type": "signature_delta", "signature": b["signature"]},
            )
        elif kind == "text":
            ev("content_block_start", index=i, content_block={"type": "text", "text": ""})
            for p in _pieces(b["text"]):
                ev("content_block_delta", index=i, delta={"type": "text_delta", "text": p})
        elif kind == "tool_use":
            ev("content_block_start", index=i, content_block={**b, "input": {}})
            for p in _pieces(json.dumps(b["input"]), 2):
                ev(
                    "content_block_delta",
                    index=i,
                    delta={"type": "input_json_delta", "partial_json": p},
                )
        else:  # redacted_thinking comes whole
            ev("content_block_start", index=i, content_block=b)
        ev("content_block_stop", index=i)
    delta = {"stop_reason": msg["stop_reason"], "stop_sequence": None}
    events.append(
        Event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": delta,
                "usage": {"output_tokens": usage["output_tokens"]},
            },
            line,
        )
    )
    ev("message_stop")
    return events


ANTHROPIC = Anthropic()
