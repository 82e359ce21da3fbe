"""The P2L scorer on a remote engine (vLLM serving the exported backbone as a pooling model).

The router keeps what is P2L-specific: the exact input and token ids (tokenizer only, no
torch), the head and eta (numpy, float32), the cache and its own bounded queue. The
engine gets unpadded token-id rows on ``POST /v1/embeddings`` (base64, little-endian
float32) and answers each row's last hidden state (LAST pooling ends on the CLS).

Faults: a connect error is retried (nothing was sent); a timeout, a 5xx or a garbage
body is not. ``breaker_failures`` failed calls in a row open a circuit breaker: scoring
then fails fast with ``ScorerUnavailableError`` (503 ``scorer_unavailable``, or the
team's ``on_scorer_down``) until ``breaker_cooldown_s`` has passed, when one call is let
through to test the engine. No library here: the breaker is a dozen lines of state, and
tenacity's retry loop would hide the connect-only rule that matters (breaker.py).

Before it is ready the engine must reproduce the exported probe (``fidelity_error``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import numpy as np

from router.errors import NotReadyError, OverloadedError, ScorerUnavailableError
from router.scoring.breaker import CircuitBreaker
from router.scoring.exported import ExportedP2L
from router.scoring.fidelity import fidelity_error
from router.scoring.frontend import cache_key
from router.scoring.types import Scores

log = logging.getLogger("router.scoring")

Result = tuple[np.ndarray, float | None, int]  # coefs (M,), eta_raw, prompt tokens
T = TypeVar("T")


@dataclass(frozen=True)
class RemoteScorerConfig:
    """Where the engine is and the bounds on talking to it."""

    url: str  # the engine's root (http://vllm:8000); a trailing /v1 is accepted
    api_key: str | None = None
    dtype: str = "float32"  # the engine's dtype: picks the probe tolerance
    connect_timeout_s: float = 2.0
    timeout_s: float = 30.0  # one embeddings call, read included
    connect_retries: int = 2
    max_batch_size: int = 32
    max_wait_ms: float = 2.0
    max_in_flight: int = 4  # concurrent calls to the engine; it batches across them
    max_queue: int = 256
    cache_size: int = 8192
    breaker_failures: int = 3
    breaker_cooldown_s: float = 2.0
    startup_retry_s: float = 1.0  # while the engine is not up yet at start

    @property
    def root(self) -> str:
        return self.url.rstrip("/").removesuffix("/v1")

    @property
    def tolerance(self) -> float:
        return 1e-3 if self.dtype in ("float32", "fp32") else 5e-2


@dataclass(eq=False)
class _Request:
    text: str
    key: bytes
    future: asyncio.Future[Result]
    enqueued: float = field(default_factory=time.perf_counter)


class RemoteScoringEngine:
    """``ScoringEngine``'s interface over an embeddings endpoint."""

    def __init__(self, model: ExportedP2L, config: RemoteScorerConfig) -> None:
        self.model = model
        self.config = config
        self.ready = False
        self.served_model: str | None = None
        self.breaker = CircuitBreaker(config.breaker_failures, config.breaker_cooldown_s)
        self._client: httpx.AsyncClient | None = None
        self._pending: list[_Request] = []
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._slots: asyncio.Semaphore | None = None
        self._calls: set[asyncio.Task[None]] = set()
        self._cache: OrderedDict[bytes, Result] = OrderedDict()
        self._closed = False
        self._stats = dict.fromkeys(
            ("cache_hits", "cache_misses", "batches", "forwards", "prompts_scored")
            + ("max_batch_seen", "overloaded", "cancelled", "errors", "connect_retries"),
            0,
        )
        self._forward_s = 0.0
        self._in_flight = 0

    # lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        if self._closed:
            raise RuntimeError("this RemoteScoringEngine is closed")
        if self._task is not None:
            return
        c = self.config
        headers = {"authorization": f"Bearer {c.api_key}"} if c.api_key else {}
        self._client = httpx.AsyncClient(
            base_url=c.root,
            headers=headers,
            timeout=httpx.Timeout(c.timeout_s, connect=c.connect_timeout_s),
            limits=httpx.Limits(max_connections=c.max_in_flight + 2),
        )
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(c.max_in_flight)
        self._task = asyncio.create_task(self._batcher(), name="p2l-remote-batcher")

    async def warmup(self) -> None:
        """Wait for the engine, then check it reproduces the probe; ``ready`` after that.

        A fidelity mismatch raises ``RuntimeError`` (the router stays not ready and says
        why); an engine that is not up yet is waited for."""
        await self.start()
        while True:
            try:
                await self._check_fidelity()
                break
            except ScorerUnavailableError as exc:
                log.warning("waiting for the scoring engine at %s: %s", self.config.root, exc)
                await asyncio.sleep(self.config.startup_retry_s)
        self.breaker.success()
        self.ready = True

    async def _check_fidelity(self) -> None:
        models = await self._get("/v1/models")
        data = models.get("data") or [{}]
        self.served_model = data[0].get("id")
        engine_len = data[0].get("max_model_len")
        if isinstance(engine_len, int) and engine_len < self.model.max_length:
            raise RuntimeError(
                f"the scoring engine's max_model_len is {engine_len}, below the P2L max "
                f"length {self.model.max_length}: start it with --max-model-len "
                f"{self.model.max_length}"
            )
        probe = self.model.probe
        hidden = await self._embed([c.ids for c in probe]) if probe else None
        problem = fidelity_error(self.model, hidden, self.config.tolerance)
        if problem:
            raise RuntimeError(f"scoring engine at {self.config.root} failed the probe: {problem}")
        log.info(
            "scoring engine %s (%s) passed the probe (%d prompts, tolerance %g)",
            self.config.root,
            self.served_model,
            len(probe),
            self.config.tolerance,
        )

    async def close(self) -> None:
        self._closed = True
        self.ready = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for task in list(self._calls):
            task.cancel()
        for req in self._pending:
            if not req.future.done():
                req.future.set_exception(NotReadyError("the scorer is shutting down"))
        self._pending.clear()
        if self._client is not None:
            await self._client.aclose()

    # scoring ---------------------------------------------------------------------------

    async def score(self, messages: list[dict]) -> Scores:
        """This prompt's scores; ScorerUnavailableError when the engine cannot answer."""
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
        if not self.breaker.allow():
            raise ScorerUnavailableError(
                f"the scoring engine at {self.config.root} is down (circuit open); retry shortly",
                headers={"retry-after": str(max(1, round(self.config.breaker_cooldown_s)))},
            )
        if len(self._pending) >= self.config.max_queue:
            self._stats["overloaded"] += 1
            raise OverloadedError(
                f"the scorer queue is full ({self.config.max_queue} prompts waiting); retry shortly"
            )
        req = _Request(text, key, asyncio.get_running_loop().create_future())
        self._pending.append(req)
        assert self._wakeup is not None
        self._wakeup.set()
        try:
            result = await req.future
        except asyncio.CancelledError:
            self._stats["cancelled"] += 1
            with contextlib.suppress(ValueError):
                self._pending.remove(req)
            raise
        return self._scores(result, cached=False, started=started)

    def stats(self) -> dict[str, int | float]:
        forwards = self._stats["forwards"]
        return {
            **self._stats,
            "queued": len(self._pending),
            "in_flight": self._in_flight,
            "cache_entries": len(self._cache),
            "forward_seconds_total": round(self._forward_s, 6),
            "avg_batch_size": self._stats["prompts_scored"] / forwards if forwards else 0.0,
            "ready": int(self.ready),
            "engine_up": int(not self.breaker.is_open),
        }

    def health(self) -> dict[str, Any]:
        """For /readyz: where the engine is and whether it answers."""
        return {
            "scorer": {
                "url": self.config.root,
                "model": self.served_model,
                "state": "down" if self.breaker.is_open else "up",
            }
        }

    # internals -------------------------------------------------------------------------

    def _scores(self, result: Result, *, cached: bool, started: float) -> Scores:
        coefs, eta, tokens = result
        return Scores(
            models=self.model.model_list,
            coefs=coefs,
            eta=eta,
            head=self.model.head,  # type: ignore[arg-type]
            prompt_tokens=tokens,
            cached=cached,
            scoring_ms=(time.perf_counter() - started) * 1000.0,
        )

    async def _batcher(self) -> None:
        assert self._wakeup is not None and self._slots is not None
        c = self.config
        while True:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._slots.acquire()  # a free call slot; requests gather meanwhile
            deadline = self._pending[0].enqueued + c.max_wait_ms / 1000 if self._pending else 0
            while 0 < len(self._pending) < c.max_batch_size:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
            batch = [r for r in self._pending[: c.max_batch_size] if not r.future.done()]
            del self._pending[: c.max_batch_size]
            if not batch:
                self._slots.release()
                continue
            task = asyncio.create_task(self._run_batch(batch))
            self._calls.add(task)
            task.add_done_callback(self._calls.discard)

    async def _run_batch(self, batch: list[_Request]) -> None:
        assert self._slots is not None
        self._in_flight += len(batch)
        t0 = time.perf_counter()
        try:
            ids, full = self.model.encode([r.text for r in batch])
            coefs, eta = self.model.apply_head(await self._embed(ids))
        except Exception as exc:  # surfaced to every caller of this batch
            self._stats["errors"] += 1
            if not isinstance(exc, ScorerUnavailableError):
                log.exception("remote scoring failed for a batch of %d", len(batch))
                exc = ScorerUnavailableError(f"the scoring engine's answer was unusable: {exc}")
            for req in batch:
                if not req.future.done():
                    req.future.set_exception(exc)
            return
        finally:
            self._in_flight -= len(batch)
            self._slots.release()
        self._forward_s += time.perf_counter() - t0
        self._stats["batches"] += 1
        self._stats["forwards"] += 1
        self._stats["prompts_scored"] += len(batch)
        self._stats["max_batch_seen"] = max(self._stats["max_batch_seen"], len(batch))
        for row, req in enumerate(batch):
            c = coefs[row].copy()
            c.setflags(write=False)  # shared with the cache
            result = (c, None if eta is None else float(eta[row]), full[row])
            self._remember(req.key, result)
            if not req.future.done():
                req.future.set_result(result)

    def _remember(self, key: bytes, result: Result) -> None:
        if self.config.cache_size <= 0:
            return
        self._cache[key] = result
        self._cache.move_to_end(key)
        while len(self._cache) > self.config.cache_size:
            self._cache.popitem(last=False)

    async def _get(self, path: str) -> dict[str, Any]:
        return await self._call("GET", path, None, lambda resp: resp.json())

    async def _embed(self, ids: list[list[int]]) -> np.ndarray:
        """(B, H) float32 last hidden states of unpadded token-id rows."""
        body: dict[str, Any] = {"input": ids, "encoding_format": "base64"}
        if self.served_model:
            body["model"] = self.served_model

        def parse(resp: httpx.Response) -> np.ndarray:
            rows = sorted(resp.json()["data"], key=lambda d: d["index"])
            if len(rows) != len(ids):
                raise ValueError(f"{len(rows)} embeddings for {len(ids)} inputs")
            return np.stack(
                [np.frombuffer(base64.b64decode(r["embedding"]), dtype="<f4") for r in rows]
            )

        return await self._call("POST", "/v1/embeddings", body, parse)

    async def _call(
        self, method: str, path: str, body: Any, parse: Callable[[httpx.Response], T]
    ) -> T:
        """One engine call, its answer parsed: connect errors retried, the breaker told
        how it went (a body that does not parse counts as a failure)."""
        assert self._client is not None
        c = self.config
        for attempt in range(c.connect_retries + 1):
            try:
                resp = await self._client.request(method, path, json=body)
            except httpx.ConnectError as exc:
                if attempt < c.connect_retries:
                    self._stats["connect_retries"] += 1
                    await asyncio.sleep(0.05 * 2**attempt)
                    continue
                self.breaker.failure()
                raise ScorerUnavailableError(
                    f"cannot connect to the scoring engine at {c.root}"
                ) from exc
            except httpx.HTTPError as exc:  # timeout, reset, protocol error: not retried
                self.breaker.failure()
                raise ScorerUnavailableError(
                    f"the scoring engine at {c.root} did not answer ({type(exc).__name__})"
                ) from exc
            if resp.status_code >= 500:
                self.breaker.failure()
                raise ScorerUnavailableError(
                    f"the scoring engine at {c.root} answered {resp.status_code}"
                )
            if resp.status_code != 200:
                self.breaker.failure()
                raise RuntimeError(
                    f"the scoring engine at {c.root} refused {method} {path}: "
                    f"{resp.status_code} {resp.text[:300]}"
                    + (
                        " (is P2L_ROUTER_SCORER_KEY its --api-key?)"
                        if resp.status_code == 401
                        else ""
                    )
                )
            try:
                parsed = parse(resp)
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                self.breaker.failure()
                raise ScorerUnavailableError(
                    f"the scoring engine at {c.root} sent an unusable body: {exc}"
                ) from exc
            self.breaker.success()
            return parsed
        raise AssertionError("unreachable")
