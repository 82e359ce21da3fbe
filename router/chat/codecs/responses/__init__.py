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

from router.chat.codecs.responses.answer import decode_answer, encode_answer_for, normalize_usage
from router.chat.codecs.responses.request import ANSWER_NEUTRAL_EXTRAS, MAX_ITEMS, decode_request
from router.chat.codecs.responses.stream import ResponsesStreamDecoder, UpstreamStreamError
from router.chat.codecs.responses.stream_encoder import ResponsesStreamEncoder
from router.chat.codecs.responses.upstream import budget_to_effort, encode_request, unsupported
from router.chat.model import Answer, ChatRequest, Protocol, Unsupported


class OpenAIResponsesCodec:
    name: Protocol = "openai-responses"

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
        return encode_answer_for(answer, None)

    def encode_answer_for(self, answer: Answer, req: ChatRequest | None) -> dict[str, Any]:
        return encode_answer_for(answer, req)

    def stream_decoder(self) -> ResponsesStreamDecoder:
        return ResponsesStreamDecoder()

    def stream_encoder(self, req: ChatRequest) -> ResponsesStreamEncoder:
        return ResponsesStreamEncoder(req)


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
