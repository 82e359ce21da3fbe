"""Stored responses for the Responses front: ``store``, ``previous_response_id``, and
``GET`` / ``DELETE /v1/responses/{id}``.

- ``store`` (default true, as OpenAI's): after the answer is settled, the ``Response``
  the client got is kept in the ledger's store (router/ledger/stored_responses.py) with
  the request's own input items, for the router's retention (``--response-retention-days``)
  or the team's ``response_retention_s``. ``store: false`` keeps nothing. A record whose
  JSON is over ``max_bytes`` is not stored (logged, counted); neither is one the store
  cannot take: the answer has gone out either way, storing never fails it.
- The router mints the id (``resp_`` + 48 hex digits), whatever the upstream called its
  answer, so the id the client holds is the key the store uses, and no upstream's id
  can collide with another's.
- ``previous_response_id`` (the caller's team's, unexpired) is resolved before
  planning: the chain of stored records (each one's input, then its output) is walked
  back at most ``MAX_CHAIN`` records and prepended to the new input, so every upstream
  protocol gets the whole conversation; instructions are not carried over (as OpenAI).
  An unknown id, another team's, or a chain with a missing link is a 404 naming
  ``previous_response_id``.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from router.config import TeamPolicy
from router.errors import InvalidRequestError, NotFoundError
from router.ledger import Ledger, LedgerError
from router.ledger.stored_responses import StoredResponse

log = logging.getLogger("router")

DEFAULT_RETENTION_S = 30 * 86400.0
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
# The most stored responses one ``previous_response_id`` walks back through.
MAX_CHAIN = 256
# Output items that go back into a conversation (the Responses codec reads them as input).
REPLAYABLE = frozenset(
    {"message", "function_call", "reasoning", "custom_tool_call", "custom_tool_call_output"}
)


@dataclass(frozen=True)
class StoreConfig:
    """How long a stored response is kept, and the most bytes one may take."""

    retention_s: float = DEFAULT_RETENTION_S
    max_bytes: int = DEFAULT_MAX_BYTES

    def __post_init__(self) -> None:
        if not self.retention_s > 0:
            raise ValueError(f"response retention must be > 0 s (got {self.retention_s!r})")
        if self.max_bytes < 1:
            raise ValueError(f"the stored-response cap must be >= 1 byte (got {self.max_bytes!r})")


@dataclass(frozen=True, slots=True)
class StoredOwner:
    """Who a stored response belongs to (for session affinity: the session of
    ``previous_response_id``)."""

    team: str
    session: str | None
    model: str
    decision_id: str | None


def new_response_id() -> str:
    return "resp_" + secrets.token_hex(24)


def input_items(value: Any) -> list[dict[str, Any]]:
    """The request's ``input`` as a list of items (a string is one user message)."""
    if isinstance(value, str):
        return [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": value}]}
        ]
    return list(value) if isinstance(value, list) else []


def store_flag(data: dict[str, Any]) -> bool:
    value = data.get("store", True)
    if value is None:
        return True
    if not isinstance(value, bool):
        raise InvalidRequestError("store: must be a boolean", param="store")
    return value


def _not_found(response_id: str, why: str = "") -> NotFoundError:
    return NotFoundError(
        f"Previous response with id '{response_id}' not found.{why}",
        param="previous_response_id",
    )


class ResponseStore:
    def __init__(
        self,
        ledger: Ledger,
        config: StoreConfig,
        clock: Callable[[], float],
        count: Callable[[str], None] = lambda outcome: None,
    ) -> None:
        self.ledger = ledger
        self.config = config
        self.clock = clock
        self.count = count  # outcome: stored | too_large | failed

    def retention_s(self, team: TeamPolicy) -> float:
        own = team.response_retention_s
        return own if own is not None else self.config.retention_s

    async def conversation(self, team: str, previous_id: Any) -> list[dict[str, Any]]:
        """The stored conversation ``previous_id`` ends, as input items, oldest first."""
        if not isinstance(previous_id, str) or not previous_id:
            raise InvalidRequestError(
                "previous_response_id: must be a non-empty string", param="previous_response_id"
            )
        now = self.clock()
        turns: list[list[dict[str, Any]]] = []
        current: str | None = previous_id
        while current is not None:
            if len(turns) >= MAX_CHAIN:
                raise InvalidRequestError(
                    f"previous_response_id: the conversation is longer than {MAX_CHAIN} stored"
                    " responses; send its input instead",
                    param="previous_response_id",
                )
            stored = await self.ledger.get_response(current, now=now)
            if stored is None or stored.team != team:
                if current == previous_id:
                    raise _not_found(previous_id)
                raise _not_found(
                    previous_id, f" An earlier response of its conversation ('{current}') is gone."
                )
            output = stored.response.get("output") or []
            turns.append(stored.input + [i for i in output if i.get("type") in REPLAYABLE])
            current = stored.previous_response_id
        return [item for turn in reversed(turns) for item in turn]

    async def save(
        self,
        team: TeamPolicy,
        response: dict[str, Any],
        own_input: list[dict[str, Any]],
        *,
        previous_id: str | None,
        session: str | None,
        decision_id: str | None,
    ) -> bool:
        """Keep ``response``; False (logged, counted) when it is too large or the store
        failed. Never raises: the answer has gone out."""
        now = self.clock()
        stored = StoredResponse(
            id=response["id"],
            team=team.name,
            created_at=now,
            expires_at=now + self.retention_s(team),
            response=response,
            input=own_input,
            previous_response_id=previous_id,
            session=session,
            decision_id=decision_id,
        )
        try:
            text = stored.to_json()
            if len(text.encode()) > self.config.max_bytes:
                log.warning(
                    "response %s not stored: %d bytes is over the %d-byte cap",
                    stored.id,
                    len(text.encode()),
                    self.config.max_bytes,
                )
                self.count("too_large")
                return False
            await self.ledger.put_response(stored, text)
        except (LedgerError, TypeError, ValueError) as exc:
            log.error("response %s not stored: %s", stored.id, exc)
            self.count("failed")
            return False
        self.count("stored")
        return True

    async def get(self, team: str, response_id: str) -> dict[str, Any]:
        stored = await self.ledger.get_response(response_id, now=self.clock())
        if stored is None or stored.team != team:
            raise NotFoundError(f"Response with id '{response_id}' not found.", param="response_id")
        return stored.response

    async def delete(self, team: str, response_id: str) -> dict[str, Any]:
        if not await self.ledger.delete_response(response_id, team):
            raise NotFoundError(f"Response with id '{response_id}' not found.", param="response_id")
        return {"id": response_id, "object": "response.deleted", "deleted": True}

    async def owner(self, response_id: str) -> StoredOwner | None:
        """Who ``response_id`` belongs to, its session and the model that served it; None
        when unknown or expired. Callers check the team before using the rest."""
        stored = await self.ledger.get_response(response_id, now=self.clock())
        if stored is None:
            return None
        return StoredOwner(
            stored.team,
            stored.session,
            str(stored.response.get("model") or ""),
            stored.decision_id,
        )
