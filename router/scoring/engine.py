"""Asyncio front of the P2L model: batching across concurrent requests, a cache, back-pressure.

Requests that arrive together go into one forward. The batcher task waits at most
``max_wait_ms`` after the first pending request for others to join, takes up to
``max_batch_size`` of them, and hands them to ONE worker thread, which tokenizes, sorts
them by length and runs forwards of at most ``max_batch_tokens`` padded tokens each.
While a forward runs, new requests queue; the next batch starts as soon as it ends.

A full queue refuses with ``OverloadedError`` (503 + retry-after). A caller that is
cancelled while queued leaves the queue; one cancelled mid-forward has its result
dropped (still cached). Results are cached by a blake2b hash of the exact scorer input.
On CUDA out-of-memory a batch is split in halves and retried.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from router.scoring.batching import BatchingScorer, Result
from router.scoring.modeling import P2LModel

log = logging.getLogger("router.scoring")

ForwardFn = Callable[[Sequence[Sequence[int]]], tuple[np.ndarray, np.ndarray | None]]


def forward_splitting_on_oom(
    forward: ForwardFn, ids: Sequence[Sequence[int]], on_split: Callable[[], None] | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """``forward(ids)``; on out-of-memory, the two halves separately (recursively)."""
    try:
        return forward(ids)
    except torch.OutOfMemoryError:
        if len(ids) == 1:
            raise
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if on_split is not None:
            on_split()
        mid = len(ids) // 2
        c1, e1 = forward_splitting_on_oom(forward, ids[:mid], on_split)
        c2, e2 = forward_splitting_on_oom(forward, ids[mid:], on_split)
        eta = None if e1 is None or e2 is None else np.concatenate([e1, e2])
        return np.concatenate([c1, c2]), eta


def plan_batches(
    lengths: Sequence[int], max_batch_tokens: int, overhead_tokens: int = 256
) -> list[list[int]]:
    """Indices grouped by token length: the cheapest split into forwards.

    Cost of a forward = ``overhead_tokens`` (fixed cost of one forward, in tokens) +
    rows x padded width; each group's padded size stays within ``max_batch_tokens`` (a
    prompt longer than that runs alone). Exact dynamic programme over the lengths sorted
    ascending, where the best groups are contiguous; n is at most max_batch_size.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    sizes = [lengths[i] for i in order]
    n = len(sizes)
    best = [0.0] + [float("inf")] * n  # best[j]: cheapest plan for the j shortest
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        width = sizes[j - 1]  # the longest of any group ending at j
        for i in range(j - 1, -1, -1):
            padded = (j - i) * width
            if padded > max_batch_tokens and j - i > 1:
                break
            cost = best[i] + overhead_tokens + padded
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups: list[list[int]] = []
    j = n
    while j > 0:
        groups.append(order[cut[j] : j])
        j = cut[j]
    return groups[::-1]


class ScoringEngine(BatchingScorer):
    """Scores chat prompts with a P2L model without blocking the event loop."""

    model: P2LModel

    def __init__(
        self,
        model: P2LModel,
        *,
        max_batch_size: int = 32,
        max_batch_tokens: int = 16384,
        max_wait_ms: float = 2.0,
        max_queue: int = 256,
        cache_size: int = 8192,
        forward_overhead_tokens: int = 256,
    ) -> None:
        if max_batch_size < 1 or max_queue < 1 or max_batch_tokens < 1:
            raise ValueError("max_batch_size, max_batch_tokens and max_queue must be >= 1")
        super().__init__(
            model, max_queue=max_queue, cache_size=cache_size, extra_stats=("oom_splits",)
        )
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.max_wait_s = max_wait_ms / 1000.0
        self.forward_overhead_tokens = forward_overhead_tokens
        self._executor: ThreadPoolExecutor | None = None
        self._last_batch_size = 0

    # lifecycle -----------------------------------------------------------------------

    def _open(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="p2l-forward")

    async def _release(self) -> None:
        """The forward thread is released."""
        if self._executor is not None:
            executor, self._executor = self._executor, None
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)

    async def warmup(self, *, calibrate: bool = True) -> None:
        """Forwards through the worker thread (allocations, kernels); then ``ready``.

        With ``calibrate``, also times a short and a long forward to learn what one
        forward costs in token-equivalents, which decides how batches are split.
        """
        await self.start()
        assert self._executor is not None
        text = self.model.render([{"role": "user", "content": "Hello! Warm up, please."}])
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._run_batch, [text])
        if calibrate:
            overhead = await loop.run_in_executor(self._executor, self._calibrate, text)
            if overhead is not None:
                self.forward_overhead_tokens = overhead
        self.ready = True

    def _calibrate(self, text: str) -> int | None:
        """Fixed cost of one forward, in tokens: t(1 short row) against t(2 rows of 128)."""
        row = self.model.encode([text])[0][0]
        long_row = (row * (128 // len(row) + 1))[-128:]
        long_row[-1] = row[-1]  # ends in the CLS

        def best_of(ids: list[list[int]]) -> float:
            times = []
            for _ in range(2):
                t0 = time.perf_counter()
                self.model.forward_ids(ids)
                times.append(time.perf_counter() - t0)
            return min(times)

        short_s, long_s = best_of([row]), best_of([long_row] * 2)
        per_token = (long_s - short_s) / (2 * 128 - len(row))
        if per_token <= 0:
            return None
        overhead = round(short_s / per_token) - len(row)
        return int(min(max(overhead, 16), self.max_batch_tokens))

    # scoring ---------------------------------------------------------------------------

    def stats(self) -> dict[str, int | float]:
        """Counters for /metrics and benchmarks."""
        return {**super().stats(), "forward_overhead_tokens": self.forward_overhead_tokens}

    # internals -------------------------------------------------------------------------

    def _retry_after_s(self) -> float:
        batches = self._stats["batches"]
        per_batch = self._forward_s / batches if batches else 0.5
        return max(1.0, per_batch * (len(self._pending) / self.max_batch_size + 1))

    async def _batcher(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wait_for_pending()
            # Let a burst gather (until max_wait after the oldest request, or a full batch),
            # but only under concurrent load: a lone caller should not pay the wait.
            wait_s = self.max_wait_s if self._last_batch_size > 1 else 0.0
            batch = await self._gather(wait_s, self.max_batch_size)
            if not batch:
                continue
            self._in_flight = self._last_batch_size = len(batch)
            try:
                results = await loop.run_in_executor(
                    self._executor, self._run_batch, [r.text for r in batch]
                )
            except Exception as exc:  # surfaced to every caller of this batch
                self._stats["errors"] += 1
                log.exception("P2L forward failed for a batch of %d", len(batch))
                self._fail(batch, exc)
                continue
            finally:
                self._in_flight = 0
            self._stats["batches"] += 1
            for req, result in zip(batch, results, strict=True):
                self._deliver(req, result)

    def _run_batch(self, texts: list[str]) -> list[Result]:
        """Worker thread: tokenize, group by length, forward each group."""
        t0 = time.perf_counter()
        ids, full_lengths = self.model.encode(texts)
        results: list[Result | None] = [None] * len(texts)
        for group in plan_batches(
            [len(x) for x in ids], self.max_batch_tokens, self.forward_overhead_tokens
        ):
            coefs, eta = forward_splitting_on_oom(
                self.model.forward_ids, [ids[i] for i in group], self._count_split
            )
            self._count_forward(len(group))
            for row, i in enumerate(group):
                c = coefs[row].copy()
                c.setflags(write=False)  # shared with the cache
                results[i] = (c, None if eta is None else float(eta[row]), full_lengths[i])
        self._forward_s += time.perf_counter() - t0
        return results  # type: ignore[return-value]

    def _count_split(self) -> None:
        self._stats["oom_splits"] += 1
        log.warning("CUDA out of memory in a P2L forward; retrying the batch in halves")
