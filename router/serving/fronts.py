"""The fronts other than chat (``/v1/messages``, ``/v1/responses``) as the flow sees
them: the client's body decoded by its protocol's codec into the typed request, and
the typed answer or stream events encoded back by the same codec. No HTTP types.

Planning, budgets and the chat upstreams work on a chat body, so a front's typed
request is also encoded as chat (``CHAT.encode_request``: the routing fields the
planner reads, and the body a chat provider gets). The typed request rides along
(``ChatRequest.set_typed``): a provider of the front's own protocol is sent what the
client sent (thinking signatures, ``cache_control`` and the protocol's extras
included), and a field no candidate can express is refused with a 400 in planning.
"""

from __future__ import annotations

from typing import Any

from router.chat.codecs import Frame, StreamEncoder
from router.chat.codecs.anthropic import AnthropicMessagesCodec
from router.chat.codecs.openai_chat import OpenAIChatCodec
from router.chat.codecs.responses import OpenAIResponsesCodec, encode_answer_for
from router.chat.model import (
    Answer,
    ChatRequest,
    Finish,
    Protocol,
    Reasoning,
    Text,
    ToolCall,
    ToolResult,
)
from router.jsonio import dumps
from router.protocol import ChatRequest as WireChat
from router.protocol import parse_chat

CHAT = OpenAIChatCodec()
ANTHROPIC = AnthropicMessagesCodec()
RESPONSES = OpenAIResponsesCodec()
CODECS: dict[str, Any] = {"anthropic-messages": ANTHROPIC, "openai-responses": RESPONSES}


def decode(front: Protocol, data: dict[str, Any], *, max_n: int) -> tuple[WireChat, dict]:
    """The client's body as (the request planning reads, the chat body a chat provider
    gets); the typed request is on the first (``typed()``). 400 naming the field when
    the body is malformed for its protocol."""
    typed = CODECS[front].decode_request(data)
    body = CHAT.encode_request(typed, typed.model)
    planned = dict(body)
    if typed.router is not None:
        planned["router"] = typed.router
    req = parse_chat(planned, max_n=max_n)
    req.set_typed(typed, front)
    return req, body


def encode_answer(front: Protocol, answer: Answer, req: ChatRequest) -> dict[str, Any]:
    if front == "openai-responses":
        return encode_answer_for(answer, req)
    return CODECS[front].encode_answer(answer)


def stream_encoder(front: Protocol, req: ChatRequest) -> StreamEncoder:
    return CODECS[front].stream_encoder(req)


def failed_frames(encoder: StreamEncoder, extra: dict[str, Any] | None) -> list[Frame]:
    """The frames that end a stream the upstream broke (or a shutdown ended): the
    protocol's own failure (Anthropic's ``error`` event, Responses' ``response.failed``)."""
    return encoder.feed(Finish("error")) + encoder.finish(extra)


def input_text(req: ChatRequest) -> tuple[str, int]:
    """What a provider bills as input of ``req`` (system, every turn's text, tool calls
    and results, thinking, and the tools' names, descriptions and schemas) as one text,
    and how many turns and tools it has (each costs a few tokens of framing). Images
    and documents are not counted."""
    parts = [t.text for t in req.system]
    for msg in req.messages:
        for part in msg.parts:
            if isinstance(part, Text):
                parts.append(part.text)
            elif isinstance(part, ToolCall):
                parts += (part.name, part.arguments)
            elif isinstance(part, ToolResult):
                parts += [c.text for c in part.content if isinstance(c, Text)]
            elif isinstance(part, Reasoning):
                parts.append(part.text)
    for tool in req.tools:
        parts += (tool.name, tool.description or "", dumps(tool.parameters).decode())
    return "\n".join(parts), len(req.messages) + len(req.tools)
