"""Observability: the decision log (one JSON line per request) and Prometheus metrics."""

from router.observability.decisions import DecisionLog, DecisionRecord
from router.observability.metrics import (
    MULTIPROC_ENV,
    RouterMetrics,
    mark_process_dead,
    prepare_multiprocess_dir,
    render_multiprocess,
)

__all__ = [
    "MULTIPROC_ENV",
    "DecisionLog",
    "DecisionRecord",
    "RouterMetrics",
    "mark_process_dead",
    "prepare_multiprocess_dir",
    "render_multiprocess",
]
