"""Value types of the scorer, and the ``Scorer`` protocol, that the rest of the router may
import without torch.

The service, the planner and the admin reads hold "a scoring engine" without caring
whether it runs in process (``ScoringEngine``, torch) or on a remote vLLM engine
(``RemoteScoringEngine``): ``Scorer`` is what they may use of it. Both engines satisfy it
structurally (neither names it); tests/test_scorer_protocol.py checks that they do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

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


@runtime_checkable
class ScorerModel(Protocol):
    """What the router reads of a scorer's checkpoint (``P2LModel`` or ``ExportedP2L``)."""

    @property
    def model_list(self) -> tuple[str, ...]: ...

    @property
    def head(self) -> str: ...

    @property
    def device(self) -> str: ...

    def count_tokens(self, text: str) -> int: ...


@runtime_checkable
class Scorer(Protocol):
    """A scoring engine as the service uses it: started, warmed up, asked, closed."""

    @property
    def model(self) -> ScorerModel: ...

    @property
    def ready(self) -> bool:
        """True once ``warmup`` has succeeded (and until ``close``)."""
        ...

    @property
    def api_key(self) -> str | None:
        """The key the scorer sends to its engine (a secret to redact); None in process."""
        ...

    async def start(self) -> None: ...

    async def warmup(self) -> None:
        """Load, check and exercise the engine; ``ready`` afterwards. Raises on failure."""
        ...

    async def score(self, messages: list[dict[str, Any]]) -> Scores: ...

    def stats(self) -> dict[str, int | float]:
        """Counters for /metrics."""
        ...

    def health(self) -> dict[str, Any]:
        """Fields merged into /readyz's body ({} when there is nothing to add)."""
        ...

    async def close(self) -> None: ...
