"""``serve --workers N``: N router processes on one port, with a small supervisor.

Each worker is a fresh ``python -m router serve`` with the same arguments, binding the
port with ``SO_REUSEPORT`` (the kernel spreads connections over them). Fresh processes,
not forks: the Prometheus multiprocess directory must be in the environment before
``prometheus_client`` is imported, and nothing (an event loop, a model, a ledger
connection) is shared by accident. What workers share lives outside them: the ledger
(SQLite file or Redis), the remote scoring engine, the metrics directory (merged on each
scrape); each claims a journal slot of its own and adopts those of dead workers
(:mod:`router.ledger.journal_slots`).

uvicorn's own ``--workers`` would need the app as an import string and restarts workers
with a plain ``uvicorn.Server``, losing the graceful stop in :mod:`router.api.server`.

The supervisor forwards SIGTERM/SIGINT/SIGHUP to every worker. A worker that exits on
its own (a crash, an OOM kill, ``kill -9``) is started again in its slot after a backoff
(``RestartPolicy``: ``backoff_s`` doubled per recent restart of that slot, at most
``backoff_max_s``) while the others keep serving the port; each restart is logged. A
worker that cannot stay up is a fault no restart mends: past ``limit`` restarts within
``window_s`` (all slots together) the supervisor stops every worker and exits non-zero
(128 + signal for a worker killed by a signal, as a shell reports it), so the process
manager above (systemd, Kubernetes, Docker) sees the failure.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from router.observability.metrics import MULTIPROC_ENV, mark_process_dead, prepare_multiprocess_dir

log = logging.getLogger("router")

WORKER_ENV = "P2L_ROUTER_WORKER_INDEX"  # set in each worker: it serves instead of supervising
POLL_S = 0.2  # how often the supervisor looks at its workers


def is_worker() -> bool:
    return bool(os.environ.get(WORKER_ENV))


@dataclass(frozen=True)
class RestartPolicy:
    """When the supervisor restarts a dead worker, and when it gives up."""

    limit: int = 5  # restarts allowed within window_s, all slots together
    window_s: float = 60.0
    backoff_s: float = 0.5  # a slot's first restart; doubled per restart within window_s
    backoff_max_s: float = 10.0

    def delay(self, recent: int) -> float:
        """The wait before a restart of a slot restarted ``recent`` times in the window."""
        return min(self.backoff_max_s, self.backoff_s * 2.0**recent)


DEFAULT_RESTARTS = RestartPolicy()


def exit_status(code: int) -> int:
    """A worker's return code as the supervisor's exit status (never 0: it failed)."""
    return 128 - code if code < 0 else code or 1


def supervise(
    argv: Sequence[str],
    workers: int,
    *,
    restarts: RestartPolicy = DEFAULT_RESTARTS,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Run ``workers`` copies of ``p2l-router <argv>``, restarting any that dies, until
    a signal stops them (0, or the first non-zero status of a worker's stop) or the
    restart limit is passed (the dead worker's status, see :func:`exit_status`)."""
    env = dict(os.environ)
    mp_dir = env.get(MULTIPROC_ENV) or tempfile.mkdtemp(prefix="p2l-router-metrics-")
    prepare_multiprocess_dir(mp_dir)
    env[MULTIPROC_ENV] = mp_dir
    os.environ[MULTIPROC_ENV] = mp_dir  # for mark_process_dead here

    def spawn(slot: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "router", *argv], env={**env, WORKER_ENV: str(slot)}
        )

    procs: dict[int, subprocess.Popen[bytes] | None] = {i: spawn(i) for i in range(1, workers + 1)}
    live = [p for p in procs.values() if p is not None]
    log.info("supervising %d workers (pids %s)", workers, ", ".join(str(p.pid) for p in live))
    stopping = False

    def forward(sig: int, _frame: object) -> None:
        nonlocal stopping
        if sig != signal.SIGHUP:
            stopping = True
        for p in list(procs.values()):
            if p is not None and p.poll() is None:
                p.send_signal(sig)

    previous = {
        sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    }
    try:
        return _watch(procs, spawn, forward, lambda: stopping, restarts, clock)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _watch(
    procs: dict[int, subprocess.Popen[bytes] | None],
    spawn: Callable[[int], subprocess.Popen[bytes]],
    forward: Callable[[int, object], None],
    stopping: Callable[[], bool],
    policy: RestartPolicy,
    clock: Callable[[], float],
) -> int:
    status = 0
    recent: deque[tuple[float, int]] = deque()  # (when, slot) of restarts in the window
    due: dict[int, float] = {}  # slot -> when to start it again (counts as a restart)
    while any(p is not None for p in procs.values()) or (due and not stopping()):
        time.sleep(POLL_S)
        now = clock()
        while recent and now - recent[0][0] > policy.window_s:
            recent.popleft()
        for slot, p in procs.items():
            code = None if p is None else p.poll()
            if p is None or code is None:
                continue
            procs[slot] = None
            mark_process_dead(p.pid)
            if stopping():
                status = status or (exit_status(code) if code else 0)
            elif (restarts := len(recent) + len(due)) >= policy.limit:
                log.error(
                    "worker %d (pid %d) exited with %d after %d restarts within %g s: giving "
                    "up, stopping all workers", slot, p.pid, code, restarts, policy.window_s,
                )  # fmt: skip
                status = exit_status(code)
                forward(signal.SIGTERM, None)
            else:
                wait = policy.delay(sum(s == slot for _, s in recent))
                due[slot] = now + wait
                log.error(
                    "worker %d (pid %d) exited with %d; restarting it in %.1f s (restart %d "
                    "of at most %d within %g s)",
                    slot, p.pid, code, wait, restarts + 1, policy.limit, policy.window_s,
                )  # fmt: skip
        if stopping():
            due.clear()
        for slot, at in list(due.items()):
            if at <= now:
                del due[slot]
                recent.append((now, slot))
                p = procs[slot] = spawn(slot)
                log.warning("worker %d restarted (pid %d)", slot, p.pid)
                if stopping():  # the signal came while it started: it was not forwarded
                    p.send_signal(signal.SIGTERM)
    return status


def check_workers(workers: int, *, remote_scorer: bool, force: bool) -> None:
    """Refuse several workers that would each load the P2L model, unless forced."""
    if workers < 1:
        raise SystemExit("p2l-router: --workers must be at least 1")
    if workers > 1 and not remote_scorer and not force:
        raise SystemExit(
            f"p2l-router: --workers {workers} with an in-process P2L model would load the "
            f"model {workers} times (memory, and a GPU each). Score on a shared engine with "
            "--scorer-url (see README, 'Scaling out'), or pass --force"
        )
