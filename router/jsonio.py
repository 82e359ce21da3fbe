"""JSON for the hot path: orjson (a core dependency), one place.

``dumps`` returns compact UTF-8 bytes; ``loads`` takes bytes or str.
"""

from __future__ import annotations

from typing import Any

import orjson

JSONDecodeError = orjson.JSONDecodeError
loads = orjson.loads


def _default(obj: Any) -> Any:
    return str(obj)


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, default=_default)
