"""The explanation of one request: a decision-log line and the ``x-router-*`` headers.

Exactly one log line per chat-completions request, whatever its outcome. Prompt text is
left out unless the operator opts in (``--log-prompts``).
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

from router.jsonio import dumps
from router.policy.strategies import Decision

TOP_CANDIDATES_LOGGED = 5


def _r(x: float | None, nd: int = 9) -> float | None:
    return None if x is None else round(x, nd)


@dataclass
class DecisionRecord:
    """Filled in as the request goes; turned into a log line once at the end."""

    decision_id: str
    started: float = field(default_factory=time.perf_counter)
    team: str | None = None
    requested_model: str | None = None
    strategy: str | None = None
    decision: Decision | None = None
    chosen: str | None = None
    reason: str | None = None
    fallbacks: list[dict[str, Any]] = field(default_factory=list)
    served_by: str | None = None
    stream: bool = False
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    expected_cost_usd: float | None = None
    cost_usd: float | None = None
    usage_source: str | None = None  # upstream | estimated (stream cut short) | reserved
    budget_remaining_usd: float | None = None
    scoring_ms: float = 0.0
    upstream_ms: float = 0.0
    ttft_ms: float | None = None
    status: int = 200
    error: str | None = None
    prompt: Any = None

    def overhead_ms(self) -> float:
        total = (time.perf_counter() - self.started) * 1000
        return max(0.0, total - self.upstream_ms)

    def headers(self) -> dict[str, str]:
        h = {"x-router-decision-id": self.decision_id}
        if self.served_by or self.chosen:
            h["x-router-model"] = self.served_by or self.chosen or ""
        if self.strategy:
            h["x-router-strategy"] = self.strategy
        if self.expected_cost_usd is not None:
            h["x-router-expected-cost-usd"] = f"{self.expected_cost_usd:.8f}"
        if self.budget_remaining_usd is not None:
            h["x-router-budget-remaining-usd"] = f"{self.budget_remaining_usd:.6f}"
        h["x-router-scoring-ms"] = f"{self.scoring_ms:.2f}"
        h["x-router-overhead-ms"] = f"{self.overhead_ms():.2f}"
        return h

    def summary(self) -> dict[str, Any]:
        """The decision as a client sees it (the ``router`` object on a stream's last chunk)."""
        d = self.decision
        return {
            "decision_id": self.decision_id,
            "strategy": self.strategy,
            "chosen": self.chosen,
            "served_by": self.served_by,
            "runner_up": d.runner_up if d else None,
            "reason": self.reason,
            "candidates": self._candidates(),
            "fallbacks": self.fallbacks,
            "expected_cost_usd": _r(self.expected_cost_usd),
            "cost_usd": _r(self.cost_usd),
            "budget_remaining_usd": _r(self.budget_remaining_usd),
            "scoring_ms": round(self.scoring_ms, 3),
        }

    def _candidates(self) -> list[dict[str, Any]]:
        if self.decision is None:
            return []
        return [
            {
                "model": c.model,
                "coef": _r(c.coef, 6),
                "score": _r(c.score, 6),
                "expected_cost_usd": _r(c.expected_cost_usd),
            }
            for c in self.decision.ranking[:TOP_CANDIDATES_LOGGED]
        ]

    def log_line(self) -> dict[str, Any]:
        line = {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "decision_id": self.decision_id,
            "team": self.team,
            "requested_model": self.requested_model,
            "strategy": self.strategy,
            "cost_sensitivity": self.decision.cost_sensitivity if self.decision else None,
            "candidates": self._candidates(),
            "chosen": self.chosen,
            "reason": self.reason,
            "fallbacks": self.fallbacks,
            "served_by": self.served_by,
            "stream": self.stream,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "expected_cost_usd": _r(self.expected_cost_usd),
            "cost_usd": _r(self.cost_usd, 12),
            "usage_source": self.usage_source,
            "budget_remaining_usd": _r(self.budget_remaining_usd),
            "scoring_ms": round(self.scoring_ms, 3),
            "upstream_ms": round(self.upstream_ms, 3),
            "ttft_ms": None if self.ttft_ms is None else round(self.ttft_ms, 3),
            "overhead_ms": round(self.overhead_ms(), 3),
            "status": self.status,
        }
        if self.error:
            line["error"] = self.error
        if self.prompt is not None:
            line["prompt"] = self.prompt
        return line


class DecisionLog:
    """Appends JSON lines to a file (or stderr with ``-``); thread-safe, line-buffered."""

    def __init__(self, target: str | None = "-") -> None:
        self._lock = threading.Lock()
        self._own = False
        self._fh: IO[str] | None
        if target in (None, "", "-"):
            self._fh = sys.stderr
        elif target == "off":
            self._fh = None
        else:
            self._fh = open(target, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
            self._own = True

    def write(self, record: DecisionRecord) -> None:
        if self._fh is None:
            return
        text = dumps(record.log_line()).decode() + "\n"
        with self._lock:
            self._fh.write(text)

    def close(self) -> None:
        if self._own and self._fh is not None:
            self._fh.close()
            self._fh = None
