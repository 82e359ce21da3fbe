"""The configuration models: ``providers.yaml`` and ``policies/<team>.yaml`` once read.

Everything is checked at load time so that a bad file is refused before it can route a
request; each problem names the file and the dotted field. Secrets (provider keys, team
client keys, the admin key) are read from environment variables named in the files and
never appear in ``repr``, logs or errors.

Access fails closed: a key variable a team file names must be set; a team file must state
its budget (``budget: none`` for no limit); with no client key anywhere the router refuses
to start unless unauthenticated mode is asked for, and then serves every request as the
team ``default``, which must have its own file. Client and admin keys are kept only as
SHA-256 digests and compared in constant time.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import logging
from collections.abc import Sequence
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from router.redaction import Redactor

log = logging.getLogger("router.config")

__all__ = [
    "ADMIN_KEY_ENV",
    "DEFAULT_EXPECTED_OUTPUT_TOKENS",
    "DEFAULT_TEAM",
    "ROUTER_ALIASES",
    "STRATEGY_NAMES",
    "BudgetConfig",
    "Catalog",
    "ModelConfig",
    "ProviderConfig",
    "RateLimitConfig",
    "RouterConfig",
    "SessionConfig",
    "Strategy",
    "TeamPolicy",
    "Timeouts",
    "key_digest",
]

ROUTER_ALIASES: tuple[str, ...] = ("p2l", "auto", "router")
DEFAULT_TEAM = "default"
ADMIN_KEY_ENV = "P2L_ROUTER_ADMIN_KEY"
# Output tokens a request is priced at when neither it, the learned average nor the
# model's ``expected_output_tokens`` says (router.policy.candidates.expected_output_tokens).
DEFAULT_EXPECTED_OUTPUT_TOKENS = 500

# The one list of strategy names: the policy's registry (router.policy.strategies.STRATEGIES)
# implements exactly these, checked when it is imported. They live here, below the policy,
# because the policy reads these models (it builds on config, not config on it).
STRATEGY_NAMES: tuple[str, ...] = ("max-quality", "strict", "cost-aware", "lp", "optimal-lp")
Strategy = Literal[STRATEGY_NAMES]  # type: ignore[valid-type]
Period = Literal["hour", "day", "week", "month", "total"]
Affinity = Literal["cache-aware", "sticky", "off"]
# How long a provider keeps a prompt prefix cached when providers.yaml does not say
# (Anthropic's default ephemeral cache and OpenAI's automatic one: about five minutes).
DEFAULT_CACHE_TTL_S = 300.0


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Timeouts(_Model):
    """Seconds. ``first_byte``: until response headers / first chunk; ``idle``: longest gap
    between stream chunks; ``total``: the whole exchange."""

    connect: float = Field(5.0, gt=0)
    first_byte: float = Field(60.0, gt=0)
    idle: float = Field(60.0, gt=0)
    total: float = Field(600.0, gt=0)


class ProviderLimits(_Model):
    """Bytes one answer may make the router hold: an SSE event, a non-streamed answer."""

    max_sse_event_bytes: int = Field(1 << 20, ge=1024)
    max_response_bytes: int = Field(16 << 20, ge=1024)


class CircuitConfig(_Model):
    """``failures`` consecutive failed calls skip the provider for ``cooldown_s``."""

    failures: int = Field(5, ge=1)
    cooldown_s: float = Field(30.0, gt=0)


class ProviderConfig(_Model):
    name: str
    base_url: str
    # The provider's wire protocol (router/upstream/protocols.py): path, auth and codec.
    api: Literal["openai-chat", "openai-responses", "anthropic-messages"] = "openai-chat"
    api_key_env: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeouts: Timeouts = Field(default_factory=Timeouts)
    max_retries: int = Field(2, ge=0, le=10)
    max_connections: int = Field(256, ge=1)
    # Statuses that mean "not processed, try again" besides 429 and 503.
    retry_statuses: frozenset[int] = frozenset()
    limits: ProviderLimits = Field(default_factory=ProviderLimits)
    circuit: CircuitConfig = Field(default_factory=CircuitConfig)
    # Seconds the provider keeps a prompt prefix cached (cache-aware session pricing).
    cache_ttl_s: float = Field(DEFAULT_CACHE_TTL_S, ge=0)

    _api_key: str | None = PrivateAttr(default=None)

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https:// (got {v!r})")
        return v.rstrip("/")

    @field_validator("retry_statuses")
    @classmethod
    def _statuses(cls, v: frozenset[int]) -> frozenset[int]:
        if any(not 400 <= s <= 599 for s in v):
            raise ValueError(f"must be HTTP error statuses, 400-599 (got {sorted(v)})")
        return v

    @property
    def api_key(self) -> str | None:
        return self._api_key


class LongContextPrices(_Model):
    """A model's prices for a request whose prompt (every input token, all classes) is
    above ``above_prompt_tokens``: the whole request, input and output, bills at these
    (Gemini 2.5 Pro, Claude's 1M-context window). A class price left out is the tier's
    input price (the 1-hour write: the tier's 5-minute write)."""

    above_prompt_tokens: int = Field(gt=0)
    input_usd_per_mtok: float = Field(ge=0)
    output_usd_per_mtok: float = Field(ge=0)
    cached_input_usd_per_mtok: float | None = Field(None, ge=0)
    cache_write_usd_per_mtok: float | None = Field(None, ge=0)
    cache_write_1h_usd_per_mtok: float | None = Field(None, ge=0)


class ModelConfig(_Model):
    name: str
    provider: str
    upstream_model: str = ""
    input_usd_per_mtok: float = Field(ge=0)
    output_usd_per_mtok: float = Field(ge=0)
    # Prices of the input classes a provider bills apart (None: the input price).
    cached_input_usd_per_mtok: float | None = Field(None, ge=0)
    cache_write_usd_per_mtok: float | None = Field(None, ge=0)  # 5-minute or unspecified
    cache_write_1h_usd_per_mtok: float | None = Field(None, ge=0)  # None: the 5-minute price
    long_context: LongContextPrices | None = None
    context_window: int | None = Field(None, gt=0)
    # None: not declared, so unknown (the model stays a candidate for every request);
    # a list, even empty, is what the model can do and filters requests that need more.
    supports: frozenset[str] | None = None
    expected_output_tokens: int | None = Field(None, gt=0)
    # The limit sent where the provider's protocol requires one and the request gave none.
    max_output_tokens: int | None = Field(None, gt=0)

    def model_post_init(self, __context: Any) -> None:
        if not self.upstream_model:
            object.__setattr__(self, "upstream_model", self.name)

    def tier(self, prompt_tokens: int) -> ModelConfig | LongContextPrices:
        """The prices a request with this many prompt tokens bills at."""
        lc = self.long_context
        return lc if lc is not None and prompt_tokens > lc.above_prompt_tokens else self

    def cost_usd(
        self,
        prompt_tokens: int,
        completion_tokens: int,
        *,
        cache_read: int = 0,
        cache_write: int = 0,
        cache_write_1h: int = 0,
    ) -> float:
        """USD for ``prompt_tokens`` of input (every class: the cache counts are subsets of
        it) and ``completion_tokens`` of output, at the prices of the tier the prompt falls
        in. A class without its own price costs the input price (the 1-hour write, the
        5-minute write's): never less than the bill."""
        p = self.tier(prompt_tokens)
        inp = p.input_usd_per_mtok
        write = p.cache_write_usd_per_mtok if p.cache_write_usd_per_mtok is not None else inp
        write_1h = p.cache_write_1h_usd_per_mtok
        read = p.cached_input_usd_per_mtok
        uncached = prompt_tokens - cache_read - cache_write - cache_write_1h
        return (
            uncached * inp
            + cache_read * (read if read is not None else inp)
            + cache_write * write
            + cache_write_1h * (write_1h if write_1h is not None else write)
            + completion_tokens * p.output_usd_per_mtok
        ) / 1e6


class Catalog(_Model):
    """Providers and the models they serve. ``skipped`` maps a provider whose key variable
    is unset to that variable's name; its models are not available."""

    providers: dict[str, ProviderConfig]
    models: dict[str, ModelConfig]
    skipped: dict[str, str] = Field(default_factory=dict)
    source: str = "providers.yaml"

    def available(self, model: str) -> ModelConfig | None:
        cfg = self.models.get(model)
        if cfg is None or cfg.provider in self.skipped:
            return None
        return cfg

    def available_models(self) -> dict[str, ModelConfig]:
        return {n: m for n, m in self.models.items() if m.provider not in self.skipped}


class BudgetConfig(_Model):
    """``usd`` is required: None (``budget: none`` in a file) means no limit, said out loud;
    spend is still recorded per period."""

    usd: float | None = Field(ge=0)
    period: Period = "day"
    timezone: str = "UTC"
    on_exhausted: Literal["reject", "cheapest"] = "reject"
    pacing: bool = False
    reservation_ttl_s: float = Field(900.0, gt=0)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {v!r} (e.g. UTC, Europe/Paris)") from exc
        return v

    @property
    def tzinfo(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class RateLimitConfig(_Model):
    """Per-team request and token rates, counted by the ledger over a sliding minute."""

    requests_per_minute: int | None = Field(None, gt=0)
    tokens_per_minute: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _some_limit(self) -> RateLimitConfig:
        if self.requests_per_minute is None and self.tokens_per_minute is None:
            raise ValueError("set requests_per_minute and/or tokens_per_minute, or omit rate_limit")
        return self

    def describe(self) -> str:
        parts = []
        if self.requests_per_minute:
            parts.append(f"{self.requests_per_minute} requests/min")
        if self.tokens_per_minute:
            parts.append(f"{self.tokens_per_minute} tokens/min")
        return ", ".join(parts)


class SessionConfig(_Model):
    """How a team's conversations are routed (router/serving/sessions.py): ``cache-aware``
    prices each candidate with the prompt prefix it would read from cache, ``sticky``
    keeps the session's model while it is eligible, ``off`` routes every request afresh.
    ``ttl_s``: a session unseen this long is forgotten."""

    affinity: Affinity = "cache-aware"
    ttl_s: float = Field(3600.0, gt=0)


def key_digest(key: str) -> bytes:
    """SHA-256 of a client or admin key: what the config keeps instead of the key."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class TeamPolicy(_Model):
    """One team. ``budget`` has no default: ``BudgetConfig(usd=None)`` is the explicit way
    to say "no limit"."""

    name: str
    file: str = ""
    api_keys_env: list[str] = Field(default_factory=list)
    budget: BudgetConfig
    rate_limit: RateLimitConfig | None = None
    allow: list[str] = Field(default_factory=lambda: ["*"])
    deny: list[str] = Field(default_factory=list)
    strategy: Strategy = "cost-aware"
    cost_sensitivity: float = Field(20.0, ge=0)
    max_cost_per_request_usd: float | None = Field(None, gt=0)
    opponent_mix: dict[str, float] | None = None
    log_prompts: bool = False
    # With a remote scorer that is down: reject (503 scorer_unavailable) | cheapest | a model
    on_scorer_down: str = Field("reject", min_length=1)
    # How long the team's stored Responses are kept (None: the router's
    # --response-retention-days).
    response_retention_s: float | None = Field(None, gt=0)
    session: SessionConfig = Field(default_factory=SessionConfig)

    _key_digests: tuple[bytes, ...] = PrivateAttr(default=())

    @field_validator("budget", mode="before")
    @classmethod
    def _budget(cls, v: Any) -> Any:
        if isinstance(v, str) and v.strip().lower() == "none":
            return {"usd": None}
        if v is None:
            raise ValueError(
                "is empty; write `budget: none` for no limit, or `budget: {usd: 10, period: day}`"
            )
        return v

    @field_validator("opponent_mix")
    @classmethod
    def _mix(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is not None and (any(w < 0 for w in v.values()) or sum(v.values()) <= 0):
            raise ValueError("weights must be >= 0 with a positive sum")
        return v

    @property
    def key_digests(self) -> tuple[bytes, ...]:
        """SHA-256 digests of the team's client keys (the keys themselves are not kept)."""
        return self._key_digests

    @property
    def key_count(self) -> int:
        return len(self._key_digests)

    def with_key_digests(self, digests: Sequence[bytes]) -> TeamPolicy:
        """This policy holding these client-key digests (the loader reads the keys)."""
        team = self.model_copy()
        team._key_digests = tuple(digests)
        return team

    def allows(self, model: str) -> bool:
        return any(fnmatch.fnmatchcase(model, g) for g in self.allow) and not any(
            fnmatch.fnmatchcase(model, g) for g in self.deny
        )


class RouterConfig(_Model):
    """``auth_enabled`` False only in unauthenticated mode (every request is team
    ``default``). Admin endpoints are open only to ``P2L_ROUTER_ADMIN_KEY``; unset, they are
    closed to everyone (``admin_enabled`` False)."""

    catalog: Catalog
    teams: dict[str, TeamPolicy]
    auth_enabled: bool
    warnings: tuple[str, ...] = ()

    _team_by_digest: dict[bytes, str] = PrivateAttr(default_factory=dict)
    _admin_digest: bytes | None = PrivateAttr(default=None)

    def model_post_init(self, __context: Any) -> None:
        self._team_by_digest = {d: t.name for t in self.teams.values() for d in t.key_digests}

    @classmethod
    def create(
        cls,
        *,
        catalog: Catalog,
        teams: dict[str, TeamPolicy],
        auth_enabled: bool,
        warnings: Sequence[str] = (),
        admin_digest: bytes | None = None,
    ) -> RouterConfig:
        """A config whose admin endpoints open to the key with ``admin_digest`` (None: closed)."""
        cfg = cls(catalog=catalog, teams=teams, auth_enabled=auth_enabled, warnings=tuple(warnings))
        cfg._admin_digest = admin_digest
        return cfg

    def team_for_key(self, key: str | None) -> TeamPolicy | None:
        """The team whose client key this is; None for no key or an unknown one."""
        if not self.auth_enabled:
            return self.teams[DEFAULT_TEAM]
        if not key:
            return None
        digest = key_digest(key)
        for known, name in self._team_by_digest.items():
            if hmac.compare_digest(known, digest):
                return self.teams[name]
        return None

    @property
    def admin_enabled(self) -> bool:
        return self._admin_digest is not None

    def is_admin(self, key: str | None) -> bool:
        """True only for the admin key; always False when none is configured."""
        if self._admin_digest is None or not key:
            return False
        return hmac.compare_digest(self._admin_digest, key_digest(key))

    def redactor(self, *extra_secrets: str | None) -> Redactor:
        """What masks this config's secrets (provider keys in plain text, client and admin
        keys by digest) and ``extra_secrets`` (the scoring engine's key) in upstream text."""
        plain = [p.api_key for p in self.catalog.providers.values()]
        digests = list(self._team_by_digest)
        if self._admin_digest is not None:
            digests.append(self._admin_digest)
        return Redactor([*plain, *extra_secrets], digests)
