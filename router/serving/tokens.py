"""Token counts for reservations and for streams cut short: the scorer's tokenizer when it
is loaded, else about four characters a token."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


def message_text(messages: list[dict[str, Any]]) -> str:
    """All text a provider bills as input (every role), for the reservation estimate."""
    parts: list[str] = []
    for m in messages:
        c = m.get("content") if isinstance(m, dict) else None
        if isinstance(c, str):
            parts.append(c)
        elif isinstance(c, list):
            parts += [
                p.get("text", "")
                for p in c
                if isinstance(p, dict) and isinstance(p.get("text"), str)
            ]
    return "\n".join(parts)


# Above this many characters, text is tokenized on a worker thread so a huge body does not
# stall the event loop (and every other request with it).
OFF_LOOP_CHARS = 64 * 1024


class TokenCounter:
    def __init__(self, tokenizer: Callable[[], Callable[[str], int] | None]) -> None:
        self._tokenizer = tokenizer  # the loaded model's count_tokens, or None

    def text_tokens(self, text: str) -> int:
        count = self._tokenizer()
        return count(text) if count is not None else (len(text) + 3) // 4

    def prompt_tokens(self, messages: list[dict[str, Any]]) -> int:
        return self.text_tokens(message_text(messages)) + 4 * len(messages)

    async def count_prompt(self, messages: list[dict[str, Any]]) -> int:
        """:meth:`prompt_tokens`, off the event loop when the text is large."""
        text = message_text(messages)
        if len(text) <= OFF_LOOP_CHARS:
            return self.text_tokens(text) + 4 * len(messages)
        return await asyncio.to_thread(self.text_tokens, text) + 4 * len(messages)

    async def count_text(self, text: str, units: int) -> int:
        """``text``'s tokens plus four for each of ``units`` turns (or tools), off the
        event loop when the text is large."""
        if len(text) <= OFF_LOOP_CHARS:
            return self.text_tokens(text) + 4 * units
        return await asyncio.to_thread(self.text_tokens, text) + 4 * units
