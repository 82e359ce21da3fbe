"""OpenAI Responses (``POST /v1/responses``) for the fake upstream.

Checked as OpenAI checks, independently of the router's codec: a Bearer key (401);
``model`` and ``input`` present; ``previous_response_id`` names a stored response;
every ``function_call_output`` answers a ``function_call`` earlier in the input (or in
the stored conversation it continues); a ``reasoning`` item given back carries
``encrypted_content`` this fake sealed, or is an id it stored (``store`` true); an
``item_reference`` names a stored item; ``text.format`` json_schema has a ``name`` and a
``schema``; a forced function tool is among ``tools``.

Answers: a ``reasoning`` item first when ``reasoning`` is set (a summary when
``reasoning.summary`` is, ``encrypted_content`` when ``include`` asks for
``reasoning.encrypted_content``), then a ``function_call`` when ``tool_choice`` forces
one or the last user text says ``call tool <name>``, else a ``message`` (JSON for a
``text.format`` json_schema, else ``[<model>] echo: <words>``, cut at
``max_output_tokens`` with status ``incomplete``). Usage: ``input_tokens`` with
``cached_tokens`` from automatic prefix caching, ``reasoning_tokens`` inside
``output_tokens`` (:mod:`fake_billing`). Streams send OpenAI's event sequence with
``sequence_number``.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import time
from typing import Any

from fake_billing import Block, Line, canonical, tokens
from fake_wire import Event, ProviderError, ProviderState, Reply

from router.offline.answers import error_body as openai_error
from router.offline.schema_instance import minimal_instance

TRIGGER = re.compile(r"call tool ([a-zA-Z0-9_-]+)")
ECHO_WORDS = 48
ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
               429: "rate_limit_exceeded"}  # fmt: skip

_ids = itertools.count(1)
_prefix = os.urandom(4).hex()


def _new_id(kind: str) -> str:
    return f"{kind}_fake{_prefix}{next(_ids):08d}"


def _bad(message: str, param: str | None = "input", code: str | None = None) -> ProviderError:
    return ProviderError(400, openai_error(message, param=param, code=code))


def _items(body: dict) -> list[dict]:
    raw = body.get("input")
    if isinstance(raw, str):
        return [{"type": "message", "role": "user", "content": raw}]
    return [({"type": "message", **it} if "type" not in it else it) for it in raw]


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            p.get("text", "")
            for p in content
            if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


class Responses:
    name = "openai-responses"

    def error(self, status: int, message: str) -> dict:
        kind = ERROR_TYPES.get(status, "server_error")
        return openai_error(message, type=kind, code=None if status < 500 else str(status))

    def authenticate(self, headers: dict, keys: set[str] | None) -> None:
        auth = headers.get("authorization", "")
        key = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        if not key:
            raise ProviderError(401, openai_error("You didn't provide an API key.", param=None))
        if keys is not None and key not in keys:
            msg = "Incorrect API key provided."
            raise ProviderError(401, openai_error(msg, param=None, code="invalid_api_key"))

    def validate(self, body: dict, state: ProviderState) -> None:
        if not isinstance(body.get("model"), str):
            raise _bad(
                "Missing required parameter: 'model'.", "model", "missing_required_parameter"
            )
        raw = body.get("input")
        if not isinstance(raw, str) and not (
            isinstance(raw, list) and all(isinstance(i, dict) for i in raw)
        ):
            raise _bad("Invalid type for 'input': expected a string or an array of input items.")
        calls: set[str] = set()
        prev = body.get("previous_response_id")
        if prev is not None:
            stored = state.responses.get(prev)
            if stored is None:
                raise ProviderError(
                    400,
                    openai_error(f"Previous response with id '{prev}' not found.", param="previous_response_id",
                                 code="previous_response_not_found"),
                )  # fmt: skip
            calls = {it["call_id"] for it in stored if it.get("type") == "function_call"}
        for i, item in enumerate(_items(body)):
            self._check_item(i, item, calls, state)
        fmt = (body.get("text") or {}).get("format")
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            if not isinstance(fmt.get("name"), str):
                raise _bad(
                    "Missing required parameter: 'text.format.name'.",
                    "text.format.name",
                    "missing_required_parameter",
                )
            if not isinstance(fmt.get("schema"), dict):
                raise _bad(
                    "Missing required parameter: 'text.format.schema'.",
                    "text.format.schema",
                    "missing_required_parameter",
                )
        names = set()
        for i, t in enumerate(body.get("tools") or []):
            if t.get("type") == "function":
                if not isinstance(t.get("name"), str):
                    raise _bad(
                        f"Missing required parameter: 'tools[{i}].name'.",
                        f"tools[{i}].name",
                        "missing_required_parameter",
                    )
                names.add(t["name"])
        choice = body.get("tool_choice")
        if (
            isinstance(choice, dict)
            and choice.get("type") == "function"
            and choice.get("name") not in names
        ):
            raise _bad(
                f"Tool choice '{choice.get('name')}' not found in 'tools' parameter.", "tool_choice"
            )

    def _check_item(self, i: int, item: dict, calls: set[str], state: ProviderState) -> None:
        kind = item.get("type")
        if kind == "message":
            if item.get("role") not in ("user", "assistant", "system", "developer"):
                raise _bad(
                    f"Invalid value: '{item.get('role')}'. Supported values are: 'assistant', 'system', 'developer', and 'user'.",
                    f"input[{i}].role",
                    "invalid_value",
                )
        elif kind == "function_call":
            if not isinstance(item.get("call_id"), str) or not isinstance(item.get("name"), str):
                raise _bad(
                    f"Missing required parameter: 'input[{i}].call_id'.", f"input[{i}].call_id"
                )
            calls.add(item["call_id"])
        elif kind == "custom_tool_call":
            if not isinstance(item.get("call_id"), str) or not isinstance(item.get("input"), str):
                raise _bad(f"Missing required parameter: 'input[{i}].input'.", f"input[{i}].input")
            calls.add(item["call_id"])
        elif kind in ("function_call_output", "custom_tool_call_output"):
            if item.get("call_id") not in calls:
                raise _bad(
                    f"No tool call found for function call output with call_id {item.get('call_id')}."
                )
        elif kind == "reasoning":
            enc = item.get("encrypted_content")
            if enc is not None:
                if state.signer.unseal(enc) is None:
                    msg = f"The encrypted content for item {item.get('id')} could not be verified."
                    raise _bad(msg, None, "invalid_encrypted_content")
            elif item.get("id") not in state.items:
                raise _bad(
                    f"Item with id '{item.get('id')}' not found. Items are not persisted when `store` is set to "
                    "false. Try again with `store` set to true, or remove this item from your input."
                )
        elif kind == "item_reference":
            if item.get("id") not in state.items:
                raise _bad(f"Item with id '{item.get('id')}' not found.")
            ref = state.items[item["id"]]
            if ref.get("type") == "function_call":
                calls.add(ref["call_id"])

    # ------------------------------------------------------------ the answer

    def reply(self, body: dict, state: ProviderState) -> Reply:
        model = body["model"]
        items = [
            state.items.get(it["id"], it) if it.get("type") == "item_reference" else it
            for it in _items(body)
        ]
        context = [*state.responses.get(body.get("previous_response_id"), []), *items]
        last_text = _text(context[-1].get("content")) if context[-1].get("role") == "user" else ""
        output: list[dict] = []
        reasoning_tokens = 0
        cfg = body.get("reasoning")
        if isinstance(cfg, dict):
            thought = f"Considering: {' '.join(last_text.split()[:12])}"
            reasoning_tokens = tokens(thought) * 4
            rs: dict[str, Any] = {"id": _new_id("rs"), "type": "reasoning", "summary": []}
            if cfg.get("summary"):
                rs["summary"] = [{"type": "summary_text", "text": thought}]
            if "reasoning.encrypted_content" in (body.get("include") or []):
                rs["encrypted_content"] = state.signer.seal(thought)
            output.append(rs)
        status, incomplete = "completed", None
        tool = _wanted_tool(body, last_text)
        if tool is not None and tool.get("type") == "custom":
            text = CUSTOM_INPUT
            output.append({"id": _new_id("ctc"), "type": "custom_tool_call", "call_id": _new_id("call"),
                           "name": tool["name"], "input": text, "status": "completed"})  # fmt: skip
            visible = tokens(tool["name"] + text)
        elif tool is not None:
            args = json.dumps(minimal_instance(tool.get("parameters") or {}) or {})
            output.append({"id": _new_id("fc"), "type": "function_call", "call_id": _new_id("call"),
                           "name": tool["name"], "arguments": args, "status": "completed"})  # fmt: skip
            visible = tokens(tool["name"] + args)
        else:
            text = _json_text(body) or " ".join(
                [f"[{model}]", "echo:", *last_text.split()[:ECHO_WORDS]]
            )
            limit = body.get("max_output_tokens")
            if isinstance(limit, int) and tokens(text) + reasoning_tokens > limit:
                text = text[: max(0, limit - reasoning_tokens - 1) * 4]
                status, incomplete = "incomplete", {"reason": "max_output_tokens"}
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            output.append({"id": _new_id("msg"), "type": "message", "status": status, "role": "assistant",
                           "content": [part]})  # fmt: skip
            visible = tokens(text)
        blocks = _input_blocks(body, context)
        total = sum(b.tokens for b in blocks)
        cached, written = state.cache.automatic(model, blocks)
        out = visible + reasoning_tokens
        usage = {
            "input_tokens": total,
            "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": written},
            "output_tokens": out,
            "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
            "total_tokens": total + out,
        }
        resp = {
            "id": _new_id("resp"), "object": "response", "created_at": int(time.time()), "status": status,
            "background": False, "error": None, "incomplete_details": incomplete,
            "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
            "metadata": body.get("metadata") or {}, "model": model, "output": output,
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": {"effort": (cfg or {}).get("effort"), "summary": (cfg or {}).get("summary")},
            "service_tier": "default", "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0), "text": body.get("text") or {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"), "tools": body.get("tools") or [],
            "top_p": body.get("top_p", 1.0), "truncation": body.get("truncation", "disabled"),
            "usage": usage, "user": None,
        }  # fmt: skip
        if resp["store"]:
            state.responses[resp["id"]] = [*context, *output]
            state.items.update((it["id"], it) for it in output)
        line = Line(
            self.name, model, total - cached, cached, output=out, reasoning=reasoning_tokens
        )
        return Reply(resp, usage, line, _events(resp, line))


# What a custom tool's call carries (Codex's apply_patch grammar: a patch adding a file).
CUSTOM_INPUT = "*** Begin Patch\n*** Add File: hi.txt\n+hi\n*** End Patch\n"


def _wanted_tool(body: dict, last_text: str) -> dict | None:
    tools = {
        t["name"]: t for t in body.get("tools") or [] if t.get("type") in ("function", "custom")
    }
    choice = body.get("tool_choice", "auto")
    if not tools or choice == "none":
        return None
    if isinstance(choice, dict) and choice.get("type") in ("function", "custom"):
        return tools[choice["name"]]
    asked = TRIGGER.search(last_text)
    if asked and asked.group(1) in tools:
        return tools[asked.group(1)]
    return next(iter(tools.values())) if choice == "required" else None


def _json_text(body: dict) -> str | None:
    fmt = (body.get("text") or {}).get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        return json.dumps(minimal_instance(fmt["schema"]))
    if isinstance(fmt, dict) and fmt.get("type") == "json_object":
        return json.dumps({"answer": "echo"})
    return None


def _input_blocks(body: dict, context: list[dict]) -> list[Block]:
    """Instructions, tools, then the conversation: the prefix OpenAI caches."""
    out = []
    if isinstance(body.get("instructions"), str):
        out.append(Block("instructions:" + body["instructions"], tokens(body["instructions"])))
    out.extend(Block("tool:" + canonical(t), tokens(canonical(t))) for t in body.get("tools") or [])
    for it in context:
        text = _text(it.get("content")) if it.get("type") == "message" else canonical(it)
        out.append(Block(canonical(it), tokens(text)))
    return out


def _pieces(text: str, n: int = 3) -> list[str]:
    step = max(1, -(-len(text) // n))
    return [text[i : i + step] for i in range(0, len(text), step)] or [""]


def _events(resp: dict, line: Line) -> list[Event]:
    events: list[Event] = []

    def ev(kind: str, line: Line | None = None, **data: Any) -> None:
        events.append(Event(kind, {"type": kind, "sequence_number": len(events), **data}, line))

    head = {
        **resp,
        "status": "in_progress",
        "output": [],
        "usage": None,
        "incomplete_details": None,
    }
    ev("response.created", response=head)
    ev("response.in_progress", response=head)
    for oi, item in enumerate(resp["output"]):
        ids = {"item_id": item["id"], "output_index": oi}
        if item["type"] == "reasoning":
            ev("response.output_item.added", output_index=oi, item={**item, "summary": []})
            for si, s in enumerate(item["summary"]):
                ev(
                    "response.reasoning_summary_part.added",
                    **ids,
                    summary_index=si,
                    part={**s, "text": ""},
                )
                for p in _pieces(s["text"]):
                    ev("response.reasoning_summary_text.delta", **ids, summary_index=si, delta=p)
                ev("response.reasoning_summary_text.done", **ids, summary_index=si, text=s["text"])
                ev("response.reasoning_summary_part.done", **ids, summary_index=si, part=s)
        elif item["type"] == "custom_tool_call":
            ev(
                "response.output_item.added",
                output_index=oi,
                item={**item, "input": "", "status": "in_progress"},
            )
            for p in _pieces(item["input"], 2):
                ev("response.custom_tool_call_input.delta", **ids, delta=p)
            ev("response.custom_tool_call_input.done", **ids, input=item["input"])
        elif item["type"] == "function_call":
            ev(
                "response.output_item.added",
                output_index=oi,
                item={**item, "arguments": "", "status": "in_progress"},
            )
            for p in _pieces(item["arguments"], 2):
                ev("response.function_call_arguments.delta", **ids, delta=p)
            ev(
                "response.function_call_arguments.done",
                **ids,
                name=item["name"],
                arguments=item["arguments"],
            )
        else:
            ev(
                "response.output_item.added",
                output_index=oi,
                item={**item, "status": "in_progress", "content": []},
            )
            part = item["content"][0]
            ev("response.content_part.added", **ids, content_index=0, part={**part, "text": ""})
            for p in _pieces(part["text"]):
                ev("response.output_text.delta", **ids, content_index=0, delta=p, logprobs=[])
            ev("response.output_text.done", **ids, content_index=0, text=part["text"], logprobs=[])
            ev("response.content_part.done", **ids, content_index=0, part=part)
        ev("response.output_item.done", output_index=oi, item=item)
    ev(
        "response.completed" if resp["status"] == "completed" else "response.incomplete",
        line,
        response=resp,
    )
    return events


RESPONSES = Responses()
