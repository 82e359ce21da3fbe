"""Per-request cost of the Prometheus recording calls (``record_request`` + ``record_spend``),
single-process and multiprocess (mmap files), in microseconds per request.

    .venv/bin/python bench/metrics_cost.py [--n 200000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import timeit

CODE = """
from router.observability.metrics import RouterMetrics
m = RouterMetrics()
teams = [f"team{i}" for i in range(4)]
models = [f"model{i}" for i in range(8)]
def one(i=[0]):
    i[0] += 1
    t, mo = teams[i[0] % 4], models[i[0] % 8]
    m.record_request(t, mo, 200, 0.0006, 0.002, 0.4, ())
    m.record_spend(t, mo, 0.00012, 120, 40)
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--mode", choices=["single", "multiprocess"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mode:
        ns: dict[str, object] = {}
        exec(CODE, ns)
        ns["one"]()  # label children created outside the timing
        best = min(timeit.repeat("one()", globals=ns, number=args.n, repeat=3))
        print(f"{args.mode:>12}: {best / args.n * 1e6:.2f} us per request")
        return
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryDirectory() as mp:
        for mode, extra in (("single", {}), ("multiprocess", {"PROMETHEUS_MULTIPROC_DIR": mp})):
            env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
            cmd = [sys.executable, __file__, "--mode", mode, "--n", str(args.n)]
            subprocess.run(cmd, env={**env, **extra, "PYTHONPATH": root}, check=True)


if __name__ == "__main__":
    main()
