"""The P2L scorer on a remote engine (vLLM serving the exported backbone as a pooling model).

The router keeps what is P2L-specific: the exact input and token ids (tokenizer only, no
torch), the head and eta (numpy, float32), the cache and its own bounded queue. The
engine gets unpadded token-id rows on ``POST /v1/embeddings`` (base64, little-endian
float32) and answers each row's last hidden state (LAST pooling ends on the CLS).

Faults: a connect error is retried (nothing was sent); a timeout, a 5xx or a garbage
body is not. ``breaker_failures`` failed calls in a row open a circuit breaker: scoring
then fails fast with ``ScorerUnavailableError`` (503 ``scorer_unavailable``, or the
team's ``on_scorer_down``) until ``breaker_cooldown_s`` has passed, when one call is let
through to test the engine (``router.breaker``, shared with the upstream providers). No
retry library: tenacity's retry loop would hide the connect-only rule that matters.

Before it is ready the engine must reproduce the exported probe (``fidelity_error``).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import numpy as np

from router.breaker import CLOSED, CircuitBreaker
from router.errors import ScorerUnavailableError
from router.scoring.batching import BatchingScorer, PendingRequest
from router.scoring.exported import ExportedP2L
from router.scoring.fidelity import fidelity_error

log = logging.getLogger("router.scoring")

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


class RemoteScoringEngine(BatchingScorer):
    """``ScoringEngine``'s interface over an embeddings endpoint."""

    task_name = "p2l-remote-batcher"
    model: ExportedP2L

    def __init__(self, model: ExportedP2L, config: RemoteScorerConfig) -> None:
        super().__init__(
            model,
            max_queue=config.max_queue,
            cache_size=config.cache_size,
            extra_stats=("connect_retries",),
        )
        self.config = config
        self.served_model: str | None = None
        self.breaker = CircuitBreaker(config.breaker_failures, config.breaker_cooldown_s)
        self._client: httpx.AsyncClient | None = None
        self._slots: asyncio.Semaphore | None = None
        self._calls: set[asyncio.Task[None]] = set()

    # lifecycle -----------------------------------------------------------------------

    def _open(self) -> None:
        c = self.config
        headers = {"authorization": f"Bearer {c.api_key}"} if c.api_key else {}
        self._client = httpx.AsyncClient(
            base_url=c.root,
            headers=headers,
            timeout=httpx.Timeout(c.timeout_s, connect=c.connect_timeout_s),
            limits=httpx.Limits(max_connections=c.max_in_flight + 2),
        )
        self._slots = asyncio.Semaphore(c.max_in_flight)

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
        self._engine_answered()
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

    async def _release(self) -> None:
        """Calls in flight are cancelled (their callers were failed) and the client closed."""
        for task in list(self._calls):
            task.cancel()
        if self._client is not None:
            await self._client.aclose()

    # scoring ---------------------------------------------------------------------------

    def _admit(self) -> None:
        """Fail fast while the circuit is open."""
        if not self.breaker.admit():
            raise ScorerUnavailableError(
                f"the scoring engine at {self.config.root} is down (circuit open); retry shortly",
                headers={"retry-after": str(max(1, round(self.config.breaker_cooldown_s)))},
            )

    @property
    def engine_down(self) -> bool:
        """Whether the circuit is open or half-open (a probe is due or in flight)."""
        return self.breaker.state != CLOSED

    def stats(self) -> dict[str, int | float]:
        return {**super().stats(), "engine_up": int(not self.engine_down)}

    @property
    def api_key(self) -> str | None:
        return self.config.api_key

    def health(self) -> dict[str, Any]:
        """For /readyz: where the engine is and whether it answers."""
        return {
            "scorer": {
                "url": self.config.root,
                "model": self.served_model,
                "state": "down" if self.engine_down else "up",
            }
        }

    # internals -------------------------------------------------------------------------

    async def _batcher(self) -> None:
        assert self._slots is not None
        c = self.config
        while True:
            await self._wait_for_pending()
            await self._slots.acquire()  # a free call slot; requests gather meanwhile
            batch = await self._gather(c.max_wait_ms / 1000, c.max_batch_size)
            if not batch:
                self._slots.release()
                continue
            task = asyncio.create_task(self._run_batch(batch))
            self._calls.add(task)
            task.add_done_callback(self._calls.discard)

    async def _run_batch(self, batch: list[PendingRequest]) -> None:
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
            self._fail(batch, exc)
            return
        finally:
            self._in_flight -= len(batch)
            self._slots.release()
        self._forward_s += time.perf_counter() - t0
        self._stats["batches"] += 1
        self._count_forward(len(batch))
        for row, req in enumerate(batch):
            c = coefs[row].copy()
            c.setflags(write=False)  # shared with the cache
            self._deliver(req, (c, None if eta is None else float(eta[row]), full[row]))

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
                self._engine_failed()
                raise ScorerUnavailableError(
                    f"cannot connect to the scoring engine at {c.root}"
                ) from exc
            except httpx.HTTPError as exc:  # timeout, reset, protocol error: not retried
                self._engine_failed()
                raise ScorerUnavailableError(
                    f"the scoring engine at {c.root} did not answer ({type(exc).__name__})"
                ) from exc
            if resp.status_code >= 500:
                self._engine_failed()
                raise ScorerUnavailableError(
                    f"the scoring engine at {c.root} answered {resp.status_code}"
                )
            if resp.status_code != 200:
                self._engine_failed()
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
                self._engine_failed()
                raise ScorerUnavailableError(
                    f"the scoring engine at {c.root} sent an unusable body: {exc}"
                ) from exc
            self._engine_answered()
            return parsed
        raise AssertionError("unreachable")

    def _engine_failed(self) -> None:
        """Tell the breaker; log when this failure opens a closed circuit."""
        was_closed = self.breaker.state == CLOSED
        self.breaker.failure()
        if was_closed and self.engine_down:
            log.error(
                "scoring engine failed %d call(s) in a row; circuit open", self.breaker.failures
            )

    def _engine_answered(self) -> None:
        """Tell the breaker; log when this answer closes an open circuit."""
        if self.engine_down:
            log.info("scoring engine is answering again; circuit closed")
        self.breaker.success()
