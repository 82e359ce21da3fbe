"""Typed, validated configuration: ``providers.yaml`` and ``policies/<team>.yaml``.

Two modules, one job each: :mod:`router.config.schema` holds the models (what a valid
configuration is), :mod:`router.config.files` reads the YAML files into them (what a
valid file is, every problem named by file and field). The loaders build on the models
and never the other way round, so the package imports both plainly; this was one module
reaching its loaders through a lazy ``__getattr__``, which hid that two-way dependency.

The strategy names and the default output-token figure are defined here, with the
settings that name them; the policy (:mod:`router.policy`) builds on this package and
implements them, so the configuration never imports the policy.
"""

from __future__ import annotations

from router.config.files import load_config, load_policies, load_providers
from router.config.schema import (
    ADMIN_KEY_ENV,
    DEFAULT_EXPECTED_OUTPUT_TOKENS,
    DEFAULT_TEAM,
    ROUTER_ALIASES,
    STRATEGY_NAMES,
    BudgetConfig,
    Catalog,
    CircuitConfig,
    LongContextPrices,
    ModelConfig,
    ProviderConfig,
    ProviderLimits,
    RateLimitConfig,
    RouterConfig,
    SessionConfig,
    Strategy,
    TeamPolicy,
    Timeouts,
    key_digest,
)

__all__ = [
    "ADMIN_KEY_ENV",
    "DEFAULT_EXPECTED_OUTPUT_TOKENS",
    "DEFAULT_TEAM",
    "ROUTER_ALIASES",
    "STRATEGY_NAMES",
    "BudgetConfig",
    "Catalog",
    "CircuitConfig",
    "LongContextPrices",
    "ModelConfig",
    "ProviderConfig",
    "ProviderLimits",
    "RateLimitConfig",
    "RouterConfig",
    "SessionConfig",
    "Strategy",
    "TeamPolicy",
    "Timeouts",
    "key_digest",
    "load_config",
    "load_policies",
    "load_providers",
]
