"""A lean HTTP/1.1 client transport for httpx: asyncio Protocols + httptools.

httpx's own ``AsyncHTTPTransport`` (httpcore over anyio) cost ~1 ms of CPU per request
on the benchmark VM (~2 ms at concurrency 32), more than the router's whole budget. This
one keeps httpx as the interface (httpx requests, responses and exceptions) and does the
wire work in protocol callbacks: one ``transport.write`` per request, the response parsed
by httptools as bytes arrive (bench/upstream.py: ~130-210 µs per request, all included).

Connections: one pool per origin (a router provider has one), a LIFO stack of idle
keep-alive connections and at most ``max_connections`` open; callers beyond that wait
in FIFO order. A connection goes back to the pool only when its response arrived to
the end and the server did not ask to close; a body closed half-received, an error or
a cancellation closes it. A reader that lags more than :data:`HIGH_WATER` bytes
pauses reading from the socket until it catches up. An idle connection the server closed is noticed (EOF) and
dropped before reuse; if a reused connection still breaks before any response byte
(the close raced the request), the request is sent once more on a fresh connection,
when its body is in memory.

Errors are httpx's: ``ConnectError``/``ConnectTimeout`` while connecting,
``PoolTimeout`` waiting for a connection, ``ReadTimeout``/``WriteTimeout`` when those
timeouts are set, ``ReadError`` when the connection fails (reset), and
``RemoteProtocolError`` for invalid HTTP or a connection closed before the response
was complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from typing import Any

import httptools
import httpx

DEFAULT_MAX_CONNECTIONS = 100
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_KEEPALIVE_EXPIRY = 60.0
HIGH_WATER = 1 << 20  # buffered body bytes above which the socket stops being read
_SPLIT_WRITE = 256 << 10  # bodies at least this big are not copied onto the head


class _StaleConnection(httpx.RemoteProtocolError):
    """A reused connection broke before any response byte: nothing was processed."""


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection and the state of the exchange running on it."""

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False  # lost, closing, or not to be reused
        self.in_pool = False
        self.dropped = False
        self.idle_since = 0.0
        self._write_paused = False
        self._drained: asyncio.Future | None = None
        self._reset(False, False)

    def _reset(self, reused: bool, head_request: bool) -> None:
        self.active = False
        self.reused = reused
        self.head_request = head_request
        self.got_bytes = False
        self.headers_fut: asyncio.Future | None = None
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.informational = False
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.read_paused = False
        self.complete = False
        self.keep_alive = False
        self.exc: BaseException | None = None
        self.waiter: asyncio.Future | None = None

    # ------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.active or self.complete:  # nothing asked for: the connection is unusable
            self.closed = True
            self.transport.abort()  # type: ignore[union-attr]
            return
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("upgrade responses are not supported"))
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"invalid HTTP response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.in_pool:  # closed by the server while idle
            self.pool.discard(self)
            return
        if self.dropped or not self.active or self.complete or self.exc is not None:
            return
        if self.headers_fut is not None and not self.headers_fut.done():
            if self.reused and not self.got_bytes:
                err: Exception = _StaleConnection("keep-alive connection closed by the server")
            elif exc is None:
                err = httpx.RemoteProtocolError("Server disconnected without sending a response.")
            else:
                err = httpx.ReadError(str(exc) or type(exc).__name__)
            self._fail(err)
        elif exc is None and self._body_until_close():
            self.complete = True
            self._wake()
        elif exc is None:
            self._fail(
                httpx.RemoteProtocolError(
                    "peer closed connection without sending complete message body"
                )
            )
        else:
            self._fail(httpx.ReadError(str(exc) or type(exc).__name__))

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        d = self._drained
        if d is not None and not d.done():
            d.set_result(None)

    # ------------------------------------------------------------ httptools callbacks

    def on_message_begin(self) -> None:
        if self.complete:  # a second response to one request: never reuse this connection
            self.closed = True

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # 1xx: an interim answer, the real one follows
            self.informational = True
            self.headers = []
            self.reason = b""
            return
        self.status = status
        fut = self.headers_fut
        if fut is not None and not fut.done():
            fut.set_result(None)
        if self.head_request:  # no body follows, whatever the headers say
            self.complete = True
            self.keep_alive = False

    def on_body(self, body: bytes) -> None:
        if self.complete:
            return
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]
        self._wake()

    def on_message_complete(self) -> None:
        if self.informational:
            self.informational = False
            return
        if self.complete:
            return
        self.keep_alive = self.parser.should_keep_alive()
        self.complete = True
        self._wake()

    # ------------------------------------------------------------ exchange

    def _wake(self) -> None:
        w = self.waiter
        if w is not None:
            self.waiter = None
            if not w.done():
                w.set_result(None)

    def _fail(self, exc: Exception) -> None:
        if self.exc is None:
            self.exc = exc
        self.closed = True
        fut = self.headers_fut
        if fut is not None and not fut.done():
            fut.set_exception(exc)
        self._wake()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)  # a request body writer stops at self.exc
        if self.transport is not None:
            self.transport.abort()

    def _body_until_close(self) -> bool:
        """Whether the response body is delimited by the end of the connection."""
        if self.status in (204, 304) or self.head_request:
            return False
        fields = {name.lower(): value.lower() for name, value in self.headers}
        return b"content-length" not in fields and b"chunked" not in fields.get(
            b"transfer-encoding", b""
        )

    async def send(
        self, request: httpx.Request, head: bytes, body: bytes | None, chunked: bool, reused: bool
    ) -> None:
        """Write the request (``body``, else its stream) and wait for the response headers."""
        timeouts = request.extensions.get("timeout")
        self._reset(reused, request.method == "HEAD")
        self.active = True
        fut = self.headers_fut = self.pool.loop.create_future()
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            error = _StaleConnection if reused else httpx.RemoteProtocolError
            raise error("connection closed before the request")
        if body is not None:
            if chunked:
                body = b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
            if len(body) < _SPLIT_WRITE:
                transport.write(head + body)
            else:
                transport.write(head)
                transport.write(body)
        else:
            write_t = timeouts.get("write") if timeouts else None
            transport.write(head)
            await self._send_stream(request.stream, chunked, write_t)
        read_t = timeouts.get("read") if timeouts else None
        await _wait(fut, read_t, httpx.ReadTimeout, "no response headers")

    async def _send_stream(self, stream: Any, chunked: bool, write_t: float | None) -> None:
        transport = self.transport
        assert transport is not None
        async for part in stream:  # an AsyncByteStream (an AsyncClient checks)
            if self.exc is not None:
                return  # the response (or the failure) is already here
            if not part:
                continue
            transport.write(b"%x\r\n%b\r\n" % (len(part), part) if chunked else part)
            if self._write_paused:
                await self._drain(write_t)
        if chunked and self.exc is None:
            transport.write(b"0\r\n\r\n")

    async def _drain(self, write_t: float | None) -> None:
        while self._write_paused and self.exc is None:
            d = self._drained = self.pool.loop.create_future()
            try:
                await _wait(d, write_t, httpx.WriteTimeout, "request body not sent")
            finally:
                self._drained = None

    async def wait_body(self, read_t: float | None) -> None:
        w = self.waiter = self.pool.loop.create_future()
        await _wait(w, read_t, httpx.ReadTimeout, "no response data")

    def resume(self) -> None:
        self.read_paused = False
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()


async def _wait(
    fut: asyncio.Future, timeout: float | None, error: type[httpx.TimeoutException], what: str
) -> None:
    """Await ``fut``; past ``timeout`` raise ``error`` (a timer only when one is set)."""
    if timeout is None or fut.done():
        await fut
        return
    try:
        async with asyncio.timeout(timeout):
            await fut
    except TimeoutError:
        raise error(f"{what} within {timeout:g}s") from None


class _ResponseBody(httpx.AsyncByteStream):
    """The response body as it arrives; reading it to the end frees the connection."""

    __slots__ = ("_conn", "_read_t")

    def __init__(self, conn: _Connection, read_t: float | None) -> None:
        self._conn: _Connection | None = conn
        self._read_t = read_t

    def __aiter__(self) -> _ResponseBody:  # type: ignore[override]
        return self

    async def __anext__(self) -> bytes:
        while True:
            conn = self._conn
            if conn is None:
                raise StopAsyncIteration
            chunks = conn.chunks
            if chunks:
                data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                conn.buffered = 0
                if conn.read_paused:
                    conn.resume()
                return data
            if conn.complete:
                self._conn = None
                conn.pool.release(conn)
                raise StopAsyncIteration
            if conn.exc is not None:
                self._conn = None
                conn.pool.discard(conn)
                raise conn.exc
            try:
                await conn.wait_body(self._read_t)
            except BaseException:
                self._conn = None
                conn.pool.discard(conn)
                raise

    async def aclose(self) -> None:
        conn = self._conn
        if conn is not None:
            self._conn = None
            if conn.complete:  # all received, if not all read: the connection is clean
                conn.chunks.clear()
                conn.pool.release(conn)
            else:  # half received: never back to the pool
                conn.pool.discard(conn)


class _Pool:
    """Connections to one origin: idle LIFO stack, a connection cap, FIFO waiters."""

    def __init__(
        self, host: str, port: int, ssl_context: ssl.SSLContext | None, transport: HTTP1Transport
    ) -> None:
        self.host, self.port, self.ssl_context = host, port, ssl_context
        self.max_connections = transport.max_connections
        self.keepalive_expiry = transport.keepalive_expiry
        self.loop = asyncio.get_running_loop()
        self.idle: list[_Connection] = []
        self.open: set[_Connection] = set()
        self.slots = 0  # connections open or being opened
        self.waiters: deque[asyncio.Future] = deque()
        self.closed = False

    async def acquire(
        self, timeouts: dict | None, connect_t: float | None
    ) -> tuple[_Connection, bool]:
        """A connection for one request and whether it was used before."""
        if self.closed:
            raise httpx.ConnectError("the transport is closed")
        idle = self.idle
        expiry = self.keepalive_expiry
        while idle:
            conn = idle.pop()
            conn.in_pool = False
            if conn.closed or (expiry is not None and self.loop.time() - conn.idle_since > expiry):
                self.discard(conn)
                continue
            return conn, True
        if self.slots < self.max_connections:
            self.slots += 1
            return await self._connect(connect_t), False
        got = await self._wait(timeouts.get("pool") if timeouts else None)
        if got is None or got.closed:  # a free slot, handed over: ours to fill
            if got is not None:
                self.discard(got, keep_slot=True)
            return await self._connect(connect_t), False
        return got, True

    async def _wait(self, pool_t: float | None) -> _Connection | None:
        fut = self.loop.create_future()
        self.waiters.append(fut)
        try:
            async with asyncio.timeout(pool_t):  # None: no timer
                return await fut
        except BaseException as exc:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                # handed a connection or a slot just as we gave up: pass it on
                got = fut.result()
                if got is None:
                    self._free_slot()
                else:
                    self.release(got)
            else:
                fut.cancel()  # skipped (and dropped) when the next one is handed out
            if isinstance(exc, TimeoutError):
                raise httpx.PoolTimeout(f"no free connection within {pool_t:g}s") from None
            raise

    async def _connect(self, connect_t: float | None) -> _Connection:
        """Open a connection in a slot already counted; frees the slot on failure."""
        conn = _Connection(self)
        ctx = self.ssl_context
        try:
            async with asyncio.timeout(connect_t):
                await self.loop.create_connection(
                    lambda: conn,
                    self.host,
                    self.port,
                    ssl=ctx,
                    server_hostname=self.host if ctx is not None else None,
                )
        except TimeoutError:
            self._free_slot()
            raise httpx.ConnectTimeout(f"connect to {self.host}:{self.port} timed out") from None
        except OSError as exc:  # refused, unreachable, DNS, TLS (ssl.SSLError)
            self._free_slot()
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        except BaseException:
            self._free_slot()
            if conn.transport is not None:
                conn.transport.abort()
            raise
        if self.closed:
            conn.transport.abort()  # type: ignore[union-attr]
            self._free_slot()
            raise httpx.ConnectError("the transport is closed")
        self.open.add(conn)
        return conn

    def _hand(self, got: _Connection | None) -> bool:
        """Give a connection (or, None, a free slot) to the first live waiter, if any."""
        waiters = self.waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(got)
                return True
        return False

    def _free_slot(self) -> None:
        if not self._hand(None):
            self.slots -= 1

    def release(self, conn: _Connection) -> None:
        """Back to the pool (or straight to a waiter) if reusable, else closed."""
        if not (conn.complete and conn.keep_alive) or conn.closed or conn.exc or self.closed:
            self.discard(conn)
            return
        conn.active = False
        if conn.read_paused:  # the end came with the data that paused it
            conn.resume()
        if self._hand(conn):
            return
        conn.in_pool = True
        conn.idle_since = self.loop.time()
        self.idle.append(conn)

    def discard(self, conn: _Connection, *, keep_slot: bool = False) -> None:
        """Close a connection that must not be reused; its slot comes free."""
        if conn.dropped:
            return
        conn.dropped = True
        conn.closed = True
        conn.active = False
        if conn.in_pool:
            conn.in_pool = False
            self.idle.remove(conn)
        self.open.discard(conn)
        if conn.transport is not None:
            conn.transport.abort()
        if not keep_slot:
            self._free_slot()

    def close(self) -> None:
        self.closed = True
        for fut in self.waiters:
            if not fut.done():
                fut.set_exception(httpx.ConnectError("the transport is closed"))
        self.waiters.clear()
        for conn in list(self.open):
            if conn.active and not conn.complete:  # its request fails, not hangs
                conn._fail(httpx.ReadError("the transport was closed"))
            conn.closed = conn.dropped = True
            conn.in_pool = False
            if conn.transport is not None:
                conn.transport.close()
        self.open.clear()
        self.idle.clear()


class HTTP1Transport(httpx.AsyncBaseTransport):
    """httpx transport speaking HTTP/1.1 over pooled asyncio connections.

    ``ssl_context`` is used for ``https`` URLs (a verifying default context is made
    when none is given); ``connect_timeout`` applies when the request's
    ``extensions["timeout"]`` does not say. ``max_connections`` is per origin.
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
        keepalive_expiry: float | None = DEFAULT_KEEPALIVE_EXPIRY,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._ssl_context = ssl_context
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.keepalive_expiry = keepalive_expiry
        self._pools: dict[tuple[bytes, str, int], _Pool] = {}
        self._closed = False

    def _pool(self, url: httpx.URL) -> _Pool:
        scheme = url.raw_scheme
        host = url.host
        port = url.port or (443 if scheme == b"https" else 80)
        key = (scheme, host, port)
        pool = self._pools.get(key)
        if pool is None:
            if self._closed:
                raise httpx.ConnectError("the transport is closed")
            if scheme == b"https":
                ctx = self._ssl_context or httpx.create_ssl_context()
                with contextlib.suppress(NotImplementedError):  # OpenSSL without ALPN
                    ctx.set_alpn_protocols(["http/1.1"])
            elif scheme == b"http":
                ctx = None
            else:
                raise httpx.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}")
            pool = self._pools[key] = _Pool(host, port, ctx, self)
        return pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        pool = self._pool(url)
        timeouts = request.extensions.get("timeout")
        connect_t = self.connect_timeout
        if timeouts and "connect" in timeouts:
            connect_t = timeouts["connect"]
        head, chunked = _encode_head(request)
        stream = request.stream
        body: bytes | None
        if isinstance(stream, httpx.ByteStream):  # bytes in memory: one write
            body = b"".join(stream)
        else:
            try:
                body = request.content
            except httpx.RequestNotRead:
                body = None
        for attempt in (1, 2):
            conn, reused = await pool.acquire(timeouts, connect_t)
            try:
                await conn.send(request, head, body, chunked, reused)
            except _StaleConnection:
                pool.discard(conn)
                if attempt == 1 and body is not None:
                    continue
                raise
            except BaseException:
                pool.discard(conn)
                raise
            return httpx.Response(
                conn.status,
                headers=conn.headers,
                stream=_ResponseBody(conn, timeouts.get("read") if timeouts else None),
                extensions={"http_version": b"HTTP/1.1", "reason_phrase": conn.reason},
            )
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        self._closed = True
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        await asyncio.sleep(0)  # let the transports run their close callbacks


def _encode_head(request: httpx.Request) -> tuple[bytes, bool]:
    """The request line and headers as bytes, and whether the body is sent chunked."""
    raw = request.headers.raw
    names = [k.lower() for k, _ in raw]
    if b"host" not in names:
        raw = [(b"Host", request.url.netloc), *raw]
    chunked = False
    if b"transfer-encoding" in names:
        te = raw[len(raw) - len(names) + names.index(b"transfer-encoding")][1]
        chunked = b"chunked" in te.lower()
    lines = b"".join([k + b": " + v + b"\r\n" for k, v in raw])
    head = b"%b %b HTTP/1.1\r\n%b\r\n" % (
        request.method.encode("ascii"),
        request.url.raw_path,
        lines,
    )
    # Header injection: every CR and LF must be one of the line ends just written.
    n = len(raw) + 2
    if head.count(b"\n") != n or head.count(b"\r") != n:
        raise httpx.LocalProtocolError("CR or LF in a request header or the request target")
    return head, chunked
