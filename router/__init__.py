"""p2l-router: an OpenAI-compatible proxy that routes each chat request to the model a
Prompt-to-Leaderboard (P2L) model predicts will answer it best, within the team's budget.

Public surface: ``router.config`` (load_config), ``router.api.app`` (create_app),
``router.cli`` (main). Parts: scorer (P2L, torch), policy (pure), ledger (spend),
upstream (httpx), decision (logs and headers).
"""

__version__ = "0.1.0"
