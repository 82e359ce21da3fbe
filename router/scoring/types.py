"""Value types of the scorer that the rest of the router may import without torch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HEADS = ("bt", "rk", "grk")
DEFAULT_P2L_MODEL = "lmarena-ai/p2l-7b-grk-01112025"


class ModelLoadError(RuntimeError):
    """The P2L checkpoint could not be found, read or understood; the message says what to do."""


@dataclass(frozen=True)
class Scores:
    """One prompt's P2L output: a coefficient per model of ``models`` (same order)."""

    models: tuple[str, ...]
    coefs: np.ndarray  # (M,) float64, read-only; index i <-> models[i]
    eta: float | None  # eta_raw (RK/GRK); None for BT
    head: str  # "bt" | "rk" | "grk"
    prompt_tokens: int  # scorer input tokens (user turns + template + CLS), before truncation
    cached: bool
    scoring_ms: float

    def coef_of(self) -> dict[str, float]:
        return {m: float(c) for m, c in zip(self.models, self.coefs, strict=True)}
