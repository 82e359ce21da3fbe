"""What one answer costs, from the usage its upstream reported, and how far to trust it.

Every upstream's usage reaches here as a chat ``usage`` object (providers of another
protocol are re-encoded by router/upstream/protocols.py) and is read by the one chat
normaliser, so DeepSeek's hit/miss fields, Anthropic's cache writes and Responses'
cached input all arrive as the classes of :class:`router.chat.model.Usage`.

The bill's ``source`` (the decision log's ``usage_source``):

- ``upstream``: the usage as reported, each class at its price.
- ``partial``: a stream cut short after it reported its input classes (Anthropic's
  ``message_start``): the input as reported, the output the larger of what was reported
  and the estimate from the text relayed.
- ``estimated``: no usage, or one the normaliser had to repair (``Usage.doubtful``: a
  count missing, negative or not a number, a class larger than its whole). The input is
  the larger of the router's own count of the prompt and what was reported, the output
  the larger of the estimate from the answer's text and what was reported (reasoning
  included); cache writes reported are kept, cache reads earn no discount, and of the
  two prices (with the writes, all at the input price) the larger is charged. So a bill
  that cannot be trusted never raises and never charges less than the input reported.
- ``reserved``: neither usage nor text: what was reserved.

The reservation is an upper bound on the input classes (:func:`reservation_usd`): a
request that asks for a cache write (``cache_control``) reserves its whole prompt at the
highest write price it can incur, so a settle never exceeds the hold because of caching.

Pure: no I/O; the serving flow settles what it returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from router.chat.codecs.openai_chat.answer import PARTIAL_MARK, count, normalize_usage
from router.chat.model import ChatRequest, Usage
from router.config import ModelConfig


@dataclass(frozen=True, slots=True)
class Bill:
    cost_usd: float
    usage: Usage | None  # the counts billed (None: the reservation was charged)
    source: str  # upstream | partial | estimated | reserved


def class_cost(cfg: ModelConfig, u: Usage) -> float:
    """``u`` priced by class (at the tier its whole input falls in)."""
    return cfg.cost_usd(
        u.input_tokens,
        u.output_tokens,
        cache_read=u.cache_read_tokens or 0,
        cache_write=u.cache_write_tokens or 0,
        cache_write_1h=u.cache_write_1h_tokens or 0,
    )


def full_input_cost(cfg: ModelConfig, u: Usage) -> float:
    """``u`` with every input token at the full input price (what caching saved is the
    difference with :func:`class_cost`)."""
    return cfg.cost_usd(u.input_tokens, u.output_tokens)


def bill(
    cfg: ModelConfig,
    usage: Any,
    *,
    prompt_estimate: int,
    text_tokens: Callable[[], int] | None,
    reserved_usd: float,
) -> Bill:
    """The bill for an answer of ``cfg`` whose upstream reported ``usage`` (a chat usage
    object, or anything else an upstream sent there). ``prompt_estimate``: the prompt
    counted by the router; ``text_tokens``: counts the answer's text (None: no text is
    known); ``reserved_usd``: what was reserved, the bill when nothing else is known."""
    u = normalize_usage(usage)
    partial = isinstance(usage, dict) and usage.get(PARTIAL_MARK) is True
    if u is not None and not u.doubtful:
        if not partial:
            return Bill(class_cost(cfg, u), u, "upstream")
        out = max(u.output_tokens, text_tokens() if text_tokens is not None else 0)
        billed = Usage(
            u.input_tokens, out, u.cache_read_tokens, u.cache_write_tokens,
            u.cache_write_1h_tokens, u.reasoning_tokens,
        )  # fmt: skip
        return Bill(class_cost(cfg, billed), billed, "partial")
    if u is None and text_tokens is None:
        return Bill(reserved_usd, None, "reserved")
    out = text_tokens() if text_tokens is not None else 0
    if u is None:
        billed = Usage(prompt_estimate, out)
    else:
        inp = max(prompt_estimate, u.input_tokens)
        # The normaliser caps reasoning at the output; a bill takes the larger as said.
        details = usage.get("completion_tokens_details") if isinstance(usage, dict) else None
        said = count(details.get("reasoning_tokens")) if isinstance(details, dict) else None
        out = max(out, u.output_tokens, said or 0)
        billed = Usage(
            inp, out, None, u.cache_write_tokens, u.cache_write_1h_tokens, u.reasoning_tokens,
        )  # fmt: skip
    cost = max(class_cost(cfg, billed), full_input_cost(cfg, billed))
    return Bill(cost, billed, "estimated")


def cache_write_ttl(req: ChatRequest) -> str | None:
    """The longest cache write ``req`` asks for: ``"1h"``, ``"5m"`` (any other
    ``cache_control``, Anthropic's default ttl), or None when it asks for none. Anthropic's
    top-level ``cache_control`` (automatic caching) rides in the extras."""
    marks = [t.cache_control for t in req.system]
    marks += [t.cache_control for t in req.tools]
    marks += [getattr(p, "cache_control", None) for m in req.messages for p in m.parts]
    top = req.extras.get("cache_control") if req.extras_protocol == "anthropic-messages" else None
    marks.append(top if isinstance(top, dict) else None)
    asked = [m for m in marks if m]
    if not asked:
        return None
    return "1h" if any(m.get("ttl") == "1h" for m in asked) else "5m"


def reservation_usd(
    cfg: ModelConfig, prompt_tokens: int, expected_usd: float, ttl: str | None
) -> float:
    """What to reserve for a request expected to cost ``expected_usd`` (every input token
    at the input price, at least): with a cache write asked for (``ttl``), the whole
    prompt at the highest input-class price it can incur on ``cfg`` (the long-context
    tier's where the prompt passes it)."""
    if ttl is None:
        return expected_usd
    p = cfg.tier(prompt_tokens)
    inp = p.input_usd_per_mtok
    write = p.cache_write_usd_per_mtok if p.cache_write_usd_per_mtok is not None else inp
    worst = max(inp, write)
    if ttl == "1h" and p.cache_write_1h_usd_per_mtok is not None:
        worst = max(worst, p.cache_write_1h_usd_per_mtok)
    return expected_usd + prompt_tokens * (worst - inp) / 1e6
