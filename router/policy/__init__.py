"""The routing policy: which models may serve a request, what each costs, and the pick.

Pure (numbers in, a decision with its reasons out; no torch, no httpx, no I/O, no clock).
Modules: ``candidates`` (eligibility, context-window fit, expected cost), ``strategies``
(the registry of strategies by name, ``decide``), ``lp`` (the exact routing LP),
``outcomes`` (P2L head maths), ``pacing`` (budget pacing of λ), ``text`` (formatting).

Import from here; the names below are the public surface.
"""

from __future__ import annotations

from router.policy.candidates import (
    DEFAULT_EXPECTED_OUTPUT_TOKENS,
    Candidate,
    Price,
    check_fits,
    eligible_models,
    expected_cost_usd,
    expected_output_tokens,
    make_candidates,
    price_table,
    request_needs,
)
from router.policy.frontier import (
    FrontierPoint,
    ScoredPrompts,
    default_cap,
    frontier_scored,
    lambda_grid,
)
from router.policy.lp import lp_mix, sample_mix, win_rates
from router.policy.outcomes import p_not_bad, pairwise, route_scores, sigmoid
from router.policy.pacing import DEFAULT_PACING, PacingConfig, paced_lambda
from router.policy.strategies import (
    STRATEGIES,
    STRATEGY_NAMES,
    Decision,
    StrategyFn,
    StrategyInput,
    StrategyResult,
    decide,
)

__all__ = [
    "DEFAULT_EXPECTED_OUTPUT_TOKENS",
    "DEFAULT_PACING",
    "STRATEGIES",
    "STRATEGY_NAMES",
    "Candidate",
    "Decision",
    "FrontierPoint",
    "PacingConfig",
    "ScoredPrompts",
    "Price",
    "StrategyFn",
    "StrategyInput",
    "StrategyResult",
    "check_fits",
    "decide",
    "default_cap",
    "eligible_models",
    "expected_cost_usd",
    "expected_output_tokens",
    "frontier_scored",
    "lambda_grid",
    "lp_mix",
    "make_candidates",
    "p_not_bad",
    "paced_lambda",
    "pairwise",
    "price_table",
    "request_needs",
    "route_scores",
    "sample_mix",
    "sigmoid",
    "win_rates",
]
