"""UpstreamClient against a real uvicorn server on loopback (tests/fake_upstream.py)."""

from __future__ import annotations

import asyncio
import email.utils
import socket
import sys
import time
from pathlib import Path

import httpx
import pytest

from router.config import Catalog
from router.offline.echo import StreamingASGITransport, create_echo_app
from router.upstream import Deadline, SSEDecoder, UpstreamClient, UpstreamFailure, retry_after

sys.path.insert(0, str(Path(__file__).parent))
from fake_upstream import KEY, FakeUpstream, make_catalog  # noqa: E402

MSGS = [{"role": "user", "content": "say something nice"}]


@pytest.fixture
def up(fake: FakeUpstream) -> FakeUpstream:
    """The session's fake upstream, cleared for each test (conftest's ``fake``)."""
    return fake


@pytest.fixture
async def client_for(tmp_path, up):
    clients: list[UpstreamClient] = []

    def make(base_url: str | None = None, **kw) -> tuple[UpstreamClient, Catalog]:
        cat = make_catalog(tmp_path, base_url or up.base_url, **kw)
        c = UpstreamClient(cat)
        clients.append(c)
        return c, cat

    yield make
    for c in clients:
        await c.aclose()


@pytest.fixture
async def client(client_for):
    c, cat = client_for()
    return c, cat.models["m1"]


# ---------------------------------------------------------------- non-streamed


async def test_complete_renames_model_sends_auth_and_forwards_fields(tmp_path, up):
    cat = make_catalog(tmp_path, up.base_url, headers={"X-Org": "acme"})
    body = {
        "model": "m1",
        "messages": MSGS,
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "response_format": {"type": "json_object"},
        "temperature": 0.3,
        "n": 2,
        "seed": 7,
    }
    async with UpstreamClient(cat) as c:
        out, attempts = await c.complete(cat.models["m1"], body)
    assert attempts == 1
    assert out["model"] == "up-m1" and len(out["choices"]) == 2
    assert out["usage"]["completion_tokens"] > 0
    [rec] = up.requests
    assert rec.path == "/v1/chat/completions"
    assert rec.headers["authorization"] == f"Bearer {KEY}"
    assert rec.headers["x-org"] == "acme"
    assert rec.json == {**body, "model": "up-m1"}
    assert body["model"] == "m1"  # the caller's dict is not changed


async def test_no_key_means_no_auth_header(tmp_path, up):
    cat = make_catalog(tmp_path, up.base_url, key=None)
    async with UpstreamClient(cat) as c:
        await c.complete(cat.models["m1"], {"model": "m1", "messages": MSGS})
    assert "authorization" not in up.requests[0].headers


async def test_keep_alive_reuses_one_connection(client, up):
    c, m = client
    for _ in range(10):
        await c.complete(m, {"model": "m1", "messages": MSGS})
    assert len({r.client_port for r in up.requests}) == 1


async def test_concurrent_requests_all_answered(client, up):
    c, m = client
    outs = await asyncio.gather(
        *(
            c.complete(m, {"model": "m1", "messages": [{"role": "user", "content": f"q{i}"}]})
            for i in range(40)
        )
    )
    assert [o["choices"][0]["message"]["content"] for o, _ in outs] == [
        f"[up-m1] echo: q{i}" for i in range(40)
    ]


# ---------------------------------------------------------------- retries


async def test_503_retried_then_success(client, up):
    c, m = client
    up.behave("up-m1", status=503, fail_times=2)
    out, attempts = await c.complete(m, {"model": "m1", "messages": MSGS})
    assert attempts == 3 and len(up.requests) == 3
    assert out["choices"][0]["message"]["content"].startswith("[up-m1] echo:")


async def test_retry_after_is_honoured(client, up):
    c, m = client
    up.behave("up-m1", status=429, retry_after=0.4, fail_times=1)
    t0 = time.monotonic()
    _, attempts = await c.complete(m, {"model": "m1", "messages": MSGS})
    assert attempts == 2 and time.monotonic() - t0 >= 0.38
    gap = up.requests[1].t - up.requests[0].t
    assert gap >= 0.38


async def test_503_without_retry_after_backs_off(client, up):
    c, m = client
    up.behave("up-m1", status=503, fail_times=1)
    _, attempts = await c.complete(m, {"model": "m1", "messages": MSGS})
    assert attempts == 2 and up.requests[1].t - up.requests[0].t >= 0.04


async def test_retry_after_beyond_the_cap_gives_up_at_once(client, up):
    c, m = client
    up.behave("up-m1", status=503, retry_after=60)
    with pytest.raises(UpstreamFailure) as info:
        await c.complete(m, {"model": "m1", "messages": MSGS})
    assert info.value.retry_after == 60 and info.value.attempts == 1 and len(up.requests) == 1


def test_retry_after_parsing():
    assert retry_after(httpx.Headers({"retry-after": "3"})) == 3.0
    assert retry_after(httpx.Headers({"retry-after-ms": "250", "retry-after": "9"})) == 0.25
    when = email.utils.formatdate(time.time() + 5, usegmt=True)
    assert 3.5 < retry_after(httpx.Headers({"retry-after": when})) <= 5.0
    assert retry_after(httpx.Headers({"retry-after": "soon"})) is None
    assert retry_after(httpx.Headers({})) is None


async def test_429_exhausts_retries(client, up):
    c, m = client
    up.behave("up-m1", status=429, retry_after=0)
    with pytest.raises(UpstreamFailure) as info:
        await c.complete(m, {"model": "m1", "messages": MSGS})
    exc = info.value
    assert exc.kind == "status" and exc.status == 429 and exc.retryable
    assert exc.attempts == 3 and len(up.requests) == 3
    assert exc.status == 429


async def test_400_not_retried_and_body_carried(client, up):
    c, m = client
    err = {
        "error": {
            "message": "bad temperature",
            "type": "invalid_request_error",
            "param": "temperature",
            "code": None,
        }
    }
    up.behave("up-m1", status=400, error_body=err)
    with pytest.raises(UpstreamFailure) as info:
        await c.complete(m, {"model": "m1", "messages": MSGS})
    exc = info.value
    assert exc.status == 400 and not exc.retryable and exc.attempts == 1
    assert exc.body == err
    assert "bad temperature" in str(exc)
    assert len(up.requests) == 1


@pytest.mark.parametrize("status", [404, 422])
async def test_other_4xx_not_retried(client, up, status):
    c, m = client
    up.behave("up-m1", status=status)
    with pytest.raises(UpstreamFailure) as info:
        await c.complete(m, {"model": "m1", "messages": MSGS})
    assert info.value.status == status and len(up.requests) == 1


async def test_connection_reset_after_the_body_is_not_retried(client, up):
    c, m = client
    # The fake really resets: a plain httpx client sees a transport error.
    up.behave("up-m1", reset=True, fail_times=1)
    async with httpx.AsyncClient() as raw:
        with pytest.raises(httpx.TransportError):
            await raw.post(
                up.base_url + "/chat/completions", json={"model": "up-m1", "messages": MSGS}
            )
    up.behave("up-m1", reset=True)
    with pytest.raises(UpstreamFailure) as info:
        await c.complete(m, {"model": "m1", "messages": MSGS})
    exc = info.value
    assert exc.kind == "disconnect" and exc.may_have_arrived and not exc.retryable
    assert exc.attempts == 1 and len(up.bodies_for("up-m1")) == 2  # the raw one, ours once


async def test_connection_refused(client_for):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    c, cat = client_for(f"http://127.0.0.1:{port}/v1", max_retries=1)
    with pytest.raises(UpstreamFailure) as info:
        await c.complete(cat.models["m1"], {"model": "m1", "messages": MSGS})
    assert info.value.kind == "connect" and info.value.attempts == 2
    assert info.value.retryable and not info.value.may_have_arrived
    assert KEY not in str(info.value) and KEY not in repr(info.value)


# ---------------------------------------------------------------- timeouts


async def test_first_byte_timeout_is_not_retried(client_for, up):
    c, cat = client_for(max_retries=2, first_byte=0.15)
    up.behave("up-m1", delay_s=0.6, fail_times=1)
    with pytest.raises(UpstreamFailure) as info:
        await c.complete(cat.models["m1"], {"model": "m1", "messages": MSGS})
    exc = info.value
    assert exc.kind == "timeout" and not exc.retryable and exc.may_have_arrived
    assert exc.attempts == 1 and "no response headers within 0.15s" in str(exc)
    assert len(up.bodies_for("up-m1")) == 1


async def test_total_deadline(client_for, up):
    c, cat = client_for(max_retries=5, first_byte=2, total=0.3)
    up.behave("up-m1", delay_s=1.0)
    with pytest.raises(UpstreamFailure) as info:
        await c.complete(cat.models["m1"], {"model": "m1", "messages": MSGS})
    assert info.value.kind == "timeout" and "total deadline" in str(info.value)


async def test_no_retry_when_retry_after_passes_the_deadline(client_for, up):
    c, cat = client_for(max_retries=3, total=0.5)
    up.behave("up-m1", status=503, retry_after=2)
    with pytest.raises(UpstreamFailure) as info:
        await c.complete(cat.models["m1"], {"model": "m1", "messages": MSGS})
    assert info.value.status == 503 and info.value.attempts == 1


@pytest.mark.parametrize(
    ("status", "shown"),
    [(401, "refused the router's credentials"), (403, "refused the router's credentials"),
     (500, "Incorrect API key provided: ***")],
)  # fmt: skip
async def test_key_never_in_errors(client, up, status, shown):
    c, m = client
    up.behave(
        "up-m1",
        status=status,
        error_body={"error": {"message": f"Incorrect API key provided: {KEY}"}},
    )
    with pytest.raises(UpstreamFailure) as info:
        await c.complete(m, {"model": "m1", "messages": MSGS})
    exc = info.value
    assert exc.status == status
    for text in (str(exc), repr(exc), exc.message, repr(exc.body)):
        assert KEY not in text
    assert shown in str(exc)
    if status != 500:  # the provider's text about the router's key is not relayed at all
        assert exc.body is None and "Incorrect" not in str(exc)


# ---------------------------------------------------------------- streams


async def test_stream_arrives_incrementally_and_forces_usage(client, up):
    c, m = client
    up.behave("up-m1", chunk_delay_s=0.08)
    body = {
        "model": "m1",
        "messages": MSGS,
        "stream": True,
        "stream_options": {"include_usage": False, "continuous_usage_stats": True},
    }
    t0 = time.monotonic()
    stream = await c.open_stream(m, body)
    assert stream.attempts == 1
    arrivals, chunks = [], []
    async with stream:
        async for chunk in stream:
            arrivals.append(time.monotonic() - t0)
            chunks.append(chunk)
    assert stream.completed
    sent = up.requests[0].json
    assert sent["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}
    assert sent["model"] == "up-m1" and sent["stream"] is True
    text = "".join(ch["choices"][0]["delta"].get("content") or "" for ch in chunks if ch["choices"])
    assert text == "[up-m1] echo: say something nice"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 5
    # 6 chunks, 80 ms apart: each one as it came, not in one burst at the end
    assert len(arrivals) == 6
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    assert min(gaps) > 0.04


async def test_stream_retries_before_headers(client, up):
    c, m = client
    up.behave("up-m1", status=503, fail_times=1)
    stream = await c.open_stream(m, {"model": "m1", "messages": MSGS, "stream": True})
    async with stream:
        chunks = [ch async for ch in stream]
    assert stream.attempts == 2 and chunks[-1]["usage"]


async def test_stream_status_error_not_retried(client, up):
    c, m = client
    up.behave("up-m1", status=422)
    with pytest.raises(UpstreamFailure) as info:
        await c.open_stream(m, {"model": "m1", "messages": MSGS, "stream": True})
    assert info.value.status == 422 and info.value.body["error"]["code"] == "422"


async def test_stream_idle_timeout(client_for, up):
    c, cat = client_for(idle=0.15, first_byte=1)
    up.behave("up-m1", chunk_delay_s=0.4)
    stream = await c.open_stream(cat.models["m1"], {"model": "m1", "messages": MSGS})
    t0 = time.monotonic()
    got = 0
    with pytest.raises(UpstreamFailure) as info:
        async with stream:
            async for _ in stream:
                got += 1
    # the first chunk may take up to first_byte; the gap after it is over idle
    assert got == 1
    assert info.value.kind == "timeout" and "within 0.15s" in str(info.value)
    assert time.monotonic() - t0 > 0.5


async def test_stream_total_deadline(client_for, up):
    c, cat = client_for(idle=1, total=0.35)
    up.behave("up-m1", chunk_delay_s=0.1)
    stream = await c.open_stream(cat.models["m1"], {"model": "m1", "messages": MSGS})
    got = 0
    with pytest.raises(UpstreamFailure) as info:
        async with stream:
            async for _ in stream:
                got += 1
    assert info.value.kind == "timeout" and "total deadline" in str(info.value)
    assert 1 <= got < 6


async def test_aclose_mid_stream_closes_upstream_connection(client, up):
    c, m = client
    up.behave("up-m1", chunk_delay_s=0.05)
    stream = await c.open_stream(m, {"model": "m1", "messages": MSGS})
    first = await anext(aiter(stream))
    assert first["choices"][0]["delta"]["role"] == "assistant"
    await stream.aclose()
    await stream.aclose()  # idempotent
    for _ in range(40):
        if up.requests[0].disconnected:
            break
        await asyncio.sleep(0.025)
    assert up.requests[0].disconnected
    assert up.requests[0].chunks_sent < 6
    # the pool is still usable afterwards
    out, _ = await c.complete(m, {"model": "m1", "messages": MSGS})
    assert out["choices"]


async def test_cancelled_consumer_closes_stream(client, up):
    c, m = client
    up.behave("up-m1", chunk_delay_s=0.05)

    async def consume() -> None:
        stream = await c.open_stream(m, {"model": "m1", "messages": MSGS})
        try:
            async for _ in stream:
                pass
        finally:
            await stream.aclose()

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.12)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(40):
        if up.requests[0].disconnected:
            break
        await asyncio.sleep(0.025)
    assert up.requests[0].disconnected


# ---------------------------------------------------------------- in-process transports


def _app_catalog(tmp_path: Path) -> Catalog:
    return make_catalog(tmp_path, "http://inproc.local/v1", key=None, max_retries=0)


async def test_echo_app_through_a_transport(tmp_path):
    cat = _app_catalog(tmp_path)
    transport = StreamingASGITransport(create_echo_app())
    async with UpstreamClient(cat, transports={"fake": transport}) as c:
        out, _ = await c.complete(cat.models["m1"], {"model": "m1", "messages": MSGS})
        assert out["choices"][0]["message"]["content"] == "[up-m1] echo: say something nice"
        stream = await c.open_stream(cat.models["m1"], {"model": "m1", "messages": MSGS})
        async with stream:
            chunks = [ch async for ch in stream]
        assert chunks[-1]["usage"]["prompt_tokens"] == 3 and stream.completed


def _sse_app(payload: bytes, content_type: bytes = b"text/event-stream"):
    async def app(scope, receive, send):
        await receive()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", content_type)],
            }
        )
        await send({"type": "http.response.body", "body": payload, "more_body": False})

    return app


async def test_error_event_in_stream(tmp_path):
    cat = _app_catalog(tmp_path)
    payload = (
        b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
        b'event: error\ndata: {"error":{"message":"overloaded","type":"server_error"}}\n\n'
    )
    async with UpstreamClient(
        cat, transports={"fake": StreamingASGITransport(_sse_app(payload))}
    ) as c:
        stream = await c.open_stream(cat.models["m1"], {"model": "m1", "messages": MSGS})
        got = []
        with pytest.raises(UpstreamFailure) as info:
            async with stream:
                async for ch in stream:
                    got.append(ch)
    assert len(got) == 1
    assert info.value.kind == "protocol" and "overloaded" in str(info.value)
    assert info.value.body["error"]["type"] == "server_error"


async def test_json_instead_of_stream_is_a_protocol_failure(tmp_path):
    cat = _app_catalog(tmp_path)
    app = _sse_app(b'{"error": {"message": "no streaming here"}}', b"application/json")
    async with UpstreamClient(cat, transports={"fake": StreamingASGITransport(app)}) as c:
        with pytest.raises(UpstreamFailure) as info:
            await c.open_stream(cat.models["m1"], {"model": "m1", "messages": MSGS})
    assert (
        info.value.kind == "protocol" and info.value.body["error"]["message"] == "no streaming here"
    )


def _slow_first_app(first_delay: float):
    async def app(scope, receive, send):
        await receive()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        await send({"type": "http.response.body", "body": b": ping\n\n", "more_body": True})
        await asyncio.sleep(first_delay)
        await send(
            {"type": "http.response.body", "body": b'data: {"choices":[]}\n\n', "more_body": True}
        )
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})

    return app


async def test_first_stream_event_waits_first_byte_not_idle(tmp_path):
    cat = make_catalog(
        tmp_path, "http://inproc.local/v1", key=None, max_retries=0, first_byte=0.6, idle=0.1
    )
    app = _slow_first_app(0.3)
    async with UpstreamClient(cat, transports={"fake": StreamingASGITransport(app)}) as c:
        stream = await c.open_stream(cat.models["m1"], {"model": "m1", "messages": MSGS})
        assert [ch async for ch in stream] == [{"choices": []}] and stream.completed
        # a keep-alive comment does not count as the first event
        cat2 = make_catalog(
            tmp_path, "http://x/v1", key=None, max_retries=0, first_byte=0.15, idle=1
        )
    async with UpstreamClient(cat2, transports={"fake": StreamingASGITransport(app)}) as c:
        stream = await c.open_stream(cat2.models["m1"], {"model": "m1", "messages": MSGS})
        with pytest.raises(UpstreamFailure) as info:
            async for _ in stream:
                pass
    assert info.value.kind == "timeout" and "first stream event" in str(info.value)


async def test_stream_ending_without_done(tmp_path):
    cat = _app_catalog(tmp_path)
    app = _sse_app(b'data: {"choices":[]}\n\ndata: {"choices":[], "usage": {"total_tokens": 1}}')
    async with UpstreamClient(cat, transports={"fake": StreamingASGITransport(app)}) as c:
        stream = await c.open_stream(cat.models["m1"], {"model": "m1", "messages": MSGS})
        chunks = [ch async for ch in stream]
    assert len(chunks) == 2 and not stream.completed


# ---------------------------------------------------------------- SSE parsing


SSE_TEXT = (
    ": keep-alive comment\n"
    'data: {"a": 1}\n\n'
    "event: message\n"
    'data: {"b":\n'
    "data: 2}\n\n"
    "id: 7\nretry: 100\n"
    'data:{"c": 3}\n\n'
    'event: error\ndata: {"error": "x"}\n\n'
    "data: [DONE]\n\n"
)
EXPECTED = [
    (b"message", b'{"a": 1}'),
    (b"message", b'{"b":\n2}'),
    (b"message", b'{"c": 3}'),
    (b"error", b'{"error": "x"}'),
    (b"message", b"[DONE]"),
]


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_sse_decoder_every_split(newline):
    raw = SSE_TEXT.replace("\n", newline).encode()
    for cut in range(len(raw) + 1):
        d = SSEDecoder()
        events = d.feed(raw[:cut]) + d.feed(raw[cut:]) + d.flush()
        assert events == EXPECTED, (newline, cut)


def test_sse_decoder_byte_by_byte_crlf():
    raw = SSE_TEXT.replace("\n", "\r\n").encode()
    d = SSEDecoder()
    events = []
    for i in range(len(raw)):
        events += d.feed(raw[i : i + 1])
    assert events == EXPECTED


async def test_deadline_phases_share_one_timer_and_keep_foreign_cancellations():
    loop = asyncio.get_running_loop()
    d = Deadline(loop, loop.time() + 10)
    with d.phase(loop.time() + 0.05):  # in time; the timer stays armed for the next phase
        await asyncio.sleep(0.01)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError), d.phase(loop.time() + 0.1):  # due after the armed time
        await asyncio.sleep(1)
    assert time.monotonic() - t0 > 0.08  # fired early, re-armed, then expired
    with pytest.raises(asyncio.CancelledError), d.phase(loop.time() + 5):
        asyncio.current_task().cancel()  # someone else's cancellation stays one
        await asyncio.sleep(1)
    asyncio.current_task().uncancel()
    d.close()
