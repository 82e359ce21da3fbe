"""The router's exceptions, drawn once.

RouterError                      -> an OpenAI-style error body with an HTTP status
 ├── InvalidRequestError          400 invalid_request_error (param names the field)
 │    └── NoCandidateError        400 invalid_request_error, code no_candidate
 ├── AuthenticationError          401 authentication_error
 ├── PermissionDeniedError        403 permission_error (a team key on an admin endpoint)
 ├── ModelNotFoundError           404 invalid_request_error, code model_not_found
 ├── NotFoundError                404 invalid_request_error, code not_found (admin lookups)
 ├── RequestTimeoutError          408 invalid_request_error, code request_timeout
 ├── BodyTooLargeError            413 invalid_request_error, code body_too_large
 ├── BudgetExceededError          429 budget_exceeded
 ├── RateLimitedError             429 rate_limited (Retry-After)
 ├── UpstreamError                502 upstream_error (code: last upstream status or error kind)
 ├── NotReadyError                503 not_ready
 ├── OverloadedError              503 overloaded (retry_after seconds)
 ├── ScorerUnavailableError       503 scorer_unavailable (the remote scoring engine is down)
 └── ProviderRejectedError        the provider's own 400/413/422, passed through
ConfigError                      a bad providers.yaml / policies file; lists file, field, problem

Third-party errors (httpx, sqlite3, redis, torch) are translated into these at one
boundary per part, with ``raise ... from exc``. This module imports nothing heavy, so
the pure parts (policy, config) can raise these too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


class RouterError(Exception):
    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init_subclass__(
        cls, *, status: int | None = None, type: str | None = None, code: str | None = None
    ) -> None:
        """Subclasses state their wire identity in the class line:
        ``class X(RouterError, status=404, type=..., code=...)``."""
        super().__init_subclass__()
        for name, value in (("status", status), ("type", type), ("code", code)):
            if value is not None:
                setattr(cls, name, value)

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        summary: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        # The message without upstream text (which may quote the prompt): what the
        # decision log keeps unless prompts are logged. None: the message has none.
        self.summary = summary
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequestError(RouterError, status=400, type="invalid_request_error"):
    """The request is wrong; ``param`` names the field to fix."""


class NoCandidateError(InvalidRequestError, code="no_candidate"):
    """No model can serve the request; the message names the filter that emptied the set."""


class AuthenticationError(
    RouterError, status=401, type="authentication_error", code="invalid_api_key"
):
    """No key, a malformed Authorization header, or a key no team has."""


class PermissionDeniedError(
    RouterError, status=403, type="permission_error", code="permission_denied"
):
    """A valid key without the right to this endpoint (a team key on an admin one)."""


class ModelNotFoundError(
    RouterError, status=404, type="invalid_request_error", code="model_not_found"
):
    def __init__(self, message: str, **kw: Any) -> None:
        kw.setdefault("param", "model")
        super().__init__(message, **kw)


class NotFoundError(RouterError, status=404, type="invalid_request_error", code="not_found"):
    """An admin lookup (a decision id) that is unknown or not the caller's to see."""


class RequestTimeoutError(
    RouterError, status=408, type="invalid_request_error", code="request_timeout"
):
    """The client stopped sending its request body."""


class BodyTooLargeError(
    RouterError, status=413, type="invalid_request_error", code="body_too_large"
):
    """The body is over ``--max-body-mb``."""


class BudgetExceededError(RouterError, status=429, type="budget_exceeded", code="budget_exceeded"):
    """The team's budget cannot cover this request's expected cost."""


class RateLimitedError(RouterError, status=429, type="rate_limited", code="rate_limited"):
    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message, headers={"retry-after": str(max(1, math.ceil(retry_after_s)))})
        self.retry_after_s = retry_after_s


class UpstreamError(RouterError, status=502, type="upstream_error", code="upstream_error"):
    """Every candidate failed. ``code`` is the last upstream status ("503") or kind ("timeout")."""


class NotReadyError(RouterError, status=503, type="not_ready", code="not_ready"):
    """The P2L model is loading or failed to load, the ledger is unreachable, or the router is stopping."""


class OverloadedError(RouterError, status=503, type="overloaded", code="overloaded"):
    def __init__(self, message: str, *, retry_after_s: float = 1.0, **kw: Any) -> None:
        headers = kw.pop("headers", None) or {}
        headers.setdefault("retry-after", str(max(1, round(retry_after_s))))
        super().__init__(message, headers=headers, **kw)
        self.retry_after_s = retry_after_s


class ScorerUnavailableError(
    RouterError, status=503, type="scorer_unavailable", code="scorer_unavailable"
):
    """The remote scoring engine does not answer (or its circuit is open) and the team's
    ``on_scorer_down`` is ``reject``."""


@dataclass(frozen=True)
class ConfigProblem:
    file: str
    field: str
    message: str

    def __str__(self) -> str:
        return (
            f"{self.file}: {self.field}: {self.message}"
            if self.field
            else f"{self.file}: {self.message}"
        )


class ConfigError(Exception):
    """One or more problems in the configuration files; each names its file and field."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class ProviderRejectedError(RouterError, type="invalid_request_error"):
    """The provider refused the client's request (400/413/422): its answer goes back to
    the client as it was, in OpenAI's error shape, and no other candidate is tried."""

    def __init__(
        self,
        status: int,
        message: str,
        error: dict[str, Any] | None = None,
        *,
        summary: str | None = None,
    ) -> None:
        super().__init__(message, summary=summary)
        self.status = status
        err = error or {}
        self._body = {
            "error": {
                "message": err.get("message") or message,
                "type": err.get("type") or self.type,
                "param": err.get("param"),
                "code": err.get("code"),
            }
        }

    def body(self) -> dict[str, Any]:
        return self._body
