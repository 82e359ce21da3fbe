"""``p2l-router serve`` as a real subprocess on a free port, for tests that need real
signals (SIGHUP reload, SIGTERM shutdown) and a real exit code."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def free_port() -> int:
    from conftest import free_socket

    s = free_socket()
    port = s.getsockname()[1]
    s.close()
    return port


def wait_http_ok(
    url: str,
    proc: subprocess.Popen,
    *,
    what: str,
    timeout: float = 90,
    interval: float = 0.1,
    log: Callable[[], str] = lambda: "",
) -> None:
    """Poll ``url`` until it answers 200; fail at once when ``proc`` exits, or after
    ``timeout`` (a deadline, not an ordering sleep). ``log`` says why, on failure."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{what} exited with {proc.returncode}: {log()}"
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(interval)
    raise AssertionError(f"{what} never answered {url}: {log()}")


class RouterProcess:
    def __init__(
        self,
        tmp: Path,
        *,
        checkpoint: Path,
        providers: Path,
        policies: Path,
        env: dict[str, str],
        extra: tuple[str, ...] = (),
        ledger: str | None = None,
        program: Sequence[str] = (sys.executable, "-m", "router"),
        cwd: Path = REPO,
    ) -> None:
        """``ledger``: a ledger URL (routers sharing one); by default ``tmp/ledger.db``.
        ``program``/``cwd``: what runs the CLI, and where (another venv's ``p2l-router``,
        outside the checkout so that its own installed package is imported)."""
        self.tmp = tmp
        self.port = free_port()
        self.root = f"http://127.0.0.1:{self.port}"
        self.ledger_path = tmp / "ledger.db"
        self.ledger_url = ledger or f"sqlite:///{self.ledger_path}"
        self.decision_log = tmp / "decisions.jsonl"
        self.err_log = tmp / "stderr.log"
        args = [
            *program,
            "serve",
            "--port",
            str(self.port),
            "--providers",
            str(providers),
            "--policies",
            str(policies),
            "--p2l-model",
            str(checkpoint),
            "--device",
            "cpu",
            "--ledger",
            self.ledger_url,
            "--decision-log",
            str(self.decision_log),
            *extra,
        ]
        self.proc = subprocess.Popen(
            args,
            cwd=cwd,
            env={**ENV, **env},
            stdout=subprocess.DEVNULL,
            stderr=self.err_log.open("w"),
        )

    def wait_ready(self, timeout: float = 90) -> RouterProcess:
        wait_http_ok(
            self.root + "/readyz", self.proc, what="the router", timeout=timeout,
            log=self.err_log.read_text,
        )  # fmt: skip
        return self

    def wait_log(self, text: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.err_log.read_text():
            assert time.monotonic() < deadline, f"{text!r} never appeared in the router's log"
            time.sleep(0.05)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def decisions(self) -> list[dict[str, Any]]:
        if not self.decision_log.exists():
            return []
        return [json.loads(ln) for ln in self.decision_log.read_text().splitlines() if ln]

    def ledger_spent(self, team: str) -> float:
        from router.ledger import create_ledger

        async def read() -> float:
            ledger = create_ledger(self.ledger_url)
            try:
                return await ledger.total_spent(team)
            finally:
                await ledger.close()

        return asyncio.run(read())
