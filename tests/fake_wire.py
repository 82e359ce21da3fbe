"""Serving one request of a provider protocol for the fake upstream: authentication,
validation, the steered failures of :meth:`FakeUpstream.behave`, then the answer whole
or as named SSE events, and the invoice line it earns (see :mod:`fake_billing`).

A protocol (``fake_anthropic.ANTHROPIC``, ``fake_responses.RESPONSES``) is an object
with ``name``, ``error(status, message)`` (its error body), ``authenticate(headers,
keys)``, ``validate(body, state)`` (both raise :class:`ProviderError`) and
``reply(body, state) -> Reply``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from fake_billing import Line, PrefixCache, Signer

from router.offline.echo import SSE_HEADERS, send_json

if TYPE_CHECKING:
    from fake_upstream import Behaviour, FakeUpstream, Recorded

HOLD_LIMIT_S = 30.0  # a held request answers after this even if the test never lets it go


class ProviderError(Exception):
    """An answer of the provider's own error shape (status and body)."""

    def __init__(self, status: int, body: dict) -> None:
        super().__init__(status, body)
        self.status, self.body = status, body


@dataclass
class ProviderState:
    """What a provider remembers between requests: prompt caches, its signing key, and
    stored Responses (``store: true``) with the item ids it handed out."""

    cache: PrefixCache = field(default_factory=PrefixCache)
    signer: Signer = field(default_factory=Signer)
    responses: dict[str, Any] = field(default_factory=dict)
    items: dict[str, dict] = field(default_factory=dict)

    def clear(self) -> None:
        self.cache.clear()
        self.responses.clear()
        self.items.clear()


@dataclass(frozen=True, slots=True)
class Event:
    """One SSE event; ``line``: the usage it reports (for billing a cut stream)."""

    name: str | None
    data: dict
    line: Line | None = None

    def encode(self) -> bytes:
        data = json.dumps(self.data, separators=(",", ":")).encode()
        head = f"event: {self.name}\n".encode() if self.name else b""
        return head + b"data: " + data + b"\n\n"


@dataclass(slots=True)
class Reply:
    json: dict  # the non-streamed answer
    usage: dict  # its usage, in the protocol's shape
    line: Line  # what it bills when sent in full
    events: list[Event]  # the streamed answer


async def serve_protocol(
    fake: FakeUpstream, proto: Any, raw: bytes, headers: dict, rec: Recorded, receive: Any,
    send: Any,
) -> None:  # fmt: skip
    rec.protocol = proto.name
    try:
        proto.authenticate(headers, fake.api_keys)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ProviderError(400, proto.error(400, "the request body is not a JSON object"))
        proto.validate(body, fake.state)
    except ProviderError as exc:
        await send_json(send, exc.status, exc.body)
        return
    b = fake._take(str(body.get("model")), body)
    if await apply_behaviour(b, rec, receive, send, proto.error):
        return
    reply = proto.reply(body, fake.state)
    if body.get("stream") is not True:
        await send_json(send, 200, reply.json)
        rec.usage, rec.line = reply.usage, reply.line
        return
    await _stream(reply, b, rec, receive, send)


async def apply_behaviour(
    b: Behaviour | None, rec: Recorded, receive: Any, send: Any,
    render: Callable[[int, str], dict],
) -> bool:  # fmt: skip
    """Hold, delay, drop or fail as ``b`` says; True when the request was answered so."""
    if b is None:
        return False
    if b.hold is not None:
        await asyncio.to_thread(b.hold.wait, HOLD_LIMIT_S)
    if b.delay_s:
        await asyncio.sleep(b.delay_s)
    if b.reset or b.drop_after_read:
        await close_connection(receive, rst=b.reset)
        rec.disconnected = True
        return True
    if b.status is None or b.status == 200:
        return False
    extra = []
    if b.retry_after is not None:
        extra.append((b"retry-after", str(b.retry_after).encode()))
    if b.error_raw is not None:
        head = [(b"content-type", b"application/json"), *extra]
        await send({"type": "http.response.start", "status": b.status, "headers": head})
        await send({"type": "http.response.body", "body": b.error_raw})
        return True
    err = b.error_body or render(b.status, f"fake upstream failure {b.status}")
    await send_json(send, b.status, err, extra)
    return True


async def _stream(
    reply: Reply, b: Behaviour | None, rec: Recorded, receive: Any, send: Any
) -> None:
    delay = b.chunk_delay_s if b else 0.0
    cut = b.cut_after_events if b else None
    error_raw = b.stream_error_raw if b else None
    gone = asyncio.Event()
    watcher = asyncio.create_task(watch(receive, gone))
    billed: Line | None = None
    complete = False
    try:
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        for event in reply.events:
            if cut is not None and rec.chunks_sent >= cut:
                await close_connection(receive, rst=False)
                rec.disconnected = True
                return
            if delay:
                await asyncio.sleep(delay)
            if gone.is_set():
                rec.disconnected = True
                return
            await send({"type": "http.response.body", "body": event.encode(), "more_body": True})
            rec.chunks_sent += 1
            billed = event.line or billed
            if error_raw is not None:
                data = b"event: error\ndata: " + error_raw + b"\n\n"
                await send({"type": "http.response.body", "body": data, "more_body": False})
                return
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        complete = True
        rec.usage = reply.usage
    finally:
        watcher.cancel()
        if complete:
            rec.line = reply.line
        else:
            rec.line = replace(billed or Line(reply.line.protocol, reply.line.model), cut=True)


async def watch(receive: Any, gone: asyncio.Event) -> None:
    """ASGI: ``receive()`` returns ``http.disconnect`` when the client leaves."""
    while (await receive())["type"] != "http.disconnect":
        pass
    gone.set()


async def close_connection(receive: Any, *, rst: bool) -> None:
    """Close the TCP connection under this request: an RST (SO_LINGER 0), or a FIN.

    uvicorn does not hand the transport to the app; its ``receive`` is a bound method of
    the request cycle, which holds it.
    """
    transport = getattr(getattr(receive, "__self__", None), "transport", None)
    if transport is None:  # pragma: no cover - another server; an exception closes it too
        raise ConnectionResetError("fake upstream reset")
    sock = transport.get_extra_info("socket")
    if not rst:
        transport.close()
    else:
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    await asyncio.sleep(0)  # let connection_lost mark the cycle disconnected
