"""An exported P2L folder (``p2l-router export-backbone``), read without torch.

Layout: the folder itself is a plain decoder checkpoint that vLLM serves as a pooling
model (config.json with a standard architecture, the tokenizer, backbone-only
safetensors with ``model.*`` keys). What vLLM must not read lives in ``p2l/``:

- ``p2l/head.safetensors``: ``head.head.*`` (and ``head.eta_head.*``), float32;
- ``p2l/model_list.json``, ``p2l/training_config.json`` (when the source had one);
- ``p2l/p2l.json``: format version, head type, sizes, and the probe: a few fixed prompts
  with the token ids and the coefficients (and eta) the exporting machine computed with
  the original checkpoint in float32.

The head is applied here with numpy in float32, as the in-process model does it in torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from router.scoring.frontend import P2LInputs, load_tokenizer
from router.scoring.types import HEADS, ModelLoadError

EXPORT_FORMAT = 1
P2L_DIR = "p2l"
HEAD_FILE = "head.safetensors"
META_FILE = "p2l.json"


@dataclass(frozen=True)
class ProbeCase:
    """One fixed prompt: its messages, token ids, and the exporting machine's outputs."""

    name: str
    messages: list[dict[str, Any]]
    ids: list[int]
    coefs: np.ndarray  # (M,) float64
    eta: float | None


class ExportedP2L(P2LInputs):
    """The input side plus the head of an exported folder; no backbone weights here."""

    device = "remote"
    dtype = "float32"

    def __init__(
        self,
        *,
        tokenizer: Any,
        model_list: list[str],
        head_type: str,
        weight: np.ndarray,
        bias: np.ndarray,
        eta_weight: np.ndarray | None,
        eta_bias: np.ndarray | None,
        probe: list[ProbeCase],
        max_length: int,
        source: str,
    ) -> None:
        super().__init__(
            tokenizer=tokenizer,
            model_list=model_list,
            head_type=head_type,
            max_length=max_length,
            source=source,
        )
        self.hidden_size = int(weight.shape[1])
        self.probe = probe
        # Stacked so one matmul gives coefs and eta: (H, M[+1]) float32.
        rows = [weight] + ([eta_weight] if eta_weight is not None else [])
        self._w = np.ascontiguousarray(np.concatenate(rows, axis=0).T, dtype=np.float32)
        biases = [bias] + ([eta_bias] if eta_bias is not None else [])
        self._b = np.concatenate(biases).astype(np.float32)
        self._has_eta = eta_weight is not None

    def apply_head(self, hidden: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(B, H) float32 hidden states at the CLS -> (B, M) float64 coefs, (B,) eta_raw."""
        if hidden.ndim != 2 or hidden.shape[1] != self.hidden_size:
            raise ValueError(
                f"hidden states of shape {hidden.shape}; the head takes (batch, {self.hidden_size})"
            )
        out = hidden.astype(np.float32, copy=False) @ self._w + self._b
        m = len(self.model_list)
        coefs = out[:, :m].astype(np.float64)
        if self.head == "bt" or not self._has_eta:
            return coefs, None
        return coefs, out[:, m].astype(np.float64)

    def __repr__(self) -> str:
        return f"ExportedP2L({self.source!r}, head={self.head}, models={len(self.model_list)})"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc


def load_exported(folder: str | Path) -> ExportedP2L:
    """Read an exported folder (made by ``p2l-router export-backbone``); no torch import."""
    from safetensors.numpy import load_file

    root = Path(folder).expanduser()
    meta_path = root / P2L_DIR / META_FILE
    if not meta_path.is_file():
        raise ModelLoadError(
            f"{root} is not an exported P2L folder (no {P2L_DIR}/{META_FILE}); with "
            "--scorer-url, --p2l-model names the folder `p2l-router export-backbone SRC OUT` "
            "wrote (the same one the scoring engine serves)"
        )
    meta = _read_json(meta_path)
    if meta.get("format") != EXPORT_FORMAT:
        raise ModelLoadError(
            f"{meta_path} has format {meta.get('format')!r}; this router reads format "
            f"{EXPORT_FORMAT}: export the checkpoint again"
        )
    head = meta.get("head")
    if head not in HEADS:
        raise ModelLoadError(f"{meta_path}: unknown head {head!r}")
    model_list = _read_json(root / P2L_DIR / "model_list.json")
    tc_path = root / P2L_DIR / "training_config.json"
    training_config = _read_json(tc_path) if tc_path.is_file() else None
    try:
        tensors = load_file(str(root / P2L_DIR / HEAD_FILE))
    except Exception as exc:  # missing or corrupt file
        raise ModelLoadError(f"cannot read {root / P2L_DIR / HEAD_FILE}: {exc}") from exc
    weight, bias = tensors.get("head.head.weight"), tensors.get("head.head.bias")
    if weight is None or bias is None or weight.shape[0] != len(model_list):
        raise ModelLoadError(
            f"{root / P2L_DIR / HEAD_FILE} does not hold a head for the "
            f"{len(model_list)} models of model_list.json"
        )
    if head != "bt" and "head.eta_head.weight" not in tensors:
        raise ModelLoadError(f"head {head!r} needs head.eta_head weights; {root} has none")
    probe = [
        ProbeCase(
            name=str(c["name"]),
            messages=c["messages"],
            ids=[int(t) for t in c["ids"]],
            coefs=np.asarray(c["coefs"], dtype=np.float64),
            eta=None if c.get("eta") is None else float(c["eta"]),
        )
        for c in meta.get("probe", [])
    ]
    return ExportedP2L(
        tokenizer=load_tokenizer(root, training_config, torch_free=True),
        model_list=model_list,
        head_type=head,
        weight=weight,
        bias=bias,
        eta_weight=tensors.get("head.eta_head.weight"),
        eta_bias=tensors.get("head.eta_head.bias"),
        probe=probe,
        max_length=int(meta.get("max_length", 8192)),
        source=str(root),
    )
