"""``serve --workers N``'s supervisor (router/api/workers.py) with real processes: a
worker killed with SIGKILL is started again while the other keeps answering, SIGTERM
still stops everything cleanly, and a worker that keeps dying stops the supervisor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest
from conftest import write_config
from router_process import REPO, RouterProcess

from router.api.workers import RestartPolicy, exit_status


def listening_workers(supervisor: psutil.Process, port: int) -> set[int]:
    """The supervisor's children that listen on ``port`` (they serve it)."""
    out = set()
    for child in supervisor.children():
        try:
            conns = getattr(child, "net_connections", child.connections)(kind="tcp")
        except psutil.NoSuchProcess:
            continue
        if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in conns):
            out.add(child.pid)
    return out


def wait_workers(
    proc: RouterProcess, want: int, *, besides: frozenset[int] = frozenset()
) -> set[int]:
    """Wait until ``want`` workers (not in ``besides``) listen; their pids."""
    supervisor = psutil.Process(proc.proc.pid)
    deadline = time.monotonic() + 90
    while len(pids := listening_workers(supervisor, proc.port) - besides) < want:
        assert proc.proc.poll() is None, f"the supervisor exited with {proc.proc.returncode}"
        assert time.monotonic() < deadline, f"{want} worker(s) never listened: {pids}"
        time.sleep(0.1)
    return pids


@pytest.mark.timeout(300)  # three router processes start, each loading torch
def dead_at(pid: int, timeout: float = 10.0) -> float:
    """When process ``pid`` has exited (gone, or a zombie: its files are closed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.002)
    else:
        raise AssertionError(f"pid {pid} did not exit within {timeout} s")
    return time.perf_counter()


def test_a_killed_worker_is_restarted_while_the_other_serves(tmp_path, tiny_checkpoint, fake):
    providers, policies, env = write_config(tmp_path, fake.base_url)
    proc = RouterProcess(
        tmp_path,
        checkpoint=tiny_checkpoint,
        providers=providers,
        policies=policies,
        env=env,
        extra=("--workers", "2", "--force"),
    )
    polls: list[tuple[float, float, bool]] = []  # (sent at, answered or failed at, 200)
    stop = threading.Event()

    def poll() -> None:  # a new connection each time: the kernel spreads them
        while not stop.is_set():
            sent = time.perf_counter()
            try:
                ok = httpx.get(proc.root + "/healthz", timeout=30).status_code == 200
            except httpx.TransportError:
                ok = False
            polls.append((sent, time.perf_counter(), ok))

    poller = threading.Thread(target=poll, daemon=True)
    try:
        proc.wait_ready()
        supervisor = psutil.Process(proc.proc.pid)
        first = wait_workers(proc, 2)
        poller.start()
        while not any(ok for _, _, ok in polls):
            time.sleep(0.01)
        victim, survivor = sorted(first)
        os.kill(victim, signal.SIGKILL)
        gone = dead_at(victim)  # its listening socket closed with it
        (new,) = wait_workers(proc, 1, besides=frozenset(first))
        listening = time.perf_counter()
        stop.set()
        poller.join(60)
        assert psutil.pid_exists(survivor) and survivor in {c.pid for c in supervisor.children()}
        # Only a poll sent while the dying worker's socket was still open may fail (the
        # kernel may have handed it that socket); every poll sent after it was gone was
        # answered, before the new worker listened as after.
        after = [(answered, ok) for sent, answered, ok in polls if sent > gone]
        assert after and all(ok for _, ok in after), after
        assert any(t < listening for t, _ in after)
        log = proc.err_log.read_text()
        assert f"(pid {victim}) exited with -9; restarting it in" in log
        assert f"restarted (pid {new})" in log
    finally:
        stop.set()
        proc.signal(signal.SIGTERM)
        assert proc.wait_exit(60) == 0
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                   for p in (survivor, new))  # fmt: skip


def test_a_worker_that_keeps_dying_stops_the_supervisor(tmp_path: Path) -> None:
    """Workers that exit at once (an unknown command: status 2) are restarted ``limit``
    times, then the supervisor stops and exits with the worker's status."""
    code = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "from router.api.workers import RestartPolicy, supervise\n"
        "policy = RestartPolicy(limit=3, window_s=600, backoff_s=0.05)\n"
        "sys.exit(supervise(['no-such-command'], 2, restarts=policy))\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("restarting it in") == 3, out.stderr
    assert "after 3 restarts within 600 s: giving up, stopping all workers" in out.stderr


@pytest.mark.parametrize(
    ("recent", "delay"), [(0, 0.5), (1, 1.0), (2, 2.0), (4, 8.0), (5, 10.0), (30, 10.0)]
)
def test_backoff_doubles_up_to_its_cap(recent: int, delay: float) -> None:
    assert RestartPolicy().delay(recent) == delay


@pytest.mark.parametrize(("code", "status"), [(-9, 137), (-15, 143), (0, 1), (1, 1), (3, 3)])
def test_exit_status_is_what_a_shell_reports(code: int, status: int) -> None:
    assert exit_status(code) == status
