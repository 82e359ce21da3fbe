"""A streamed answer, chunk by chunk as the upstream sends it.

Each chunk is renamed to the catalog model; the usage chunk (always asked of the
upstream) reaches the client only if it asked for it; after the stream ends comes the
``router`` chunk (the decision). An upstream failure mid-stream becomes an in-band error
chunk (the status line is long gone); one before the first chunk never gets here (the
flow reads that chunk first and falls back to the next candidate). Whatever happens,
including a client that leaves, the spend is settled and the decision recorded exactly
once, before the last chunk.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio

from router.config import ModelConfig
from router.errors import NotReadyError, UpstreamError
from router.upstream import UpstreamFailure, UpstreamStream

if TYPE_CHECKING:
    from router.serving.chat import ChatFlow


async def relay_chunks(
    flow: ChatFlow,
    cfg: ModelConfig,
    stream: UpstreamStream,
    first: dict[str, Any] | None,
    t0: float,
) -> AsyncIterator[dict[str, Any]]:
    """``first``: the chunk already read from ``stream`` (None: the stream ended empty)."""
    rec, model = flow.rec, cfg.name
    wants_usage = flow.request().wants_usage
    usage: dict[str, Any] | None = None
    relayed: list[str] = []  # the answer's text, to estimate its tokens if no usage comes
    last_id, created = None, int(time.time())
    settled = False
    flow.task = asyncio.current_task()
    flow.parts.streams.add(flow)
    chunks = _after(first, stream)
    try:
        try:
            async for chunk in chunks:
                if chunk.get("usage"):
                    usage = chunk["usage"]
                last_id = chunk.get("id", last_id)
                created = chunk.get("created", created)
                if not chunk.get("choices") and "usage" in chunk and not wants_usage:
                    continue
                if not wants_usage:
                    chunk.pop("usage", None)
                for choice in chunk.get("choices") or ():
                    _collect_text(choice.get("delta"), relayed)
                chunk["model"] = model
                yield chunk
        except UpstreamFailure as exc:
            rec.status = 502
            rec.error = flow.loggable(exc.message, exc.summary)
            err = UpstreamError(
                f"the upstream stream from '{model}' broke: {exc.message}", code=exc.kind
            )
            yield err.body()
        except asyncio.CancelledError:
            if not flow.interrupted:
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            rec.status, rec.error = 503, "router shutting down"
            yield NotReadyError(
                "the router is shutting down and ended this stream; the text so far is billed",
                code="shutting_down",
            ).body()
        rec.upstream_ms += (time.perf_counter() - t0) * 1000
        with anyio.CancelScope(shield=True):
            await flow.settle(cfg, usage, "".join(relayed))
        settled = True
        # Recorded before the last chunk goes out: a client that has read [DONE] can rely
        # on the decision being in the log and the spend in the ledger.
        flow.record()
        yield {
            "id": last_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "router": rec.summary(),
        }
    except BaseException as exc:
        if rec.status == 200 and not settled:
            flow.mark_interrupted(exc)
        raise
    finally:
        flow.parts.streams.discard(flow)
        with anyio.CancelScope(shield=True):
            await chunks.aclose()
            await stream.aclose()
            if not settled:
                if rec.upstream_ms == 0:
                    rec.upstream_ms = (time.perf_counter() - t0) * 1000
                await flow.settle(cfg, usage, "".join(relayed))
                flow.record()


async def _after(
    first: dict[str, Any] | None, stream: UpstreamStream
) -> AsyncIterator[dict[str, Any]]:
    if first is not None:
        yield first
    async for chunk in stream:
        yield chunk


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
