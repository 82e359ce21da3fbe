"""Typed, validated configuration: ``providers.yaml`` and ``policies/<team>.yaml``.

Everything is checked at load time so that a bad file is refused before it can route a
request; each problem names the file and the dotted field. Secrets (provider keys, team
client keys) are read from environment variables named in the files and never appear in
``repr``, logs or errors.
"""

from __future__ import annotations

import fnmatch
import logging
import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from router.errors import ConfigError, ConfigProblem

log = logging.getLogger("router.config")

ROUTER_ALIASES: tuple[str, ...] = ("p2l", "auto", "router")
DEFAULT_EXPECTED_OUTPUT_TOKENS = 500
DEFAULT_TEAM = "default"

Strategy = Literal["max-quality", "strict", "cost-aware", "lp", "optimal-lp"]
STRATEGIES: tuple[str, ...] = ("max-quality", "strict", "cost-aware", "lp", "optimal-lp")
Period = Literal["hour", "day", "week", "month", "total"]


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
    api_key_env: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeouts: Timeouts = Field(default_factory=Timeouts)
    max_retries: int = Field(2, ge=0, le=10)
    max_connections: int = Field(256, ge=1)
    # Statuses that mean "not processed, try again" besides 429 and 503.
    retry_statuses: frozenset[int] = frozenset()
    limits: ProviderLimits = Field(default_factory=ProviderLimits)
    circuit: CircuitConfig = Field(default_factory=CircuitConfig)

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


class ModelConfig(_Model):
    name: str
    provider: str
    upstream_model: str = ""
    input_usd_per_mtok: float = Field(ge=0)
    output_usd_per_mtok: float = Field(ge=0)
    context_window: int | None = Field(None, gt=0)
    supports: frozenset[str] = frozenset()
    expected_output_tokens: int | None = Field(None, gt=0)

    def model_post_init(self, __context: Any) -> None:
        if not self.upstream_model:
            object.__setattr__(self, "upstream_model", self.name)

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (
            prompt_tokens * self.input_usd_per_mtok + completion_tokens * self.output_usd_per_mtok
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
    usd: float | None = Field(None, ge=0)  # None: no limit (spend is still recorded)
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


class TeamPolicy(_Model):
    name: str
    file: str = ""
    api_keys_env: list[str] = Field(default_factory=list)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    allow: list[str] = Field(default_factory=lambda: ["*"])
    deny: list[str] = Field(default_factory=list)
    strategy: Strategy = "cost-aware"
    cost_sensitivity: float = Field(20.0, ge=0)
    max_cost_per_request_usd: float | None = Field(None, gt=0)
    opponent_mix: dict[str, float] | None = None
    log_prompts: bool = False

    _keys: tuple[str, ...] = PrivateAttr(default=())

    @field_validator("opponent_mix")
    @classmethod
    def _mix(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is not None and (any(w < 0 for w in v.values()) or sum(v.values()) <= 0):
            raise ValueError("weights must be >= 0 with a positive sum")
        return v

    @property
    def keys(self) -> tuple[str, ...]:
        return self._keys

    def allows(self, model: str) -> bool:
        return any(fnmatch.fnmatchcase(model, g) for g in self.allow) and not any(
            fnmatch.fnmatchcase(model, g) for g in self.deny
        )


class RouterConfig(_Model):
    catalog: Catalog
    teams: dict[str, TeamPolicy]
    auth_enabled: bool
    warnings: tuple[str, ...] = ()

    _by_key: dict[str, str] = PrivateAttr(default_factory=dict)

    def model_post_init(self, __context: Any) -> None:
        self._by_key = {k: t.name for t in self.teams.values() for k in t.keys}

    def team_for_key(self, key: str | None) -> TeamPolicy | None:
        if not self.auth_enabled:
            return self.teams[DEFAULT_TEAM]
        name = self._by_key.get(key or "")
        return self.teams[name] if name else None


# ---------------------------------------------------------------- loading


class _StrictLoader(yaml.SafeLoader):
    """safe_load that refuses a key repeated in one mapping (PyYAML keeps the last)."""


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, Hashable) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def _reserved(
    file: str, prefix: str, body: Mapping[str, Any], keys: tuple[str, ...]
) -> list[ConfigProblem]:
    """Fields the loader sets itself (the name is the mapping key or the file name)."""
    where = f"{prefix}." if prefix else ""
    return [
        ConfigProblem(file, f"{where}{k}", "unknown field (set by the loader)")
        for k in keys
        if k in body
    ]


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError([ConfigProblem(str(path), "", f"cannot read: {exc.strerror}")]) from exc
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        msg = f"invalid YAML{at}: {getattr(exc, 'problem', None) or exc}"
        raise ConfigError([ConfigProblem(str(path), "", msg)]) from exc


def _problems(file: str, prefix: str, exc: ValidationError) -> list[ConfigProblem]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling)"
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif "input" in err and err["type"] not in ("value_error",):
            msg = f"{msg} (got {err['input']!r})"
        out.append(ConfigProblem(file, loc, msg.removeprefix("Value error, ")))
    return out


def load_providers(path: str | Path, env: Mapping[str, str] | None = None) -> Catalog:
    env = os.environ if env is None else env
    path = Path(path)
    file = str(path)
    raw = _read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(
            [ConfigProblem(file, "", "must be a mapping with 'providers' and 'models'")]
        )
    problems: list[ConfigProblem] = []
    unknown = set(raw) - {"providers", "models"}
    problems += [ConfigProblem(file, k, "unknown top-level field") for k in sorted(unknown)]
    for section in ("providers", "models"):
        if not isinstance(raw.get(section) or {}, dict):
            problems.append(ConfigProblem(file, section, "must be a mapping of name -> settings"))
            raw[section] = {}
    providers: dict[str, ProviderConfig] = {}
    for name, body in (raw.get("providers") or {}).items():
        if not isinstance(body, dict):
            problems.append(ConfigProblem(file, f"providers.{name}", "must be a mapping"))
            continue
        if bad := _reserved(file, f"providers.{name}", body, ("name",)):
            problems += bad
            continue
        try:
            providers[name] = ProviderConfig(name=name, **body)
        except ValidationError as exc:
            problems += _problems(file, f"providers.{name}", exc)
    declared = set(raw.get("providers") or {})
    models: dict[str, ModelConfig] = {}
    for name, body in (raw.get("models") or {}).items():
        if not isinstance(body, dict):
            problems.append(ConfigProblem(file, f"models.{name}", "must be a mapping"))
            continue
        if bad := _reserved(file, f"models.{name}", body, ("name",)):
            problems += bad
            continue
        try:
            m = ModelConfig(name=str(name), **body)
        except ValidationError as exc:
            problems += _problems(file, f"models.{name}", exc)
            continue
        if m.provider not in declared:
            known = ", ".join(sorted(declared)) or "none"
            problems.append(
                ConfigProblem(
                    file,
                    f"models.{name}.provider",
                    f"unknown provider {m.provider!r} (known: {known})",
                )
            )
        models[m.name] = m
    if not providers and not problems:
        problems.append(ConfigProblem(file, "providers", "no providers defined"))
    if problems:
        raise ConfigError(problems)
    skipped: dict[str, str] = {}
    for p in providers.values():
        if p.api_key_env:
            key = env.get(p.api_key_env)
            if key:
                p._api_key = key
            else:
                skipped[p.name] = p.api_key_env
    return Catalog(providers=providers, models=models, skipped=skipped, source=file)


def load_policies(
    directory: str | Path, env: Mapping[str, str] | None = None
) -> dict[str, TeamPolicy]:
    env = os.environ if env is None else env
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError([ConfigProblem(str(directory), "", "policies folder not found")])
    teams: dict[str, TeamPolicy] = {}
    problems: list[ConfigProblem] = []
    owner_of_key: dict[str, str] = {}
    for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        file = str(path)
        try:
            raw = _read_yaml(path)
        except ConfigError as exc:
            problems += exc.problems
            continue
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            problems.append(ConfigProblem(file, "", "must be a mapping of policy fields"))
            continue
        raw = dict(raw)
        if bad := _reserved(file, "", raw, ("name", "file")):
            problems += bad
            continue
        name = str(raw.pop("team", None) or path.stem)
        if name in teams:
            problems.append(
                ConfigProblem(
                    file, "team", f"team {name!r} is already defined in {teams[name].file}"
                )
            )
            continue
        try:
            team = TeamPolicy(name=name, file=file, **raw)
        except ValidationError as exc:
            problems += _problems(file, "", exc)
            continue
        keys = []
        for i, var in enumerate(team.api_keys_env):
            value = env.get(var)
            if not value:
                log.warning(
                    "%s: api_keys_env[%d]: variable %s is unset; that key is ignored", file, i, var
                )
                continue
            if value in owner_of_key and owner_of_key[value] != name:
                problems.append(
                    ConfigProblem(
                        file,
                        f"api_keys_env[{i}]",
                        f"the key in {var} is also a key of team {owner_of_key[value]!r}",
                    )
                )
            owner_of_key[value] = name
            keys.append(value)
        team._keys = tuple(keys)
        teams[name] = team
    if problems:
        raise ConfigError(problems)
    return teams


def load_config(
    providers: str | Path, policies: str | Path, env: Mapping[str, str] | None = None
) -> RouterConfig:
    """Load both files; collect every problem from both before raising."""
    problems: list[ConfigProblem] = []
    catalog = teams = None
    try:
        catalog = load_providers(providers, env)
    except ConfigError as exc:
        problems += exc.problems
    try:
        teams = load_policies(policies, env)
    except ConfigError as exc:
        problems += exc.problems
    if problems or catalog is None or teams is None:
        raise ConfigError(problems)
    warnings: list[str] = []
    for prov, var in sorted(catalog.skipped.items()):
        warnings.append(f"provider {prov!r} skipped: {var} is unset; its models are not candidates")
    auth = any(t.keys for t in teams.values())
    if not auth:
        warnings.append(
            "no team API key is configured: auth is off, every request is team 'default'"
        )
        if DEFAULT_TEAM not in teams:
            teams[DEFAULT_TEAM] = TeamPolicy(name=DEFAULT_TEAM, file="(built-in)")
    for t in teams.values():
        for field, globs in (("allow", t.allow), ("deny", t.deny)):
            for g in globs:
                if not any(fnmatch.fnmatchcase(m, g) for m in catalog.models):
                    warnings.append(
                        f"{t.file}: {field}: {g!r} matches no model in {catalog.source}"
                    )
        if t.opponent_mix:
            for m in t.opponent_mix:
                if m not in catalog.models:
                    warnings.append(f"{t.file}: opponent_mix: {m!r} is not in {catalog.source}")
    return RouterConfig(catalog=catalog, teams=teams, auth_enabled=auth, warnings=tuple(warnings))
