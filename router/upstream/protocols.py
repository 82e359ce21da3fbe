"""The provider's wire protocol (``api:`` in providers.yaml): path, auth, and the codec
that turns the router's request into the provider's and the provider's answer back.

Retry, deadlines, the circuit breaker, at-most-once sending and SSE framing stay in the
client and know nothing of protocols; this module is the only place that does.

``openai-chat`` providers get the client's chat body as it came (the model name and the
stream's usage option set), which is today's fast path. For ``anthropic-messages`` and
``openai-responses`` providers the chat body is decoded into the typed model
(``router.chat``), made valid for that provider where another one wrote the history
(router/chat/hygiene.py: foreign reasoning dropped, thinking off where Anthropic would
refuse it, tool ids in its form; logged), encoded with the provider's codec, and the answer (or each stream
event) decoded with it and encoded back as chat, usage classes included (a Claude
answer's cache reads reach the ledger as ``prompt_tokens_details.cached_tokens``).
A front of another protocol (``/v1/messages``, ``/v1/responses``) hands the typed request
in directly and gets the typed answer back (``typed_answer``, ``TypedEvents``), so what
chat has no field for (thinking signatures, cache-control) is not lost on the way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Literal

from router.chat.codecs.anthropic import AnthropicMessagesCodec
from router.chat.codecs.anthropic import UpstreamStreamError as AnthropicStreamError
from router.chat.codecs.openai_chat import ChatStreamEncoder, OpenAIChatCodec
from router.chat.codecs.openai_chat.answer import PARTIAL_MARK, encode_usage
from router.chat.codecs.responses import OpenAIResponsesCodec
from router.chat.codecs.responses import UpstreamStreamError as ResponsesStreamError
from router.chat.hygiene import SWITCH_NOTES, prepare_for, restore_event_ids, restore_tool_ids
from router.chat.model import (
    Answer,
    ChatRequest,
    StreamEvent,
    StreamStart,
    Unsupported,
    Usage,
    UsageEvent,
)
from router.errors import RouterError

log = logging.getLogger("router.upstream")

Api = Literal["openai-chat", "openai-responses", "anthropic-messages"]
APIS: tuple[Api, ...] = ("openai-chat", "openai-responses", "anthropic-messages")
# What a native Anthropic request carries when neither the request nor the model's
# ``max_output_tokens`` gives a limit (the Messages API requires one).
DEFAULT_ANTHROPIC_MAX_TOKENS = 4096
ANTHROPIC_VERSION = "2023-06-01"
# Statuses a protocol uses to say "not processed, try again" besides 429 and 503.
NOT_PROCESSED_BY_API: dict[str, frozenset[int]] = {"anthropic-messages": frozenset({529})}

CHAT = OpenAIChatCodec()
CODECS: dict[str, Any] = {
    "openai-chat": CHAT,
    "openai-responses": OpenAIResponsesCodec(),
    "anthropic-messages": AnthropicMessagesCodec(),
}
STREAM_ERRORS = (AnthropicStreamError, ResponsesStreamError, RouterError, ValueError)


def endpoint(api: str, base_url: str) -> str:
    """The URL requests go to, from ``base_url`` as the provider's own SDK takes it."""
    if api == "anthropic-messages":
        return base_url.removesuffix("/v1") + "/v1/messages"
    if api == "openai-responses":
        return base_url + "/responses"
    return base_url + "/chat/completions"


def auth_headers(api: str, key: str) -> dict[bytes, bytes]:
    if api == "anthropic-messages":
        return {b"x-api-key": key.encode(), b"anthropic-version": ANTHROPIC_VERSION.encode()}
    return {b"authorization": b"Bearer " + key.encode()}


def forwarded_headers(api: str, version: str | None, beta: str | None) -> dict[bytes, bytes] | None:
    """The client's headers a provider speaking ``api`` gets (None: none): Anthropic's
    ``anthropic-version`` (else the router's own, :data:`ANTHROPIC_VERSION`) and
    ``anthropic-beta``, to an Anthropic provider only."""
    if api != "anthropic-messages" or (version is None and beta is None):
        return None
    out: dict[bytes, bytes] = {}
    if version is not None:
        out[b"anthropic-version"] = version.encode("latin-1")
    if beta is not None:
        out[b"anthropic-beta"] = beta.encode("latin-1")
    return out


def unsupported(api: str, req: ChatRequest) -> list[Unsupported]:
    """What a provider speaking ``api`` cannot express of ``req`` (a chat request to a
    chat provider goes as it came: nothing)."""
    if api == "openai-chat" and req.extras_protocol in (None, "openai-chat"):
        return []
    return CODECS[api].unsupported(req)


def provider_body(
    api: str, body: dict[str, Any], upstream_model: str, max_output_tokens: int | None, *,
    stream: bool, typed: Callable[[], ChatRequest] | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:  # fmt: skip
    """The body to send: chat as it came, or re-encoded for the provider's protocol from
    the typed request (``typed``: the one planning decoded already, else decoded here);
    and the tool ids mapped to the provider's form (mapped id -> the client's), which
    the answer gets back (``typed_answer``, ``chat_answer``, the stream translators)."""
    if api == "openai-chat":
        payload = dict(body)
        payload["model"] = upstream_model
        if stream:
            payload["stream"] = True
            so = body.get("stream_options")
            payload["stream_options"] = {
                **(so if isinstance(so, dict) else {}),
                "include_usage": True,
            }
        return payload, {}
    req = replace(typed() if typed is not None else CHAT.decode_request(body), stream=stream)
    # A history another provider wrote, made valid for this one (router/chat/hygiene.py).
    req, notes = prepare_for(req, api)
    if notes:
        log.info("history prepared for %s %s: %s", api, upstream_model, notes.describe())
    kept = SWITCH_NOTES.get()
    if kept is not None:
        kept.append(notes)
    limit = max_output_tokens or DEFAULT_ANTHROPIC_MAX_TOKENS
    body_out = CODECS[api].encode_request(req, upstream_model, default_max_tokens=limit)
    return body_out, notes.tool_ids


def typed_answer(api: str, answer: dict[str, Any], mapped: dict[str, str] | None = None) -> Answer:
    """The provider's answer as the typed model (for a front of another protocol), with
    the tool ids ``mapped`` for the provider given back as the client wrote them."""
    return restore_tool_ids(CODECS[api].decode_answer(answer), mapped or {})


def chat_answer(
    api: str, answer: dict[str, Any], mapped: dict[str, str] | None = None
) -> dict[str, Any]:
    """The provider's answer as a chat completion (unchanged for chat providers)."""
    if api == "openai-chat":
        return answer
    return CHAT.encode_answer(typed_answer(api, answer, mapped))


class ChatChunks:
    """A provider's stream events as chat chunks: the provider's stream decoder, then
    the chat stream encoder (usage chunk always on, like a chat provider asked for it).

    Usage known before the end (Anthropic's input classes in ``message_start``), and the
    usage a stream that ended early still owes, come as a chunk of their own whose usage
    carries ``PARTIAL_MARK``: the relay keeps it for the bill (the input is charged as
    reported even if the stream is cut) and never sends it to the client; a stream's
    final usage replaces it. ``mapped``: the tool ids given back (see ``provider_body``)."""

    __slots__ = ("_decoder", "_encoder", "_mapped")

    def __init__(self, api: str, mapped: dict[str, str] | None = None) -> None:
        self._decoder = CODECS[api].stream_decoder()
        self._encoder = ChatStreamEncoder(ChatRequest(model="", messages=[], stream_usage=True))
        self._mapped = mapped or {}

    def feed(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        return self._frames(
            restore_event_ids(self._decoder.feed(data.get("type"), data), self._mapped)
        )

    def close(self) -> list[dict[str, Any]]:
        # usage owed here is what a cut stream had reported
        owed = restore_event_ids(self._decoder.close(), self._mapped)
        out = [partial_usage_chunk(e.usage) for e in owed if isinstance(e, UsageEvent)]
        out += self._frames([e for e in owed if not isinstance(e, UsageEvent)])
        return out + [f for _, f in self._encoder.finish() if isinstance(f, dict)]

    def _frames(self, events: list[Any]) -> list[dict[str, Any]]:
        feed: Callable[[Any], list[Any]] = self._encoder.feed
        out = [f for e in events for _, f in feed(e) if isinstance(f, dict)]
        for e in events:
            if isinstance(e, StreamStart) and e.usage is not None:
                out.append(partial_usage_chunk(e.usage))
        return out


def partial_usage_chunk(usage: Usage) -> dict[str, Any]:
    """A chat chunk with the usage a stream has reported so far, marked partial."""
    return {
        "object": "chat.completion.chunk",
        "choices": [],
        "usage": {**encode_usage(usage), PARTIAL_MARK: True},
    }


class TypedEvents:
    """A provider's stream events as the typed model's events (for a front of another
    protocol than chat: its own codec encodes them for the client); ``mapped``: the tool
    ids given back (see ``provider_body``)."""

    __slots__ = ("_decoder", "_mapped")

    def __init__(self, api: str, mapped: dict[str, str] | None = None) -> None:
        self._decoder = CODECS[api].stream_decoder()
        self._mapped = mapped or {}

    def feed(self, data: dict[str, Any]) -> list[StreamEvent]:
        return restore_event_ids(self._decoder.feed(data.get("type"), data), self._mapped)

    def close(self) -> list[StreamEvent]:
        return restore_event_ids(self._decoder.close(), self._mapped)
