"""A Responses ``Response`` object ↔ ``Answer``, and the usage normaliser.

The encoder writes the object the way OpenAI returns it, every field the SDK's
``Response`` model and the Open Responses ``ResponseResource`` require included (the
latter wants even nullable fields present). Echo fields (tools, tool_choice, text,
reasoning, sampling) come from the client's request, hence ``encode_answer_for(answer,
req)``; without a request they take OpenAI's defaults. The stream encoder builds its
items and final object here too, so a streamed answer and a whole one are the same.

Output items the model has no part for (web_search_call, mcp_call, ...) are kept in
``Answer.extras["output_items"]`` with their position, and put back for a Responses
client; other protocols never see them. Item ids are derived from the response id and
the item's position (``msg_<id>_0``), so they are stable.
"""

from __future__ import annotations

import time
from typing import Any

from router.chat.codecs._common import bad_count, clamped_count, fill_from_total
from router.chat.codecs._custom import custom_names, unwrap_input
from router.chat.codecs.responses.common import (
    FINISH_TO_INCOMPLETE,
    INCOMPLETE_TO_FINISH,
    PROTOCOL,
    item_id,
    response_id,
)
from router.chat.model import (
    Answer,
    ChatRequest,
    FinishReason,
    Reasoning,
    Text,
    ToolCall,
    Usage,
)
from router.errors import UpstreamError

# ---------------------------------------------------------------- usage


def normalize_usage(obj: Any) -> Usage | None:
    """Responses ``usage`` → ``Usage``; never raises. Counts are clamped to be
    non-negative, cache reads + cache writes ≤ input and reasoning ≤ output (OpenAI's
    ``cache_write_tokens`` is one class here: its 30-minute / 12-hour split has no
    counterpart in ``Usage``); a missing input count is taken
    from ``total_tokens`` − output when both are there; None when neither input nor
    output is usable. A usage that needed any repair, or lacks the input or the output
    count, is ``doubtful``."""
    if not isinstance(obj, dict):
        return None
    in_details, out_details = obj.get("input_tokens_details"), obj.get("output_tokens_details")
    raw = [obj.get(k) for k in ("input_tokens", "output_tokens", "total_tokens")]
    for d, keys in ((in_details, ("cached_tokens", "cache_write_tokens")),
                    (out_details, ("reasoning_tokens",))):  # fmt: skip
        if isinstance(d, dict):
            raw += [d.get(k) for k in keys]
    doubtful = any(bad_count(v) for v in raw) or raw[0] is None or raw[1] is None
    inp, out, total = (
        clamped_count(obj.get(k)) for k in ("input_tokens", "output_tokens", "total_tokens")
    )
    inp, out = fill_from_total(inp, out, total)
    if inp is None and out is None:
        return None
    usage = Usage(input_tokens=inp or 0, output_tokens=out or 0, doubtful=doubtful)
    details = in_details
    if isinstance(details, dict):
        if (cached := clamped_count(details.get("cached_tokens"))) is not None:
            usage.cache_read_tokens = min(cached, usage.input_tokens)
        if (written := clamped_count(details.get("cache_write_tokens"))) is not None:
            room = usage.input_tokens - (usage.cache_read_tokens or 0)
            usage.cache_write_tokens = min(written, room)
            usage.doubtful |= written > room or (cached or 0) > usage.input_tokens
        elif cached is not None:
            usage.doubtful |= cached > usage.input_tokens
    details = out_details
    if (
        isinstance(details, dict)
        and (reasoning := clamped_count(details.get("reasoning_tokens"))) is not None
    ):
        usage.reasoning_tokens = min(reasoning, usage.output_tokens)
        usage.doubtful |= reasoning > usage.output_tokens
    return usage


def usage_object(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cache_read_tokens or 0,
            "cache_write_tokens": (usage.cache_write_tokens or 0)
            + (usage.cache_write_1h_tokens or 0),
        },
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens or 0},
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


# ---------------------------------------------------------------- decode


def finish_of(status: Any, incomplete: Any, has_calls: bool) -> FinishReason:
    if status == "completed":
        return "tool_calls" if has_calls else "stop"
    if status == "incomplete":
        reason = incomplete.get("reason") if isinstance(incomplete, dict) else None
        return INCOMPLETE_TO_FINISH.get(reason, "length")  # type: ignore[return-value]
    return "error"  # failed, cancelled, or a status a finished response cannot have


def decode_answer(body: Any) -> Answer:
    if not isinstance(body, dict) or not isinstance(body.get("output", []), list):
        raise UpstreamError("malformed Responses answer: no output list", code="bad_response")
    parts: list[Any] = []
    refusals: list[str] = []
    others: list[dict[str, Any]] = []
    for index, item in enumerate(body.get("output") or []):
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "message":
            for c in item.get("content") or []:
                if not isinstance(c, dict):
                    continue
                if c.get("type") == "output_text":
                    parts.append(Text(str(c.get("text") or "")))
                elif c.get("type") == "refusal":
                    refusals.append(str(c.get("refusal") or ""))
        elif kind == "function_call":
            parts.append(
                ToolCall(
                    id=str(item.get("call_id") or item.get("id") or ""),
                    name=str(item.get("name") or ""),
                    arguments=str(item.get("arguments") or ""),
                )
            )
        elif kind == "custom_tool_call":
            parts.append(
                ToolCall(
                    id=str(item.get("call_id") or item.get("id") or ""),
                    name=str(item.get("name") or ""),
                    arguments=str(item.get("input") or ""),
                    custom=True,
                )
            )
        elif kind == "reasoning":
            parts.append(reasoning_of(item))
        elif isinstance(item, dict):
            others.append({"index": index, "item": item})
    has_calls = any(isinstance(p, ToolCall) for p in parts)
    created = clamped_count(body.get("created_at")) or 0
    answer = Answer(
        id=str(body.get("id") or ""),
        model=str(body.get("model") or ""),
        parts=parts,
        finish=finish_of(body.get("status"), body.get("incomplete_details"), has_calls),
        usage=normalize_usage(body.get("usage")),
        refusal="".join(refusals) if refusals else None,
        created=created,
    )
    if others:
        answer.extras = {"output_items": others}
        answer.extras_protocol = PROTOCOL
    return answer


def reasoning_of(item: dict[str, Any]) -> Reasoning:
    def texts(key: str) -> list[str]:
        return [str(s.get("text") or "") for s in item.get(key) or [] if isinstance(s, dict)]

    return Reasoning(
        text="".join(texts("content")),
        encrypted=item.get("encrypted_content") or None,
        origin=PROTOCOL,
        id=item.get("id") or None,
        summary=texts("summary"),
    )


# ---------------------------------------------------------------- items out


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(id: str, content: list[dict[str, Any]], status: str) -> dict[str, Any]:
    return {"id": id, "type": "message", "role": "assistant", "status": status, "content": content}


def custom_call_item(id: str, call: ToolCall, status: str, input: str) -> dict[str, Any]:
    return {
        "id": id,
        "type": "custom_tool_call",
        "call_id": call.id,
        "name": call.name,
        "input": input,
        "status": status,
    }


def call_item(id: str, call: ToolCall, status: str) -> dict[str, Any]:
    return {
        "id": id,
        "type": "function_call",
        "call_id": call.id,
        "name": call.name,
        "arguments": call.arguments,
        "status": status,
    }


def reasoning_item(
    id: str, summary: list[str], encrypted: str | None, text: str = ""
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": id,
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": s} for s in summary],
    }
    if text:
        item["content"] = [{"type": "reasoning_text", "text": text}]
    if encrypted:
        item["encrypted_content"] = encrypted
    return item


def custom_input(call: ToolCall, custom: frozenset[str]) -> str | None:
    """The raw input of a custom tool's call (the client declared the tool custom), None
    for a function call: an upstream of another protocol called the mapped function, so
    its input is unwrapped from ``{"input": ...}`` (codecs/_custom.py)."""
    if call.custom:
        return call.arguments
    return unwrap_input(call.arguments) if call.name in custom else None


def _output(answer: Answer, resp_id: str, custom: frozenset[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    run: list[dict[str, Any]] = []

    def flush() -> None:
        if run:
            out.append(message_item(item_id("msg", resp_id, len(out)), list(run), "completed"))
            run.clear()

    for part in answer.parts:
        if isinstance(part, Text):
            run.append(output_text(part.text))
            continue
        flush()
        if isinstance(part, ToolCall) and (text := custom_input(part, custom)) is not None:
            out.append(custom_call_item(item_id("ctc", resp_id, len(out)), part, "completed", text))
        elif isinstance(part, ToolCall):
            out.append(call_item(item_id("fc", resp_id, len(out)), part, "completed"))
        elif isinstance(part, Reasoning):
            own = part.origin == PROTOCOL
            summary = part.summary or ([part.text] if part.text and not own else [])
            if not (summary or part.encrypted or part.text):
                continue  # redacted thinking of another protocol: nothing to show
            rid = part.id if own and part.id else item_id("rs", resp_id, len(out))
            out.append(
                reasoning_item(
                    rid, summary, part.encrypted if own else None, part.text if own else ""
                )
            )
    if answer.refusal:
        run.append({"type": "refusal", "refusal": answer.refusal})
    flush()
    if answer.extras_protocol == PROTOCOL:
        for other in answer.extras.get("output_items", []):
            out.insert(min(other["index"], len(out)), other["item"])
    return out


# ---------------------------------------------------------------- the response object


def status_of(finish: FinishReason) -> str:
    if finish in FINISH_TO_INCOMPLETE:
        return "incomplete"
    return "failed" if finish == "error" else "completed"


def response_object(
    *,
    id: str,
    model: str,
    created_at: int,
    status: str,
    output: list[dict[str, Any]],
    usage: Usage | None,
    req: ChatRequest | None,
    finish: FinishReason | None = None,
) -> dict[str, Any]:
    """The whole ``Response`` (also the stream's created / in_progress / completed
    payloads), echo fields from ``req``."""
    req = req or ChatRequest(model=model, messages=[])
    extras = req.extras if req.extras_protocol == PROTOCOL else {}
    tc = req.tool_choice
    choice = extras.get("tool_choice")
    if choice is None:
        choice = "auto" if tc is None else tc.mode
        if tc is not None and tc.mode == "tool":
            choice = {"type": "function", "name": tc.name}
    hint = req.reasoning
    return {
        "id": id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": bool(extras.get("background", False)),
        "completed_at": created_at if status == "completed" else None,
        "error": {"code": "server_error", "message": "the upstream model failed"}
        if status == "failed"
        else None,
        "incomplete_details": {"reason": FINISH_TO_INCOMPLETE[finish]}
        if status == "incomplete" and finish in FINISH_TO_INCOMPLETE
        else None,
        "instructions": req.system[0].text if req.system else None,
        "max_output_tokens": req.max_output_tokens,
        "max_tool_calls": extras.get("max_tool_calls"),
        "model": model,
        "output": output,
        "parallel_tool_calls": True if tc is None or tc.parallel is None else tc.parallel,
        "previous_response_id": extras.get("previous_response_id"),
        "prompt_cache_key": extras.get("prompt_cache_key"),
        "reasoning": {
            "effort": extras.get("reasoning.effort") or (hint.effort if hint else None),
            "summary": hint.summary if hint else None,
        },
        "safety_identifier": extras.get("safety_identifier"),
        "service_tier": extras.get("service_tier") or "default",
        "store": bool(extras.get("store", True)),
        "temperature": 1.0 if req.temperature is None else req.temperature,
        "text": {"format": _format(req), "verbosity": extras.get("text.verbosity", "medium")},
        "tool_choice": choice,
        "tools": [_tool(t) for t in req.tools] + list(extras.get("tools", [])),
        "top_logprobs": extras.get("top_logprobs") or 0,
        "top_p": 1.0 if req.top_p is None else req.top_p,
        "presence_penalty": extras.get("presence_penalty") or 0.0,
        "frequency_penalty": extras.get("frequency_penalty") or 0.0,
        "truncation": extras.get("truncation") or "disabled",
        "usage": usage_object(usage) if usage is not None else None,
        "user": req.user,
        "metadata": extras.get("metadata") or {},
    }


def _format(req: ChatRequest) -> dict[str, Any]:
    fmt = req.output
    if fmt is None or fmt.kind != "json_schema":
        return {"type": fmt.kind if fmt else "text"}
    return {
        "type": "json_schema",
        "name": fmt.name or "output",
        "description": (req.extras if req.extras_protocol == PROTOCOL else {}).get(
            "text.format.description"
        ),
        "schema": fmt.schema or {"type": "object"},
        "strict": bool(fmt.strict),
    }


def _tool(tool: Any) -> dict[str, Any]:
    if tool.custom:
        return {
            "type": "custom",
            "name": tool.name,
            "description": tool.description,
            "format": tool.format or {"type": "text"},
        }
    # An omitted strict means strict in Responses: the echo says what the API did.
    return {
        "type": "function",
        "name": tool.name,
        "description": tool.description,
        "parameters": tool.parameters,
        "strict": True if tool.strict is None else tool.strict,
    }


def encode_answer_for(answer: Answer, req: ChatRequest | None = None) -> dict[str, Any]:
    """The client's ``Response``; ``req`` (the client's request) fills the echo fields.
    ``created_at`` is the answer's, or now when the answer has none."""
    resp_id = response_id(answer.id)
    status = status_of(answer.finish)
    return response_object(
        id=resp_id,
        model=answer.model,
        created_at=answer.created or int(time.time()),
        status=status,
        output=_output(answer, resp_id, custom_names(req)),
        usage=answer.usage,
        req=req,
        finish=answer.finish,
    )
