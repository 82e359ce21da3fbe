"""The P2L scorer: prompt -> per-model coefficients, batched and cached.

Public surface: ``load_p2l`` / ``P2LModel`` (checkpoint), ``ScoringEngine`` (asyncio
batching, cache), ``Scorer`` (what the service uses of an engine), ``Scores``,
``ModelLoadError``, ``write_tiny_checkpoint``, the leaderboard helpers. torch is
imported only when a torch-backed name is first used, so ``from router.scoring import
Scores, leaderboard_rows`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from router.lazy import lazy_exports
from router.scoring.inputs import render, user_turns
from router.scoring.leaderboard import format_table, leaderboard_rows, pairwise_matrix
from router.scoring.types import DEFAULT_P2L_MODEL, HEADS, ModelLoadError, Scorer, Scores

if TYPE_CHECKING:
    from router.scoring.checkpoint import load_p2l
    from router.scoring.engine import ScoringEngine
    from router.scoring.modeling import P2LForPromptRanking, P2LModel
    from router.scoring.tiny import write_tiny_checkpoint

_LAZY = {
    "P2LForPromptRanking": "router.scoring.modeling",
    "P2LModel": "router.scoring.modeling",
    "load_p2l": "router.scoring.checkpoint",
    "ScoringEngine": "router.scoring.engine",
    "write_tiny_checkpoint": "router.scoring.tiny",
}

__all__ = [
    "DEFAULT_P2L_MODEL",
    "HEADS",
    "ModelLoadError",
    "P2LForPromptRanking",
    "P2LModel",
    "Scorer",
    "Scores",
    "ScoringEngine",
    "format_table",
    "leaderboard_rows",
    "load_p2l",
    "pairwise_matrix",
    "render",
    "user_turns",
    "write_tiny_checkpoint",
]


__getattr__ = lazy_exports(__name__, _LAZY)
