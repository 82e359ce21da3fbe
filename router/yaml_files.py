"""Reading the configuration's YAML files: strict parsing, and pydantic errors turned into
``ConfigProblem``s that name the file and the dotted field.

Kept apart from the models in ``router.config`` so that each module has one job; nothing
here knows what a provider or a team is.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from router.errors import ConfigError, ConfigProblem

__all__ = ["StrictLoader", "read_yaml", "reserved_fields", "validation_problems"]


class StrictLoader(yaml.SafeLoader):
    """safe_load that refuses a key repeated in one mapping (PyYAML keeps the last)."""


def _no_duplicates(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, Hashable) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def reserved_fields(
    file: str, prefix: str, body: Mapping[str, Any], keys: tuple[str, ...]
) -> list[ConfigProblem]:
    """Fields the loader sets itself (the name is the mapping key or the file name)."""
    where = f"{prefix}." if prefix else ""
    return [
        ConfigProblem(file, f"{where}{k}", "unknown field (set by the loader)")
        for k in keys
        if k in body
    ]


def read_yaml(path: Path) -> Any:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError([ConfigProblem(str(path), "", f"cannot read: {exc.strerror}")]) from exc
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        msg = f"invalid YAML{at}: {getattr(exc, 'problem', None) or exc}"
        raise ConfigError([ConfigProblem(str(path), "", msg)]) from exc


MISSING_HINTS = {
    "budget": "required field is missing; set a limit (`budget: {usd: 10, period: day}`) or "
    "write `budget: none` for no limit",
    "budget.usd": "required field is missing; a limit in USD, or `budget: none` for no limit",
}


def validation_problems(file: str, prefix: str, exc: ValidationError) -> list[ConfigProblem]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling)"
        elif err["type"] == "missing":
            msg = MISSING_HINTS.get(loc, "required field is missing")
        elif "input" in err and err["type"] not in ("value_error",):
            msg = f"{msg} (got {err['input']!r})"
        out.append(ConfigProblem(file, loc, msg.removeprefix("Value error, ")))
    return out
