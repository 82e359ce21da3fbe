"""Codecs: one per wire protocol, each pure (no I/O), each both directions.

    client wire ──decode_request──▶ ChatRequest ──encode_request──▶ provider wire
    client wire ◀──encode_answer─── Answer      ◀──decode_answer─── provider wire
    client SSE  ◀──StreamEncoder─── events      ◀──StreamDecoder─── provider SSE

A front uses its protocol's codec on the client side; an upstream uses its provider's
``api:`` codec on the provider side; any pair combines through the model. Every field of
a protocol is mapped, carried in ``extras`` (only to an upstream of the same protocol),
or reported by ``unsupported`` so that candidates which cannot express it are not
eligible. Usage normalisation (the token classes each provider reports its own way) is
part of ``decode_answer`` and the stream decoder.

SSE frames are ``(event, data)`` pairs: ``event`` None for data-only protocols (OpenAI
chat), the event name otherwise; ``data`` a JSON object, or the string ``"[DONE]"``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from typing import Protocol as TypingProtocol

from router.chat.model import Answer, ChatRequest, Protocol, StreamEvent, Unsupported

Frame = tuple[str | None, dict[str, Any] | str]


class StreamDecoder(TypingProtocol):
    """Provider SSE frames in, model events out; stateful (one per stream)."""

    def feed(self, event: str | None, data: dict[str, Any]) -> list[StreamEvent]: ...

    def close(self) -> list[StreamEvent]:
        """Events owed at the end of the stream (a finish the provider never sent)."""
        ...


class StreamEncoder(TypingProtocol):
    """Model events in, client SSE frames out; stateful (one per stream)."""

    def start(self, id: str, model: str, created: int) -> list[Frame]: ...

    def feed(self, event: StreamEvent) -> list[Frame]: ...

    def finish(self, extra: dict[str, Any] | None = None) -> list[Frame]:
        """The closing frames; ``extra`` (the router's decision) rides on the last data
        object where the protocol allows an extra field."""
        ...


class Codec(TypingProtocol):
    name: Protocol

    def decode_request(self, body: dict[str, Any]) -> ChatRequest:
        """A client's request; ``InvalidRequestError`` naming the field when malformed."""
        ...

    def unsupported(self, req: ChatRequest) -> list[Unsupported]:
        """Fields of ``req`` this protocol cannot express (empty: it can take it)."""
        ...

    def encode_request(
        self, req: ChatRequest, upstream_model: str, *, default_max_tokens: int | None = None
    ) -> dict[str, Any]:
        """The provider's request body (``stream`` and usage reporting included);
        ``default_max_tokens`` (the model's ``max_output_tokens``) where the protocol
        requires a limit and the request gave none."""
        ...

    def decode_answer(self, body: dict[str, Any]) -> Answer: ...

    def encode_answer(self, answer: Answer) -> dict[str, Any]: ...

    def stream_decoder(self) -> StreamDecoder: ...

    def stream_encoder(self, req: ChatRequest) -> StreamEncoder: ...


@dataclass(frozen=True, slots=True)
class FunctionCodec:
    """A :class:`Codec` assembled from a protocol's module-level functions.

    Every codec is stateless (a stream gets its own decoder or encoder object), so each
    is no more than its functions under the protocol's name; a protocol's class
    subclasses this with an ``__init__`` naming them, and adds what only it has."""

    name: Protocol
    decode_request: Callable[[dict[str, Any]], ChatRequest]
    unsupported: Callable[[ChatRequest], list[Unsupported]]
    encode_request: Callable[..., dict[str, Any]]
    decode_answer: Callable[[dict[str, Any]], Answer]
    encode_answer: Callable[[Answer], dict[str, Any]]
    stream_decoder: Callable[[], StreamDecoder]
    stream_encoder: Callable[[ChatRequest], StreamEncoder]


def frames_text(frames: Iterable[Frame]) -> bytes:
    """SSE bytes of ``frames`` (for tests and the api layer)."""
    import json

    out = []
    for event, data in frames:
        head = f"event: {event}\n" if event else ""
        body = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
        out.append(f"{head}data: {body}\n\n")
    return "".join(out).encode()
