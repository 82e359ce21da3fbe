"""The P2L network declared the transformers way: a backbone plus a head, one PreTrainedModel.

State-dict layout, exactly as the paper's public code saves it (``p2l/model.py``):
``model.*`` is the backbone (any decoder ``AutoModel`` builds from the config: Qwen2,
Llama), ``head.head.*`` a Linear hidden -> M with bias, ``head.eta_head.*`` a Linear
hidden -> 1 with bias (absent for Bradley-Terry heads). Declaring it as a
``PreTrainedModel`` lets ``from_pretrained`` do the loading (dtype, device maps, sharded
safetensors, no random init of loaded weights) instead of our own copy of it.

The published checkpoints' config.json is the backbone's config (``model_type`` qwen2
or llama; ``architectures`` names the paper's own class, which is ignored). What that
config does not say, the number of models, whether there is an eta head and the CLS
token id, the loader writes onto it before building (``annotate_config``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from transformers import AutoModel, PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from router.scoring.frontend import P2LInputs
from router.scoring.types import ModelLoadError

# config attributes this module reads (the loader sets them; save_pretrained keeps them)
NUM_MODELS_ATTR = "p2l_num_models"
ETA_HEAD_ATTR = "p2l_eta_head"
CLS_TOKEN_ATTR = "cls_token_id"


def annotate_config(
    config: PretrainedConfig, *, num_models: int, eta_head: bool, cls_token_id: int | None
) -> PretrainedConfig:
    """Write the head shape and the CLS id onto a backbone config; returns it."""
    setattr(config, NUM_MODELS_ATTR, int(num_models))
    setattr(config, ETA_HEAD_ATTR, bool(eta_head))
    setattr(config, CLS_TOKEN_ATTR, cls_token_id)
    return config


@dataclass
class P2LOutput(ModelOutput):
    """One forward: ``coefs`` (B, M), ``eta`` (B, 1) or None (BT), ``pooled`` (B, hidden)."""

    coefs: torch.FloatTensor | None = None
    eta: torch.FloatTensor | None = None
    pooled: torch.FloatTensor | None = None


class P2LHead(nn.Module):
    """``head`` (hidden -> M) and, for RK/GRK, ``eta_head`` (hidden -> 1), both with bias."""

    def __init__(self, hidden_size: int, num_models: int, eta_head: bool) -> None:
        super().__init__()
        self.head = nn.Linear(hidden_size, num_models, bias=True)
        self.eta_head = nn.Linear(hidden_size, 1, bias=True) if eta_head else None

    def forward(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        eta = self.eta_head(pooled) if self.eta_head is not None else None
        return self.head(pooled), eta


def find_cls_positions(input_ids: torch.Tensor, cls_token_id: int) -> torch.Tensor:
    """Index of the last CLS token of each row; ValueError when a row has none."""
    is_cls = input_ids == cls_token_id
    missing = (~is_cls.any(dim=-1)).nonzero()
    if missing.numel():
        raise ValueError(f"scorer input row {int(missing[0, 0])} has no CLS token")
    width = input_ids.shape[-1]
    index = torch.arange(width, device=input_ids.device)
    return (is_cls.long() * (index + 1)).argmax(dim=-1)


class P2LForPromptRanking(PreTrainedModel):
    """Prompt -> one Bradley-Terry coefficient per model (and eta for RK/GRK heads).

    The pooled vector is the backbone's last hidden state at the CLS token, found by
    index, like transformers' ``XForSequenceClassification`` finds its last token.
    """

    config_class = PretrainedConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _no_split_modules = ["Qwen2DecoderLayer", "LlamaDecoderLayer"]
    _keys_to_ignore_on_load_unexpected = [r"^lm_head\.", r"rotary_emb\.inv_freq$"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__(config)
        num_models = getattr(config, NUM_MODELS_ATTR, None)
        if not isinstance(num_models, int) or num_models < 1:
            raise ValueError(
                f"config.{NUM_MODELS_ATTR} must be the number of models (set it with "
                "annotate_config)"
            )
        self.model = AutoModel.from_config(config)
        self.head = P2LHead(config.hidden_size, num_models, bool(getattr(config, ETA_HEAD_ATTR)))
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        cls_positions: torch.LongTensor | None = None,
    ) -> P2LOutput:
        """``cls_positions`` (B,) when the caller knows them (no device sync); else found
        in ``input_ids`` with ``config.cls_token_id``."""
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if cls_positions is None:
            cls_id = getattr(self.config, CLS_TOKEN_ATTR, None)
            if cls_id is None:
                raise ValueError("config.cls_token_id is not set; pass cls_positions")
            cls_positions = find_cls_positions(input_ids, cls_id)
        batch = hidden.shape[0]
        rows = torch.arange(batch, device=hidden.device)
        pooled = hidden[rows, cls_positions.to(hidden.device)]
        coefs, eta = self.head(pooled)
        return P2LOutput(coefs=coefs, eta=eta, pooled=pooled)


class P2LModel(P2LInputs):
    """A loaded P2L checkpoint: its tokenizer and network, and the exact input rendering."""

    def __init__(
        self,
        *,
        network: P2LForPromptRanking,
        tokenizer: Any,
        model_list: Sequence[str],
        head_type: Literal["bt", "rk", "grk"],
        max_length: int = 8192,
        source: str = "",
        compile: bool = False,
    ) -> None:
        width = network.head.head.out_features
        if len(model_list) != width:
            raise ModelLoadError(f"{len(model_list)} model names for a head of {width} outputs")
        if head_type != "bt" and network.head.eta_head is None:
            raise ModelLoadError(f"head {head_type!r} needs an eta head; this network has none")
        super().__init__(
            tokenizer=tokenizer,
            model_list=model_list,
            head_type=head_type,
            max_length=max_length,
            source=source,
        )
        self.head: Literal["bt", "rk", "grk"] = head_type
        self.network = network
        self.device = str(network.device)
        self.dtype = str(network.dtype).removeprefix("torch.")
        self._torch_device = network.device
        self._forward = torch.compile(network, dynamic=True) if compile else network
        self._pad_id = next(
            (t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id) if t is not None), 0
        )
        self.num_parameters = sum(p.numel() for p in network.parameters())

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
        out = self._forward(
            input_ids=input_ids.to(dev, non_blocking=True),
            cls_positions=torch.tensor(positions, device=dev),
        )
        coefs = out.coefs.float().cpu().numpy().astype(np.float64)
        if self.head == "bt" or out.eta is None:
            return coefs, None
        return coefs, out.eta[:, 0].float().cpu().numpy().astype(np.float64)

    def forward(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """(B, M) float64 coefs and (B,) float64 eta_raw (None for BT) for rendered texts."""
        return self.forward_ids(self.encode(texts)[0])

    def __repr__(self) -> str:
        return (
            f"P2LModel({self.source!r}, head={self.head}, models={len(self.model_list)}, "
            f"device={self.device}, dtype={self.dtype})"
        )
