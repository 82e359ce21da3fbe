"""What the codecs share where they mean the same thing.

Each codec is its own package (a protocol is a sibling, not a branch), but a few pieces
are the same logic in all of them, and a fix to one copy would not reach the others:

- the field checks behind a 400 in the ``"<param>: <problem>"`` form that the Anthropic
  and Responses decoders use (the chat decoder writes OpenAI's own wording and keeps its
  checks in ``openai_chat.parts``);
- a lenient token count, clamped to be non-negative, for the usage normalisers that
  read counts that way (Anthropic, Responses; chat's ``count`` refuses what these clamp),
  and the input/output fallback on ``total_tokens`` both OpenAI protocols report;
- base64 ``data:`` URLs, and a wire object's optional fields (absent when None).

Pure: no I/O, and nothing from serving, upstream or api.
"""

from __future__ import annotations

import math
from typing import Any, NoReturn

from router.chat.model import Document
from router.errors import InvalidRequestError

# ---------------------------------------------------------------- request fields


def field_error(param: str, message: str) -> InvalidRequestError:
    """A 400 naming the field: ``messages.3.content: must be a string``."""
    return InvalidRequestError(f"{param}: {message}", param=param)


def bad(param: str, message: str) -> NoReturn:
    raise field_error(param, message)


def want_str(value: Any, param: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        bad(param, "must be a string")
    return value


def want_dict(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        bad(param, "must be an object")
    return value


def want_list(value: Any, param: str) -> list[Any]:
    if not isinstance(value, list):
        bad(param, "must be an array")
    return value


def want_int(value: Any, param: str, *, minimum: int = 0) -> int:
    """A whole number (not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        bad(param, f"must be an integer >= {minimum}")
    return value


def anthropic_neutral(key: str, value: Any) -> bool:
    """An Anthropic Messages extras field that changes nothing another protocol would
    answer, so a candidate of another protocol may leave it out (Claude Code sends each
    of these on every call): ``thinking`` of a type with no budget (``adaptive``; the
    reasoning hint already carries what maps); ``output_config`` holding only
    ``effort`` (mapped to the reasoning hint); ``context_management`` whose edits only
    clear thinking (another protocol never gets Anthropic's thinking blocks); and
    ``metadata`` and ``service_tier`` (billing and tracing, not the answer)."""
    if key in ("metadata", "service_tier", "thinking"):
        return True
    if key == "output_config":
        return isinstance(value, dict) and set(value) <= {"effort"}
    if key == "context_management":
        edits = value.get("edits") if isinstance(value, dict) else None
        return (
            isinstance(value, dict)
            and set(value) <= {"edits"}
            and isinstance(edits, list)
            and all(
                isinstance(e, dict) and str(e.get("type", "")).startswith("clear_thinking_")
                for e in edits
            )
        )
    return False


# ---------------------------------------------------------------- usage


def clamped_count(value: Any) -> int | None:
    """A token count, or None when it is not one (missing, null, text, NaN, a bool);
    a negative clamps to 0 and a finite float is truncated."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        value = int(value)
    if not isinstance(value, int):
        return None
    return max(0, value)


def bad_count(value: Any) -> bool:
    """A count a provider sent (not absent, not null) that is not a whole number >= 0."""
    if value is None:
        return False
    return isinstance(value, bool) or not isinstance(value, int) or value < 0


def fill_from_total(
    inp: int | None, out: int | None, total: int | None
) -> tuple[int | None, int | None]:
    """The input count from ``total - output`` when only it is missing, else the output
    from ``total - input`` (neither below 0)."""
    if inp is None and total is not None and out is not None:
        inp = max(0, total - out)
    if out is None and total is not None and inp is not None:
        out = max(0, total - inp)
    return inp, out


# ---------------------------------------------------------------- data URLs


def split_data_url(url: str) -> tuple[str, str] | None:
    """``(media_type, base64 data)`` of a base64 ``data:`` URL (the media type as
    written, possibly empty), else None."""
    if not url.startswith("data:"):
        return None
    head, sep, data = url[5:].partition(",")
    if not sep or not head.endswith(";base64"):
        return None
    return head.removesuffix(";base64"), data


def data_url(media_type: str, data: str) -> str:
    return f"data:{media_type};base64,{data}"


def document_data(doc: Document) -> str | None:
    """A document's bytes as both OpenAI protocols' file parts carry them: a data URL
    when its media type is known, else bare base64 (None without inline bytes)."""
    if doc.data is None:
        return None
    return data_url(doc.media_type, doc.data) if doc.media_type else doc.data


# ---------------------------------------------------------------- wire objects


def present(**fields: Any) -> dict[str, Any]:
    """``fields`` without the None ones: the optional keys of a wire object, in order."""
    return {k: v for k, v in fields.items() if v is not None}
