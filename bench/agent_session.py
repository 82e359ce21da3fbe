"""One simulated agent session priced three ways: what the provider bills, what the
router charges now (token classes), and what the old two-number arithmetic charged
(``prompt_tokens x input + completion_tokens x output``).

    python bench/agent_session.py                 # 20 turns, both providers
    python bench/agent_session.py --turns 40

The session: a system prompt and tool definitions, then per turn a user message, a tool
result and the assistant's answer, so the context grows every turn. The prompt caches
are the fake providers' (tests/fake_billing.py, the rules the ledger==invoice tests
use): Anthropic caches up to a ``cache_control`` breakpoint on the last message (5-minute
writes, reads of the prefix written before), OpenAI caches every prefix of at least 1,024
tokens by itself. Prices are the shipped providers.yaml's. The provider's bill is the
fake's invoice line; the router's charge is ``ModelConfig.cost_usd`` over the classes the
provider reports. No network, no router process: the arithmetic is the subject.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from fake_billing import Block, Line, PrefixCache  # noqa: E402

from router.config import load_providers  # noqa: E402

SYSTEM, TOOLS = 2_500, 1_200  # tokens
USER, TOOL_RESULT, ANSWER = 150, 1_800, 450  # tokens added per turn
MODELS = {"anthropic": "claude-3-5-sonnet-20241022", "openai": "gpt-4o-2024-08-06"}


def session(turns: int) -> list[list[Block]]:
    """The prompt of each turn as cache blocks (the last one marked as a breakpoint)."""
    blocks = [Block("tools", TOOLS), Block("system", SYSTEM)]
    prompts = []
    for t in range(turns):
        blocks = blocks + [Block(f"user {t}", USER), Block(f"tool {t}", TOOL_RESULT)]
        prompts.append(blocks[:-1] + [Block(blocks[-1].key, blocks[-1].tokens, "5m")])
        blocks = blocks + [Block(f"answer {t}", ANSWER)]
    return prompts


def line_for(provider: str, model: str, cache: PrefixCache, blocks: list[Block]) -> Line:
    total = sum(b.tokens for b in blocks)
    if provider == "anthropic":
        use = cache.explicit(model, blocks)
        uncached = total - use.read - use.write_5m - use.write_1h
        return Line(provider, model, uncached, use.read, use.write_5m, use.write_1h, ANSWER)
    read, _ = cache.automatic(model, [Block(b.key, b.tokens) for b in blocks])
    return Line(provider, model, total - read, read, output=ANSWER)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--turns", type=int, default=20)
    a = ap.parse_args()
    catalog = load_providers(REPO / "providers.yaml", env={})
    for provider, name in MODELS.items():
        cfg = catalog.models[name]
        table = {
            name: {
                "input": cfg.input_usd_per_mtok,
                "output": cfg.output_usd_per_mtok,
                **({"cached_input": cfg.cached_input_usd_per_mtok}
                   if cfg.cached_input_usd_per_mtok is not None else {}),
                **({"cache_write": cfg.cache_write_usd_per_mtok}
                   if cfg.cache_write_usd_per_mtok is not None else {}),
            }
        }  # fmt: skip
        cache = PrefixCache(clock=lambda: 0.0)  # the session is faster than any ttl
        print(f"\n{provider}: {name} (input ${cfg.input_usd_per_mtok}/M, cached "
              f"${cfg.cached_input_usd_per_mtok}/M, write ${cfg.cache_write_usd_per_mtok}/M, "
              f"output ${cfg.output_usd_per_mtok}/M)")  # fmt: skip
        head = (f"{'turn':>4} {'prompt':>7} {'read':>7} {'write':>6} {'billed $':>10} "
                f"{'router $':>10} {'old $':>10} {'old err':>8}")  # fmt: skip
        print(head + "\n" + "-" * len(head))
        sums = [0.0, 0.0, 0.0]
        for t, blocks in enumerate(session(a.turns), 1):
            ln = line_for(provider, name, cache, blocks)
            billed = ln.cost(table)
            router = cfg.cost_usd(ln.prompt, ln.output, cache_read=ln.cache_read,
                                  cache_write=ln.cache_write_5m)  # fmt: skip
            old = (ln.prompt * cfg.input_usd_per_mtok + ln.output * cfg.output_usd_per_mtok) / 1e6
            for i, v in enumerate((billed, router, old)):
                sums[i] += v
            print(f"{t:>4} {ln.prompt:>7} {ln.cache_read:>7} {ln.cache_write_5m:>6} "
                  f"{billed:>10.6f} {router:>10.6f} {old:>10.6f} {old / billed - 1:>+8.1%}")  # fmt: skip
        b, r, o = sums
        print(f"session: billed ${b:.6f}, router ${r:.6f} (error {r - b:+.2e}), "
              f"old arithmetic ${o:.6f} ({o / b - 1:+.1%}, ${o - b:+.6f})")  # fmt: skip


if __name__ == "__main__":
    main()
