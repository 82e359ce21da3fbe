"""A real upstream on loopback speaking three providers' protocols, for wire-level tests.

``FakeUpstream`` runs uvicorn on 127.0.0.1 (a free port) in a background thread and
serves OpenAI chat at ``/v1/chat/completions`` (the built-in echo provider's answers,
router/offline/echo.py, checked and billed as OpenAI does: fake_chat.py), Anthropic
Messages at ``/v1/messages`` (fake_anthropic.py) and OpenAI Responses at
``/v1/responses`` (fake_responses.py), each validating requests the way that provider
does and answering in its error shape. Every answered request is a line on the fake's
invoice (:meth:`FakeUpstream.invoice`, billing rules in fake_billing.py).
Tests steer it per model with :meth:`FakeUpstream.behave` (error statuses, Retry-After,
connection resets, drops after reading the body, slow headers, slow chunks, slow bodies,
huge SSE events, huge answers), or per request with ``.choose`` (a function of the
request body returning a :class:`Behaviour` or None), and read what it received in
``.requests`` (each with the ``usage`` of the answer it sent in full, i.e. what a provider
bills) and :meth:`FakeUpstream.bodies_for` (a SHA-256 of every body received, per model).

    with FakeUpstream() as up:
        up.behave("m1", status=503, fail_times=2)
        ... # point a provider's base_url at up.base_url
        assert len(up.requests) == 3
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from fake_anthropic import ANTHROPIC
from fake_billing import Line
from fake_chat import chat_line, chat_usage, validate_chat
from fake_responses import RESPONSES
from fake_wire import (
    HOLD_LIMIT_S,  # noqa: F401 - part of this module's API, as before
    ProviderState,
    apply_behaviour,
    close_connection,
    serve_protocol,
    watch,
)
from loopback import LoopbackServer

from router.config import Catalog, load_providers
from router.jsonio import dumps
from router.offline.echo import (
    DONE,
    SSE_HEADERS,
    completion_for,
    error_body,
    models_for,
    parse_chat_body,
    read_body,
    send_json,
    sse,
    stream_chunks_for,
)

ANY_MODEL = "*"
KEEP_USAGE = object()  # Behaviour.usage: the answer's own usage
NO_USAGE = object()  # Behaviour.usage: no ``usage`` key at all
KEY = "sk-test-SECRET-0123456789"


def make_catalog(
    tmp_path: Path,
    base_url: str,
    *,
    key: str | None = KEY,
    max_retries: int = 2,
    headers: dict | None = None,
    provider: dict | None = None,
    **timeouts: float,
) -> Catalog:
    """A providers.yaml with provider ``fake`` at ``base_url`` serving ``m1`` (upstream
    name ``up-m1``); ``provider`` adds fields (limits, circuit, retry_statuses)."""
    prov: dict = {"base_url": base_url, "max_retries": max_retries, **(provider or {})}
    prov["timeouts"] = {"connect": 1, "first_byte": 2, "idle": 2, "total": 5, **timeouts}
    if key:
        prov["api_key_env"] = "FAKE_KEY"
    if headers:
        prov["headers"] = headers
    model = {"provider": "fake", "upstream_model": "up-m1"}
    doc = {
        "providers": {"fake": prov},
        "models": {"m1": {**model, "input_usd_per_mtok": 1, "output_usd_per_mtok": 2}},
    }
    path = tmp_path / "providers.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_providers(path, env={"FAKE_KEY": key} if key else {})


@dataclass
class Behaviour:
    status: int | None = None
    retry_after: float | str | None = None
    reset: bool = False
    delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    fail_times: int | None = None  # None: every request; N: the next N, then normal
    error_body: dict | None = None
    drop_after_read: bool = False
    huge_line: int = 0
    huge_body: int = 0
    body_delay_s: float = 0.0
    hold: threading.Event | None = None
    error_raw: bytes | None = None  # the error answer's body, byte for byte
    stream_error_raw: bytes | None = None  # an SSE data event after the first chunk
    cut_after_events: int | None = None  # a stream's connection closes after N events
    usage: Any = KEEP_USAGE  # chat: the usage object sent instead of the answer's own


@dataclass
class Recorded:
    """One request as the fake saw it."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    client_port: int = 0  # tells connections apart (keep-alive reuse)
    t: float = field(default_factory=time.monotonic)
    disconnected: bool = False  # the client went away before the response was complete
    chunks_sent: int = 0
    bytes_sent: int = 0  # of the body, for huge answers
    usage: dict | None = None  # the usage of an answer sent in full, in its protocol's shape
    protocol: str = "openai-chat"
    line: Line | None = None  # its line on the invoice (None: nothing billed)


class FakeUpstream(LoopbackServer):
    """uvicorn + echo answers + steerable failures; see the module docstring."""

    backlog = 1024
    thread_name = "fake-upstream"
    uvicorn_options = {"proxy_headers": False, "timeout_keep_alive": 30}

    def __init__(self, *, host: str = "127.0.0.1") -> None:
        super().__init__()
        self.host = host
        self.requests: list[Recorded] = []
        self._bodies: dict[str, list[str]] = {}
        self._behaviours: dict[str, Behaviour] = {}
        # Per-request steering (benchmarks): consulted before the per-model behaviours.
        self.choose: Callable[[dict], Behaviour | None] | None = None
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self.state = ProviderState()  # prompt caches, signing key, stored Responses
        # Keys accepted on /v1/messages (x-api-key) and /v1/responses (Bearer); None: any.
        self.api_keys: set[str] | None = None

    # ------------------------------------------------------------ control

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def behave(
        self,
        model: str = ANY_MODEL,
        *,
        status: int | None = None,
        retry_after: float | str | None = None,
        reset: bool = False,
        delay_s: float = 0.0,
        chunk_delay_s: float = 0.0,
        fail_times: int | None = None,
        error_body: dict | None = None,
        drop_after_read: bool = False,
        drop_once: bool = False,
        huge_line: int = 0,
        huge_body: int = 0,
        body_delay_s: float = 0.0,
        hold: threading.Event | None = None,
        error_raw: bytes | None = None,
        stream_error_raw: bytes | None = None,
        cut_after_events: int | None = None,
        usage: Any = KEEP_USAGE,
    ) -> None:
        """Set how requests for ``model`` (as the upstream sees it; ``"*"``: any) go.

        ``status``: answer with that status and an OpenAI error body (``error_body`` if
        given), plus ``Retry-After`` when ``retry_after`` is set. ``reset``: drop the TCP
        connection (RST) before any response. ``drop_after_read``: read the whole body,
        then close the connection (FIN) without answering; ``drop_once``: the same, for
        the next request only. ``delay_s``: wait before the headers; ``chunk_delay_s``:
        wait before each stream chunk; ``body_delay_s``: send a non-streamed answer in
        two halves this far apart. ``huge_line=N``: a stream whose first event is N
        bytes; ``huge_body=N``: a non-streamed answer of N bytes (chunked, no length).
        ``hold``: once the body is in (``requests`` shows it), wait until the test sets
        this event (at most ``HOLD_LIMIT_S``), then go on as the rest says.
        ``error_raw``: the error answer's body exactly as given (escapes a JSON encoder
        would not write); ``stream_error_raw``: a stream that sends its first chunk, then
        ``data: <these bytes>`` (an error event), then ends.
        ``cut_after_events=N``: a stream's connection closes (FIN) after N events
        (chunks on chat). On /v1/messages and /v1/responses, ``status`` answers in
        that protocol's error shape (Anthropic 529: ``overloaded_error``) and
        ``stream_error_raw`` is sent as ``event: error``; ``huge_*`` and
        ``body_delay_s`` apply to chat only.
        ``usage`` (chat only): the answer's (or the stream's usage chunk's) usage is this
        value exactly, whatever it is (``NO_USAGE``: the key is left out); such a request
        has no line on the invoice.
        ``fail_times=N`` applies all of this to the next N requests only, then the model
        answers normally.
        """
        if drop_once:
            drop_after_read, fail_times = True, 1
        with self._lock:
            self._behaviours[model] = Behaviour(
                status, retry_after, reset, delay_s, chunk_delay_s, fail_times, error_body,
                drop_after_read, huge_line, huge_body, body_delay_s, hold, error_raw,
                stream_error_raw, cut_after_events, usage,
            )  # fmt: skip

    def clear(self) -> None:
        """Forget recorded requests, bodies, every behaviour, caches and stored state."""
        with self._lock:
            self.requests.clear()
            self._bodies.clear()
            self._behaviours.clear()
            self.state.clear()

    def lines(self) -> list[Line]:
        """The invoice lines so far, one per request answered (a cut stream included)."""
        with self._lock:
            return [r.line for r in self.requests if r.line is not None]

    def invoice(self, prices: dict[str, dict[str, float]]) -> float:
        """What the provider bills for every request so far, in USD, at ``prices``:
        ``{model: {"input", "output", "cached_input"?, "cache_write"?,
        "cache_write_1h"?}}`` per 1M tokens (see fake_billing.py for the rules)."""
        return sum(line.cost(prices) for line in self.lines())

    def bodies_for(self, model: str) -> list[str]:
        """SHA-256 of every request body received for ``model`` (dropped ones too)."""
        with self._lock:
            return list(self._bodies.get(model, []))

    def wait_for_requests(self, n: int, timeout: float = 10.0) -> None:
        """Block until ``n`` requests have arrived (from a test loop: ``to_thread``)."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.requests) >= n, timeout):
                raise TimeoutError(f"{len(self.requests)} requests arrived, not {n}")

    def _take(self, model: str, body: dict) -> Behaviour | None:
        if self.choose is not None and (chosen := self.choose(body)) is not None:
            return chosen
        with self._lock:
            key = model if model in self._behaviours else ANY_MODEL
            b = self._behaviours.get(key)
            if b is None:
                return None
            if b.fail_times is not None:
                if b.fail_times <= 0:
                    del self._behaviours[key]
                    return None
                b.fail_times -= 1
            return b

    # ------------------------------------------------------------ lifecycle

    # ------------------------------------------------------------ the app

    async def _app(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        raw = await read_body(receive)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        path, method = scope["path"], scope["method"]
        port = (scope.get("client") or ("", 0))[1]
        if method == "GET" and path in ("/v1/models", "/models"):
            self.requests.append(Recorded(method, path, headers, None, port))
            await send_json(send, 200, models_for())
            return
        proto = OTHER_PROTOCOLS.get(path) if method == "POST" else None
        body = parse_chat_body(raw) if proto is None else _json_object(raw)
        rec = Recorded(method, path, headers, body if isinstance(body, dict) else raw, port)
        model = str(body.get("model")) if isinstance(body, dict) else "?"
        with self._arrived:
            self.requests.append(rec)
            self._bodies.setdefault(model, []).append(hashlib.sha256(raw).hexdigest())
            self._arrived.notify_all()
        if proto is not None:
            await serve_protocol(self, proto, raw, headers, rec, receive, send)
            return
        if path not in ("/v1/chat/completions", "/chat/completions") or method != "POST":
            await send_json(send, 404, error_body(f"no route {method} {path}", code="not_found"))
            return
        if isinstance(body, str):
            await send_json(send, 400, error_body(body, param="messages"))
            return
        if (invalid := validate_chat(body)) is not None:
            await send_json(send, 400, invalid)
            return
        b = self._take(str(body.get("model")), body)
        if await apply_behaviour(b, rec, receive, send, _chat_error):
            return
        if b is not None and (b.huge_body or b.huge_line):
            await self._huge(body, b, rec, receive, send)
            return
        if body.get("stream") is not True:
            answer = completion_for(body)
            answer["usage"] = chat_usage(body, answer["usage"], self.state.cache)
            odd = b is not None and b.usage is not KEEP_USAGE
            if odd:
                answer.pop("usage")
                if b.usage is not NO_USAGE:
                    answer["usage"] = b.usage
            if b is not None and b.body_delay_s:
                await self._slow_body(answer, b.body_delay_s, send)
            else:
                await send_json(send, 200, answer)
            if not odd:
                rec.usage = answer["usage"]
                rec.line = chat_line(answer["model"], answer["usage"])
            return
        await self._stream(body, b, rec, receive, send)

    async def _slow_body(self, answer: dict, delay: float, send: Any) -> None:
        data = dumps(answer)
        head = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": head})
        half = len(data) // 2
        await send({"type": "http.response.body", "body": data[:half], "more_body": True})
        await asyncio.sleep(delay)
        await send({"type": "http.response.body", "body": data[half:], "more_body": False})

    async def _huge(self, body: dict, b: Behaviour, rec: Recorded, receive: Any, send: Any) -> None:
        """A stream whose first event is ``huge_line`` bytes, or a non-streamed answer of
        ``huge_body`` bytes, sent in 64 KiB pieces until done or the client leaves."""
        stream = bool(b.huge_line)
        n = b.huge_line or b.huge_body
        gone = asyncio.Event()
        watcher = asyncio.create_task(watch(receive, gone))
        if stream:
            head, tail = b'data: {"choices":[{"index":0,"delta":{"content":"', b'"}}]}\n\n'
            headers = SSE_HEADERS
        else:
            head, tail = b'{"object":"chat.completion","choices":[{"message":{"content":"', b'"}}]}'
            headers = [(b"content-type", b"application/json")]
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": head, "more_body": True})
            left = max(0, n - len(head) - len(tail))
            piece = b"x" * 65536
            while left > 0 and not gone.is_set():
                part = piece[: min(left, len(piece))]
                await send({"type": "http.response.body", "body": part, "more_body": True})
                rec.bytes_sent += len(part)
                left -= len(part)
                await asyncio.sleep(0)  # let the disconnect watcher run
            if gone.is_set():
                rec.disconnected = True
                return
            end = tail + (DONE if stream else b"")
            await send({"type": "http.response.body", "body": end, "more_body": False})
        finally:
            watcher.cancel()

    async def _stream(
        self, body: dict, b: Behaviour | None, rec: Recorded, receive: Any, send: Any
    ) -> None:
        delay, error_raw = (b.chunk_delay_s, b.stream_error_raw) if b else (0.0, None)
        cut = b.cut_after_events if b else None
        gone = asyncio.Event()
        watcher = asyncio.create_task(watch(receive, gone))
        chunks = stream_chunks_for(body)
        usage = chunks[-1].get("usage") or completion_for(body)["usage"]
        usage = chat_usage(body, usage, self.state.cache)
        model = str(body.get("model"))
        rec.line = Line("openai-chat", model, cut=True)  # until the usage chunk is sent
        odd = b is not None and b.usage is not KEEP_USAGE
        try:
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            for chunk in chunks:
                if cut is not None and rec.chunks_sent >= cut:
                    await close_connection(receive, rst=False)
                    rec.disconnected = True
                    return
                if chunk.get("usage"):
                    chunk["usage"] = usage
                    if odd:
                        chunk.pop("usage")
                        if b.usage is not NO_USAGE:
                            chunk["usage"] = b.usage
                if delay:
                    await asyncio.sleep(delay)
                if gone.is_set():
                    rec.disconnected = True
                    return
                await send({"type": "http.response.body", "body": sse(chunk), "more_body": True})
                rec.chunks_sent += 1
                if error_raw is not None:
                    event = b"data: " + error_raw + b"\n\n"
                    await send({"type": "http.response.body", "body": event, "more_body": False})
                    return
                if chunk.get("usage") and not odd:
                    rec.usage, rec.line = usage, chat_line(model, usage, cut=True)
            if delay:
                await asyncio.sleep(delay)
            if gone.is_set():
                rec.disconnected = True
                return
            await send({"type": "http.response.body", "body": DONE, "more_body": False})
            rec.line = None if odd else chat_line(model, usage)
        finally:
            watcher.cancel()


def _json_object(raw: bytes) -> dict | str:
    try:
        body = json.loads(raw)
    except ValueError:
        return "request body is not valid JSON"
    return body if isinstance(body, dict) else "request body must be a JSON object"


def _chat_error(status: int, message: str) -> dict:
    return error_body(message, type="server_error", code=str(status))


OTHER_PROTOCOLS = {"/v1/messages": ANTHROPIC, "/messages": ANTHROPIC, "/v1/responses": RESPONSES,
                   "/responses": RESPONSES}  # fmt: skip
