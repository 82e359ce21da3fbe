"""UpstreamClient's fault paths over real loopback sockets: a body is never sent twice
once it may have arrived, answers are read within bounded memory, the circuit breaker,
proxies from the environment, TLS, header safety, and the pool's own edges."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import sys
import tracemalloc
from pathlib import Path

import httpx
import pytest
from httpx_aiohttp import AiohttpTransport

from router.errors import ConfigError
from router.offline.echo import StreamingASGITransport
from router.upstream import TRANSPORT_ENV, UpstreamClient, UpstreamFailure

sys.path.insert(0, str(Path(__file__).parent))
from fake_upstream import KEY, FakeUpstream, make_catalog  # noqa: E402


@pytest.fixture
def up(fake: FakeUpstream) -> FakeUpstream:
    """The session's fake upstream, cleared for each test (conftest's ``fake``)."""
    return fake


@pytest.fixture(params=["aiohttp", "httpx"])
def transport_kind(request, monkeypatch) -> str:
    monkeypatch.setenv(TRANSPORT_ENV, request.param)
    return request.param


def body(i: int = 0) -> dict:
    return {"model": "m1", "messages": [{"role": "user", "content": f"question {i}"}]}


async def call(c: UpstreamClient, cat, stream: bool, i: int = 0) -> int:
    """One call to m1, read to the end; returns its attempts."""
    m = cat.models["m1"]
    if not stream:
        return (await c.complete(m, body(i)))[1]
    s = await c.open_stream(m, body(i))
    async with s:
        async for _ in s:
            pass
    return s.attempts


# ---------------------------------------------------------------- at most once


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_drop_after_read_sends_the_body_once(tmp_path, up, transport_kind, stream):
    cat = make_catalog(tmp_path, up.base_url, max_retries=3)
    up.behave("up-m1", drop_after_read=True)
    async with UpstreamClient(cat) as c:
        with pytest.raises(UpstreamFailure) as info:
            await call(c, cat, stream)
    exc = info.value
    assert exc.kind == "disconnect" and exc.may_have_arrived and not exc.retryable
    assert exc.attempts == 1 and len(up.bodies_for("up-m1")) == 1


async def test_drop_on_a_pooled_connection_is_not_resent(tmp_path, up, transport_kind):
    """Neither we nor the pool below (aiohttp resends idempotent methods on a stale
    kept-alive connection) send the body again."""
    cat = make_catalog(tmp_path, up.base_url, max_retries=3)
    async with UpstreamClient(cat) as c:
        assert await call(c, cat, False, 0) == 1  # leaves a connection in the pool
        up.behave("up-m1", drop_once=True)
        with pytest.raises(UpstreamFailure) as info:
            await call(c, cat, False, 1)
        assert info.value.kind == "disconnect" and info.value.attempts == 1
        assert await call(c, cat, False, 2) == 1
    bodies = up.bodies_for("up-m1")
    assert len(bodies) == len(set(bodies)) == 3  # each body exactly once
    assert up.requests[0].client_port == up.requests[1].client_port  # the pooled one


async def test_500_is_retried_only_when_listed(tmp_path, up):
    cat = make_catalog(tmp_path, up.base_url, max_retries=2)
    up.behave("up-m1", status=500, fail_times=2)
    async with UpstreamClient(cat) as c:
        with pytest.raises(UpstreamFailure) as info:
            await call(c, cat, False)
    assert info.value.status == 500 and not info.value.retryable and info.value.attempts == 1
    assert len(up.requests) == 1
    cat = make_catalog(tmp_path, up.base_url, max_retries=2, provider={"retry_statuses": [500]})
    async with UpstreamClient(cat) as c:
        assert await call(c, cat, False) == 2  # the second 500, then an answer
    assert len(up.requests) == 3


async def test_aclose_fails_requests_in_flight(tmp_path, up):
    cat = make_catalog(tmp_path, up.base_url, max_retries=3)
    up.behave("up-m1", delay_s=1.0)
    c = UpstreamClient(cat)
    task = asyncio.create_task(call(c, cat, False))
    await asyncio.to_thread(up.wait_for_requests, 1)
    await c.aclose()
    with pytest.raises(UpstreamFailure) as info:
        await task
    assert info.value.kind == "disconnect" and info.value.attempts == 1


async def test_slow_body_arrives_and_a_stalled_one_is_not_retried(tmp_path, up):
    cat = make_catalog(tmp_path, up.base_url, idle=1)
    up.behave("up-m1", body_delay_s=0.2)
    async with UpstreamClient(cat) as c:
        out, _ = await c.complete(cat.models["m1"], body())
        assert out["choices"][0]["message"]["content"] == "[up-m1] echo: question 0"
    cat = make_catalog(tmp_path, up.base_url, idle=0.1)
    async with UpstreamClient(cat) as c:
        with pytest.raises(UpstreamFailure) as info:
            await c.complete(cat.models["m1"], body())
    assert info.value.kind == "timeout" and "stalled" in str(info.value)
    assert info.value.attempts == 1 and len(up.bodies_for("up-m1")) == 2


# ---------------------------------------------------------------- bounded memory


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_huge_answer_is_too_large_within_bounded_memory(tmp_path, up, stream):
    n, cap = 32 << 20, 1 << 20
    limits = {"max_response_bytes": cap, "max_sse_event_bytes": cap}
    cat = make_catalog(tmp_path, up.base_url, provider={"limits": limits})
    up.behave("up-m1", **({"huge_line": n} if stream else {"huge_body": n}))
    tracemalloc.start()
    try:
        async with UpstreamClient(cat) as c:
            with pytest.raises(UpstreamFailure) as info:
                await call(c, cat, stream)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.value.kind == "too_large" and info.value.attempts == 1
    assert peak < 8 * cap  # the fake's thread is traced too
    rec = up.requests[0]
    for _ in range(500):  # the fake notices the client left
        if rec.disconnected:
            break
        await asyncio.sleep(0.01)
    assert rec.disconnected and rec.bytes_sent < n // 2


async def test_declared_length_over_the_cap_is_refused_unread(tmp_path):
    async def app(scope, receive, send):
        await receive()
        head = [(b"content-type", b"application/json"), (b"content-length", b"50000000")]
        await send({"type": "http.response.start", "status": 200, "headers": head})
        await send({"type": "http.response.body", "body": b"{}", "more_body": False})

    limits = {"max_response_bytes": 1 << 20}
    cat = make_catalog(tmp_path, "http://x/v1", provider={"limits": limits})
    async with UpstreamClient(cat, transports={"fake": StreamingASGITransport(app)}) as c:
        with pytest.raises(UpstreamFailure) as info:
            await c.complete(cat.models["m1"], body())
    assert info.value.kind == "too_large" and "50000000" in str(info.value)


# ---------------------------------------------------------------- circuit breaker


async def test_circuit_opens_fails_fast_probes_and_closes(tmp_path, up):
    now = [0.0]
    circuit = {"failures": 2, "cooldown_s": 30}
    cat = make_catalog(tmp_path, up.base_url, max_retries=0, provider={"circuit": circuit})
    async with UpstreamClient(cat, clock=lambda: now[0]) as c:
        up.behave("up-m1", status=400)  # client faults do not count
        for _ in range(3):
            with pytest.raises(UpstreamFailure):
                await call(c, cat, False)
        assert c.circuit_states() == {"fake": "closed"}
        up.behave("up-m1", status=500)
        for _ in range(2):
            with pytest.raises(UpstreamFailure):
                await call(c, cat, False)
        assert c.circuit_states() == {"fake": "open"}
        with pytest.raises(UpstreamFailure) as info:
            await call(c, cat, True)
        exc = info.value
        assert exc.kind == "circuit_open" and exc.attempts == 0 and not exc.may_have_arrived
        assert len(up.requests) == 5  # nothing sent
        now[0] = 31.0
        assert c.circuit_states() == {"fake": "half_open"}
        with pytest.raises(UpstreamFailure) as info:  # the probe fails: open again
            await call(c, cat, False)
        assert info.value.status == 500 and c.circuit_states() == {"fake": "open"}
        now[0] = 62.0
        up.behave("up-m1", delay_s=0.3)  # a slow probe that succeeds
        probe = asyncio.create_task(call(c, cat, False))
        await asyncio.to_thread(up.wait_for_requests, 7)
        with pytest.raises(UpstreamFailure) as info:  # one probe at a time
            await call(c, cat, False)
        assert info.value.kind == "circuit_open"
        assert await probe == 1
        assert c.circuit_states() == {"fake": "closed"}
        up.clear()
        assert await call(c, cat, True) == 1


# ---------------------------------------------------------------- proxies and TLS


class ForwardProxy:
    """A loopback HTTP proxy: CONNECT tunnels and absolute-form requests, piped through;
    ``lines`` records each connection's request line."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._tasks: set[asyncio.Task] = set()

    async def __aenter__(self) -> ForwardProxy:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            line = head.split(b"\r\n", 1)[0].decode()
            self.lines.append(line)
            method, target, _ = line.split(" ")
            if method == "CONNECT":
                host, port = target.rsplit(":", 1)
            else:
                url = httpx.URL(target)
                host, port = url.host, url.port
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            if method == "CONNECT":
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                up_writer.write(head)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


async def test_http_proxy_and_no_proxy_from_the_environment(tmp_path, up, monkeypatch):
    async with ForwardProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        cat = make_catalog(tmp_path, up.base_url)
        async with UpstreamClient(cat) as c:
            assert await call(c, cat, False) == 1
            assert await call(c, cat, True) == 1
        assert proxy.lines == [f"POST {up.base_url}/chat/completions HTTP/1.1"]
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        async with UpstreamClient(make_catalog(tmp_path, up.base_url)) as c:
            assert await call(c, cat, False) == 1
    assert len(proxy.lines) == 1 and len(up.requests) == 3


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl binary to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert),
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def _tls_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        data = b'{"choices": [], "usage": {"total_tokens": 1}}'
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n")
        writer.write(b"content-length: %d\r\n\r\n%s" % (len(data), data))
        await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
        pass
    finally:
        writer.close()


async def test_https_through_a_connect_proxy_with_verified_tls(tmp_path, monkeypatch, tls_files):
    cert, key = tls_files
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    server = await asyncio.start_server(_tls_answer, "127.0.0.1", 0, ssl=server_ctx)
    base_url = f"https://localhost:{server.sockets[0].getsockname()[1]}/v1"
    try:
        async with ForwardProxy() as proxy:
            monkeypatch.setenv("HTTPS_PROXY", proxy.url)
            cat = make_catalog(tmp_path, base_url)
            async with UpstreamClient(cat) as c:  # certifi does not know our certificate
                with pytest.raises(UpstreamFailure) as info:
                    await call(c, cat, False)
            exc = info.value
            assert exc.kind == "connect" and not exc.retryable and not exc.may_have_arrived
            monkeypatch.setenv("SSL_CERT_FILE", str(cert))
            async with UpstreamClient(cat) as c:
                out, attempts = await c.complete(cat.models["m1"], body())
            assert out["usage"] == {"total_tokens": 1} and attempts == 1
            assert proxy.lines[-1] == f"CONNECT {base_url[8:-3]} HTTP/1.1"
    finally:
        server.close()


# ---------------------------------------------------------------- headers and the pool


@pytest.mark.parametrize(
    "headers,key",
    [({"X-Org": "acme\r\nX-Evil: 1"}, KEY), ({"X-Org": "a\x00b"}, KEY), (None, KEY + "\n")],
)
def test_header_value_with_a_control_character_is_refused(tmp_path, headers, key):
    cat = make_catalog(tmp_path, "http://127.0.0.1:9/v1", key=key, headers=headers)
    with pytest.raises(ConfigError, match="control character") as info:
        UpstreamClient(cat)
    assert KEY not in str(info.value)


async def test_response_head_over_the_limit_is_a_protocol_failure(tmp_path):
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * 20000 + b"\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    try:
        cat = make_catalog(tmp_path, url)
        async with UpstreamClient(cat) as c:
            with pytest.raises(UpstreamFailure) as info:
                await call(c, cat, False)
    finally:
        server.close()
    assert info.value.kind == "protocol" and info.value.attempts == 1


def test_transport_is_aiohttp_unless_told_otherwise(monkeypatch, tmp_path):
    cat = make_catalog(tmp_path, "http://127.0.0.1:9/v1")
    kinds = {}
    for value in (None, "httpx", "aiohttp"):
        if value is None:
            monkeypatch.delenv(TRANSPORT_ENV, raising=False)
        else:
            monkeypatch.setenv(TRANSPORT_ENV, value)
        kinds[value] = type(UpstreamClient(cat)._providers["fake"].transport)
    assert kinds == {
        None: AiohttpTransport,
        "httpx": httpx.AsyncHTTPTransport,
        "aiohttp": AiohttpTransport,
    }
    monkeypatch.setenv(TRANSPORT_ENV, "h2")
    with pytest.raises(ValueError, match=TRANSPORT_ENV):
        UpstreamClient(cat)
