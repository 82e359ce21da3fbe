"""The ``anthropic-messages`` codec: Anthropic's Messages API (``/v1/messages``).

Both sides: Claude Code and other Anthropic clients at the front, an Anthropic upstream
behind. The halves live in their own modules: ``_decode`` (a client's request, checked
field by field), ``_encode`` (the upstream request, and what it cannot express),
``_answer`` (whole messages), ``_stream`` (SSE both ways), ``_wire`` (usage arithmetic,
stop reasons, tool ids).
"""

from __future__ import annotations

from router.chat.codecs import FunctionCodec
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


class AnthropicMessagesCodec(FunctionCodec):
    """The ``Codec`` for ``anthropic-messages``."""

    def __init__(self) -> None:
        super().__init__(
            name="anthropic-messages",
            decode_request=decode_request,
            unsupported=unsupported,
            encode_request=encode_request,
            decode_answer=decode_answer,
            encode_answer=encode_answer,
            stream_decoder=AnthropicStreamDecoder,
            stream_encoder=lambda req: AnthropicStreamEncoder(),  # needs nothing of it
        )


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
