"""A minimal JSON value that validates against a JSON schema, for the echo provider's tool
calls and structured outputs (so agents and ``with_structured_output`` run offline).

Covers what OpenAI tool and ``response_format`` schemas use: ``$ref`` into ``$defs`` /
``definitions``, ``enum``/``const``/``default``, ``anyOf``/``oneOf``/``allOf``, type
lists, objects (required properties only), arrays (``minItems`` items), strings (length
and common formats), numbers (bounds). No library generates instances (jsonschema
validates; hypothesis-jsonschema generates random ones, not a small deterministic one).
"""

from __future__ import annotations

import math
from typing import Any

MAX_DEPTH = 32
FORMATS = {
    "date-time": "1970-01-01T00:00:00Z",
    "date": "1970-01-01",
    "time": "00:00:00Z",
    "email": "echo@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "00000000-0000-0000-0000-000000000000",
}


def minimal_instance(schema: Any, root: Any = None, depth: int = 0) -> Any:
    """The smallest sensible value of ``schema`` (``root`` resolves ``$ref``)."""
    root = schema if root is None else root
    if not isinstance(schema, dict) or depth > MAX_DEPTH:
        return None
    if "$ref" in schema:
        return minimal_instance(_resolve(root, schema["$ref"]), root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if options:
            usable = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
            return minimal_instance((usable or options)[0], root, depth + 1)
    if schema.get("allOf"):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            part = (
                _resolve(root, part["$ref"]) if isinstance(part, dict) and "$ref" in part else part
            )
            if isinstance(part, dict):
                merged = {**merged, **part}
        return minimal_instance(merged, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), kind[0] if kind else None)
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else None
    if kind == "object":
        props = schema.get("properties") or {}
        return {
            name: minimal_instance(props.get(name, {}), root, depth + 1)
            for name in schema.get("required") or []
        }
    if kind == "array":
        n = int(schema.get("minItems") or 0)
        items = schema.get("items")
        if isinstance(items, list):  # tuple form
            return [minimal_instance(s, root, depth + 1) for s in items[: max(n, len(items))]]
        return [minimal_instance(items or {}, root, depth + 1) for _ in range(n)]
    if kind == "string":
        return _string(schema)
    if kind in ("integer", "number"):
        return _number(schema, kind == "integer")
    if kind == "boolean":
        return False
    return None


def _resolve(root: Any, ref: str) -> Any:
    if not ref.startswith("#/"):
        return {}
    node = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return node


def _string(schema: dict[str, Any]) -> str:
    text = FORMATS.get(str(schema.get("format")), "echo")
    lo = int(schema.get("minLength") or 0)
    if len(text) < lo:
        text += "x" * (lo - len(text))
    hi = schema.get("maxLength")
    return text[: int(hi)] if hi is not None else text


def _number(schema: dict[str, Any], integer: bool) -> int | float:
    lo = schema.get("minimum")
    ex = schema.get("exclusiveMinimum")
    value: float = 0.0
    if lo is not None:
        value = max(value, float(lo)) if schema.get("maximum", math.inf) >= 0 else float(lo)
    if isinstance(ex, int | float) and value <= ex:
        value = ex + 1
    hi = schema.get("maximum")
    if hi is not None and value > hi:
        value = float(lo) if lo is not None else float(hi)
    if integer:
        value = math.ceil(value)
    return int(value) if integer else float(value)
