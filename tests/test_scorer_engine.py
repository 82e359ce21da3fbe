"""ScoringEngine: batching, cache, back-pressure and cancellation on a real tiny P2L model."""

from __future__ import annotations

import asyncio
import os
import threading

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

from router.errors import InvalidRequestError, NotReadyError, OverloadedError
from router.scoring import ScoringEngine, load_p2l, write_tiny_checkpoint
from router.scoring.engine import forward_splitting_on_oom, plan_batches
from router.scoring.frontend import cache_key

MODELS = ["model-a", "model-b", "model-c", "model-d", "model-e"]


@pytest.fixture(scope="module")
def p2l(tmp_path_factory):
    folder = write_tiny_checkpoint(tmp_path_factory.mktemp("engine") / "grk", MODELS, head="grk")
    return load_p2l(str(folder), device="cpu")


def prompt(i: int) -> list[dict]:
    # different lengths on purpose, so batches need padding
    return [{"role": "user", "content": f"question {i}: " + "tell me more " * (i % 7)}]


class GatedModel:
    """The real model, with forwards held at a gate so a test can fill the queue meanwhile."""

    def __init__(self, model):
        self._model = model
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.batch_sizes: list[int] = []

    def __getattr__(self, name):
        return getattr(self._model, name)

    def forward_ids(self, ids):
        self.entered.set()
        self.gate.wait(10)
        self.batch_sizes.append(len(ids))
        return self._model.forward_ids(ids)


async def test_batched_equals_one_by_one(p2l):
    texts = [p2l.render(prompt(i)) for i in range(12)]
    alone = np.stack([p2l.forward([t])[0][0] for t in texts])
    engine = ScoringEngine(p2l, max_batch_size=16, max_wait_ms=20, cache_size=0)
    await engine.start()
    try:
        results = await asyncio.gather(*(engine.score(prompt(i)) for i in range(12)))
    finally:
        await engine.close()
    together = np.stack([r.coefs for r in results])
    np.testing.assert_allclose(together, alone, atol=1e-5, rtol=0)
    stats = engine.stats()
    assert stats["batches"] == 1 and stats["prompts_scored"] == 12
    assert stats["forwards"] == 1 and stats["max_batch_seen"] == 12
    first = results[0]
    assert first.models == tuple(MODELS) and first.head == "grk" and not first.cached
    assert first.eta is not None and first.prompt_tokens == len(p2l.encode([texts[0]])[0][0])
    assert first.coef_of() == {m: float(c) for m, c in zip(MODELS, first.coefs, strict=True)}


async def test_token_budget_groups_by_length(p2l):
    engine = ScoringEngine(p2l, max_batch_size=32, max_batch_tokens=64, max_wait_ms=20)
    try:
        results = await asyncio.gather(*(engine.score(prompt(i)) for i in range(8)))
    finally:
        await engine.close()
    stats = engine.stats()
    assert stats["batches"] == 1 and stats["forwards"] > 1 and stats["prompts_scored"] == 8
    for i, r in enumerate(results):
        np.testing.assert_allclose(r.coefs, p2l.forward([p2l.render(prompt(i))])[0][0], atol=1e-5)


def test_plan_batches():
    assert plan_batches([5, 1, 3], 100) == [[1, 2, 0]]
    assert plan_batches([10, 10, 10, 10], 25) == [[0, 1], [2, 3]]
    assert plan_batches([50, 2], 10) == [[1], [0]]  # too long: alone, still scored
    for group in plan_batches([7, 3, 9, 1, 4, 4, 8], 16):
        assert max([7, 3, 9, 1, 4, 4, 8][i] for i in group) * len(group) <= 16 or len(group) == 1
    # padding 4 short prompts to 1000 tokens costs more than a second forward
    assert plan_batches([10, 1000, 10, 10, 10], 10**6, overhead_tokens=16) == [[0, 2, 3, 4], [1]]
    # a dear forward (GPU kernel launches, Python) makes one padded batch cheaper
    assert plan_batches([10, 1000, 10, 10, 10], 10**6, overhead_tokens=10**4) == [[0, 2, 3, 4, 1]]


async def test_cache_hit_is_identical_and_counted(p2l):
    engine = ScoringEngine(p2l, cache_size=2)
    try:
        first = await engine.score(prompt(1))
        # same scorer input (assistant/system turns are not part of it) -> cache hit
        again = await engine.score([{"role": "system", "content": "x"}, *prompt(1)])
        assert again.cached and not first.cached
        assert np.array_equal(again.coefs, first.coefs) and again.eta == first.eta
        assert not again.coefs.flags.writeable
        await engine.score(prompt(2))
        await engine.score(prompt(3))  # evicts prompt(1): cache holds 2
        evicted = await engine.score(prompt(1))
        assert not evicted.cached
    finally:
        await engine.close()
    stats = engine.stats()
    assert stats["cache_hits"] == 1 and stats["cache_misses"] == 4 and stats["cache_entries"] == 2
    assert cache_key("a") != cache_key("b") and len(cache_key("a")) == 16


async def test_invalid_messages_raise_before_queueing(p2l):
    engine = ScoringEngine(p2l)
    try:
        with pytest.raises(InvalidRequestError):
            await engine.score([{"role": "assistant", "content": "no user"}])
        assert engine.stats()["queued"] == 0
    finally:
        await engine.close()


async def test_queue_full_is_overloaded_and_cancel_frees_a_slot(p2l):
    gated = GatedModel(p2l)
    engine = ScoringEngine(gated, max_batch_size=1, max_queue=2, max_wait_ms=0)
    await engine.start()
    try:
        running = asyncio.create_task(engine.score(prompt(0)))
        await asyncio.to_thread(gated.entered.wait, 5)  # prompt 0 is in the forward
        queued = [asyncio.create_task(engine.score(prompt(i))) for i in (1, 2)]
        await asyncio.sleep(0.01)
        assert engine.stats()["queued"] == 2
        with pytest.raises(OverloadedError) as info:
            await engine.score(prompt(3))
        assert info.value.status == 503 and int(info.value.headers["retry-after"]) >= 1

        queued[0].cancel()  # a caller gone while queued leaves the queue
        await asyncio.sleep(0)
        assert engine.stats()["queued"] == 1
        late = asyncio.create_task(engine.score(prompt(4)))  # the freed slot takes it
        await asyncio.sleep(0.01)
        assert engine.stats()["queued"] == 2

        gated.gate.set()
        await asyncio.gather(running, queued[1], late)
        assert queued[0].cancelled()
        stats = engine.stats()
        assert stats["overloaded"] == 1 and stats["cancelled"] == 1
        assert stats["prompts_scored"] == 3  # the cancelled prompt never ran
    finally:
        gated.gate.set()
        await engine.close()


async def test_cancel_during_forward_drops_the_result_but_caches_it(p2l):
    gated = GatedModel(p2l)
    engine = ScoringEngine(gated, max_wait_ms=0)
    try:
        task = asyncio.create_task(engine.score(prompt(5)))
        await asyncio.to_thread(gated.entered.wait, 5)
        task.cancel()
        gated.gate.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(500):
            if engine.stats()["batches"] == 1:
                break
            await asyncio.sleep(0.01)
        again = await engine.score(prompt(5))
        assert again.cached  # the finished forward was not wasted
    finally:
        gated.gate.set()
        await engine.close()


async def test_warmup_sets_ready_and_close_refuses(p2l):
    engine = ScoringEngine(p2l, max_batch_tokens=4096)
    assert not engine.ready
    await engine.warmup()
    assert engine.ready and engine.stats()["ready"] == 1
    assert 16 <= engine.stats()["forward_overhead_tokens"] <= 4096  # calibrated
    await engine.close()
    assert not engine.ready
    with pytest.raises(NotReadyError):
        await engine.score(prompt(7))


async def test_forward_error_reaches_every_caller(p2l):
    class Broken(GatedModel):
        def forward_ids(self, ids):
            raise RuntimeError("kernel exploded")

    engine = ScoringEngine(Broken(p2l), max_wait_ms=20)
    try:
        results = await asyncio.gather(
            *(engine.score(prompt(i)) for i in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, RuntimeError) for r in results)
        assert engine.stats()["errors"] == 1
    finally:
        await engine.close()


def test_oom_splits_the_batch_in_halves():
    calls: list[int] = []

    def forward(ids):
        calls.append(len(ids))
        if len(ids) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        rows = np.array([[float(sum(r))] for r in ids])
        return rows, rows[:, 0] * 10

    ids = [[i] for i in range(7)]
    splits = []
    coefs, eta = forward_splitting_on_oom(forward, ids, lambda: splits.append(1))
    assert coefs[:, 0].tolist() == list(range(7)) and eta.tolist() == [10.0 * i for i in range(7)]
    assert calls == [7, 3, 1, 2, 4, 2, 2] and len(splits) == 3

    def always_oom(ids):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    with pytest.raises(torch.OutOfMemoryError):
        forward_splitting_on_oom(always_oom, [[1], [2]])


async def test_a_lone_caller_does_not_wait_for_a_batch(p2l):
    engine = ScoringEngine(p2l, max_wait_ms=2000)
    try:
        await engine.score(prompt(1))
        lone = await engine.score(prompt(2))
        assert lone.scoring_ms < 1500  # no 2 s batch wait without concurrent traffic
    finally:
        await engine.close()
