"""JSON for the hot path: orjson (a core dependency), one place.

``dumps`` returns compact UTF-8 bytes; ``loads`` takes bytes or str. ``JSONResponse``
renders with them (Starlette's renders with the slower stdlib encoder).
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

JSONDecodeError = orjson.JSONDecodeError
loads = orjson.loads


def _default(obj: Any) -> Any:
    return str(obj)


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, default=_default)


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content)
