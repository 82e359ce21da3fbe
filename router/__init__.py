"""p2l-router: an OpenAI-compatible proxy that routes each chat request to the model a
Prompt-to-Leaderboard (P2L) model predicts will answer it best, within the team's budget.

The public API, typed and imported on first use (``import router`` stays light; torch is
imported only by the scorer):

- :func:`load_config` — ``providers.yaml`` + ``policies/`` → :class:`RouterConfig`
- :class:`RouterService` — the resources of one router (scorer, ledger, upstream, log)
- :func:`create_app` — the ASGI app over a service; :func:`serve` runs it under uvicorn
- :func:`load_p2l` / :class:`ScoringEngine` — a P2L checkpoint and its batching engine
- :func:`create_ledger` — a SQLite or Redis spend ledger from its URL
- :func:`decide` — the pure routing decision over scored candidates

Packages, one per box of the design: ``api`` (HTTP), ``serving`` (one request, no HTTP
types), ``scoring`` (P2L), ``policy`` (pure), ``ledger`` (spend), ``upstream`` (providers),
``observability`` (decision log, metrics); ``offline`` holds the demo, the echo provider
and the simulation, which the request path never imports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from router.lazy import lazy_exports

__version__ = "0.1.0"

if TYPE_CHECKING:
    from router.api.app import create_app
    from router.api.server import serve
    from router.config import RouterConfig, load_config
    from router.ledger import create_ledger
    from router.policy import decide
    from router.scoring import ScoringEngine, load_p2l
    from router.serving import RouterService

_PUBLIC = {
    "create_app": "router.api.app",
    "serve": "router.api.server",
    "RouterConfig": "router.config",
    "load_config": "router.config",
    "create_ledger": "router.ledger",
    "decide": "router.policy",
    "ScoringEngine": "router.scoring",
    "load_p2l": "router.scoring",
    "RouterService": "router.serving",
}

__all__ = [
    "RouterConfig",
    "RouterService",
    "ScoringEngine",
    "__version__",
    "create_app",
    "create_ledger",
    "decide",
    "load_config",
    "load_p2l",
    "serve",
]


__getattr__ = lazy_exports(__name__, _PUBLIC)
