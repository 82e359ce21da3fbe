"""Streamed upstream answers: Server-Sent Events decoding and :class:`UpstreamStream`.

The stream reads through what the client hands it (the response, its raw byte iterator,
the provider as a :class:`StreamProvider`, the exchange's :class:`Deadline`) and reports
failures through the provider, so this module does not import the client. Memory is
bounded: an event (its pending line plus its data lines) over the provider's
``max_sse_event_bytes`` ends the stream with a ``too_large`` failure.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from typing import Any, NoReturn, Protocol

import httpx

from router.jsonio import loads
from router.upstream.deadlines import Deadline
from router.upstream.failures import TRANSPORT_ERRORS, describe_error
from router.upstream.protocols import STREAM_ERRORS, ChatChunks

DEFAULT_MAX_EVENT_BYTES = 1 << 20


class StreamProvider(Protocol):
    """What a stream needs from its provider."""

    name: str
    first_byte: float
    idle: float
    total: float
    max_sse_event_bytes: int
    api: str

    def scrub(self, text: str) -> str: ...

    def scrub_value(self, value: Any) -> Any: ...

    def fail(self, kind: str, message: str, **kw: Any) -> Exception: ...

    def translate(self, exc: BaseException, *, answer_started: bool) -> Exception: ...

    def record(self, exc: BaseException | None) -> None: ...


class Translator(Protocol):
    """Events of the provider's protocol in, what the stream yields out."""

    def feed(self, data: dict) -> list[Any]: ...

    def close(self) -> list[Any]: ...


class EventTooLarge(ValueError):
    """An SSE event grew past the decoder's ``max_event_bytes``."""


class SSEDecoder:
    """Incremental Server-Sent Events parser: bytes in, (event, data) pairs out.

    Handles LF, CRLF and CR line ends (also split across chunks), comments, multi-line
    ``data`` and ``event`` fields; ignores ``id`` and ``retry``. Raises
    :class:`EventTooLarge` once the event being read holds more than ``max_event_bytes``
    (so memory stays within that plus one chunk).
    """

    __slots__ = ("_buf", "_data", "_size", "_event", "_cr", "max_event_bytes")

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self.max_event_bytes = max_event_bytes
        self._buf = b""
        self._data: list[bytes] = []
        self._size = 0  # bytes in _data
        self._event = b""
        self._cr = False

    def feed(self, chunk: bytes) -> list[tuple[bytes, bytes]]:
        if self._cr and chunk[:1] == b"\n":
            chunk = chunk[1:]
        buf = self._buf + chunk if self._buf else chunk
        lines = buf.splitlines(keepends=True)
        if lines and lines[-1][-1:] not in (b"\n", b"\r"):
            self._buf = lines.pop()
        else:
            self._buf = b""
        self._cr = bool(lines) and lines[-1][-1:] == b"\r" and not self._buf
        out: list[tuple[bytes, bytes]] = []
        for line in lines:
            self._line(line.rstrip(b"\r\n"), out)
        if self._size + len(self._buf) > self.max_event_bytes:
            raise EventTooLarge(f"an event is over {self.max_event_bytes} bytes")
        return out

    def flush(self) -> list[tuple[bytes, bytes]]:
        """At end of stream: a last event not followed by a blank line still counts."""
        out: list[tuple[bytes, bytes]] = []
        if self._buf:
            self._line(self._buf, out)
            self._buf = b""
        self._line(b"", out)
        return out

    def _line(self, line: bytes, out: list[tuple[bytes, bytes]]) -> None:
        if not line:
            if self._data:
                out.append((self._event or b"message", b"\n".join(self._data)))
            self._data = []
            self._size = 0
            self._event = b""
        elif line[:1] == b":":
            return
        else:
            name, _, value = line.partition(b":")
            if value[:1] == b" ":
                value = value[1:]
            if name == b"data":
                self._data.append(value)
                self._size += len(value) + 1
            elif name == b"event":
                self._event = value


class UpstreamStream:
    """The chunks of a streamed answer as they arrive.

    ``async for chunk in stream`` yields each ``data:`` JSON object (usage chunks too)
    and ends at ``[DONE]`` (``completed`` is then true) or when the upstream closes.
    Raises :class:`router.upstream.UpstreamFailure`: ``timeout`` when the first event
    has not come ``first_byte`` after the request (headers often come at once, the first
    token much later), a later chunk not within ``idle``, or the total deadline passes;
    ``disconnect`` when the connection breaks; ``protocol`` for an error event or a
    chunk that is not JSON; ``too_large`` for an event over the provider's limit.
    Always ``aclose()`` it (or use ``async with``): that frees the upstream connection.
    """

    def __init__(
        self,
        resp: httpx.Response,
        raw: AsyncIterator[bytes],
        p: StreamProvider,
        deadline: Deadline,
        first_by: float,
        translator: Translator | None | bool = True,
    ) -> None:
        """``translator``: what turns each event into the items this stream yields (True:
        chat chunks, translated only for a provider of another protocol; None: the
        events as they came)."""
        self.attempts = 1
        self.completed = False
        if translator is True:
            translator = ChatChunks(p.api) if p.api != "openai-chat" else None
        self.chunks: Translator | None = translator or None
        self._resp = resp
        self._p = p
        self._deadline = deadline
        self._first_by: float | None = first_by  # until the first event arrives
        self._raw = raw
        self._decoder = SSEDecoder(p.max_sse_event_bytes)
        self._pending: deque[dict] = deque()
        self._ended = False
        self._closed = False
        self._failure: Exception | None = None

    def __aiter__(self) -> UpstreamStream:
        return self

    async def __anext__(self) -> dict:
        while not self._pending:
            if self._failure is not None:  # after the chunks that came before it
                failure, self._failure = self._failure, None
                await self._broke(failure)
            if self._ended:
                await self.aclose()
                raise StopAsyncIteration
            await self._read()
        return self._pending.popleft()

    async def _read(self) -> None:
        p = self._p
        deadline = self._deadline
        first = self._first_by
        when = first if first is not None else deadline.loop.time() + p.idle
        try:
            with deadline.phase(when):
                chunk = await anext(self._raw, None)
            if chunk is None:
                self._ended = True
                events = self._decoder.flush()
            else:
                events = self._decoder.feed(chunk)
        except TimeoutError:
            if deadline.passed:
                msg = f"total deadline of {p.total:g}s passed mid-stream"
            elif first is not None:
                msg = f"no first stream event within {p.first_byte:g}s"
            else:
                msg = f"no stream chunk within {p.idle:g}s"
            await self._broke(p.fail("timeout", msg))
        except EventTooLarge as exc:
            await self._broke(p.fail("too_large", str(exc)))
        except TRANSPORT_ERRORS as exc:
            await self._broke(p.translate(exc, answer_started=True), exc)
        if events:
            self._first_by = None
        for event, data in events:
            if data == b"[DONE]":
                self._ended = self.completed = True
                break
            obj = self._parse(event, data)
            if isinstance(obj, dict) and self.chunks is not None:
                obj = self._translated(obj)
            if not isinstance(obj, dict):  # yielded after the chunks before it
                self._failure = obj
                self._ended = True
                return
            if self.chunks is None:
                self._pending.append(obj)
        if self._ended and self.chunks is not None and self._failure is None:
            self._pending.extend(self.chunks.close())  # what the protocol owes at its end
            # A chat stream is whole only at [DONE]; another protocol's at its end.
            self.completed = self.completed or self._p.api != "openai-chat"

    def _translated(self, obj: dict) -> dict | Exception:
        """Queue the chat chunks of one event of another protocol; the failure it reports."""
        assert self.chunks is not None
        try:
            self._pending.extend(self.chunks.feed(obj))
        except STREAM_ERRORS as exc:
            detail = self._p.scrub(str(exc))
            return self._p.fail(
                "protocol", f"error event in stream: {detail}",
                summary=f"{self._p.name}: error event in stream ({type(exc).__name__})",
            )  # fmt: skip
        return obj

    async def _broke(self, failure: Exception, cause: BaseException | None = None) -> NoReturn:
        """End the stream with ``failure``, which the breaker hears about too."""
        await self.aclose()
        self._p.record(failure)
        raise failure from cause

    def _parse(self, event: bytes, data: bytes) -> dict | Exception:
        """The chunk, or the failure it reports (an error event, or not JSON)."""
        p = self._p
        try:
            obj = loads(data)
        except ValueError:
            obj = None
        if event == b"error" or (isinstance(obj, dict) and "error" in obj and "choices" not in obj):
            err = obj.get("error") if isinstance(obj, dict) else None
            detail = err.get("message") if isinstance(err, dict) else err
            detail = str(detail) if detail else data[:200].decode("utf-8", "replace")
            body = p.scrub_value(obj) if isinstance(obj, dict) else None
            return p.fail(
                "protocol", f"error event in stream: {p.scrub(detail)}", body=body,
                summary=f"{p.name}: error event in stream{describe_error(err)}",
            )  # fmt: skip
        if not isinstance(obj, dict):
            return p.fail("protocol", "a stream chunk is not a JSON object")
        return obj

    async def aclose(self) -> None:
        """Close the upstream response (idempotent; safe to call from ``finally``)."""
        if self._closed:
            return
        self._closed = True
        self._ended = True
        self._deadline.close()
        close = getattr(self._raw, "aclose", None)  # a generator's, or the stream's own
        try:
            if close is not None:
                await close()
        finally:
            await self._resp.aclose()

    async def __aenter__(self) -> UpstreamStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
