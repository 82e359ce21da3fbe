"""The ``anthropic-messages`` codec: Anthropic's Messages API (``/v1/messages``).

Both sides: Claude Code and other Anthropic clients at the front, an Anthropic upstream
behind. The halves live in their own modules: ``_decode`` (a client's request, checked
field by field), ``_encode`` (the upstream request, and what it cannot express),
``_answer`` (whole messages), ``_stream`` (SSE both ways), ``_wire`` (usage arithmetic,
stop reasons, tool ids).
"""

from __future__ import annotations

from typing import Any

from router.chat.codecs.anthropic._answer import decode_answer, encode_answer, message_id
from router.chat.codecs.anthropic._decode import decode_request
from router.chat.codecs.anthropic._encode import (
    EFFORT_BUDGET,
    encode_request,
    plan_thinking,
    unsupported,
)
from router.chat.codecs.anthropic._stream import (
    AnthropicStreamDecoder,
    AnthropicStreamEncoder,
    UpstreamStreamError,
)
from router.chat.codecs.anthropic._wire import normalize_usage, safe_tool_id, usage_wire
from router.chat.model import Answer, ChatRequest, Protocol, Unsupported


class AnthropicMessagesCodec:
    name: Protocol = "anthropic-messages"

    def decode_request(self, body: dict[str, Any]) -> ChatRequest:
        return decode_request(body)

    def unsupported(self, req: ChatRequest) -> list[Unsupported]:
        return unsupported(req)

    def encode_request(
        self, req: ChatRequest, upstream_model: str, *, default_max_tokens: int | None = None
    ) -> dict[str, Any]:
        return encode_request(req, upstream_model, default_max_tokens=default_max_tokens)

    def decode_answer(self, body: dict[str, Any]) -> Answer:
        return decode_answer(body)

    def encode_answer(self, answer: Answer) -> dict[str, Any]:
        return encode_answer(answer)

    def stream_decoder(self) -> AnthropicStreamDecoder:
        return AnthropicStreamDecoder()

    def stream_encoder(self, req: ChatRequest) -> AnthropicStreamEncoder:
        return AnthropicStreamEncoder()


__all__ = [
    "EFFORT_BUDGET",
    "AnthropicMessagesCodec",
    "AnthropicStreamDecoder",
    "AnthropicStreamEncoder",
    "UpstreamStreamError",
    "message_id",
    "normalize_usage",
    "plan_thinking",
    "safe_tool_id",
    "usage_wire",
]
