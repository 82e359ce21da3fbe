"""The ``openai-responses`` codec: OpenAI's Responses API (``POST /v1/responses``).

    request.py   client body → ChatRequest (what Codex CLI and the Agents SDK send)
    upstream.py  ChatRequest → provider body; what Responses cannot express
    answer.py    Response ↔ Answer; usage normalised; the Response object both
                 the whole answer and the stream's terminal event use
    stream.py    provider SSE → model events
    stream_encoder.py  model events → OpenAI's event sequence for the client
    common.py    content parts, item ids, the malformed-field error

``encode_answer`` needs the client's request for the fields a Response echoes (tools,
tool_choice, text.format, sampling): ``encode_answer_for(answer, req)`` takes it, and
``encode_answer`` (the ``Codec`` protocol's form) uses OpenAI's defaults.
"""

from __future__ import annotations

from typing import Any

from router.chat.codecs import FunctionCodec
from router.chat.codecs.responses.answer import decode_answer, encode_answer_for, normalize_usage
from router.chat.codecs.responses.request import ANSWER_NEUTRAL_EXTRAS, MAX_ITEMS, decode_request
from router.chat.codecs.responses.stream import ResponsesStreamDecoder, UpstreamStreamError
from router.chat.codecs.responses.stream_encoder import ResponsesStreamEncoder
from router.chat.codecs.responses.upstream import budget_to_effort, encode_request, unsupported
from router.chat.model import Answer, ChatRequest


class OpenAIResponsesCodec(FunctionCodec):
    """The ``Codec`` for ``openai-responses``, plus ``encode_answer_for``."""

    def __init__(self) -> None:
        super().__init__(
            name="openai-responses",
            decode_request=decode_request,
            unsupported=unsupported,
            encode_request=encode_request,
            decode_answer=decode_answer,
            encode_answer=encode_answer_for,  # no request: OpenAI's defaults
            stream_decoder=ResponsesStreamDecoder,
            stream_encoder=ResponsesStreamEncoder,
        )

    @staticmethod
    def encode_answer_for(answer: Answer, req: ChatRequest | None) -> dict[str, Any]:
        return encode_answer_for(answer, req)


__all__ = [
    "ANSWER_NEUTRAL_EXTRAS",
    "MAX_ITEMS",
    "OpenAIResponsesCodec",
    "ResponsesStreamDecoder",
    "ResponsesStreamEncoder",
    "UpstreamStreamError",
    "budget_to_effort",
    "normalize_usage",
]
