"""Find, check and load a P2L checkpoint (Hugging Face folder or hub id).

The weights are loaded by transformers' ``from_pretrained`` into
``P2LForPromptRanking`` (modeling.py); what this module adds is what a P2L folder needs
beyond that: the model list, the head type (weights + training_config.json), the
tokenizer's CLS token and chat template, device and dtype defaults, and errors that say
what to do. Third-party failures (hub, safetensors, transformers) become
``ModelLoadError`` here.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from router.scoring.frontend import load_tokenizer
from router.scoring.modeling import P2LForPromptRanking, P2LModel, annotate_config
from router.scoring.types import HEADS, ModelLoadError

log = logging.getLogger("router.scoring")

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}
_SUPPORTED_BACKBONES = ("qwen2", "llama")
_HUB_FILES = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "tokenizer*"]
_NO_MODEL_HINT = (
    "Pass a local checkpoint folder with --p2l-model DIR (or P2L_ROUTER_P2L_MODEL), "
    "or run `p2l-router demo`, which needs no download."
)
_GRK_LOSSES = ("bag", "grk", "tie-bag", "tie-bb-bag")
_RK_LOSSES = ("rk", "tie-rk")
HEAD_KEYS = ("head.head.weight", "head.head.bias", "head.eta_head.weight", "head.eta_head.bias")


def resolve_head(
    has_eta: bool, training_config: dict[str, Any] | None, override: str | None
) -> str:
    """Which outcome model the head was trained for (docs/DESIGN.md, "P2L facts the
    scorer must reproduce": "Head type")."""
    if override is not None:
        if override not in HEADS:
            raise ModelLoadError(f"unknown P2L head {override!r}; expected one of {HEADS}")
        if override != "bt" and not has_eta:
            raise ModelLoadError(
                f"head {override!r} needs head.eta_head weights, but this checkpoint has "
                "none (it is a Bradley-Terry checkpoint); use head 'bt'"
            )
        return override
    if not has_eta:
        return "bt"
    if training_config is None:
        return "rk"
    loss = training_config.get("loss_type")
    if loss in _GRK_LOSSES:
        return "grk"
    if loss in _RK_LOSSES or loss is None:
        return "rk"
    raise ModelLoadError(
        f"training_config.json has loss_type {loss!r}, which maps to no known head; "
        "set the head explicitly (--p2l-head rk|grk)"
    )


def _resolve_device(device: str, dtype: str | None) -> tuple[torch.device, torch.dtype]:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ModelLoadError(f"bad device {device!r}: {exc}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(
            "device 'cuda' asked for, but torch sees no CUDA GPU; use --device cpu"
        )
    if dtype is None:
        return dev, torch.bfloat16 if dev.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}; expected one of {sorted(_DTYPES)}")
    return dev, _DTYPES[dtype]


def local_folder(model: str) -> Path:
    """The checkpoint folder: ``model`` itself, or its hub snapshot (download if allowed)."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if path.is_absolute() or model.startswith((".", "~")) or model.count("/") != 1:
        raise ModelLoadError(f"P2L checkpoint folder {model!r} does not exist. {_NO_MODEL_HINT}")
    from huggingface_hub import constants, snapshot_download

    try:
        return Path(snapshot_download(repo_id=model, allow_patterns=_HUB_FILES))
    except Exception as exc:  # hub errors: offline, not cached, gated, no network, 404
        offline = constants.is_offline_mode() or os.environ.get("HF_HUB_OFFLINE", "") in (
            "1",
            "true",
            "TRUE",
        )
        why = "HF_HUB_OFFLINE is set and it is not in the local cache" if offline else str(exc)
        raise ModelLoadError(
            f"could not get the P2L checkpoint {model!r} from the Hugging Face hub ({why}). "
            f"{_NO_MODEL_HINT}"
        ) from exc


def _weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = _read_json(index).get("weight_map", {})
        return [folder / name for name in sorted(set(weight_map.values()))]
    single = folder / "model.safetensors"
    if single.is_file():
        return [single]
    raise ModelLoadError(
        f"{folder} has no model.safetensors (or model.safetensors.index.json); "
        "a P2L checkpoint folder holds config.json, the tokenizer, model_list.json and "
        f"safetensors weights. {_NO_MODEL_HINT}"
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc


def _head_shapes(files: list[Path]) -> dict[str, tuple[int, ...]]:
    """Shapes of the ``head.*`` tensors, read from the safetensors headers only."""
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    try:
        for file in files:
            with safe_open(str(file), framework="pt") as f:
                for key in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                    if key.startswith("head."):
                        shapes[key] = tuple(f.get_slice(key).get_shape())
    except Exception as exc:  # missing shard, truncated or corrupt header
        raise ModelLoadError(f"cannot read the P2L weights' headers: {exc}") from exc
    return shapes


def check_head(
    shapes: dict[str, tuple[int, ...]], num_models: int, hidden_size: int
) -> tuple[int, bool]:
    """(M, has eta head) from the head tensors' shapes; ModelLoadError if they are not a
    P2L head of this model list and backbone."""
    extra = sorted(set(shapes) - set(HEAD_KEYS))
    if "head.head.weight" not in shapes or extra:
        raise ModelLoadError(
            f"the checkpoint's head weights {sorted(shapes)} are not a P2L head: expected "
            f"head.head.weight/bias and optionally head.eta_head.weight/bias"
            + (
                f"; unexpected {extra[:3]} (downsized or gamma heads are not supported)"
                if extra
                else ""
            )
        )
    for layer in ("head.head", "head.eta_head"):
        if (f"{layer}.weight" in shapes) != (f"{layer}.bias" in shapes):
            raise ModelLoadError(
                f"the checkpoint has only one of {layer}.weight and {layer}.bias; "
                "a P2L head layer has both"
            )
    width, hidden = shapes["head.head.weight"]
    if width != num_models:
        raise ModelLoadError(
            f"model_list.json names {num_models} models but the head has {width} "
            "outputs; the list and the weights must come from the same checkpoint"
        )
    has_eta = "head.eta_head.weight" in shapes
    expected = {
        "head.head.weight": (num_models, hidden_size),
        "head.head.bias": (num_models,),
        "head.eta_head.weight": (1, hidden_size),
        "head.eta_head.bias": (1,),
    }
    for key, shape in shapes.items():
        if shape != expected[key]:
            raise ModelLoadError(
                f"{key} has shape {shape}; with {num_models} models and hidden size "
                f"{hidden_size} (config.json) it must be {expected[key]}"
            )
    return width, has_eta


def _load_network(
    folder: Path, config: Any, dev: torch.device, dt: torch.dtype
) -> P2LForPromptRanking:
    """``from_pretrained`` onto the device in ``dt``; every weight must match exactly."""
    kwargs: dict[str, Any] = {}
    if dev.type != "cpu":  # straight onto the accelerator, no host copy of the weights
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        kwargs["device_map"] = {"": torch.device(dev.type, index)}
    try:
        network, info = P2LForPromptRanking.from_pretrained(
            str(folder),
            config=config,
            dtype=dt,
            attn_implementation="sdpa",
            use_safetensors=True,
            local_files_only=True,
            ignore_mismatched_sizes=True,  # reported below as a ModelLoadError, not a reinit
            output_loading_info=True,
            **kwargs,
        )
    except Exception as exc:
        raise ModelLoadError(f"cannot load the P2L weights from {folder}: {exc}") from exc
    mismatched = sorted(info.get("mismatched_keys", ()))
    missing, unexpected = sorted(info["missing_keys"]), sorted(info["unexpected_keys"])
    problems = [
        f"{what} {keys[:5]}{'...' if len(keys) > 5 else ''}"
        for what, keys in (
            (
                "shape mismatches",
                [f"{k}: checkpoint {tuple(a)}, config {tuple(b)}" for k, a, b in mismatched],
            ),
            ("missing", missing),
            ("unexpected", unexpected),
        )
        if keys
    ]
    if problems:
        raise ModelLoadError(
            "the checkpoint's weights do not match a P2L model of its config.json: "
            + "; ".join(problems)
            + " (expected model.* for the backbone and head.head.*, head.eta_head.* for the head)"
        )
    return network.eval().requires_grad_(False)


def load_p2l(
    model: str,
    *,
    device: str = "auto",
    head: str | None = None,
    dtype: str | None = None,
    max_length: int = 8192,
    compile: bool = False,
) -> P2LModel:
    """Load a P2L checkpoint from a local folder or a hub id, weights straight to the device.

    ``device="auto"``: CUDA in bfloat16 when available, else CPU in float32. ``head``
    overrides the head type read from the checkpoint.
    """
    from transformers import AutoConfig

    started = time.perf_counter()
    dev, dt = _resolve_device(device, dtype)
    folder = local_folder(model)
    for name in ("config.json", "model_list.json"):
        if not (folder / name).is_file():
            raise ModelLoadError(
                f"{folder} has no {name}; is it a P2L checkpoint? {_NO_MODEL_HINT}"
            )
    model_list = _read_json(folder / "model_list.json")
    if not isinstance(model_list, list) or not all(isinstance(m, str) for m in model_list):
        raise ModelLoadError(f"{folder / 'model_list.json'} must be a JSON array of model names")
    tc_path = folder / "training_config.json"
    training_config = _read_json(tc_path) if tc_path.is_file() else None
    try:
        config = AutoConfig.from_pretrained(str(folder))
    except Exception as exc:
        raise ModelLoadError(f"cannot read {folder / 'config.json'}: {exc}") from exc
    if config.model_type not in _SUPPORTED_BACKBONES:
        log.warning("P2L backbone %r is untested (tested: qwen2, llama)", config.model_type)
    tokenizer = load_tokenizer(folder, training_config)
    shapes = _head_shapes(_weight_files(folder))
    num_models, has_eta = check_head(shapes, len(model_list), config.hidden_size)
    head_type = resolve_head(has_eta, training_config, head)
    cls_id = int(tokenizer.convert_tokens_to_ids(tokenizer.cls_token))
    annotate_config(config, num_models=num_models, eta_head=has_eta, cls_token_id=cls_id)
    p2l = P2LModel(
        network=_load_network(folder, config, dev, dt),
        tokenizer=tokenizer,
        model_list=model_list,
        head_type=head_type,  # type: ignore[arg-type]
        max_length=max_length,
        source=model,
        compile=compile,
    )
    log.info(
        "loaded %r in %.1fs (%s, %d models, %.0fM params, %s %s)",
        model,
        time.perf_counter() - started,
        head_type,
        len(model_list),
        p2l.num_parameters / 1e6,
        p2l.device,
        p2l.dtype,
    )
    return p2l
