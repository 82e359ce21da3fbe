"""What both scorers share: the result cache, the bounded pending queue and ``score()``.

``ScoringEngine`` (torch, in process) and ``RemoteScoringEngine`` (a vLLM engine over
HTTP) differ only in how a gathered batch is scored. The path of one prompt is the same
for both and lives here: render, cache key, LRU cache hit or miss, refuse when closed,
start on first use, the subclass's admission check (the remote circuit breaker), the
queue bound, a future per queued prompt, and leaving the queue when cancelled. No torch
here: the remote scorer's process must not import it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from router.errors import NotReadyError, OverloadedError
from router.scoring.frontend import P2LInputs, cache_key
from router.scoring.types import Scores

Result = tuple[np.ndarray, float | None, int]  # coefs (M,), eta_raw, prompt tokens

# The counters both scorers keep; a subclass names its own extra ones.
COMMON_STATS = (
    "cache_hits",
    "cache_misses",
    "batches",
    "forwards",
    "prompts_scored",
    "max_batch_seen",
    "overloaded",
    "cancelled",
    "errors",
)


@dataclass(eq=False)
class PendingRequest:
    """One queued prompt: its scorer input, cache key and the caller's future."""

    text: str
    key: bytes
    future: asyncio.Future[Result]
    enqueued: float = field(default_factory=time.perf_counter)


class BatchingScorer:
    """Base of the scorers: ``score()`` as a template over the subclass's batcher.

    A subclass sets up its resources in ``_open`` (called by ``start``), runs
    ``_batcher`` as the background task (``_wait_for_pending``, ``_gather``,
    ``_deliver`` and ``_fail`` help), and releases its resources in ``_release``.
    """

    task_name = "p2l-batcher"
    model: P2LInputs

    def __init__(
        self,
        model: P2LInputs,
        *,
        max_queue: int,
        cache_size: int,
        extra_stats: tuple[str, ...] = (),
    ) -> None:
        self.model = model
        self.max_queue = max_queue
        self.cache_size = cache_size
        self.ready = False
        self._pending: deque[PendingRequest] = deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._cache: OrderedDict[bytes, Result] = OrderedDict()
        self._closed = False
        self._stats: dict[str, int] = dict.fromkeys(COMMON_STATS + extra_stats, 0)
        self._forward_s = 0.0
        self._in_flight = 0

    # hooks -------------------------------------------------------------------------------

    def _open(self) -> None:
        """Set up what the batcher needs (thread, client); called once by ``start``."""

    async def _release(self) -> None:
        """Release what ``_open`` set up; called by ``close`` after the queue is failed."""

    def _admit(self) -> None:
        """Raise to refuse a prompt that missed the cache before it is queued."""

    def _retry_after_s(self) -> float:
        """The retry-after of a refusal for a full queue."""
        return 1.0

    async def _batcher(self) -> None:
        raise NotImplementedError

    # lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the batcher task (idempotent)."""
        if self._closed:
            raise RuntimeError(f"this {type(self).__name__} is closed")
        if self._task is not None:
            return
        self._wakeup = asyncio.Event()
        self._open()
        self._task = asyncio.create_task(self._batcher(), name=self.task_name)

    async def close(self) -> None:
        """Stop batching; queued callers get NotReadyError; resources are released."""
        self._closed = True
        self.ready = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while self._pending:
            req = self._pending.popleft()
            if not req.future.done():
                req.future.set_exception(NotReadyError("the scorer is shutting down"))
        await self._release()

    # scoring -----------------------------------------------------------------------------

    async def score(self, messages: list[dict[str, Any]]) -> Scores:
        """This prompt's scores. InvalidRequestError for bad messages; OverloadedError when
        the queue is full; what ``_admit`` raises (ScorerUnavailableError when remote)."""
        started = time.perf_counter()
        text = self.model.render(messages)  # raises InvalidRequestError
        key = cache_key(text)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            self._stats["cache_hits"] += 1
            return self._scores(hit, cached=True, started=started)
        self._stats["cache_misses"] += 1
        if self._closed:
            raise NotReadyError("the scorer is shutting down")
        if self._task is None:
            await self.start()
        self._admit()
        if len(self._pending) >= self.max_queue:
            self._stats["overloaded"] += 1
            raise OverloadedError(
                f"the scorer queue is full ({self.max_queue} prompts waiting); retry shortly",
                retry_after_s=self._retry_after_s(),
            )
        req = PendingRequest(text, key, asyncio.get_running_loop().create_future())
        self._pending.append(req)
        assert self._wakeup is not None
        self._wakeup.set()
        try:
            result = await req.future
        except asyncio.CancelledError:
            self._stats["cancelled"] += 1
            with contextlib.suppress(ValueError):
                self._pending.remove(req)  # frees its slot; a running batch drops its result
            raise
        return self._scores(result, cached=False, started=started)

    @property
    def api_key(self) -> str | None:
        """The key sent to a remote engine (a secret to redact); none in process."""
        return None

    def health(self) -> dict[str, Any]:
        """Fields for /readyz: none in process (``ready`` says it all); remote overrides."""
        return {}

    def stats(self) -> dict[str, int | float]:
        """Counters for /metrics and benchmarks (a subclass adds its own)."""
        forwards = self._stats["forwards"]
        return {
            **self._stats,
            "queued": len(self._pending),
            "in_flight": self._in_flight,
            "cache_entries": len(self._cache),
            "forward_seconds_total": round(self._forward_s, 6),
            "avg_batch_size": self._stats["prompts_scored"] / forwards if forwards else 0.0,
            "ready": int(self.ready),
        }

    # batcher helpers -----------------------------------------------------------------------

    async def _wait_for_pending(self) -> None:
        """Return once a prompt is queued."""
        assert self._wakeup is not None
        while not self._pending:
            self._wakeup.clear()
            await self._wakeup.wait()

    async def _gather(self, wait_s: float, size: int) -> list[PendingRequest]:
        """Up to ``size`` live queued prompts, after letting a burst gather: until ``size``
        are queued or ``wait_s`` after the oldest. May be empty (all were cancelled)."""
        assert self._wakeup is not None
        if self._pending:
            deadline = self._pending[0].enqueued + wait_s
            while 0 < len(self._pending) < size:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
        batch: list[PendingRequest] = []
        while self._pending and len(batch) < size:
            req = self._pending.popleft()
            if not req.future.done():
                batch.append(req)
        return batch

    def _deliver(self, req: PendingRequest, result: Result) -> None:
        """Cache a result and hand it to its caller if that one still waits."""
        self._remember(req.key, result)
        if not req.future.done():
            req.future.set_result(result)

    @staticmethod
    def _fail(batch: list[PendingRequest], exc: BaseException) -> None:
        """Surface one error to every caller of a batch."""
        for req in batch:
            if not req.future.done():
                req.future.set_exception(exc)

    def _count_forward(self, rows: int) -> None:
        """One forward of ``rows`` prompts done."""
        self._stats["forwards"] += 1
        self._stats["prompts_scored"] += rows
        self._stats["max_batch_seen"] = max(self._stats["max_batch_seen"], rows)

    # internals -----------------------------------------------------------------------------

    def _scores(self, result: Result, *, cached: bool, started: float) -> Scores:
        coefs, eta, tokens = result
        return Scores(
            models=self.model.model_list,
            coefs=coefs,
            eta=eta,
            head=self.model.head,
            prompt_tokens=tokens,
            cached=cached,
            scoring_ms=(time.perf_counter() - started) * 1000.0,
        )

    def _remember(self, key: bytes, result: Result) -> None:
        if self.cache_size <= 0:
            return
        self._cache[key] = result
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
