"""HTTP1Transport against real loopback servers: uvicorn (tests/fake_upstream.py) and
small raw asyncio servers that misbehave on purpose (chunked, read-until-close, resets,
idle closes, slow and large bodies, TLS with a certificate made by ``openssl``)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from router.upstream._http1 import HIGH_WATER, HTTP1Transport

sys.path.insert(0, str(Path(__file__).parent))
from fake_upstream import FakeUpstream  # noqa: E402

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
MSGS = [{"role": "user", "content": "hello there"}]


async def read_request(reader: asyncio.StreamReader) -> tuple[list[bytes], bytes] | None:
    """One request (head lines, body) or None at EOF; content-length or chunked bodies."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head[:-4].split(b"\r\n")
    fields = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(b":") for ln in lines[1:])}
    if b"content-length" in fields:
        return lines, await reader.readexactly(int(fields[b"content-length"]))
    body = b""
    if fields.get(b"transfer-encoding") == b"chunked":
        while size := int((await reader.readuntil(b"\r\n"))[:-2], 16):
            body += (await reader.readexactly(size + 2))[:-2]
        await reader.readexactly(2)
    return lines, body


def response(body: bytes = b"ok", *extra: bytes, status: bytes = b"200 OK") -> bytes:
    head = [b"HTTP/1.1 " + status, b"content-length: %d" % len(body), *extra]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class RawServer:
    """An asyncio server in the test's loop: ``handler(reader, writer)`` per connection."""

    def __init__(self, handler: Handler, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self.connections = 0
        self.requests: list[tuple[list[bytes], bytes]] = []
        self._tasks: set[asyncio.Task] = set()

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = self.server.sockets[0].getsockname()[1]
        scheme = "https" if self.ssl_context else "http"
        self.url = f"{scheme}://{'localhost' if self.ssl_context else '127.0.0.1'}:{self.port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # a cancelled handler ends quietly (asyncio logs cancelled handler tasks)
        finally:
            writer.close()

    def keep_alive(self, answer: Callable[[int], bytes] = lambda i: response()) -> Handler:
        """A handler answering every request on the connection with ``answer(n)``."""

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while (req := await read_request(reader)) is not None:
                self.requests.append(req)
                writer.write(answer(len(self.requests)))
                await writer.drain()

        return handler


def rst(writer: asyncio.StreamWriter) -> None:
    """Drop the connection with a TCP reset."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@pytest.fixture
async def make_client():
    clients: list[httpx.AsyncClient] = []
    errors: list[dict] = []  # exceptions in protocol callbacks land in the loop's handler
    asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: errors.append(ctx))

    def make(url: str, **kw) -> httpx.AsyncClient:
        c = httpx.AsyncClient(base_url=url, transport=HTTP1Transport(**kw))
        clients.append(c)
        return c

    yield make
    for c in clients:
        await c.aclose()
    await asyncio.sleep(0.01)
    assert asyncio.all_tasks() == {asyncio.current_task()}  # nothing left running
    assert errors == []


# ---------------------------------------------------------------- against uvicorn


async def test_uvicorn_json_keep_alive_and_streaming(make_client):
    with FakeUpstream() as up:
        c = make_client(up.base_url)
        body = {"model": "m", "messages": MSGS}
        for _ in range(5):
            r = await c.post("/chat/completions", json=body)
            assert r.status_code == 200 and r.json()["model"] == "m"
            assert r.reason_phrase == "OK" and r.http_version == "HTTP/1.1"
        assert len({rec.client_port for rec in up.requests}) == 1
        assert up.requests[0].headers["host"] == f"127.0.0.1:{up.port}"
        up.behave("m", chunk_delay_s=0.05)
        t0 = time.monotonic()
        arrivals = []
        async with c.stream("POST", "/chat/completions", json={**body, "stream": True}) as r:
            async for _ in r.aiter_raw():
                arrivals.append(time.monotonic() - t0)
        assert len(arrivals) >= 4 and arrivals[-1] - arrivals[0] > 0.15  # as sent, not at the end
        r = await c.post("/chat/completions", json=body)  # the streamed connection was reused
        assert len({rec.client_port for rec in up.requests}) == 1


async def test_uvicorn_concurrent_requests(make_client):
    with FakeUpstream() as up:
        c = make_client(up.base_url, max_connections=4)
        outs = await asyncio.gather(
            *(
                c.post("/chat/completions", json={"model": "m", "messages": [
                    {"role": "user", "content": f"q{i}"}]})
                for i in range(30)
            )
        )  # fmt: skip
        texts = [r.json()["choices"][0]["message"]["content"] for r in outs]
        assert texts == [f"[m] echo: q{i}" for i in range(30)]
        assert len({rec.client_port for rec in up.requests}) <= 4


# ---------------------------------------------------------------- body framings


async def test_chunked_response_in_pieces_then_reuse(make_client):
    async def handler(reader, writer):
        while await read_request(reader):
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel")
            await asyncio.sleep(0.02)
            writer.write(b"lo\r\n6\r\n world\r\n")
            await asyncio.sleep(0.02)
            writer.write(b"0\r\n\r\n")

    async with RawServer(handler) as srv:
        c = make_client(srv.url)
        assert (await c.get("/")).content == b"hello world"
        assert (await c.get("/")).content == b"hello world"
        assert srv.connections == 1


async def test_read_until_close_body(make_client):
    async def handler(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nfirst ")
        await asyncio.sleep(0.02)
        writer.write(b"second")

    async with RawServer(handler) as srv:
        c = make_client(srv.url)
        assert (await c.get("/")).content == b"first second"
        assert (await c.get("/")).content == b"first second"
        assert srv.connections == 2  # the end of the body was the end of the connection


async def test_connection_close_header_is_not_reused(make_client):
    async with RawServer(lambda r, w: None) as srv:
        srv.handler = srv.keep_alive(lambda i: response(b"x%d" % i, b"connection: close"))
        c = make_client(srv.url)
        assert [(await c.get("/")).content for _ in range(3)] == [b"x1", b"x2", b"x3"]
        assert srv.connections == 3


async def test_interim_1xx_then_answer_and_head_request(make_client):
    async def handler(reader, writer):
        while req := await read_request(reader):
            writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n")
            writer.write(response(b"body", b"x-method: " + req[0][0].split()[0]))

    async with RawServer(handler) as srv:
        c = make_client(srv.url)
        r = await c.get("/")
        assert r.status_code == 200 and r.content == b"body" and "link" not in r.headers
        r = await c.head("/")
        assert r.status_code == 200 and r.content == b"" and r.headers["content-length"] == "4"
        assert (await c.get("/")).content == b"body"


# ---------------------------------------------------------------- request bodies


async def test_request_bodies_bytes_and_streamed(make_client):
    async with RawServer(lambda r, w: None) as srv:
        srv.handler = srv.keep_alive()
        c = make_client(srv.url)
        big = bytes(range(256)) * 4096  # 1 MiB: two writes, flow-controlled
        await c.post("/a?q=1", content=big)

        async def parts():
            for i in range(3):
                await asyncio.sleep(0.01)
                yield b"part%d;" % i

        await c.post("/b", content=parts())
        (line_a, *head_a), body_a = srv.requests[0]
        (line_b, *head_b), body_b = srv.requests[1]
        assert line_a == b"POST /a?q=1 HTTP/1.1" and body_a == big
        assert b"content-length: 1048576" in [h.lower() for h in head_a]
        assert b"transfer-encoding: chunked" in [h.lower() for h in head_b]
        assert body_b == b"part0;part1;part2;" and srv.connections == 1


async def test_header_injection_refused(make_client):
    async with RawServer(lambda r, w: None) as srv:
        c = make_client(srv.url)
        with pytest.raises(httpx.LocalProtocolError):
            await c.get("/", headers={"x-a": "1\r\nx-evil: 1"})
        assert srv.connections == 0


# ---------------------------------------------------------------- stale and broken connections


async def test_server_closing_an_idle_connection(make_client):
    async def handler(reader, writer):
        await read_request(reader)
        writer.write(response())
        await writer.drain()  # then close without saying so (an idle timeout)

    async with RawServer(handler) as srv:
        c = make_client(srv.url)
        for _ in range(3):
            assert (await c.get("/")).content == b"ok"
            await asyncio.sleep(0.02)  # the FIN arrives while the connection is idle
        assert srv.connections == 3


async def test_close_racing_the_request_is_retried_once(make_client):
    """The server drops a kept-alive connection when the next request arrives."""

    async def handler(reader, writer):
        srv.requests.append(await read_request(reader))
        writer.write(response(b"r%d" % len(srv.requests)))
        await read_request(reader)  # the second request on this connection: no answer
        rst(writer)

    async with RawServer(handler) as srv:
        c = make_client(srv.url)
        assert (await c.post("/", content=b"a")).content == b"r1"
        assert (await c.post("/", content=b"b")).content == b"r2"  # sent again, fresh
        assert srv.connections == 2


async def test_fresh_connection_closed_without_answer_is_an_error(make_client):
    async def handler(reader, writer):
        await read_request(reader)

    async with RawServer(handler) as srv:
        c = make_client(srv.url)
        with pytest.raises(httpx.RemoteProtocolError):
            await c.get("/")
        assert srv.connections == 1  # not retried: a fresh connection is not stale


async def test_reset_and_truncation_mid_body(make_client):
    mode = "rst"

    async def handler(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n" + b"x" * 100)
        await writer.drain()
        await asyncio.sleep(0.05)
        if mode == "rst":
            rst(writer)

    async with RawServer(handler) as srv:
        c = make_client(srv.url)
        async with c.stream("GET", "/") as r:
            with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
                await r.aread()
        mode = "fin"
        async with c.stream("GET", "/") as r:
            with pytest.raises(httpx.RemoteProtocolError, match="complete message body"):
                await r.aread()
        assert srv.connections == 2


async def test_invalid_response_is_a_protocol_error(make_client):
    async def handler(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 twohundred OK\r\n\r\n")

    async with RawServer(handler) as srv:
        c = make_client(srv.url)
        with pytest.raises(httpx.RemoteProtocolError, match="invalid HTTP response"):
            await c.get("/")


async def test_connect_errors(make_client):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(httpx.ConnectError):
        await make_client(f"http://127.0.0.1:{port}").get("/")

    async def silent(reader, writer):  # accepts TCP, never answers the TLS hello
        await asyncio.sleep(10)

    async with RawServer(silent) as srv:
        transport = HTTP1Transport(connect_timeout=0.15)
        t0 = time.monotonic()
        with pytest.raises(httpx.ConnectTimeout):  # the constructor's timeout (TLS handshake)
            await transport.handle_async_request(
                httpx.Request("GET", f"https://127.0.0.1:{srv.port}")
            )
        assert time.monotonic() - t0 < 1
        c = make_client(f"https://127.0.0.1:{srv.port}", connect_timeout=5)
        with pytest.raises(httpx.ConnectTimeout):  # the request's own timeout wins
            await c.get("/", timeout=httpx.Timeout(5, connect=0.05))
        assert time.monotonic() - t0 < 1
        await transport.aclose()


# ---------------------------------------------------------------- streaming and flow control


async def test_slow_body_arrives_incrementally(make_client):
    async def handler(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for i in range(5):
            writer.write(b"2\r\n%02d\r\n" % i)
            await writer.drain()
            await asyncio.sleep(0.06)
        writer.write(b"0\r\n\r\n")

    async with RawServer(handler) as srv:
        c = make_client(srv.url)
        got, when = [], []
        t0 = time.monotonic()
        async with c.stream("GET", "/") as r:
            async for part in r.aiter_raw():
                got.append(part)
                when.append(time.monotonic() - t0)
        assert b"".join(got) == b"0001020304"
        assert len(got) >= 4 and when[-1] - when[0] > 0.15  # each as sent, not all at the end


async def test_large_body_pauses_reading_until_consumed(make_client):
    size = 64 << 20
    block = bytes(range(256)) * 1024
    sent = 0

    async def handler(reader, writer):
        nonlocal sent
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size)
        for _ in range(size // len(block)):
            writer.write(block)
            await writer.drain()
            sent += len(block)
        while await read_request(reader):
            writer.write(response())

    async with RawServer(handler) as srv:
        c = make_client(srv.url)
        async with c.stream("GET", "/") as r:
            await asyncio.sleep(0.3)  # a slow consumer: nothing read yet
            # the client buffers ~HIGH_WATER, the kernel some MiB more, then the server waits
            assert sent < HIGH_WATER + (15 << 20)
            total, ok = 0, True
            async for part in r.aiter_raw():
                at = total % len(block)
                ok = ok and part[:1000] == (block + block)[at : at + min(1000, len(part))]
                total += len(part)
        assert total == size and sent == size and ok
        assert (await c.get("/")).status_code == 200  # the connection went back to the pool
        assert srv.connections == 1


# ---------------------------------------------------------------- pool, cancellation, close


async def test_pool_limit_waiters_in_order_and_pool_timeout(make_client):
    async def handler(reader, writer):
        while req := await read_request(reader):
            srv.requests.append(req)
            await asyncio.sleep(0.05)
            writer.write(response())

    async with RawServer(handler) as srv:
        c = make_client(srv.url, max_connections=2)

        async def one(i: int) -> None:
            await c.get("/", headers={"x-i": str(i)})

        tasks = []
        for i in range(6):
            tasks.append(asyncio.create_task(one(i)))
            await asyncio.sleep(0.002)  # queue in a known order
        await asyncio.gather(*tasks)
        order = [int(next(h for h in req[0] if h.startswith(b"x-i:"))[5:]) for req in srv.requests]
        assert sorted(order[:2]) == [0, 1] and order[2:] == [2, 3, 4, 5]
        assert srv.connections == 2
        busy = [asyncio.create_task(one(i)) for i in range(2)]
        await asyncio.sleep(0.01)
        with pytest.raises(httpx.PoolTimeout):
            await c.get("/", timeout=httpx.Timeout(5, pool=0.01))
        await asyncio.gather(*busy)
        assert (await c.get("/")).status_code == 200 and srv.connections == 2


async def test_cancellation_closes_the_connection_and_frees_the_slot(make_client):
    gone = asyncio.Event()

    async def handler(reader, writer):
        while await read_request(reader):
            if srv.connections == 1:
                await asyncio.sleep(0.5 if not gone.is_set() else 0)
                if await reader.read(1) == b"":
                    gone.set()
                return
            writer.write(response())

    async with RawServer(handler) as srv:
        c = make_client(srv.url, max_connections=1)
        first = asyncio.create_task(c.get("/"))
        await asyncio.sleep(0.05)
        waiting = asyncio.create_task(c.get("/"))  # queued behind the first
        await asyncio.sleep(0.02)
        waiting.cancel()
        first.cancel()
        for t in (first, waiting):
            with pytest.raises(asyncio.CancelledError):
                await t
        await asyncio.wait_for(gone.wait(), 2)  # the server saw the connection close
        assert (await c.get("/")).content == b"ok"  # the one slot is free again
        assert srv.connections == 2


async def test_aclose_fails_in_flight_requests_and_waiters():
    async def handler(reader, writer):
        await read_request(reader)
        await asyncio.sleep(5)

    async with RawServer(handler) as srv:
        transport = HTTP1Transport(max_connections=1)
        async with httpx.AsyncClient(base_url=srv.url, transport=transport) as c:
            first = asyncio.create_task(c.get("/"))
            await asyncio.sleep(0.05)
            second = asyncio.create_task(c.get("/"))  # waits for the one connection
            await asyncio.sleep(0.02)
            await transport.aclose()
            r1, r2 = await asyncio.wait_for(
                asyncio.gather(first, second, return_exceptions=True), 1
            )
        assert isinstance(r1, httpx.ReadError) and isinstance(r2, httpx.ConnectError)


async def test_closing_a_half_read_body_discards_the_connection(make_client):
    async def handler(reader, writer):
        while await read_request(reader):
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n01234")
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(b"56789")

    async with RawServer(handler) as srv:
        c = make_client(srv.url)
        async with c.stream("GET", "/") as r:
            assert await anext(r.aiter_raw()) == b"01234"
        assert (await c.get("/")).content == b"0123456789"
        async with c.stream("GET", "/") as r:
            await asyncio.sleep(0.1)  # all of it arrived, none of it read: still reusable
        assert (await c.get("/")).content == b"0123456789"
        assert srv.connections == 2


async def test_read_timeout_and_aclose_closes_idle_connections(make_client):
    eofs = []

    async def handler(reader, writer):
        while req := await read_request(reader):
            if req[0][0].startswith(b"GET /slow"):
                await asyncio.sleep(0.3)
            writer.write(response())
        eofs.append(True)

    async with RawServer(handler) as srv:
        transport = HTTP1Transport()
        async with httpx.AsyncClient(base_url=srv.url, transport=transport) as c:
            with pytest.raises(httpx.ReadTimeout):
                await c.get("/slow", timeout=httpx.Timeout(5, read=0.05))
            await asyncio.gather(*(c.get("/") for _ in range(3)))
        for _ in range(150):
            if len(eofs) == 4:
                break
            await asyncio.sleep(0.01)
        assert len(eofs) == 4  # the timed-out one and the three pooled ones
        with pytest.raises(httpx.ConnectError, match="closed"):
            await transport.handle_async_request(httpx.Request("GET", srv.url))


# ---------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl binary to make a test certificate (no cryptography/trustme)")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert),
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_tls_round_trip_and_verification(make_client, tls_files):
    cert, key = tls_files
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    async with RawServer(lambda r, w: None, ssl_context=server_ctx) as srv:
        srv.handler = srv.keep_alive(lambda i: response(b"secure %d" % i))
        client_ctx = ssl.create_default_context(cafile=str(cert))
        c = make_client(srv.url, ssl_context=client_ctx)
        assert (await c.post("/", content=b"x")).content == b"secure 1"
        assert (await c.post("/", content=b"y")).content == b"secure 2"
        assert (
            srv.connections == 1
            and srv.requests[0][0][1].lower() == f"host: {srv.url[8:]}".encode()
        )
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await make_client(srv.url).get("/")  # the default context does not trust it


# ---------------------------------------------------------------- the default in UpstreamClient


def test_upstream_client_uses_http1_unless_told_otherwise(monkeypatch, tmp_path):
    from router.config import load_providers
    from router.upstream.client import TRANSPORT_ENV, UpstreamClient

    path = tmp_path / "providers.yaml"
    path.write_text(
        "providers: {p: {base_url: 'http://127.0.0.1:9/v1'}}\n"
        "models: {m: {provider: p, input_usd_per_mtok: 1, output_usd_per_mtok: 1}}\n"
    )
    cat = load_providers(path, env={})
    kinds = {}
    for value in (None, "httpx", "http1"):
        if value is None:
            monkeypatch.delenv(TRANSPORT_ENV, raising=False)
        else:
            monkeypatch.setenv(TRANSPORT_ENV, value)
        kinds[value] = type(UpstreamClient(cat)._providers["p"].transport)
    assert kinds == {
        None: HTTP1Transport,
        "httpx": httpx.AsyncHTTPTransport,
        "http1": HTTP1Transport,
    }
    monkeypatch.setenv(TRANSPORT_ENV, "h2")
    with pytest.raises(ValueError, match=TRANSPORT_ENV):
        UpstreamClient(cat)
