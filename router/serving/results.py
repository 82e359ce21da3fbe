"""What a chat request ends as, for the api layer to render: a whole :class:`Answer`, a
:class:`StreamedAnswer` (chunks as dicts; the api layer frames them as SSE) or a
:class:`Refusal` (an error body and its status). No HTTP types."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from router.chat.model import Protocol
from router.errors import RouterError
from router.observability.decisions import DecisionRecord


@dataclass(slots=True)
class Inbound:
    """What a front hands the flow besides the body: the protocol it speaks and the
    request headers the flow acts on (auth, session, Anthropic's version and betas)."""

    front: Protocol = "openai-chat"
    authorization: str | None = None  # ``Authorization`` (or Anthropic's ``x-api-key``)
    session_header: str | None = None  # ``x-session-id``
    # The session of ``previous_response_id`` (the Responses front looks it up): a session
    # id the router made, continued as is (router/serving/sessions.py).
    previous_session: str | None = None
    anthropic_version: str | None = None
    anthropic_beta: str | None = None


@dataclass
class Answer:
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class StreamedAnswer:
    # Chat: the relayed chunks, then the ``router`` chunk. Another front: its codec's
    # SSE frames, ``(event, data)``.
    chunks: AsyncIterator[Any]
    headers: dict[str, str]


@dataclass
class Refusal:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


ChatResult = Answer | StreamedAnswer | Refusal


def refusal(exc: RouterError, rec: DecisionRecord | None = None) -> Refusal:
    headers = rec.headers() if rec is not None else {}
    headers.update(exc.headers)
    return Refusal(exc.status, exc.body(), headers)
