"""Content parts of OpenAI chat messages, both ways, and the small shared helpers.

A user message's ``content`` is a string or a list of typed parts (``text``,
``image_url``, ``file``, ``input_audio``); an assistant's may hold ``text`` and
``refusal`` parts; a tool message's only ``text``. Everything here is shared by the
request decoder and encoder so that both agree on one mapping:

- ``image_url`` ``data:<type>;base64,<data>`` URLs become inline images (``data`` and
  ``media_type``), so that a protocol with a separate base64 source gets the bytes;
  other URLs stay URLs.
- ``file`` becomes a ``Document``; its ``file_data`` is a data URL (or, as some clients
  send it, bare base64).
- ``input_audio`` has no part of its own in the model: it becomes a ``Document`` whose
  ``media_type`` is ``audio/<format>``, which this codec turns back into ``input_audio``
  (a codec whose protocol has no audio reports such a document as unsupported). It is
  represented rather than rejected because today's router forwards it to OpenAI.
"""

from __future__ import annotations

import math
from typing import Any, NoReturn

from router.chat.codecs._common import data_url, document_data, present, split_data_url
from router.chat.model import Document, FinishReason, Image, Text
from router.errors import InvalidRequestError

AUDIO_PREFIX = "audio/"

# Provider finish reasons to the model's. ``function_call`` is the legacy name of
# ``tool_calls``; vLLM's ``eos`` is a stop; DeepSeek's ``insufficient_system_resource``
# ends the answer early on the provider's side: an error. Anything else unknown is a stop.
FINISH_IN: dict[str, FinishReason] = {
    "stop": "stop",
    "eos": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
    "insufficient_system_resource": "error",
}

# The model's finish reasons to chat's (whose SDK accepts only these five). A refusal
# with its text in ``refusal`` is OpenAI's own shape (``stop``); one without (Anthropic's
# ``refusal`` stop reason) is the nearest thing chat has: ``content_filter``. An error
# has no chat value; the in-band error chunk says what went wrong.
FINISH_OUT: dict[str, str] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "content_filter": "content_filter",
    "refusal": "content_filter",
    "error": "stop",
}


def bad(message: str, param: str) -> NoReturn:
    raise InvalidRequestError(message, param=param)


def expect_str(value: Any, param: str) -> str:
    if not isinstance(value, str):
        bad(f"'{param}' must be a string", param)
    return value


def optional_str(value: Any, param: str) -> str | None:
    return None if value is None else expect_str(value, param)


def expect_dict(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        bad(f"'{param}' must be an object", param)
    return value


def expect_list(value: Any, param: str) -> list[Any]:
    if not isinstance(value, list):
        bad(f"'{param}' must be an array", param)
    return value


def expect_int(value: Any, param: str, *, minimum: int | None = None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        bad(f"'{param}' must be an integer", param)
    if minimum is not None and value < minimum:
        bad(f"'{param}' must be at least {minimum}", param)
    return value


def expect_number(value: Any, param: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        bad(f"'{param}' must be a number", param)
    return value


def expect_bool(value: Any, param: str) -> bool | None:
    if value is None:
        return None
    if not isinstance(value, bool):
        bad(f"'{param}' must be true or false", param)
    return value


# ---------------------------------------------------------------- decode


def decode_text_parts(content: Any, param: str) -> list[Text]:
    """A string or a list of ``text`` parts (system, developer and tool messages)."""
    if isinstance(content, str):
        return [Text(content)]
    out = []
    for j, part in enumerate(expect_list(content, param)):
        p = f"{param}[{j}]"
        part = expect_dict(part, p)
        if part.get("type") != "text":
            bad(f"'{p}.type' must be 'text' in this message", f"{p}.type")
        out.append(_text(part, p))
    return out


def decode_user_parts(content: Any, param: str) -> list[Text | Image | Document]:
    if isinstance(content, str):
        return [Text(content)]
    out: list[Text | Image | Document] = []
    for j, part in enumerate(expect_list(content, param)):
        p = f"{param}[{j}]"
        part = expect_dict(part, p)
        kind = part.get("type")
        if kind == "text":
            out.append(_text(part, p))
        elif kind == "image_url":
            out.append(_image(part, p))
        elif kind == "file":
            out.append(_file(part, p))
        elif kind == "input_audio":
            audio = expect_dict(part.get("input_audio"), f"{p}.input_audio")
            data = expect_str(audio.get("data"), f"{p}.input_audio.data")
            fmt = expect_str(audio.get("format"), f"{p}.input_audio.format")
            out.append(Document(data=data, media_type=f"{AUDIO_PREFIX}{fmt}"))
        else:
            bad(f"'{p}.type' {kind!r} is not a content part type", f"{p}.type")
    return out


def _text(part: dict[str, Any], p: str) -> Text:
    text = expect_str(part.get("text"), f"{p}.text")
    cache = part.get("cache_control")  # Anthropic-style, as OpenAI-compatible gateways take it
    return Text(text, cache_control=cache if isinstance(cache, dict) else None)


def _image(part: dict[str, Any], p: str) -> Image:
    spec = part.get("image_url")
    if isinstance(spec, str):  # a bare URL string, as several clients send it
        spec = {"url": spec}
    spec = expect_dict(spec, f"{p}.image_url")
    url = expect_str(spec.get("url"), f"{p}.image_url.url")
    detail = optional_str(spec.get("detail"), f"{p}.image_url.detail")
    cache = part.get("cache_control")
    cache = cache if isinstance(cache, dict) else None
    inline = split_data_url(url)
    if inline:
        return Image(data=inline[1], media_type=inline[0], detail=detail, cache_control=cache)
    return Image(url=url, detail=detail, cache_control=cache)


def _file(part: dict[str, Any], p: str) -> Document:
    spec = expect_dict(part.get("file"), f"{p}.file")
    file_data = optional_str(spec.get("file_data"), f"{p}.file.file_data")
    file_id = optional_str(spec.get("file_id"), f"{p}.file.file_id")
    filename = optional_str(spec.get("filename"), f"{p}.file.filename")
    if file_data is None and file_id is None:
        bad(f"'{p}.file' needs 'file_data' or 'file_id'", f"{p}.file")
    doc = Document(file_id=file_id, filename=filename)
    if file_data is not None:
        inline = split_data_url(file_data)
        doc.media_type, doc.data = inline if inline else (None, file_data)
    return doc


# ---------------------------------------------------------------- encode


TEXT_JOIN = "\n\n"


def encode_text(parts: list[Text]) -> str:
    """Text-only content as one string, several texts joined by a blank line: DeepSeek
    and other OpenAI-compatible providers take only a string for system, assistant and
    tool content, and separate text blocks (Anthropic's) are separate paragraphs."""
    return TEXT_JOIN.join(t.text for t in parts)


def encode_user_parts(parts: list[Text | Image | Document]) -> str | list[dict[str, Any]]:
    if all(isinstance(p, Text) for p in parts):
        return encode_text(parts)
    return [encode_part(p) for p in parts]


def encode_part(part: Text | Image | Document) -> dict[str, Any]:
    if isinstance(part, Text):
        return {"type": "text", "text": part.text}
    if isinstance(part, Image):
        if part.data is not None:
            url = data_url(part.media_type or "image/png", part.data)
        else:
            url = part.url or ""
        spec: dict[str, Any] = {"url": url}
        if part.detail:
            spec["detail"] = part.detail
        return {"type": "image_url", "image_url": spec}
    if part.media_type and part.media_type.startswith(AUDIO_PREFIX) and part.data is not None:
        fmt = part.media_type.removeprefix(AUDIO_PREFIX)
        return {"type": "input_audio", "input_audio": {"data": part.data, "format": fmt}}
    spec = present(file_data=document_data(part), file_id=part.file_id, filename=part.filename)
    return {"type": "file", "file": spec}


def sendable_document(doc: Document) -> bool:
    """Chat's ``file`` part takes inline data or an uploaded file id, not a URL."""
    return doc.data is not None or doc.file_id is not None
