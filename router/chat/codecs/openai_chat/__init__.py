"""The ``openai-chat`` codec: OpenAI Chat Completions, as OpenAI and the providers that
copy it (DeepSeek, Groq, vLLM, ...) speak it.

Chat is the router's native protocol: what it does today (the caller's ``model`` on the
answer, usage always asked of the provider but shown to the client only if it asked,
the ``router`` chunk before ``[DONE]``) is what this codec reproduces. Its modules, one
job each:

- ``decode``: a client's request into a ``ChatRequest`` (400s name the field);
- ``encode``: a ``ChatRequest`` from any protocol into a provider body, and
  ``unsupported`` (what chat cannot express);
- ``answer``: whole answers both ways and ``normalize_usage``;
- ``stream``: the stream decoder and encoder;
- ``parts``: content parts and helpers the others share.
"""

from __future__ import annotations

from typing import Any

from router.chat.codecs.openai_chat.answer import decode_answer, encode_answer, normalize_usage
from router.chat.codecs.openai_chat.decode import decode_request
from router.chat.codecs.openai_chat.encode import encode_request, unsupported
from router.chat.codecs.openai_chat.stream import ChatStreamDecoder, ChatStreamEncoder
from router.chat.model import Answer, ChatRequest, Protocol, Unsupported

__all__ = [
    "ChatStreamDecoder",
    "ChatStreamEncoder",
    "OpenAIChatCodec",
    "decode_answer",
    "decode_request",
    "encode_answer",
    "encode_request",
    "normalize_usage",
    "unsupported",
]


class OpenAIChatCodec:
    """The ``Codec`` for ``openai-chat``; stateless (streams get their own objects)."""

    name: Protocol = "openai-chat"

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

    def stream_decoder(self) -> ChatStreamDecoder:
        return ChatStreamDecoder()

    def stream_encoder(self, req: ChatRequest) -> ChatStreamEncoder:
        return ChatStreamEncoder(req)
