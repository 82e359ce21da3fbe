"""The client's key, read from the raw request header values.

One parser for every door: the chat and leaderboard routes (through
``router.serving.service.authenticate``), the admin endpoints (``router.api.routes.
require_admin``) and the admin API (``router.api.admin.admin_scope``). Each caller keeps
its own error message; they differ only in what key they ask for.

It takes header *values*, not a request object, so the ASGI fast path and the FastAPI
routes use it alike. The Anthropic front will also accept ``x-api-key: <key>``; that is
one more argument here, e.g. ``client_key(authorization, x_api_key)`` returning
``bearer_key(authorization)`` or else the stripped ``x-api-key`` value, with the callers
passing ``headers.get("x-api-key")`` beside ``headers.get("authorization")``.
"""

from __future__ import annotations

__all__ = ["bearer_key"]


def bearer_key(authorization: str | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` value (scheme case-insensitive,
    surrounding whitespace ignored); None when the value is absent, another scheme, or
    carries no key."""
    scheme, _, key = (authorization or "").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        return None
    return key
