#!/usr/bin/env bash
# GPU check of the P2L scorer, one short run (about 2-3 minutes on one H100/H200):
#   1. the tiny checkpoint on CUDA (fp32 and bf16) against CPU fp32: same coefs;
#   2. a random-weight Qwen2-7B-shape P2L model (28 layers, hidden 3584, GQA 28/4,
#      MLP 18944, 130-model GRK head) built directly on the GPU in bf16, no download:
#      P50/P99 latency of a 512-token prompt at concurrency 1 through ScoringEngine,
#      batched prompts/s at concurrency 64, and MFU = 2 x params x tokens / time / 790e12.
#
#   bash bench/gpu_check.sh              # on the GPU machine, from the repository root
#   bash bench/gpu_check.sh --cpu-smoke  # same code path on CPU with a small shape (CI)
#   COMPILE=1 bash bench/gpu_check.sh    # also time the torch.compile'd backbone
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

exec "$PY" - "$@" <<'EOF'
import asyncio, os, statistics, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, os.getcwd())
import numpy as np
import torch

from router.scoring import P2LModel, ScoringEngine, load_p2l, write_tiny_checkpoint

SMOKE = "--cpu-smoke" in sys.argv
PEAK_FLOPS = 790e12  # dense bf16 figure this project uses for MFU
if not SMOKE and not torch.cuda.is_available():
    sys.exit("no CUDA device visible to torch; run with --cpu-smoke to test the script on CPU")
DEV = torch.device("cpu" if SMOKE else "cuda")
DT = torch.float32 if SMOKE else torch.bfloat16
print(f"torch {torch.__version__}, device {torch.cuda.get_device_name() if not SMOKE else 'cpu (smoke)'}")


def sync():
    if DEV.type == "cuda":
        torch.cuda.synchronize()


# 1. tiny checkpoint: CUDA vs CPU --------------------------------------------------------------
tmp = Path(tempfile.mkdtemp())
names = [f"model-{i:03d}" for i in range(130)]
tiny = write_tiny_checkpoint(tmp / "tiny", names, head="grk")
prompts = [[{"role": "user", "content": f"prompt {i}: " + "explain the sea " * (i * 7 % 40)}] for i in range(16)]
cpu = load_p2l(str(tiny), device="cpu")
ref, ref_eta = cpu.forward([cpu.render(p) for p in prompts])
for dtype, tol in (("float32", 1e-4), ("bfloat16", 0.1)):
    m = load_p2l(str(tiny), device=str(DEV), dtype=dtype)
    c, e = m.forward([m.render(p) for p in prompts])
    d = float(np.max(np.abs(c - ref)))
    print(f"tiny on {m.device} {dtype}: max |dbeta| vs CPU fp32 = {d:.2e} (ok <= {tol}) "
          f"{'OK' if d <= tol else 'FAIL'}")
    assert d <= tol, "coefs differ between devices"

# 2. Qwen2-7B-shape P2L model, random weights, built on the device --------------------------------
from transformers import AutoTokenizer, Qwen2Config

from router.scoring.tiny import random_network

if SMOKE:
    shape = dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=2,
                 num_attention_heads=8, num_key_value_heads=2, vocab_size=152064)
else:
    shape = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                 num_attention_heads=28, num_key_value_heads=4, vocab_size=152064)
config = Qwen2Config(**shape, max_position_embeddings=32768, rope_theta=1e6,
                     tie_word_embeddings=False)
t0 = time.perf_counter()
network = random_network(config, len(names), device=DEV, dtype=DT)
sync()
tokenizer = AutoTokenizer.from_pretrained(tiny)  # the tiny vocab: ids < 512 fit any embedding
tokenizer.truncation_side, tokenizer.padding_side = "left", "right"
embed = network.model.embed_tokens.weight.numel()
params = sum(p.numel() for p in network.parameters())
flop_params = params - embed  # the embedding is a lookup, no matmul
print(f"{'small smoke' if SMOKE else '7B'}-shape model built on {DEV} in {time.perf_counter() - t0:.1f}s: "
      f"{params / 1e9:.2f}B params ({flop_params / 1e9:.2f}B excluding the embedding)")

compile_modes = [False, True] if os.environ.get("COMPILE") == "1" else [False]
for compiled in compile_modes:
    model = P2LModel(network=network, tokenizer=tokenizer, model_list=names, head_type="grk",
                     max_length=8192, source="random-qwen2-7b-shape", compile=compiled)
    tag = "compiled" if compiled else "eager"

    # a 512-token prompt (scorer input: template + user text + CLS)
    base = " ".join(f"word{i % 97} sea wind" for i in range(2000))
    lo, hi = 1, len(base)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        n = len(model.encode([model.render([{"role": "user", "content": base[:mid]}])])[0][0])
        lo, hi = (mid, hi) if n <= 512 else (lo, mid - 1)
    def prompt_n(i: int):  # same length, different text (no cache hits)
        text = base[:lo]
        return [{"role": "user", "content": f"{i % 10}" + text[1:]}]
    ntok = len(model.encode([model.render(prompt_n(0))])[0][0])

    # raw forward: one prompt, and a 32 x 512 batch
    ids1 = model.encode([model.render(prompt_n(0))])[0]
    ids32 = model.encode([model.render(prompt_n(i)) for i in range(32)])[0]
    for _ in range(3):
        model.forward_ids(ids1); model.forward_ids(ids32)
    def timed(ids, reps):
        ts = []
        for _ in range(reps):
            sync(); t = time.perf_counter(); model.forward_ids(ids); sync()
            ts.append(time.perf_counter() - t)
        return statistics.median(ts)
    t1, t32 = timed(ids1, 10), timed(ids32, 5)
    tok32 = sum(len(r) for r in ids32)
    print(f"[{tag}] raw forward, {ntok} tokens: 1 prompt {t1 * 1000:.1f} ms "
          f"(MFU {2 * flop_params * len(ids1[0]) / t1 / PEAK_FLOPS:.1%}); "
          f"32 prompts {t32 * 1000:.1f} ms = {32 / t32:.0f} prompts/s "
          f"(MFU {2 * flop_params * tok32 / t32 / PEAK_FLOPS:.1%}, "
          f"{2 * params * tok32 / t32 / PEAK_FLOPS:.1%} counting the embedding)")

    async def engine_run():
        engine = ScoringEngine(model, max_batch_size=64, max_batch_tokens=64 * 520,
                               max_queue=4096, cache_size=0)
        await engine.warmup()
        lat = []
        for i in range(30 if not SMOKE else 5):
            s = await engine.score(prompt_n(i))
            lat.append(s.scoring_ms)
        print(f"[{tag}] engine, concurrency 1, {ntok}-token prompt: P50 {statistics.median(lat):.1f} ms, "
              f"P99 {max(lat):.1f} ms (over {len(lat)}), overhead tokens "
              f"{engine.stats()['forward_overhead_tokens']}")
        total, conc = (512, 64) if not SMOKE else (32, 8)
        todo = iter(range(total))
        async def client():
            for i in todo:
                await engine.score(prompt_n(1000 + i))
        sync(); t = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(conc)))
        sync(); dt = time.perf_counter() - t
        st = engine.stats()
        print(f"[{tag}] engine, concurrency {conc}, {total} prompts of {ntok} tokens: "
              f"{total / dt:.1f} prompts/s, {total * ntok / dt:.0f} tokens/s, "
              f"MFU {2 * flop_params * total * ntok / dt / PEAK_FLOPS:.1%} "
              f"(avg forward batch {st['avg_batch_size']:.1f})")
        await engine.close()

    asyncio.run(engine_run())

if DEV.type == "cuda":
    print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
print("gpu_check done")
EOF
