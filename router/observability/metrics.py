"""The router's Prometheus metrics, on ``prometheus_client``.

One :class:`RouterMetrics` per app, each owning its ``CollectorRegistry``, so tests and
several apps in one process do not collide. The serving layer calls typed methods
(``record_request``, ``record_spend``, ``record_attempts``); values that live elsewhere
(readiness, scorer counters, circuit breakers, the settlement journal) are read from
callbacks at scrape time (callbacks.py), so counters come out as counters and gauges as
gauges without the hot path touching them.

Multiprocess mode (``serve --workers N``): when ``PROMETHEUS_MULTIPROC_DIR`` is set before
the process starts, counters and histograms are kept in that directory's mmap files, one
per worker, and :meth:`RouterMetrics.render` merges them with ``MultiProcessCollector``.
Callback values are per process, so there each worker copies them into multiprocess
gauges (and counters, by delta) at most once per ``CALLBACK_SYNC_S`` from the request path
and on every scrape it answers; the gauges' ``multiprocess_mode`` says how workers combine.
Keep one ``RouterMetrics`` per process in this mode: two would share one mmap file.
"""

from __future__ import annotations

import glob
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

from router.observability.callbacks import CallbackCollector, MultiprocessCallbacks

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CALLBACK_SYNC_S = 1.0  # multiprocess mode: how stale another worker's gauges may be

# Router overhead is ~0.6 ms typically; the buckets resolve 0.1 ms .. 100 ms.
OVERHEAD_BUCKETS_S = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005,
    0.0075, 0.01, 0.025, 0.05, 0.1,
)  # fmt: skip
SCORING_BUCKETS_S = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
UPSTREAM_BUCKETS_S = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip

Callback = Callable[[], Any]
CALLBACKS = (
    "ready", "scorer_stats", "circuit_states", "journal_pending", "decision_log_lost",
    "ledger_lost",
)  # fmt: skip


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def prepare_multiprocess_dir(path: str) -> None:
    """Create ``path`` and drop files of an earlier run; the supervisor calls it before forking
    workers (stale files would be summed into this run's counters)."""
    os.makedirs(path, exist_ok=True)
    for f in glob.glob(os.path.join(path, "*.db")):
        os.remove(f)


def render_multiprocess(path: str | None = None) -> tuple[bytes, str]:
    """Every worker's metrics in ``path`` merged; any process can call it (a supervisor too)."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path or multiprocess_dir())
    return generate_latest(registry), CONTENT_TYPE_LATEST


def mark_process_dead(pid: int) -> None:
    """The supervisor calls this when worker ``pid`` exits: its ``live*`` gauges stop counting.

    Its counters and histograms stay, so totals do not drop when a worker is replaced.
    """
    path = multiprocess_dir()
    if path:
        multiprocess.mark_process_dead(pid, path)


class RouterMetrics:
    """Every metric the router exports, declared up front, with typed recording methods."""

    def __init__(self) -> None:
        self.multiprocess_dir = multiprocess_dir()
        if self.multiprocess_dir:
            _check_multiprocess(self.multiprocess_dir)
        self.registry = CollectorRegistry()
        r = self.registry
        self._requests = Counter(
            "router_requests",
            "Chat requests by team, serving model and HTTP status",
            ["team", "model", "status"],
            registry=r,
        )
        self._spend = Counter(
            "router_spend_usd", "Settled spend in USD", ["team", "model"], registry=r
        )
        self._tokens = Counter(
            "router_tokens", "Tokens billed, by kind (prompt|completion)", ["team", "kind"],
            registry=r,
        )  # fmt: skip
        self._fallbacks = Counter(
            "router_fallbacks",
            "Candidates skipped after an upstream failure, by model and error",
            ["model", "error"],
            registry=r,
        )
        self._attempts = Counter(
            "router_upstream_attempts",
            "Requests sent to a provider (retries and fallbacks included)",
            ["provider"],
            registry=r,
        )
        self._history_dropped = Counter(
            "router_decision_history_dropped",
            "Decision-history lines not stored in the ledger (queue full or ledger down)",
            registry=r,
        )
        self._stored_responses = Counter(
            "router_stored_responses",
            "Responses-API answers offered to the response store, by outcome"
            " (stored | too_large | failed)",
            ["outcome"],
            registry=r,
        )
        self._overhead = Histogram(
            "router_overhead_seconds",
            "Time spent in the router per chat request, upstream excluded",
            ["team"],
            buckets=OVERHEAD_BUCKETS_S,
            registry=r,
        )
        self._scoring = Histogram(
            "router_scoring_seconds",
            "P2L scoring time per routed request",
            buckets=SCORING_BUCKETS_S,
            registry=r,
        )
        self._upstream = Histogram(
            "router_upstream_seconds",
            "Time waiting on upstream providers per chat request, by serving model",
            ["model"],
            buckets=UPSTREAM_BUCKETS_S,
            registry=r,
        )
        # Label children cached by their raw label tuple: .labels() validates and joins
        # strings on every call, which is most of the cost of an increment.
        self._req_c: dict[tuple[Any, ...], Any] = {}
        self._spend_c: dict[tuple[Any, ...], Any] = {}
        self._tok_c: dict[tuple[Any, ...], Any] = {}
        self._fb_c: dict[tuple[Any, ...], Any] = {}
        self._att_c: dict[str, Any] = {}
        self._ovh_c: dict[Any, Any] = {}
        self._ups_c: dict[Any, Any] = {}

        self._ready: Callback | None = None
        self._scorer_stats: Callback | None = None
        self._circuit_states: Callback | None = None
        self._journal_pending: Callback | None = None
        self._decision_log_lost: Callback | None = None
        self._ledger_lost: Callback | None = None
        self._mp: MultiprocessCallbacks | None = None
        if self.multiprocess_dir:
            self._mp = MultiprocessCallbacks(self.registry)
        else:
            self.registry.register(CallbackCollector(self.read_callbacks))
        self._next_sync = 0.0

    # ------------------------------------------------------------ hot path

    def record_request(
        self,
        team: str | None,
        model: str | None,
        status: int,
        overhead_s: float,
        scoring_s: float | None = None,
        upstream_s: float | None = None,
        fallbacks: Iterable[tuple[str, str]] = (),
    ) -> None:
        """One chat request, whatever its outcome. ``team``/``model`` None (auth failed, nothing
        served) become ""; ``scoring_s``/``upstream_s`` None when no scoring / no upstream
        call happened; ``fallbacks`` the (model, error) pairs skipped on the way."""
        key = (team, model, status)
        c = self._req_c.get(key)
        if c is None:
            c = self._req_c[key] = self._requests.labels(team or "", model or "", str(status))
        c.inc()
        h = self._ovh_c.get(team)
        if h is None:
            h = self._ovh_c[team] = self._overhead.labels(team or "")
        h.observe(overhead_s)
        if scoring_s is not None:
            self._scoring.observe(scoring_s)
        if upstream_s is not None:
            h = self._ups_c.get(model)
            if h is None:
                h = self._ups_c[model] = self._upstream.labels(model or "")
            h.observe(upstream_s)
        for fb in fallbacks:
            c = self._fb_c.get(fb)
            if c is None:
                c = self._fb_c[fb] = self._fallbacks.labels(fb[0], str(fb[1]))
            c.inc()
        if self._mp is not None and time.monotonic() >= self._next_sync:
            self.sync_callbacks()

    def record_spend(
        self,
        team: str,
        model: str,
        usd: float,
        prompt_tokens: int | None,
        completion_tokens: int | None,
    ) -> None:
        """One settlement: dollars on the ledger and the tokens they paid for."""
        key = (team, model)
        c = self._spend_c.get(key)
        if c is None:
            c = self._spend_c[key] = self._spend.labels(team, model)
        if usd > 0:
            c.inc(usd)
        for kind, n in (("prompt", prompt_tokens), ("completion", completion_tokens)):
            k = (team, kind)
            c = self._tok_c.get(k)
            if c is None:
                c = self._tok_c[k] = self._tokens.labels(team, kind)
            if n:
                c.inc(n)

    def count_history_dropped(self, n: int) -> None:
        """``n`` decision lines the ledger's history will not have (the log file does)."""
        self._history_dropped.inc(n)

    def count_stored_response(self, outcome: str) -> None:
        """One answer offered to the response store: ``stored``, ``too_large``, ``failed``."""
        self._stored_responses.labels(outcome).inc()

    def record_attempts(self, provider: str, n: int) -> None:
        """``n`` requests sent to ``provider`` for one candidate (1 unless retried)."""
        c = self._att_c.get(provider)
        if c is None:
            c = self._att_c[provider] = self._attempts.labels(provider)
        if n > 0:
            c.inc(n)

    # ------------------------------------------------------------ scrape time

    def set_callbacks(
        self,
        *,
        ready: Callable[[], bool] | None = None,
        scorer_stats: Callable[[], Mapping[str, float] | None] | None = None,
        circuit_states: Callable[[], Mapping[str, int | str]] | None = None,
        journal_pending: Callable[[], int] | None = None,
        decision_log_lost: Callable[[], int] | None = None,
        ledger_lost: Callable[[], bool] | None = None,
    ) -> None:
        """Sources read at scrape time; any left None keeps its earlier value.

        ``circuit_states`` maps provider -> 0/1/2 or "closed"/"half_open"/"open";
        ``scorer_stats`` returns the scorer's ``stats()`` dict (None or {} when not loaded).
        """
        if ready is not None:
            self._ready = ready
        if scorer_stats is not None:
            self._scorer_stats = scorer_stats
        if circuit_states is not None:
            self._circuit_states = circuit_states
        if journal_pending is not None:
            self._journal_pending = journal_pending
        if decision_log_lost is not None:
            self._decision_log_lost = decision_log_lost
        if ledger_lost is not None:
            self._ledger_lost = ledger_lost

    def read_callbacks(self) -> dict[str, Any]:
        """Current callback values; one that raises is logged and left out of this scrape."""
        out: dict[str, Any] = {}
        for name in CALLBACKS:
            fn = getattr(self, "_" + name)
            if fn is None:
                continue
            try:
                out[name] = fn()
            except Exception:
                log.exception("metrics callback %s failed", name)
        return out

    def sync_callbacks(self) -> None:
        """Multiprocess mode: copy this worker's callback values into the shared files."""
        self._next_sync = time.monotonic() + CALLBACK_SYNC_S
        if self._mp is not None:
            self._mp.sync(self.read_callbacks())

    def render(self) -> tuple[bytes, str]:
        """The exposition body and its content type, merged over workers in multiprocess mode."""
        if self._mp is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        self.sync_callbacks()
        return render_multiprocess(self.multiprocess_dir)


def _check_multiprocess(path: str) -> None:
    if values.ValueClass is values.MutexValue:
        raise RuntimeError(
            f"{MULTIPROC_ENV} is set but prometheus_client was imported before it was: "
            "set it in the environment before the process starts"
        )
    if not os.path.isdir(path):
        raise RuntimeError(f"{MULTIPROC_ENV}={path} is not a directory")
