"""Load a P2L checkpoint (Hugging Face folder or hub id) and run it.

A P2L checkpoint, as the paper's public code saves it (``p2l/model.py``), is a
transformers backbone under the state-dict prefix ``model.`` plus a head: ``head.head``
(Linear hidden -> M, bias) and, for RK/GRK, ``head.eta_head`` (Linear hidden -> 1, bias).
The pooled vector is the backbone's last hidden state at the CLS token.

Third-party failures (hub, safetensors, transformers) become ``ModelLoadError`` here.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from router.scoring.inputs import render as render_input
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


def resolve_head(
    has_eta: bool, training_config: dict[str, Any] | None, override: str | None
) -> str:
    """Which outcome model the head was trained for (see DESIGN.md, "Head type")."""
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


def _local_folder(model: str) -> Path:
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
        weight_map = json.loads(index.read_text())["weight_map"]
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


def _build_backbone(config: Any, dev: torch.device, dt: torch.dtype) -> nn.Module:
    """The backbone from its config, allocated on the device without random init."""
    from transformers import AutoModel
    from transformers.initialization import no_init_weights

    with dev, no_init_weights():
        backbone = AutoModel.from_config(config, dtype=dt, attn_implementation="sdpa")
    return backbone.eval().requires_grad_(False)


def _load_weights(
    files: list[Path], backbone: nn.Module, dev: torch.device, dt: torch.dtype
) -> dict[str, torch.Tensor]:
    """Copy ``model.*`` into the backbone tensor by tensor; return the ``head.*`` tensors."""
    from safetensors import safe_open

    targets = backbone.state_dict()
    loaded: set[str] = set()
    head: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    load_dev = str(dev) if dev.type != "cuda" or dev.index is not None else "cuda:0"
    for file in files:
        with safe_open(str(file), framework="pt", device=load_dev) as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                if key.startswith("head."):
                    head[key] = f.get_tensor(key).to(dt)
                elif key.startswith("model.") and key[6:] in targets:
                    target = targets[key[6:]]
                    tensor = f.get_tensor(key)
                    if tensor.shape != target.shape:
                        raise ModelLoadError(
                            f"{file.name}: {key} has shape {tuple(tensor.shape)}, the config "
                            f"says {tuple(target.shape)}"
                        )
                    target.copy_(tensor)
                    loaded.add(key[6:])
                elif not key.endswith("inv_freq") and key != "lm_head.weight":
                    unexpected.append(key)
    missing = sorted(set(targets) - loaded)
    if missing or unexpected:
        raise ModelLoadError(
            "the checkpoint's weights do not match a P2L model of its config.json: "
            f"missing backbone weights {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected keys {unexpected[:5]}{'...' if len(unexpected) > 5 else ''} "
            "(expected model.* for the backbone and head.head.*, head.eta_head.* for the head)"
        )
    return head


def _linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=True, device="meta")
    layer.weight = nn.Parameter(weight, requires_grad=False)
    layer.bias = nn.Parameter(bias, requires_grad=False)
    return layer.eval()


class P2LModel:
    """A loaded P2L checkpoint: tokenizer, backbone and head on one device."""

    def __init__(
        self,
        *,
        backbone: nn.Module,
        head: nn.Linear,
        eta_head: nn.Linear | None,
        tokenizer: Any,
        model_list: Sequence[str],
        head_type: Literal["bt", "rk", "grk"],
        device: torch.device,
        dtype: torch.dtype,
        max_length: int,
        source: str = "",
        compile: bool = False,
    ) -> None:
        self.model_list: tuple[str, ...] = tuple(model_list)
        self.head: Literal["bt", "rk", "grk"] = head_type
        self.device = str(device)
        self.dtype = str(dtype).removeprefix("torch.")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.source = source
        self._torch_device = device
        self._backbone = torch.compile(backbone, dynamic=True) if compile else backbone
        self._head = head
        self._eta_head = eta_head if head_type != "bt" else None
        self._cls_id = int(tokenizer.convert_tokens_to_ids(tokenizer.cls_token))
        self._pad_id = next(
            (t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id) if t is not None), 0
        )
        self.num_parameters = sum(p.numel() for p in backbone.parameters()) + sum(
            p.numel() for m in (head, eta_head) if m is not None for p in m.parameters()
        )

    def render(self, messages: list[dict]) -> str:
        """The exact scorer input text for these chat messages (InvalidRequestError if bad)."""
        return render_input(self.tokenizer, messages)

    def count_tokens(self, text: str) -> int:
        """Tokens of plain text with the scorer's tokenizer (no special tokens added).

        On the request path (every reservation), so it calls the Rust tokenizer directly
        when there is one: the Python wrapper costs more than the tokenization."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None:
            return len(backend.encode(text, add_special_tokens=False).ids)
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode(self, texts: Sequence[str]) -> tuple[list[list[int]], list[int]]:
        """Token ids truncated from the LEFT to max_length (the CLS stays), and full lengths."""
        tok = self.tokenizer
        ids = tok(list(texts), truncation=False)["input_ids"]
        full = [len(x) for x in ids]
        long = [i for i, n in enumerate(full) if n > self.max_length]
        if long:
            cut = tok([texts[i] for i in long], truncation=True, max_length=self.max_length)[
                "input_ids"
            ]
            for i, row in zip(long, cut, strict=True):
                ids[i] = row
        return ids, full

    def cls_positions(self, ids: Sequence[Sequence[int]]) -> list[int]:
        """Index of the (last) CLS token in each row; ValueError when a row has none."""
        positions = []
        for r, row in enumerate(ids):
            try:
                positions.append(len(row) - 1 - list(reversed(row)).index(self._cls_id))
            except ValueError:
                raise ValueError(f"scorer input row {r} has no CLS token") from None
        return positions

    @torch.inference_mode()
    def forward_ids(self, ids: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray | None]:
        """One batched forward over token-id rows (right-padded here)."""
        positions = self.cls_positions(ids)
        batch = len(ids)
        width = max(len(row) for row in ids)
        if self._torch_device.type == "cuda":
            width = -(-width // 8) * 8  # tensor-core friendly; pads after the CLS change nothing
        input_ids = torch.full((batch, width), self._pad_id, dtype=torch.long)
        for r, row in enumerate(ids):
            input_ids[r, : len(row)] = torch.tensor(row, dtype=torch.long)
        dev = self._torch_device
        # No padding mask, on purpose: padding is on the right and attention is causal, so
        # no real token (the CLS included) ever sees a pad; the pads' own outputs are never
        # read. Without a mask SDPA takes its fused causal kernels instead of a dense mask.
        hidden = self._backbone(input_ids=input_ids.to(dev, non_blocking=True)).last_hidden_state
        pooled = hidden[torch.arange(batch, device=dev), torch.tensor(positions, device=dev)]
        coefs = self._head(pooled).float().cpu().numpy().astype(np.float64)
        if self._eta_head is None:
            return coefs, None
        eta = self._eta_head(pooled)[:, 0].float().cpu().numpy().astype(np.float64)
        return coefs, eta

    def forward(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """(B, M) float64 coefs and (B,) float64 eta_raw (None for BT) for rendered texts."""
        return self.forward_ids(self.encode(texts)[0])

    def __repr__(self) -> str:
        return (
            f"P2LModel({self.source!r}, head={self.head}, models={len(self.model_list)}, "
            f"device={self.device}, dtype={self.dtype})"
        )


def _load_tokenizer(folder: Path, training_config: dict[str, Any] | None) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except Exception as exc:
        raise ModelLoadError(f"cannot load the tokenizer in {folder}: {exc}") from exc
    tokenizer.truncation_side = "left"
    tokenizer.padding_side = "right"
    tokenizer.model_max_length = 1 << 30  # we truncate ourselves; silence the length warning
    if not tokenizer.chat_template and training_config and training_config.get("chat_template"):
        tokenizer.chat_template = training_config["chat_template"]
    if not tokenizer.chat_template:
        raise ModelLoadError(f"the tokenizer in {folder} has no chat template")
    if not tokenizer.cls_token or tokenizer.convert_tokens_to_ids(tokenizer.cls_token) is None:
        raise ModelLoadError(f"the tokenizer in {folder} has no cls_token (P2L uses <|cls|>)")
    return tokenizer


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
    folder = _local_folder(model)
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
    tokenizer = _load_tokenizer(folder, training_config)
    files = _weight_files(folder)
    try:
        backbone = _build_backbone(config, dev, dt)
        head_tensors = _load_weights(files, backbone, dev, dt)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"cannot load the P2L weights from {folder}: {exc}") from exc

    if "head.head.weight" not in head_tensors:
        odd = sorted(k for k in head_tensors if k.startswith("head.head."))
        raise ModelLoadError(
            "no head.head.weight in the checkpoint"
            + (f" (found {odd[:3]}: downsized heads are not supported)" if odd else "")
        )
    for key in ("head.head.bias", "head.eta_head.bias"):
        if key.replace("bias", "weight") in head_tensors and key not in head_tensors:
            raise ModelLoadError(f"the checkpoint has {key.replace('bias', 'weight')} but no {key}")
    w = head_tensors["head.head.weight"]
    if w.shape[0] != len(model_list):
        raise ModelLoadError(
            f"model_list.json names {len(model_list)} models but the head has {w.shape[0]} "
            "outputs; the list and the weights must come from the same checkpoint"
        )
    if w.shape[1] != config.hidden_size:
        raise ModelLoadError(
            f"head.head.weight is {tuple(w.shape)}, hidden size {config.hidden_size}"
        )
    has_eta = "head.eta_head.weight" in head_tensors
    head_type = resolve_head(has_eta, training_config, head)
    lin = _linear(w, head_tensors["head.head.bias"])
    eta = (
        _linear(head_tensors["head.eta_head.weight"], head_tensors["head.eta_head.bias"])
        if has_eta
        else None
    )
    p2l = P2LModel(
        backbone=backbone,
        head=lin,
        eta_head=eta,
        tokenizer=tokenizer,
        model_list=model_list,
        head_type=head_type,  # type: ignore[arg-type]
        device=dev,
        dtype=dt,
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
