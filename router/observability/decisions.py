"""The explanation of one request: a decision-log line and the ``x-router-*`` headers.

Exactly one log line per chat-completions request, whatever its outcome. Prompt text is
left out unless the operator opts in (``--log-prompts``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from router.jsonio import dumps
from router.policy import Decision

TOP_CANDIDATES_LOGGED = 5
MAX_PENDING_LINES = 10_000  # queued for the file before new lines are dropped (and counted)

log = logging.getLogger(__name__)


def _r(x: float | None, nd: int = 9) -> float | None:
    return None if x is None else round(x, nd)


@dataclass
class DecisionRecord:
    """Filled in as the request goes; turned into a log line once at the end."""

    decision_id: str
    started: float = field(default_factory=time.perf_counter)
    front: str = "openai-chat"  # the protocol the client spoke
    upstream_api: str | None = None  # the protocol of the provider that served it
    team: str | None = None
    requested_model: str | None = None
    strategy: str | None = None
    decision: Decision | None = None
    chosen: str | None = None
    reason: str | None = None
    fallbacks: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 0  # requests sent upstream for this decision, over all candidates
    served_by: str | None = None
    stream: bool = False
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    expected_cost_usd: float | None = None
    cost_usd: float | None = None
    usage_source: str | None = None  # upstream | partial | estimated | reserved
    # The usage classes billed (null: not reported); prompt_tokens is every input token,
    # completion_tokens every output token.
    cached_prompt_tokens: int | None = None
    cache_write_tokens: int | None = None  # at the 5-minute (or unspecified) rate
    cache_write_1h_tokens: int | None = None
    reasoning_tokens: int | None = None
    cache_saved_usd: float | None = None  # the cost at the full input price minus cost_usd
    budget_remaining_usd: float | None = None
    scoring_ms: float = 0.0
    upstream_ms: float = 0.0
    ttft_ms: float | None = None
    status: int = 200
    error: str | None = None
    prompt: Any = None
    # The request's session (router/serving/sessions.py): id, source, turn,
    # previous_model, kept, and reason when it left its previous model.
    session: dict[str, Any] | None = None
    # cache-aware affinity: each candidate's CachePrice (its cost with no cache, and the
    # cache reads and writes its expected cost counts), merged into the logged candidates.
    cache_prices: dict[str, Any] | None = None

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
            "session": self.session,
        }

    def _candidates(self) -> list[dict[str, Any]]:
        if self.decision is None:
            return []
        out = []
        for c in self.decision.ranking[:TOP_CANDIDATES_LOGGED]:
            row = {
                "model": c.model,
                "coef": _r(c.coef, 6),
                "score": _r(c.score, 6),
                "expected_cost_usd": _r(c.expected_cost_usd),
            }
            priced = self.cache_prices.get(c.model) if self.cache_prices else None
            if priced is not None:
                row.update(priced.logged())
            out.append(row)
        return out

    def log_line(self) -> dict[str, Any]:
        line = {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "decision_id": self.decision_id,
            "front": self.front,
            "team": self.team,
            "requested_model": self.requested_model,
            "strategy": self.strategy,
            "cost_sensitivity": self.decision.cost_sensitivity if self.decision else None,
            "candidates": self._candidates(),
            "chosen": self.chosen,
            "reason": self.reason,
            "fallbacks": self.fallbacks,
            "served_by": self.served_by,
            "upstream_api": self.upstream_api,
            "attempts": self.attempts,
            "stream": self.stream,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "expected_cost_usd": _r(self.expected_cost_usd),
            "cost_usd": _r(self.cost_usd, 12),
            "usage_source": self.usage_source,
            "cached_prompt_tokens": self.cached_prompt_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "cache_write_1h_tokens": self.cache_write_1h_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "cache_saved_usd": _r(self.cache_saved_usd, 12),
            "budget_remaining_usd": _r(self.budget_remaining_usd),
            "scoring_ms": round(self.scoring_ms, 3),
            "upstream_ms": round(self.upstream_ms, 3),
            "ttft_ms": None if self.ttft_ms is None else round(self.ttft_ms, 3),
            "overhead_ms": round(self.overhead_ms(), 3),
            "status": self.status,
            "session": self.session,
        }
        if self.error:
            line["error"] = self.error
        if self.prompt is not None:
            line["prompt"] = self.prompt
        return line


class DecisionLog:
    """Appends JSON lines to a file (or stderr with ``-``) from a writer thread of its own.

    ``write`` is called on the event loop: it queues the line, never waiting on the file,
    so a slow disk or a stalled stderr pipe cannot stall requests; the writer thread
    encodes it (JSON encoding is not the request's work either).
    Nothing is lost silently: a line refused because ``max_pending`` lines are already
    waiting, or one the file would not take (full disk), is logged and counted in ``lost``
    (exported as ``router_decision_log_lost_lines_total``); ``close`` writes out what is
    queued. Files are written with ``os.write`` on an ``O_APPEND`` descriptor, so a failed
    write leaves nothing in a buffer to resurface later. ``logging.QueueHandler`` would do
    the hand-off but drops on a full queue with only a traceback and cannot say how far the
    file is behind (``pending``, ``flush``).
    """

    def __init__(self, target: str | None = "-", *, max_pending: int = MAX_PENDING_LINES) -> None:
        self.max_pending = max_pending
        self.dropped = 0  # refused: queue full or log closed
        self.failed = 0  # the file refused them
        self._cond = threading.Condition()
        self._buf: list[dict[str, Any]] = []
        self._queued = 0  # lines accepted so far
        self._done = 0  # lines written or failed so far
        self._closing = False
        self._enabled = target != "off"
        self._fd: int | None = None  # None: stderr
        self._thread: threading.Thread | None = None
        if not self._enabled:
            return
        if target not in (None, "", "-"):
            self._fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._thread = threading.Thread(target=self._run, name="decision-log", daemon=True)
        self._thread.start()

    @property
    def lost(self) -> int:
        return self.dropped + self.failed

    @property
    def pending(self) -> int:
        return self._queued - self._done

    def write(self, record: DecisionRecord) -> None:
        self.write_line(record.log_line())

    def write_line(self, fields: dict[str, Any]) -> None:
        """``write`` for a line already built (the service also hands it to the history);
        the line is handed over: not to be changed afterwards."""
        if not self._enabled:
            return
        with self._cond:
            if self._closing or len(self._buf) >= self.max_pending:
                self.dropped += 1
                n = self.dropped
            else:
                self._buf.append(fields)
                self._queued += 1
                self._cond.notify_all()
                return
        if n == 1 or n % 1000 == 0:
            why = "log closed" if self._closing else f"{self.max_pending} lines wait on the file"
            log.error("decision log: %d line(s) dropped so far (%s)", n, why)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every line accepted so far is written (or failed); False on timeout."""
        with self._cond:
            target = self._queued
            return self._cond.wait_for(lambda: self._done >= target, timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Write out what is queued, stop the writer, close the file."""
        if self._thread is None:
            return
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("decision log: %d line(s) not written at close: file stalled", self.pending)
            return
        self._thread = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._buf or self._closing)
                lines, self._buf = self._buf, []
                if not lines:
                    return  # closing and drained
            parts, bad = self._encode(lines)
            data = b"".join(parts)
            sent = [0]  # bytes out so far, kept when a write fails part way
            try:
                self._emit(data, sent)
            except (OSError, ValueError) as exc:
                n = sent[0]
                if n and data[n - 1 : n] != b"\n":
                    with contextlib.suppress(OSError, ValueError):
                        self._emit(b"\n", [0])  # end the torn line so the next one parses
                lost = len(parts) - data.count(b"\n", 0, n)
                with self._cond:
                    self.failed += lost
                log.error("decision log: %d line(s) lost: %s", lost, exc)
            with self._cond:
                self.failed += bad
                self._done += len(lines)
                self._cond.notify_all()

    def _encode(self, lines: list[dict[str, Any]]) -> tuple[list[bytes], int]:
        """Each line as JSON bytes; one that cannot be encoded is logged and counted."""
        parts: list[bytes] = []
        bad = 0
        for x in lines:
            try:
                parts.append(dumps(x) + b"\n")
            except (TypeError, ValueError) as exc:
                bad += 1
                log.error("decision log: a line could not be encoded: %s", exc)
        return parts, bad

    def _emit(self, data: bytes, sent: list[int]) -> None:
        if self._fd is None:
            sys.stderr.write(data.decode())
            sys.stderr.flush()
            sent[0] = len(data)
            return
        view = memoryview(data)
        while sent[0] < len(data):
            sent[0] += os.write(self._fd, view[sent[0] :])
