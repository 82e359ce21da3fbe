"""A tiny random P2L checkpoint in the real on-disk format, for tests and the offline demo.

It is what ``load_p2l`` reads from a published checkpoint, only small: config.json
(Qwen2 or Llama), a byte-level BPE tokenizer with ``<|cls|>`` and the chatml template,
model_list.json, training_config.json (RK/GRK) and model.safetensors with ``model.*``,
``head.head.*`` and ``head.eta_head.*``. Its scores are random, not a leaderboard.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

# The chatml template of Qwen2 reduced to what P2L feeds it: one user turn renders as
# "<|im_start|>user\nhi!<|im_end|>\n".
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Qwen2's pre-tokenizer split pattern (tokenizer.json of Qwen2.5).
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|cls|>", "<|pad|>")
_VOCAB_SIZE = 512

_CORPUS = (
    "Write a short poem about the sea and the wind at night.",
    "Explain how a hash table works, with an example in Python.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "What is the capital of France? Answer in one word.",
    "Summarise the following article in three bullet points.",
    "Translate 'good morning, how are you?' into Spanish and German.",
    "Solve for x: 3x + 7 = 22. Show each step.",
    "SELECT name, price FROM products WHERE price > 100 ORDER BY price DESC;",
    "Give me 5 ideas for a birthday party for a ten-year-old.",
    "The quick brown fox jumps over the lazy dog 1234567890 times!",
    "Is it better to rent or to buy a house? List the pros and cons.",
    "Write a haiku about autumn leaves falling in the rain.",
    "How do I fix 'ModuleNotFoundError: No module named numpy'?",
    "Compare the sorting algorithms quicksort, mergesort and heapsort.",
    "hi! hello there, can you help me with my homework today?",
)


def _byte_level_tokenizer(backbone: str):
    """A trained byte-level BPE: Qwen2's pipeline for qwen2, GPT-2's (SmolLM2) for llama."""
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    if backbone == "qwen2":
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=_VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(_CORPUS) * 4, trainer)
    return tok


def write_tokenizer(path: Path, backbone: str = "qwen2") -> int:
    """Save the tiny tokenizer with ``save_pretrained``; returns its vocabulary size."""
    from transformers import PreTrainedTokenizerFast

    tok = _byte_level_tokenizer(backbone)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>" if backbone == "llama" else "<|endoftext|>",
        pad_token="<|pad|>" if backbone == "llama" else "<|endoftext|>",
        cls_token="<|cls|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )
    hf.save_pretrained(str(path))
    cfg_path = path / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    # Qwen2Tokenizer rebuilds exactly this pipeline; llama-size P2L uses a GPT-2 style one.
    cfg["tokenizer_class"] = "Qwen2Tokenizer" if backbone == "qwen2" else "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    return len(hf)


def _config(backbone: str, vocab_size: int, hidden_size: int, num_layers: int):
    from transformers import LlamaConfig, Qwen2Config

    common = {
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 32768,
        "tie_word_embeddings": False,
        "rms_norm_eps": 1e-6,
    }
    if backbone == "qwen2":
        return Qwen2Config(**common)
    if backbone == "llama":
        return LlamaConfig(**common)
    raise ValueError(f"backbone must be 'qwen2' or 'llama', not {backbone!r}")


def write_tiny_checkpoint(
    path: str | Path,
    models: Sequence[str],
    *,
    backbone: str = "qwen2",
    head: str = "grk",
    hidden_size: int = 64,
    num_layers: int = 2,
    seed: int = 0,
) -> Path:
    """Write a random P2L checkpoint that ``load_p2l(path)`` loads; returns the folder."""
    from safetensors.torch import save_file
    from transformers import AutoModel

    if head not in ("bt", "rk", "grk"):
        raise ValueError(f"head must be bt, rk or grk, not {head!r}")
    names = sorted(models)
    if not names or len(set(names)) != len(names):
        raise ValueError("models must be a non-empty list of distinct names")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)

    vocab_size = write_tokenizer(path, backbone)
    config = _config(backbone, vocab_size, hidden_size, num_layers)
    config.save_pretrained(str(path))
    (path / "model_list.json").write_text(json.dumps(names, indent=1) + "\n")
    if head != "bt":
        loss = {"grk": "bag", "rk": "rk"}[head]
        training = {"model_type": backbone, "head_type": "rk", "loss_type": loss}
        (path / "training_config.json").write_text(json.dumps(training, indent=2) + "\n")

    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone_model = AutoModel.from_config(config, dtype=torch.float32)
    tensors = {f"model.{k}": v.contiguous() for k, v in backbone_model.state_dict().items()}
    scale = hidden_size**-0.5
    tensors["head.head.weight"] = torch.randn(len(names), hidden_size, generator=gen) * scale
    tensors["head.head.bias"] = torch.randn(len(names), generator=gen) * 0.1
    if head != "bt":
        tensors["head.eta_head.weight"] = torch.randn(1, hidden_size, generator=gen) * scale
        tensors["head.eta_head.bias"] = torch.zeros(1)
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path


def random_network(
    config,  # type: ignore[no-untyped-def]
    num_models: int,
    *,
    eta_head: bool = True,
    cls_token_id: int | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
):
    """A ``P2LForPromptRanking`` of ``config``'s shape with random weights (normal 0.02,
    unit norms, zero biases), allocated straight on ``device`` in ``dtype``: full-size
    shapes for benchmarks, with no checkpoint and no download."""
    from transformers.initialization import no_init_weights

    from router.scoring.modeling import P2LForPromptRanking, annotate_config

    device = torch.device(device)
    annotate_config(config, num_models=num_models, eta_head=eta_head, cls_token_id=cls_token_id)
    config.dtype = dtype  # the backbone is built in the config's dtype
    with device, no_init_weights():
        network = P2LForPromptRanking(config).to(dtype)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in network.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith(".bias"):
                p.zero_()
            else:
                p.normal_(0.0, 0.02, generator=gen)
    return network.eval().requires_grad_(False)
