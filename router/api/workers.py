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

The supervisor forwards SIGTERM/SIGINT/SIGHUP to every worker. When a worker exits on
its own, the others are stopped and the supervisor exits with that worker's status, so
the process manager above (systemd, Kubernetes, Docker) sees the failure and restarts.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

from router.observability.metrics import MULTIPROC_ENV, mark_process_dead, prepare_multiprocess_dir

log = logging.getLogger("router")

WORKER_ENV = "P2L_ROUTER_WORKER_INDEX"  # set in each worker: it serves instead of supervising
STOP_WAIT_S = 180.0  # a worker's graceful stop (grace + flush) must fit in this


def is_worker() -> bool:
    return bool(os.environ.get(WORKER_ENV))


def supervise(argv: Sequence[str], workers: int) -> int:
    """Run ``workers`` copies of ``p2l-router <argv>`` until they stop; their exit status."""
    env = dict(os.environ)
    mp_dir = env.get(MULTIPROC_ENV) or tempfile.mkdtemp(prefix="p2l-router-metrics-")
    prepare_multiprocess_dir(mp_dir)
    env[MULTIPROC_ENV] = mp_dir
    os.environ[MULTIPROC_ENV] = mp_dir  # for mark_process_dead here
    procs: list[subprocess.Popen[bytes]] = []
    for i in range(workers):
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "router", *argv], env={**env, WORKER_ENV: str(i + 1)}
            )
        )
    log.info("supervising %d workers (pids %s)", workers, ", ".join(str(p.pid) for p in procs))
    stopping = False

    def forward(sig: int, _frame: object) -> None:
        nonlocal stopping
        if sig != signal.SIGHUP:
            stopping = True
        for p in procs:
            if p.poll() is None:
                p.send_signal(sig)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    status = 0
    live = list(procs)
    while live:
        time.sleep(0.2)
        for p in list(live):
            code = p.poll()
            if code is None:
                continue
            live.remove(p)
            mark_process_dead(p.pid)
            if not stopping:
                log.error("worker %d exited with %d; stopping the others", p.pid, code)
                status = code or 1
                forward(signal.SIGTERM, None)
            elif code:
                status = status or code
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
