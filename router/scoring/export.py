"""``p2l-router export-backbone SRC OUT``: a P2L checkpoint as a folder vLLM serves.

vLLM refuses weights it does not know and loads every top-level ``*.safetensors``, so a
P2L checkpoint (backbone + ``head.*``) cannot be served as it is. The export writes the
backbone as a plain ``Qwen2ForCausalLM`` / ``LlamaForCausalLM`` folder (``model.*`` keys,
which vLLM's pooling adapter maps onto the inner model; there is no ``lm_head`` and the
adapter drops it), copies the tokenizer, and keeps the P2L parts under ``p2l/`` (see
:mod:`router.scoring.exported`), with a probe computed here with the original checkpoint
in float32: the router compares the engine's answers with it before it takes traffic.

Tensors are copied one source shard at a time, so a 7B checkpoint needs about one shard
of memory beyond the float32 probe model.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from router.scoring.checkpoint import load_p2l, local_folder
from router.scoring.exported import EXPORT_FORMAT, HEAD_FILE, META_FILE, P2L_DIR
from router.scoring.types import ModelLoadError

log = logging.getLogger("router.scoring")

ARCHITECTURES = {"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM"}
_NOT_COPIED = {"config.json", "model_list.json", "training_config.json", "README.md"}
LONG_PROMPT_LINE = "Line {i}: the router reads every token of this line, then the next one. "


def probe_prompts(count_tokens: Any, max_length: int) -> list[tuple[str, list[dict[str, Any]]]]:
    """Fixed prompts covering what the input rules do: one turn, several turns with
    system/assistant turns dropped, content parts, a literal CLS, and one longer than
    ``max_length`` (left truncation)."""
    lines: list[str] = []
    while count_tokens("".join(lines)) <= max_length + 64:
        lines += [LONG_PROMPT_LINE.format(i=i) for i in range(len(lines), 2 * len(lines) + 64)]
    return [
        ("single", [{"role": "user", "content": "What is the capital of France? One word."}]),
        (
            "multi-turn",
            [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Write a haiku about autumn."},
                {"role": "assistant", "content": "Leaves fall, rain hums low."},
                {"role": "user", "content": "Now one about the sea, in Spanish."},
            ],
        ),
        (
            "content-parts",
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Explain this SQL:"},
                        {"type": "text", "text": "SELECT name FROM t WHERE price > 100;"},
                    ],
                }
            ],
        ),
        ("cls-literal", [{"role": "user", "content": "What does <|cls|> mean in P2L?"}]),
        ("long", [{"role": "user", "content": "".join(lines)}]),
    ]


def _weight_files(folder: Path) -> list[str]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return sorted(set(json.loads(index.read_text())["weight_map"].values()))
    if (folder / "model.safetensors").is_file():
        return ["model.safetensors"]
    raise ModelLoadError(f"{folder} has no model.safetensors (or an index of shards)")


def _split_weights(src: Path, out: Path) -> dict[str, torch.Tensor]:
    """Backbone tensors to ``out`` shard by shard (same file names); returns the head's."""
    head: dict[str, torch.Tensor] = {}
    weight_map: dict[str, str] = {}
    files = _weight_files(src)
    for name in files:
        backbone: dict[str, torch.Tensor] = {}
        with safe_open(str(src / name), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                if key.startswith("head."):
                    head[key] = f.get_tensor(key).to(torch.float32).contiguous()
                elif key.startswith("model."):
                    backbone[key] = f.get_tensor(key).contiguous()
                    weight_map[key] = name
                # anything else (lm_head, rotary buffers) is not part of a P2L backbone
        if backbone:
            save_file(backbone, str(out / name), metadata={"format": "pt"})
        del backbone
    if len(files) > 1:
        index = {"metadata": {}, "weight_map": dict(sorted(weight_map.items()))}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    if "head.head.weight" not in head:
        raise ModelLoadError(f"{src} has no head.head.weight: is it a P2L checkpoint?")
    return head


def export_backbone(
    src: str, out: str | Path, *, device: str = "cpu", max_length: int = 8192, force: bool = False
) -> Path:
    """Write ``out`` from the P2L checkpoint ``src`` (hub id or folder); returns ``out``."""
    folder = local_folder(src)
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise ModelLoadError(f"{out} exists and is not empty (pass --force to overwrite)")
    out.mkdir(parents=True, exist_ok=True)
    (out / P2L_DIR).mkdir(exist_ok=True)

    config = json.loads((folder / "config.json").read_text())
    arch = ARCHITECTURES.get(config.get("model_type", ""))
    if arch is None:
        raise ModelLoadError(
            f"backbone {config.get('model_type')!r} cannot be exported (supported: "
            f"{', '.join(ARCHITECTURES)})"
        )
    config = {k: v for k, v in config.items() if not k.startswith("p2l_")}
    config["architectures"] = [arch]
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for item in folder.iterdir():
        if item.is_file() and item.name not in _NOT_COPIED and ".safetensors" not in item.name:
            shutil.copy2(item, out / item.name)  # tokenizer files, chat template
    for name in ("model_list.json", "training_config.json"):
        if (folder / name).is_file():
            shutil.copy2(folder / name, out / P2L_DIR / name)
    head = _split_weights(folder, out)
    save_file(head, str(out / P2L_DIR / HEAD_FILE), metadata={"format": "pt"})

    model = load_p2l(str(folder), device=device, dtype="float32", max_length=max_length)
    probe = []
    for name, messages in probe_prompts(model.count_tokens, max_length):
        ids = model.encode([model.render(messages)])[0]
        coefs, eta = model.forward_ids(ids)
        probe.append(
            {
                "name": name,
                "messages": messages,
                "ids": ids[0],
                "coefs": coefs[0].tolist(),
                "eta": None if eta is None else float(eta[0]),
            }
        )
    meta = {
        "format": EXPORT_FORMAT,
        "source": src,
        "backbone": config["model_type"],
        "architecture": arch,
        "head": model.head,
        "hidden_size": int(config["hidden_size"]),
        "num_models": len(model.model_list),
        "max_length": max_length,
        "probe_dtype": "float32",
        "probe": probe,
    }
    (out / P2L_DIR / META_FILE).write_text(json.dumps(meta) + "\n")
    log.info("exported %s to %s (%s, %d probe prompts)", src, out, arch, len(probe))
    return out
