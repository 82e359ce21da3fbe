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

from router.chat.codecs import FunctionCodec
from router.chat.codecs.openai_chat.answer import decode_answer, encode_answer, normalize_usage
from router.chat.codecs.openai_chat.decode import decode_request
from router.chat.codecs.openai_chat.encode import encode_request, unsupported
from router.chat.codecs.openai_chat.stream import ChatStreamDecoder, ChatStreamEncoder

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


class OpenAIChatCodec(FunctionCodec):
    """The ``Codec`` for ``openai-chat``; stateless (streams get their own objects)."""

    def __init__(self) -> None:
        super().__init__(
            name="openai-chat",
            decode_request=decode_request,
            unsupported=unsupported,
            encode_request=encode_request,
            decode_answer=decode_answer,
            encode_answer=encode_answer,
            stream_decoder=ChatStreamDecoder,
            stream_encoder=ChatStreamEncoder,
        )
