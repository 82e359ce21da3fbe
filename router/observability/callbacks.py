"""Metrics read at scrape time from callbacks: readiness, the scorer's counters, circuit
breakers, the settlement journal, decision-log losses, a ledger that lost its memory.

Single process: :class:`CallbackCollector` turns the callback values into metric families
at each scrape. Multiprocess: :class:`MultiprocessCallbacks` copies them into mmap-backed
gauges (each with the ``multiprocess_mode`` that says how workers combine) and counters
(advanced by delta), which ``MultiProcessCollector`` then merges over workers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CIRCUIT_STATE_VALUES = {"closed": 0, "half_open": 1, "half-open": 1, "open": 2}

# Keys of the scorer's stats() dict that are exported, with their help texts. Counters are
# cumulative since the scorer started; gauges are read as they are.
SCORER_COUNTERS = {
    "cache_hits": "Scores answered from the scorer's prompt cache",
    "cache_misses": "Scores that needed a forward pass",
    "batches": "Batches the scorer ran",
    "forwards": "Forward passes the scorer ran (a batch split on OOM runs several)",
    "prompts_scored": "Prompts scored by forward passes",
    "overloaded": "Scoring requests refused because the queue was full",
    "cancelled": "Scoring requests cancelled while waiting",
    "oom_splits": "Batches split after running out of accelerator memory",
    "errors": "Batches that failed",
    "forward_seconds_total": "Seconds spent in forward passes",
}
# key -> (help, multiprocess_mode)
SCORER_GAUGES = {
    "queued": ("Prompts waiting for a scorer batch", "livesum"),
    "in_flight": ("Prompts in the scorer batch now running", "livesum"),
    "cache_entries": ("Entries in the scorer's prompt cache", "livesum"),
    "max_batch_seen": ("Largest scorer batch so far", "livemax"),
    "avg_batch_size": ("Mean prompts per forward pass", "liveall"),
}

CIRCUIT_HELP = "Circuit breaker state per provider: 0 closed, 1 half-open, 2 open"
JOURNAL_HELP = "Settlements journaled but not yet applied to the ledger"
LOST_HELP = "Decision-log lines dropped (queue full) or that the file refused"
READY_HELP = "1 when the P2L model is loaded and warm"
LEDGER_LOST_HELP = (
    "1 while the ledger has lost its data (Redis emptied or restarted without persistence) "
    "and money is refused until 'p2l-router ledger ack-reset'"
)


def counter_name(key: str) -> str:
    return "router_scorer_" + key.removesuffix("_total")


def circuit_value(state: int | str) -> int:
    return CIRCUIT_STATE_VALUES[state] if isinstance(state, str) else int(state)


class CallbackCollector(Collector):
    """Single-process mode: turns the callbacks into metric families at each scrape."""

    def __init__(self, read: Callable[[], Mapping[str, Any]]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        v = self.read()
        if "ready" in v:
            g = GaugeMetricFamily("router_ready", READY_HELP)
            g.add_metric([], 1.0 if v["ready"] else 0.0)
            yield g
        stats = v.get("scorer_stats") or {}
        for key, text in SCORER_COUNTERS.items():
            if key in stats:
                yield CounterMetricFamily(counter_name(key), text, value=float(stats[key]))
        for key, (text, _) in SCORER_GAUGES.items():
            if key in stats:
                yield GaugeMetricFamily(f"router_scorer_{key}", text, value=float(stats[key]))
        if "circuit_states" in v:
            g = GaugeMetricFamily(
                "router_circuit_state", CIRCUIT_HELP, labels=["provider"]
            )  # fmt: skip
            for provider, state in sorted(v["circuit_states"].items()):
                g.add_metric([provider], float(circuit_value(state)))
            yield g
        if "journal_pending" in v:
            yield GaugeMetricFamily(
                "router_journal_pending", JOURNAL_HELP, value=float(v["journal_pending"])
            )
        if "ledger_lost" in v:
            yield GaugeMetricFamily(
                "router_ledger_lost", LEDGER_LOST_HELP, value=1.0 if v["ledger_lost"] else 0.0
            )
        if "decision_log_lost" in v:
            yield CounterMetricFamily(
                "router_decision_log_lost_lines", LOST_HELP, value=float(v["decision_log_lost"])
            )


class MultiprocessCallbacks:
    """Multiprocess mode: the callback metrics as mmap-backed gauges and counters."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.ready = Gauge(
            "router_ready",
            READY_HELP + " (in every live worker)",
            multiprocess_mode="livemin",
            registry=r,
        )
        self.circuit = Gauge(
            "router_circuit_state",
            CIRCUIT_HELP + " (the worst live worker's view)",
            ["provider"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.journal = Gauge(
            "router_journal_pending", JOURNAL_HELP, multiprocess_mode="livesum", registry=r
        )
        self.ledger_lost = Gauge(
            "router_ledger_lost", LEDGER_LOST_HELP, multiprocess_mode="livemax", registry=r
        )
        self.counters = {
            k: Counter(counter_name(k), text, registry=r) for k, text in SCORER_COUNTERS.items()
        }
        self.lost = Counter("router_decision_log_lost_lines", LOST_HELP, registry=r)
        self.gauges = {
            k: Gauge(f"router_scorer_{k}", text, multiprocess_mode=mode, registry=r)
            for k, (text, mode) in SCORER_GAUGES.items()
        }
        self.last: dict[str, float] = {}

    def sync(self, v: Mapping[str, Any]) -> None:
        if "ready" in v:
            self.ready.set(1.0 if v["ready"] else 0.0)
        if "journal_pending" in v:
            self.journal.set(float(v["journal_pending"]))
        if "ledger_lost" in v:
            self.ledger_lost.set(1.0 if v["ledger_lost"] else 0.0)
        for provider, state in (v.get("circuit_states") or {}).items():
            self.circuit.labels(provider).set(circuit_value(state))
        if "decision_log_lost" in v:
            self._advance(self.lost, "decision_log_lost", v["decision_log_lost"])
        stats = v.get("scorer_stats") or {}
        for key, counter in self.counters.items():
            if key in stats:
                self._advance(counter, key, stats[key])
        for key, gauge in self.gauges.items():
            if key in stats:
                gauge.set(float(stats[key]))

    def _advance(self, counter: Counter, key: str, value: float) -> None:
        """Bring a shared counter to a cumulative value sampled in this process."""
        now = float(value)
        delta = now - self.last.get(key, 0.0)
        if delta < 0:  # the source restarted, and its count with it
            delta = now
        if delta > 0:
            counter.inc(delta)
        self.last[key] = now
