"""Loading ``providers.yaml`` and ``policies/<team>.yaml`` into the models of
:mod:`router.config.schema`.

Every problem from both files is collected before raising, each naming its file and
field. Access fails closed here: a key variable a team names must be set, a team must
state its budget, no client key at all is refused unless unauthenticated mode is asked
for (and then team ``default`` needs its own file), and the admin key may not double as
a team key. Keys are turned into digests at once; only the digests are kept.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from router.config.schema import (
    ADMIN_KEY_ENV,
    DEFAULT_TEAM,
    Catalog,
    ModelConfig,
    ProviderConfig,
    RouterConfig,
    TeamPolicy,
    key_digest,
)
from router.errors import ConfigError, ConfigProblem
from router.yaml_files import read_yaml, reserved_fields, validation_problems

__all__ = ["load_config", "load_policies", "load_providers"]


T = TypeVar("T")


def _section(
    raw: dict[str, Any], section: str, cls: type[T], file: str, problems: list[ConfigProblem]
) -> Iterator[tuple[Any, T | None]]:
    """Each entry of a ``name -> settings`` section, validated as ``cls`` (None when it is
    not; the problem is added to ``problems``)."""
    for name, body in (raw.get(section) or {}).items():
        where = f"{section}.{name}"
        if not isinstance(body, dict):
            problems.append(ConfigProblem(file, where, "must be a mapping"))
            yield name, None
        elif bad := reserved_fields(file, where, body, ("name",)):
            problems += bad
            yield name, None
        else:
            try:
                yield name, cls(name=str(name), **body)
            except ValidationError as exc:
                problems += validation_problems(file, where, exc)
                yield name, None


def load_providers(path: str | Path, env: Mapping[str, str] | None = None) -> Catalog:
    env = os.environ if env is None else env
    path = Path(path)
    file = str(path)
    raw = read_yaml(path)
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
    providers: dict[str, ProviderConfig] = {
        str(name): p
        for name, p in _section(raw, "providers", ProviderConfig, file, problems)
        if p is not None
    }
    declared = set(raw.get("providers") or {})
    models: dict[str, ModelConfig] = {}
    for name, m in _section(raw, "models", ModelConfig, file, problems):
        if m is None:
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
    owner_of_key: dict[bytes, str] = {}
    for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        file = str(path)
        try:
            raw = read_yaml(path)
        except ConfigError as exc:
            problems += exc.problems
            continue
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            problems.append(ConfigProblem(file, "", "must be a mapping of policy fields"))
            continue
        raw = dict(raw)
        if bad := reserved_fields(file, "", raw, ("name", "file")):
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
            problems += validation_problems(file, "", exc)
            continue
        digests: list[bytes] = []
        for i, var in enumerate(team.api_keys_env):
            value = env.get(var)
            if not value:
                problems.append(
                    ConfigProblem(
                        file,
                        f"api_keys_env[{i}]",
                        f"{var} is unset or empty; set it to this team's client key, or remove "
                        "it from the file (the router does not start with a named key missing)",
                    )
                )
                continue
            digest = key_digest(value)
            if digest in owner_of_key and owner_of_key[digest] != name:
                problems.append(
                    ConfigProblem(
                        file,
                        f"api_keys_env[{i}]",
                        f"the key in {var} is also a key of team {owner_of_key[digest]!r}",
                    )
                )
            owner_of_key[digest] = name
            if digest not in digests:
                digests.append(digest)
        teams[name] = team.with_key_digests(digests)
    if problems:
        raise ConfigError(problems)
    return teams


def load_config(
    providers: str | Path,
    policies: str | Path,
    env: Mapping[str, str] | None = None,
    *,
    allow_unauthenticated: bool = False,
) -> RouterConfig:
    """Load both files; collect every problem from both before raising.

    With no client key in any team file the router would serve anyone: that is refused
    unless ``allow_unauthenticated`` (``--allow-unauthenticated``), and then every request
    is the team ``default``, whose file (and so its budget) must exist.
    """
    env = os.environ if env is None else env
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
    auth = any(t.key_count for t in teams.values())
    if auth and allow_unauthenticated:
        warnings.append("allow_unauthenticated is set but team keys are configured: auth stays on")
    elif not auth:
        warnings.append(_unauthenticated(Path(policies), teams, allow_unauthenticated))
    admin = _admin_digest(env, teams)
    warnings += _unmatched_names(teams, catalog)
    return RouterConfig.create(
        catalog=catalog, teams=teams, auth_enabled=auth, warnings=warnings, admin_digest=admin
    )


def _unauthenticated(directory: Path, teams: Mapping[str, TeamPolicy], allowed: bool) -> str:
    """The start-up warning for unauthenticated mode, or the ConfigError refusing it."""
    if not allowed:
        raise ConfigError(
            [
                ConfigProblem(
                    str(directory),
                    "api_keys_env",
                    "no team file names a client key, so anyone could use the router; add "
                    "api_keys_env to a team, or start with --allow-unauthenticated "
                    "(P2L_ROUTER_ALLOW_UNAUTHENTICATED=1) to serve every request as team "
                    f"{DEFAULT_TEAM!r}",
                )
            ]
        )
    team = teams.get(DEFAULT_TEAM)
    if team is None:
        raise ConfigError(
            [
                ConfigProblem(
                    str(directory / f"{DEFAULT_TEAM}.yaml"),
                    "",
                    f"unauthenticated mode serves every request as team {DEFAULT_TEAM!r}, "
                    "which has no policy file; add one with its budget",
                )
            ]
        )
    b = team.budget
    limit = "no limit (budget: none)" if b.usd is None else f"${b.usd:g} per {b.period}"
    return (
        f"auth is off (allow_unauthenticated): every request is team {DEFAULT_TEAM!r} "
        f"from {team.file}, budget {limit}"
    )


def _admin_digest(env: Mapping[str, str], teams: Mapping[str, TeamPolicy]) -> bytes | None:
    key = env.get(ADMIN_KEY_ENV)
    if not key:
        return None
    digest = key_digest(key)
    for t in teams.values():
        if digest in t.key_digests:
            raise ConfigError(
                [
                    ConfigProblem(
                        t.file,
                        "api_keys_env",
                        f"a key of team {t.name!r} is the admin key ({ADMIN_KEY_ENV}); "
                        "the admin key must be a key of its own",
                    )
                ]
            )
    return digest


def _unmatched_names(teams: Mapping[str, TeamPolicy], catalog: Catalog) -> list[str]:
    """Warnings for allow/deny globs, opponent_mix and on_scorer_down names that match no
    catalog model."""
    out = []
    for t in teams.values():
        for field, globs in (("allow", t.allow), ("deny", t.deny)):
            for g in globs:
                if not any(fnmatch.fnmatchcase(m, g) for m in catalog.models):
                    out.append(f"{t.file}: {field}: {g!r} matches no model in {catalog.source}")
        if t.opponent_mix:
            for m in t.opponent_mix:
                if m not in catalog.models:
                    out.append(f"{t.file}: opponent_mix: {m!r} is not in {catalog.source}")
        down = t.on_scorer_down
        if down not in ("reject", "cheapest") and down not in catalog.models:
            out.append(
                f"{t.file}: on_scorer_down: {down!r} is neither reject, cheapest nor a model "
                f"in {catalog.source} (the cheapest model is used instead)"
            )
    return out
