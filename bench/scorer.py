"""Scorer throughput and latency: batched vs one-by-one, at several concurrency levels.

Closed loop: ``concurrency`` asyncio tasks each score prompts back to back through one
ScoringEngine (cache off, every prompt distinct). "one-by-one" is the same engine with
``max_batch_size=1``. Two models, both random weights, no download:

- tiny:  the tiny P2L checkpoint of the test-suite (write_tiny_checkpoint + load_p2l);
- 0.5b:  a Qwen2 of Qwen2.5-0.5B's shape (24 layers, hidden 896, 14 heads, 2 KV heads,
         MLP 4864) built from a config on CPU, with a 64-model GRK head.

    python bench/scorer.py [--quick] [--only tiny|0.5b] [--threads N]

Each setting runs ``--repeat`` times, modes alternating, and the best run is kept: on a
shared machine the other load only ever slows a run down. Goal: batched >= 4x
one-by-one prompts/s at concurrency 32.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from router.scoring import P2LModel, ScoringEngine, load_p2l, write_tiny_checkpoint  # noqa: E402

WORDS = [
    "write",
    "explain",
    "code",
    "python",
    "poem",
    "sea",
    "list",
    "compare",
    "why",
    "how",
    "what",
    "function",
    "data",
    "model",
    "answer",
    "short",
    "long",
    "story",
    "history",
    "science",
    "question",
    "table",
    "sort",
    "budget",
    "price",
    "quality",
    "router",
    "prompt",
    "token",
    "cache",
    "batch",
    "latency",
    "network",
    "server",
    "client",
    "error",
    "retry",
]


@dataclass
class Result:
    model: str
    mode: str
    concurrency: int
    prompts: int
    seconds: float
    p50_ms: float
    p99_ms: float
    avg_batch: float

    @property
    def rate(self) -> float:
        return self.prompts / self.seconds


def make_prompts(n: int, words: tuple[int, int], seed: int) -> list[list[dict]]:
    rng = random.Random(seed)
    return [
        [
            {
                "role": "user",
                "content": f"#{i} "
                + " ".join(rng.choice(WORDS) for _ in range(rng.randint(*words))),
            }
        ]
        for i in range(n)
    ]


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))]


_OVERHEAD: dict[int, int] = {}  # calibrated forward cost per model, measured once


async def run_level(
    model: P2LModel, name: str, prompts: list[list[dict]], concurrency: int, batched: bool
) -> Result:
    engine = ScoringEngine(
        model,
        max_batch_size=32 if batched else 1,
        max_batch_tokens=32 * 512,
        max_wait_ms=2.0,
        max_queue=4096,
        cache_size=0,
    )
    known = _OVERHEAD.get(id(model))
    await engine.warmup(calibrate=known is None)
    if known is None:
        _OVERHEAD[id(model)] = engine.forward_overhead_tokens
        print(f"  {name}: one forward costs as much as {engine.forward_overhead_tokens} tokens")
    else:
        engine.forward_overhead_tokens = known
    latencies: list[float] = []
    queue = iter(prompts)

    async def client() -> None:
        for messages in queue:
            t0 = time.perf_counter()
            await engine.score(messages)
            latencies.append((time.perf_counter() - t0) * 1000)

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    seconds = time.perf_counter() - start
    stats = engine.stats()
    await engine.close()
    return Result(
        model=name,
        mode="batched" if batched else "one-by-one",
        concurrency=concurrency,
        prompts=len(prompts),
        seconds=seconds,
        p50_ms=statistics.median(latencies),
        p99_ms=percentile(latencies, 0.99),
        avg_batch=float(stats["avg_batch_size"]),
    )


def random_qwen2_05b(tokenizer_dir: Path, num_models: int = 64) -> P2LModel:
    """A Qwen2.5-0.5B-shaped P2L model with random weights, built in memory on CPU."""
    from transformers import AutoTokenizer, Qwen2Config

    from router.scoring.tiny import random_network

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokenizer.truncation_side, tokenizer.padding_side = "left", "right"
    config = Qwen2Config(
        vocab_size=len(tokenizer),  # a real Qwen2 vocab (151936) changes only the lookup table
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        tie_word_embeddings=False,
    )
    return P2LModel(
        network=random_network(config, num_models),
        tokenizer=tokenizer,
        model_list=[f"model-{i:02d}" for i in range(num_models)],
        head_type="grk",
        max_length=8192,
        source="random-qwen2-0.5b-shape",
    )


def print_table(results: list[Result]) -> None:
    print(
        f"{'model':<6} {'conc':>5} {'mode':<11} {'prompts':>7} {'prompts/s':>10} "
        f"{'P50 ms':>9} {'P99 ms':>9} {'avg batch':>9}"
    )
    for r in results:
        print(
            f"{r.model:<6} {r.concurrency:>5} {r.mode:<11} {r.prompts:>7} {r.rate:>10.1f} "
            f"{r.p50_ms:>9.1f} {r.p99_ms:>9.1f} {r.avg_batch:>9.1f}"
        )
    print()
    by_key = {(r.model, r.concurrency, r.mode): r for r in results}
    for (name, conc, mode), r in by_key.items():
        if mode != "batched" or (name, conc, "one-by-one") not in by_key:
            continue
        one = by_key[name, conc, "one-by-one"]
        print(f"{name} concurrency {conc}: batched / one-by-one = {r.rate / one.rate:.1f}x")


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer prompts, 0.5b at 1 and 8 only")
    parser.add_argument("--only", choices=["tiny", "0.5b"], help="run one model only")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per setting; best is kept")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # random small weights make denormals; real weights rarely
    load = os.getloadavg()[0]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, load {load:.1f}\n")

    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_tiny_checkpoint(Path(tmp) / "tiny", [f"model-{i:02d}" for i in range(64)])
        plan: list[tuple[str, P2LModel, list[int], int, tuple[int, int]]] = []
        if args.only in (None, "tiny"):
            tiny = load_p2l(str(folder), device="cpu")
            per_level = 128 if args.quick else 512
            plan.append(("tiny", tiny, [1, 8, 32, 128], per_level, (5, 60)))
        if args.only in (None, "0.5b"):
            t0 = time.perf_counter()
            big = random_qwen2_05b(folder)
            print(f"built the 0.5b-shape model in {time.perf_counter() - t0:.1f}s")
            levels = [1, 8] if args.quick else [1, 8, 32]
            plan.append(("0.5b", big, levels, 0, (10, 24)))
        for name, model, levels, per_level, words in plan:
            for conc in levels:
                n = per_level if per_level else max(4, 2 * conc)  # 0.5b: two per client
                prompts = make_prompts(n, words, seed=conc)
                best: dict[bool, Result] = {}
                for _ in range(args.repeat):  # alternate modes; keep the best of each
                    for batched in (True, False):
                        r = await run_level(model, name, prompts, conc, batched)
                        print(
                            f"  {name} c={conc:<3} {r.mode:<10} {r.rate:8.1f} prompts/s  "
                            f"P50 {r.p50_ms:.1f} ms  P99 {r.p99_ms:.1f} ms",
                            flush=True,
                        )
                        if batched not in best or r.rate > best[batched].rate:
                            best[batched] = r
                results += [best[True], best[False]]
    print()
    print_table(results)


if __name__ == "__main__":
    asyncio.run(main())
