"""A low-overhead HTTP/1.1 load generator: keep-alive connections, pre-built request
bytes, httptools parsing, uvloop. One process, meant to be pinned to its own core.

Per request it records latency (send -> full response), time to first body byte and,
for SSE, time to the first ``data:`` event, plus chosen response headers.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import httptools


@dataclass
class Sample:
    latency_s: float
    ttfb_s: float
    status: int
    headers: dict[str, str]


@dataclass
class Result:
    samples: list[Sample] = field(default_factory=list)
    wall_s: float = 0.0
    errors: int = 0
    sent: int = 0  # requests answered 200, warm-up included

    def pct(self, attr: str, q: float) -> float:
        xs = sorted(getattr(s, attr) for s in self.samples)
        if not xs:
            return float("nan")
        return xs[min(len(xs) - 1, int(q / 100 * len(xs)))]

    @property
    def rps(self) -> float:
        return len(self.samples) / self.wall_s if self.wall_s else 0.0


def build_request(host: str, port: int, path: str, body: dict, headers: dict[str, str]) -> bytes:
    payload = json.dumps(body).encode()
    head = [
        f"POST {path} HTTP/1.1",
        f"host: {host}:{port}",
        "content-type: application/json",
        f"content-length: {len(payload)}",
    ]
    head += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


class _Conn(asyncio.Protocol):
    def __init__(self, keep: tuple[str, ...]) -> None:
        self.keep = keep
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.lost = asyncio.get_running_loop().create_future()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self.waiter and not self.waiter.done():
                self.waiter.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection lost"))
        if not self.lost.done():
            self.lost.set_result(None)

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        n = name.decode().lower()
        if n in self.keep:
            self.headers[n] = value.decode()

    def on_body(self, body: bytes) -> None:
        now = time.perf_counter()
        if self.t_first is None:
            self.t_first = now
        if self.t_event is None and b"data:" in body:
            self.t_event = now

    def on_message_complete(self) -> None:
        if self.waiter and not self.waiter.done():
            self.waiter.set_result(None)

    async def request(self, raw: bytes) -> Sample:
        self.headers: dict[str, str] = {}
        self.t_first: float | None = None
        self.t_event: float | None = None
        self.waiter = asyncio.get_running_loop().create_future()
        t0 = time.perf_counter()
        assert self.transport is not None
        self.transport.write(raw)
        await self.waiter
        t1 = time.perf_counter()
        first = self.t_event or self.t_first or t1
        return Sample(t1 - t0, first - t0, self.parser.get_status_code(), self.headers)


async def run_load(
    host: str,
    port: int,
    raw: bytes,
    *,
    concurrency: int,
    duration_s: float,
    warmup_s: float = 0.5,
    keep_headers: tuple[str, ...] = (),
) -> Result:
    loop = asyncio.get_running_loop()
    conns = []
    for _ in range(concurrency):
        _, proto = await loop.create_connection(lambda: _Conn(keep_headers), host, port)
        conns.append(proto)
    result = Result()
    t_start = time.perf_counter()
    t_measure = t_start + warmup_s
    t_end = t_measure + duration_s

    async def worker(c: _Conn) -> None:
        while True:
            now = time.perf_counter()
            if now >= t_end:
                return
            try:
                s = await c.request(raw)
            except Exception:
                result.errors += 1
                return
            if s.status != 200:
                result.errors += 1
                continue
            result.sent += 1
            if now >= t_measure:
                result.samples.append(s)

    await asyncio.gather(*(worker(c) for c in conns))
    result.wall_s = time.perf_counter() - t_measure
    for c in conns:
        if c.transport:
            c.transport.close()
    return result
