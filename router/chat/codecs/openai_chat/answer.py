"""Whole Chat Completions answers, both ways, and usage normalisation.

``choices[0]`` is the answer; further choices (``n`` > 1) ride in ``Answer.choices``.
Fields the model has no place for stay in ``extras`` (``system_fingerprint``,
``service_tier``; a choice's ``logprobs``; message fields such as ``annotations`` under
``message``) and go back out only to a chat client.

Usage is the one number the router bills from, and providers report it loosely, so
``normalize_usage`` never raises: a count that is not a non-negative whole number
(null, a negative, a fraction, a non-numeric string, a bool) counts as not reported;
digit strings and whole floats are read as numbers; the input falls back to DeepSeek's
``prompt_cache_hit_tokens + prompt_cache_miss_tokens``, then to ``total - completion``;
the output to ``total - input``; a subset larger than its whole (cached > prompt,
reasoning > completion) is clamped to the whole. With neither an input nor an output
count left, the usage is unusable: None (the caller estimates). A usage that needed any
of these repairs, lacks ``prompt_tokens`` or ``completion_tokens``, or carries the
router's own ``x_router_doubtful`` mark (a repaired usage of another protocol, re-encoded
as chat) is ``doubtful``: the bill does not trust it as it stands. A usage of another
protocol that reported no reasoning count is re-encoded with chat's ``reasoning_tokens:
0`` (what chat clients read) and the router's ``x_router_no_reasoning`` mark, read back
as "not reported" (None), so the decision log says null, not 0.
"""

from __future__ import annotations

import json
import math
from typing import Any

from router.chat.codecs._common import bad_count, fill_from_total
from router.chat.codecs.openai_chat.parts import FINISH_IN, FINISH_OUT
from router.chat.model import Answer, Part, Reasoning, Text, ToolCall, Usage
from router.errors import UpstreamError

# The top-level fields an answer is made of; any other is kept in ``extras``.
_ANSWER_KEYS = frozenset({"id", "object", "created", "model", "choices", "usage"})
_MESSAGE_KEYS = frozenset(
    {"role", "content", "tool_calls", "function_call", "refusal", "reasoning_content", "reasoning"}
)
# The router's marks on a chat usage (never from a provider): the usage of another
# protocol was repaired (``Usage.doubtful``); the usage is what a stream had reported
# when it was cut (input classes known, output not final; router/upstream/protocols.py).
DOUBTFUL_MARK = "x_router_doubtful"
PARTIAL_MARK = "x_router_partial"
NO_REASONING_MARK = "x_router_no_reasoning"  # no reasoning count was reported
# The marks a client never sees (a partial usage never reaches one at all).
CLIENT_HIDDEN_MARKS = (DOUBTFUL_MARK, NO_REASONING_MARK)
# Keys of ``Answer.extras`` that belong to the first choice, not to the top level.
_CHOICE_EXTRAS = ("logprobs", "message")


def count(value: Any) -> int | None:
    """A token count, or None when ``value`` is not a usable one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        value = value.strip()  # ASCII digits only ("¹" is a digit to isdigit), and short
        ok = value.isascii() and value.isdigit() and len(value) <= 18
        return int(value) if ok else None
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            return None
        value = int(value)
    if isinstance(value, int) and value >= 0:
        return value
    return None


def normalize_usage(obj: Any) -> Usage | None:
    """An OpenAI (or DeepSeek, Groq, vLLM) ``usage`` object as a ``Usage``; None when
    nothing usable is in it."""
    if not isinstance(obj, dict):
        return None
    prompt = count(obj.get("prompt_tokens"))
    completion = count(obj.get("completion_tokens"))
    total = count(obj.get("total_tokens"))
    hit = count(obj.get("prompt_cache_hit_tokens"))
    miss = count(obj.get("prompt_cache_miss_tokens"))
    details = obj.get("prompt_tokens_details")
    cached = count(details.get("cached_tokens")) if isinstance(details, dict) else None
    if cached is None:
        cached = hit
    out_details = obj.get("completion_tokens_details")
    reasoning = (
        count(out_details.get("reasoning_tokens"))
        if isinstance(out_details, dict) and obj.get(NO_REASONING_MARK) is not True
        else None
    )
    raw = [obj.get(k) for k in ("prompt_tokens", "completion_tokens", "total_tokens",
                                "prompt_cache_hit_tokens", "prompt_cache_miss_tokens")]  # fmt: skip
    if isinstance(details, dict):
        raw += [details.get(k) for k in ("cached_tokens", "cache_write_tokens",
                                          "cache_write_1h_tokens")]  # fmt: skip
    if isinstance(out_details, dict):
        raw.append(out_details.get("reasoning_tokens"))
    doubtful = (
        obj.get(DOUBTFUL_MARK) is True
        or (raw[0] is None and (hit is None or miss is None))  # DeepSeek's add up to it
        or raw[1] is None
        or any(bad_count(v) for v in raw)
    )

    if prompt is None and (hit is not None or miss is not None):
        prompt = (hit or 0) + (miss or 0)
    prompt, completion = fill_from_total(prompt, completion, total)
    if prompt is None and completion is None:
        return None
    prompt, completion = prompt or 0, completion or 0
    # Cache writes under the router's own names (encode_usage): writes first, then reads,
    # never more than the prompt in all.
    left = prompt
    writes: list[int | None] = []
    for key in ("cache_write_1h_tokens", "cache_write_tokens"):
        w = count(details.get(key)) if isinstance(details, dict) else None
        if w is not None:
            doubtful = doubtful or w > left
            w = min(w, left)
            left -= w
        writes.append(w)
    doubtful = doubtful or (cached or 0) > left or (reasoning or 0) > completion
    if hit is not None and miss is not None:
        doubtful = doubtful or hit + miss != prompt
    return Usage(
        input_tokens=prompt,
        output_tokens=completion,
        cache_read_tokens=None if cached is None else min(cached, left),
        cache_write_tokens=writes[1],
        cache_write_1h_tokens=writes[0],
        reasoning_tokens=None if reasoning is None else min(reasoning, completion),
        doubtful=doubtful,
    )


def encode_usage(usage: Usage) -> dict[str, Any]:
    """Chat's usage: every input token is a prompt token (a Claude answer's cache reads
    and writes included), cache reads are ``cached_tokens``."""
    details: dict[str, Any] = {"cached_tokens": usage.cache_read_tokens or 0}
    # Cache writes (Anthropic) have no field in chat: carried under names of our own, which
    # clients ignore and the router's settlement prices (they cost more than input).
    if usage.cache_write_tokens:
        details["cache_write_tokens"] = usage.cache_write_tokens
    if usage.cache_write_1h_tokens:
        details["cache_write_1h_tokens"] = usage.cache_write_1h_tokens
    out = {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": details,
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens or 0},
    }
    if usage.doubtful:
        out[DOUBTFUL_MARK] = True
    if usage.reasoning_tokens is None:
        out[NO_REASONING_MARK] = True
    return out


def without_marks(usage: dict[str, Any]) -> dict[str, Any]:
    """A chat ``usage`` as a client sees it: the router's own marks left out."""
    if not any(m in usage for m in CLIENT_HIDDEN_MARKS):
        return usage
    return {k: v for k, v in usage.items() if k not in CLIENT_HIDDEN_MARKS}


# ---------------------------------------------------------------- decode


def decode_answer(body: Any) -> Answer:
    if not isinstance(body, dict) or not isinstance(body.get("choices"), list):
        raise UpstreamError(
            "the upstream's answer is not a chat completion (no 'choices' array)",
            code="bad_answer",
        )
    created = body.get("created")
    base = {
        "id": str(body.get("id") or ""),
        "model": str(body.get("model") or ""),
        "created": created if isinstance(created, int) and not isinstance(created, bool) else 0,
        "extras_protocol": "openai-chat",
    }
    raw = [c for c in body["choices"] if isinstance(c, dict)]
    raw.sort(key=lambda c: c["index"] if isinstance(c.get("index"), int) else 0)
    answers = [_choice(c, base) for c in raw] or [Answer(parts=[], **base)]
    first = answers[0]
    first.choices = answers[1:]
    first.usage = normalize_usage(body.get("usage"))
    first.extras.update((k, v) for k, v in body.items() if k not in _ANSWER_KEYS)
    return first


def _choice(choice: dict[str, Any], base: dict[str, Any]) -> Answer:
    msg = choice.get("message")
    msg = msg if isinstance(msg, dict) else {}
    parts: list[Part] = []
    reasoning = msg.get("reasoning_content") or msg.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        parts.append(Reasoning(text=reasoning))
    content = msg.get("content")
    if isinstance(content, list):  # a few providers answer in parts
        content = "".join(p.get("text") or "" for p in content if isinstance(p, dict))
    if isinstance(content, str) and content:
        parts.append(Text(content))
    calls = msg.get("tool_calls")
    for k, call in enumerate(calls if isinstance(calls, list) else ()):
        if isinstance(call, dict):
            parts.append(_call(call, k))
    if isinstance(msg.get("function_call"), dict):
        parts.append(_call({"id": "call_legacy_0", "function": msg["function_call"]}, 0))
    refusal = msg.get("refusal")
    reason = choice.get("finish_reason")
    has_calls = any(isinstance(p, ToolCall) for p in parts)
    finish = FINISH_IN.get(reason, "stop") if reason else ("tool_calls" if has_calls else "stop")
    extras: dict[str, Any] = {}
    if choice.get("logprobs") is not None:
        extras["logprobs"] = choice["logprobs"]
    rest = {k: v for k, v in msg.items() if k not in _MESSAGE_KEYS}
    if rest:
        extras["message"] = rest
    return Answer(
        parts=parts,
        finish=finish,
        refusal=refusal if isinstance(refusal, str) else None,
        extras=extras,
        **base,
    )


def _call(call: dict[str, Any], k: int) -> ToolCall:
    fn = call.get("function")
    fn = fn if isinstance(fn, dict) else {}
    args = fn.get("arguments")
    if not isinstance(args, str):
        args = "" if args is None else json.dumps(args, separators=(",", ":"))
    call_id = call.get("id")
    return ToolCall(
        id=call_id if isinstance(call_id, str) and call_id else f"call_{k}",
        name=str(fn.get("name") or ""),
        arguments=args,
    )


# ---------------------------------------------------------------- encode


def finish_out(reason: str, refusal: str | None = None) -> str:
    if reason == "refusal" and refusal:
        return "stop"
    return FINISH_OUT.get(reason, "stop")


def encode_answer(answer: Answer) -> dict[str, Any]:
    ours = answer.extras_protocol == "openai-chat"
    out: dict[str, Any] = {
        "id": answer.id,
        "object": "chat.completion",
        "created": answer.created,
        "model": answer.model,
        "choices": [_encode_choice(a, i) for i, a in enumerate([answer, *answer.choices])],
    }
    if answer.usage is not None:
        out["usage"] = encode_usage(answer.usage)
    if ours:
        for key, value in answer.extras.items():
            if key not in _CHOICE_EXTRAS and key not in out:
                out[key] = value
    return out


def _encode_choice(answer: Answer, index: int) -> dict[str, Any]:
    texts = [p.text for p in answer.parts if isinstance(p, Text)]
    calls = [p for p in answer.parts if isinstance(p, ToolCall)]
    reasoning = "".join(p.text for p in answer.parts if isinstance(p, Reasoning))
    content = "".join(texts) if texts else (None if calls or answer.refusal else "")
    msg: dict[str, Any] = {"role": "assistant", "content": content, "refusal": answer.refusal}
    if calls:
        msg["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in calls
        ]
    if reasoning:  # DeepSeek's field, which chat clients of reasoning models read
        msg["reasoning_content"] = reasoning
    ours = answer.extras_protocol == "openai-chat"
    if ours and isinstance(answer.extras.get("message"), dict):
        for key, value in answer.extras["message"].items():
            msg.setdefault(key, value)
    return {
        "index": index,
        "message": msg,
        "finish_reason": finish_out(answer.finish, answer.refusal),
        "logprobs": answer.extras.get("logprobs") if ours else None,
    }
