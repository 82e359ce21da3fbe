"""What the fake upstream charges for: a toy tokenizer, prompt caches, signatures it
issues, and one invoice line per answered request.

Tokens: ``len(text) // 4 + 1`` per content block (a block that is not text counts its
canonical JSON). OpenAI chat keeps the echo's whitespace-word count instead, so the
answers the older tests check do not change.

Caches (per model, the way providers keep them per organisation and model):

- Anthropic (:meth:`PrefixCache.explicit`): the blocks in the order Anthropic caches
  them (tools, system, messages). A block with ``cache_control`` is a breakpoint; the
  prefix up to a breakpoint is written with that breakpoint's ttl (``5m`` or ``1h``).
  A request reads the longest cached prefix that ends at a block boundary at most
  ``LOOKBACK`` blocks before one of its breakpoints, and writes each segment from there
  to each later breakpoint (split 5m/1h by the ttl of the breakpoint that ends it).
  A read refreshes the entry's ttl. ``input_tokens`` is what is neither read nor written.
- OpenAI (:meth:`PrefixCache.automatic`): every prefix (at unit boundaries) of at least
  ``AUTO_MIN_TOKENS`` tokens a request sends is remembered for ``AUTO_TTL_S``; a later
  request's longest remembered prefix is its ``cached_tokens``. What a request adds to
  the cache is reported as Responses' ``cache_write_tokens`` (the openai SDK 3.x requires
  the field) and billed as plain input, as OpenAI does.

Billing (:class:`Line`, :func:`invoice`): USD per 1M tokens, from a table
``{model: {"input", "output", "cached_input"?, "cache_write"?, "cache_write_1h"?,
"long_context"?}}``; a missing cache price falls back to ``input`` (``cache_write_1h`` to
``cache_write``). ``long_context`` is ``{"above": N, "input", "output", ...}`` with the
same keys: a request whose input (every class) is above N bills all of it there.
Reasoning tokens are part of ``output`` at every provider and are not billed apart.
A line bills the usage the client was told: an answer sent in full bills its usage
(even a stream whose usage chunk the client did not ask for); a stream cut before its
end bills the last usage its events carried (Anthropic: the input classes and
``output_tokens`` of ``message_start``, or of ``message_delta`` once sent; OpenAI chat
and Responses put usage only in the last event, so a cut stream bills nothing). Real
providers bill a cut generation in full; the fake bills what a ledger could know, so a
test can compare the two to the last cent. ``Line.cut`` marks those lines.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

LOOKBACK = 20  # Anthropic checks for hits this many blocks before each breakpoint
TTL_S = {"5m": 300.0, "1h": 3600.0}
AUTO_MIN_TOKENS = 1024
AUTO_TTL_S = 300.0


def tokens(text: str) -> int:
    """The fake's tokenizer: one token per four characters, plus one per block."""
    return len(text) // 4 + 1


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class Signer:
    """Signatures and sealed blobs only this fake can have issued (HMAC, a fresh key per
    instance): Anthropic thinking signatures, ``redacted_thinking`` data, Responses
    ``encrypted_content``."""

    def __init__(self) -> None:
        self._key = os.urandom(32)

    def sign(self, text: str) -> str:
        mac = hmac.new(self._key, text.encode(), hashlib.sha256).digest()
        return base64.b64encode(b"fake-sig:" + mac).decode()

    def verify(self, signature: object, text: object) -> bool:
        if not isinstance(signature, str) or not isinstance(text, str):
            return False
        return hmac.compare_digest(signature, self.sign(text))

    def seal(self, payload: str) -> str:
        data = base64.b64encode(payload.encode()).decode()
        return f"{data}.{self.sign(payload)}"

    def unseal(self, token: object) -> str | None:
        """The payload of a blob this fake sealed, or None."""
        if not isinstance(token, str) or "." not in token:
            return None
        data, sig = token.split(".", 1)
        try:
            payload = base64.b64decode(data, validate=True).decode()
        except ValueError:
            return None
        return payload if self.verify(sig, payload) else None


@dataclass(frozen=True, slots=True)
class Block:
    """One unit of a prompt as a cache sees it: what identifies it, its tokens, and its
    ``cache_control`` ttl when it is an (Anthropic) breakpoint."""

    key: str
    tokens: int
    ttl: str | None = None


@dataclass(frozen=True, slots=True)
class CacheUse:
    read: int = 0
    write_5m: int = 0
    write_1h: int = 0


class PrefixCache:
    """Both providers' prompt caches; ``clock`` (seconds) may be replaced to expire them."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._entries: dict[str, tuple[float, float]] = {}  # key -> (expiry, ttl)
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    @staticmethod
    def _prefixes(scope: str, blocks: list[Block]) -> tuple[list[str], list[int]]:
        h, total, keys, counts = hashlib.sha256(scope.encode()), 0, [], []
        for b in blocks:
            h.update(hashlib.sha256(b.key.encode()).digest())
            total += b.tokens
            keys.append(h.hexdigest())
            counts.append(total)
        return keys, counts

    def _live(self, key: str, now: float) -> bool:
        entry = self._entries.get(key)
        return entry is not None and entry[0] > now

    def explicit(self, model: str, blocks: list[Block]) -> CacheUse:
        """Anthropic's breakpoint caching; see the module docstring."""
        breaks = [i for i, b in enumerate(blocks) if b.ttl is not None]
        if not breaks:
            return CacheUse()
        keys, counts = self._prefixes(f"anthropic:{model}", blocks)
        with self._lock:
            now = self.clock()
            candidates = {i for bp in breaks for i in range(max(0, bp - LOOKBACK + 1), bp + 1)}
            hit = max((i for i in candidates if self._live(keys[i], now)), default=-1)
            read = counts[hit] if hit >= 0 else 0
            if hit >= 0:
                self._entries[keys[hit]] = (
                    now + self._entries[keys[hit]][1],
                    self._entries[keys[hit]][1],
                )
            w5 = w1 = 0
            done = read
            for bp in breaks:
                ttl = TTL_S[blocks[bp].ttl or "5m"]
                if bp > hit:
                    seg = counts[bp] - done
                    done = counts[bp]
                    if blocks[bp].ttl == "1h":
                        w1 += seg
                    else:
                        w5 += seg
                self._entries[keys[bp]] = (now + ttl, ttl)
            return CacheUse(read, w5, w1)

    def automatic(self, scope: str, blocks: list[Block]) -> tuple[int, int]:
        """OpenAI's automatic prefix caching: the tokens this request read from the cache,
        and those it newly wrote there (its longest cacheable prefix beyond the read)."""
        keys, counts = self._prefixes(f"auto:{scope}", blocks)
        with self._lock:
            now = self.clock()
            cached = stored = 0
            for key, n in zip(keys, counts, strict=True):
                if n < AUTO_MIN_TOKENS:
                    continue
                if self._live(key, now):
                    cached = n
                stored = n
                self._entries[key] = (now + AUTO_TTL_S, AUTO_TTL_S)
            return cached, stored - cached


@dataclass(frozen=True, slots=True)
class Line:
    """One request on the fake's invoice: the usage classes its answer reported."""

    protocol: str
    model: str
    input: int = 0  # uncached input
    cache_read: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    output: int = 0  # reasoning included
    reasoning: int = 0
    cut: bool = False  # a stream that ended early: the usage its sent events carried

    @property
    def prompt(self) -> int:
        """Every input token, all classes."""
        return self.input + self.cache_read + self.cache_write_5m + self.cache_write_1h

    def cost(self, prices: Mapping[str, Mapping[str, Any]]) -> float:
        p = prices[self.model]
        tier = p.get("long_context")
        if tier is not None and self.prompt > tier["above"]:
            p = tier  # the whole request at the long-context prices
        pin = p["input"]
        write = p.get("cache_write", pin)
        return (
            self.input * pin
            + self.cache_read * p.get("cached_input", pin)
            + self.cache_write_5m * write
            + self.cache_write_1h * p.get("cache_write_1h", write)
            + self.output * p["output"]
        ) / 1e6


def invoice(lines: list[Line], prices: Mapping[str, Mapping[str, float]]) -> float:
    """What the provider bills for ``lines`` at ``prices`` (USD per 1M tokens)."""
    return sum(line.cost(prices) for line in lines)
