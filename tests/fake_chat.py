"""OpenAI chat completions checks and usage for the fake upstream (the answers are the
echo provider's, router/offline/answers.py).

Checked as OpenAI checks: a ``tool`` message answers a ``tool_calls`` entry of the
assistant message before it (only ``tool`` messages in between), and an assistant
message with ``tool_calls`` is followed by a ``tool`` message for each id.

Usage gains what OpenAI reports: ``prompt_tokens_details.cached_tokens`` (automatic
prefix caching over whole messages, counted in the echo's words; see
:mod:`fake_billing`) and, for models whose name holds ``o1``, ``o3`` or ``reason``,
``completion_tokens_details.reasoning_tokens`` (added to ``completion_tokens``, within
``max_completion_tokens``). A model whose name holds ``deepseek`` reports DeepSeek's
``prompt_cache_hit_tokens`` / ``prompt_cache_miss_tokens`` as well.
"""

from __future__ import annotations

from fake_billing import Block, Line, PrefixCache, canonical

from router.offline.answers import error_body, text_of

REASONING_TOKENS = 16
REASONING_MARKS = ("o1", "o3", "reason")


def validate_chat(body: dict) -> dict | None:
    """The 400 body OpenAI would answer ``body`` with, or None."""
    msgs = body["messages"]
    pending: list[str] = []  # ids of the last assistant tool_calls not yet answered
    opened = -1  # the index of that assistant message
    for i, m in enumerate(msgs):
        role = m.get("role") if isinstance(m, dict) else None
        if role == "tool":
            if opened < 0:
                msg = ("Invalid parameter: messages with role 'tool' must be a response to a "
                       "preceeding message with 'tool_calls'.")  # fmt: skip
                return error_body(msg, param=f"messages.[{i}].role")
            tid = m.get("tool_call_id")
            if tid not in pending:
                msg = f"Invalid parameter: 'tool_call_id' of '{tid}' not found in 'tool_calls' of previous message."
                return error_body(msg, param=f"messages.[{i}].tool_call_id")
            pending.remove(tid)
            continue
        if pending:
            return _unanswered(opened, pending)
        opened = -1
        calls = m.get("tool_calls") if role == "assistant" else None
        if isinstance(calls, list) and calls:
            pending = [c.get("id") for c in calls if isinstance(c, dict)]
            opened = i
    return _unanswered(opened, pending) if pending else None


def _unanswered(i: int, ids: list[str]) -> dict:
    msg = ("An assistant message with 'tool_calls' must be followed by tool messages responding "
           f"to each 'tool_call_id'. The following tool_call_ids did not have response messages: {', '.join(ids)}")  # fmt: skip
    return error_body(msg, param=f"messages.[{i}].role")


def _limit(body: dict) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        v = body.get(key)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    return None


def chat_usage(body: dict, usage: dict, cache: PrefixCache) -> dict:
    """The echo's usage with what OpenAI adds; consults (and fills) the prefix cache."""
    model = str(body.get("model"))
    blocks = [Block("tools:" + canonical(body.get("tools")), 0)]
    blocks += [
        Block(canonical(m), len(text_of(m.get("content")).split())) for m in body["messages"]
    ]
    cached, _ = cache.automatic(model, blocks)
    out = dict(usage)
    out["prompt_tokens_details"] = {"cached_tokens": cached}
    if any(mark in model for mark in REASONING_MARKS):
        limit = _limit(body)
        room = REASONING_TOKENS if limit is None else max(0, limit - usage["completion_tokens"])
        reasoning = min(REASONING_TOKENS, room)
        out["completion_tokens"] += reasoning
        out["total_tokens"] += reasoning
        out["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    if "deepseek" in model:
        out["prompt_cache_hit_tokens"] = cached
        out["prompt_cache_miss_tokens"] = usage["prompt_tokens"] - cached
    return out


def chat_line(model: str, usage: dict, *, cut: bool = False) -> Line:
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens", 0)
    return Line("openai-chat", model, usage["prompt_tokens"] - cached, cached,
                output=usage["completion_tokens"], reasoning=reasoning, cut=cut)  # fmt: skip
