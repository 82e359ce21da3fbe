"""A small Prometheus text-format registry: counters and fixed-bucket histograms.

Hand-rolled to keep the hot path to a dict update and to avoid another dependency.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Callable

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

INF_LABEL = 'le="+Inf"'
Labels = tuple[tuple[str, str], ...]


def _fmt_labels(labels: Labels, extra: str = "") -> str:
    parts = [f'{k}="{_escape(v)}"' for k, v in labels]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    def __init__(self) -> None:
        self._counters: dict[str, dict[Labels, float]] = defaultdict(lambda: defaultdict(float))
        self._hists: dict[str, dict[Labels, list[float]]] = defaultdict(dict)
        self._help: dict[str, tuple[str, str]] = {}
        self._gauges: dict[str, Callable[[], dict[Labels, float]]] = {}

    def describe(self, name: str, kind: str, text: str) -> None:
        self._help[name] = (kind, text)

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        self._counters[name][tuple(sorted(labels.items()))] += value

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        h = self._hists[name].get(key)
        if h is None:
            h = self._hists[name][key] = [0.0] * (len(LATENCY_BUCKETS_S) + 2)
        h[bisect.bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        h[-1] += seconds

    def gauge(self, name: str, fn: Callable[[], dict[Labels, float]]) -> None:
        """A value read at scrape time (queue depth, cache hits, readiness)."""
        self._gauges[name] = fn

    def render(self) -> str:
        out: list[str] = []

        def head(name: str, default_kind: str) -> None:
            kind, text = self._help.get(name, (default_kind, name))
            out.append(f"# HELP {name} {text}")
            out.append(f"# TYPE {name} {kind}")

        for name, series in sorted(self._counters.items()):
            head(name, "counter")
            out += [f"{name}{_fmt_labels(k)} {v:.12g}" for k, v in sorted(series.items())]
        for name, series in sorted(self._hists.items()):
            head(name, "histogram")
            for k, h in sorted(series.items()):
                cum = 0.0
                for bound, n in zip(LATENCY_BUCKETS_S, h, strict=False):
                    cum += n
                    le = f'le="{bound}"'
                    out.append(f"{name}_bucket{_fmt_labels(k, le)} {cum:.12g}")
                cum += h[len(LATENCY_BUCKETS_S)]
                out.append(f"{name}_bucket{_fmt_labels(k, INF_LABEL)} {cum:.12g}")
                out.append(f"{name}_sum{_fmt_labels(k)} {h[-1]:.12g}")
                out.append(f"{name}_count{_fmt_labels(k)} {cum:.12g}")
        for name, fn in sorted(self._gauges.items()):
            head(name, "gauge")
            out += [f"{name}{_fmt_labels(k)} {v:.12g}" for k, v in sorted(fn().items())]
        return "\n".join(out) + "\n"
