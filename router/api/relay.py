"""Relaying one upstream answer to the client: the SSE stream, or the upstream's own
refusal of the request (passed through as it is)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio

from router.jsonio import dumps
from router.observability.decisions import DecisionRecord
from router.errors import UpstreamError
from router.upstream.sse import UpstreamStream
from router.upstream.client import UpstreamFailure

if TYPE_CHECKING:
    from router.serving.service import Plan, RouterService


class PassThrough(Exception):
    """The upstream refused the client's request (400/422): the client sees that answer."""

    def __init__(self, exc: UpstreamFailure) -> None:
        self.status = exc.status or 400
        self.message = exc.message
        err = (exc.body or {}).get("error") if isinstance(exc.body, dict) else None
        if not isinstance(err, dict):
            err = {"message": exc.message}
        self.body = {
            "error": {
                "message": err.get("message") or exc.message,
                "type": err.get("type") or "invalid_request_error",
                "param": err.get("param"),
                "code": err.get("code"),
            }
        }


async def relay_stream(
    service: RouterService,
    plan: Plan,
    model: str,
    stream: UpstreamStream,
    rec: DecisionRecord,
    t0: float,
    t_start: float,
) -> AsyncIterator[bytes]:
    """The client's SSE bytes, chunk by chunk as the upstream sends them.

    Each chunk is renamed to the catalog model; the usage chunk (always asked of the
    upstream) reaches the client only if it asked for it; after the stream ends come the
    ``router`` chunk (the decision) and ``[DONE]``. An upstream failure mid-stream becomes
    an in-band error event (the status line is long gone). Whatever happens, including a
    client that leaves, the spend is settled and the decision logged exactly once."""
    wants_usage = plan.request.wants_usage
    usage: dict[str, Any] | None = None
    relayed: list[str] = []  # the answer's text, to estimate its tokens if no usage comes
    last_id, created = None, int(time.time())
    settled = False
    try:
        try:
            async for chunk in stream:
                if rec.ttft_ms is None:
                    rec.ttft_ms = (time.perf_counter() - t_start) * 1000
                if chunk.get("usage"):
                    usage = chunk["usage"]
                last_id = chunk.get("id", last_id)
                created = chunk.get("created", created)
                if "error" in chunk and "choices" not in chunk:
                    rec.status = 502
                    rec.error = str(chunk["error"])[:300]
                    yield b"data: " + dumps(chunk) + b"\n\n"
                    continue
                if not chunk.get("choices") and "usage" in chunk and not wants_usage:
                    continue
                if not wants_usage:
                    chunk.pop("usage", None)
                for choice in chunk.get("choices") or ():
                    _collect_text(choice.get("delta"), relayed)
                chunk["model"] = model
                yield b"data: " + dumps(chunk) + b"\n\n"
        except UpstreamFailure as exc:
            rec.status = 502
            rec.error = exc.message
            err = UpstreamError(
                f"the upstream stream from '{model}' broke: {exc.message}", code=exc.kind
            )
            yield b"data: " + dumps(err.body()) + b"\n\n"
        rec.upstream_ms += (time.perf_counter() - t0) * 1000
        with anyio.CancelScope(shield=True):
            await service.settle(plan, model, usage, rec, streamed="".join(relayed))
        settled = True
        # Logged before the last bytes go out: a client that has read [DONE] can rely on
        # the decision being in the log and the spend in the ledger.
        service.record(rec)
        final = {
            "id": last_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "router": rec.summary(),
        }
        yield b"data: " + dumps(final) + b"\n\n"
        yield b"data: [DONE]\n\n"
    except BaseException:
        if rec.status == 200 and not settled:
            rec.status = 499  # client went away mid-stream
            rec.error = "client disconnected"
        raise
    finally:
        with anyio.CancelScope(shield=True):
            await stream.aclose()
            if not settled:
                if rec.upstream_ms == 0:
                    rec.upstream_ms = (time.perf_counter() - t0) * 1000
                await service.settle(plan, model, usage, rec, streamed="".join(relayed))
                service.record(rec)


def _collect_text(delta: Any, out: list[str]) -> None:
    """Content and tool-call argument text of one streamed delta."""
    if not isinstance(delta, dict):
        return
    content = delta.get("content")
    if isinstance(content, str):
        out.append(content)
    for call in delta.get("tool_calls") or ():
        args = (call.get("function") or {}).get("arguments") if isinstance(call, dict) else None
        if isinstance(args, str):
            out.append(args)
