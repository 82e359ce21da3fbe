"""What the request, answer and stream halves of the Responses codec share: content
parts in both directions and item ids (a malformed field is reported by ``_common``'s
checks, as the Anthropic codec reports it).

Kept apart so that the three halves agree on the details a client notices: the same
answer gets the same item ids whether it is sent whole or streamed, and an image goes
out the way it came in (a data URL stays a data URL).
"""

from __future__ import annotations

from typing import Any

from router.chat.codecs._common import bad, document_data, present, want_dict, want_list, want_str
from router.chat.codecs._common import data_url as _data_url
from router.chat.codecs._common import split_data_url as _split_data_url
from router.chat.model import Document, Image, Text

PROTOCOL = "openai-responses"
OCTET_STREAM = "application/octet-stream"  # a data URL's media type when it has none

# Statuses and reasons, both ways.
INCOMPLETE_TO_FINISH = {"max_output_tokens": "length", "content_filter": "content_filter"}
FINISH_TO_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


# ---------------------------------------------------------------- ids


def response_id(answer_id: str) -> str:
    """OpenAI's ids carry their kind as a prefix; an id from another protocol gets one."""
    return answer_id if answer_id.startswith("resp_") else f"resp_{answer_id}"


def item_id(kind: str, resp_id: str, index: int) -> str:
    """A stable item id (``msg_`` / ``fc_`` / ``rs_``) from the response id and the
    item's output index: the whole answer and its stream name items alike."""
    return f"{kind}_{resp_id.removeprefix('resp_')}_{index}"


# ---------------------------------------------------------------- data URLs


def split_data_url(url: str) -> tuple[str, str] | None:
    """``data:<media type>;base64,<data>`` → (media type, data); None for other URLs."""
    inline = _split_data_url(url)
    return inline and (inline[0] or OCTET_STREAM, inline[1])


def data_url(media_type: str | None, data: str) -> str:
    return _data_url(media_type or OCTET_STREAM, data)


# ---------------------------------------------------------------- parts in


def decode_part(part: Any, param: str) -> Text | Image | Document:
    """One content part of a message or a function_call_output (input_text, input_image,
    input_file; output_text and refusal in assistant history)."""
    part = want_dict(part, param)
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        return Text(want_str(part.get("text"), f"{param}.text") or "")
    if kind == "refusal":
        # An earlier refusal in the history: the model has no refusal part; its text
        # keeps the conversation intact (it goes back as output_text).
        return Text(want_str(part.get("refusal"), f"{param}.refusal") or "")
    if kind == "input_image":
        url = want_str(part.get("image_url"), f"{param}.image_url", optional=True)
        file_id = want_str(part.get("file_id"), f"{param}.file_id", optional=True)
        detail = want_str(part.get("detail"), f"{param}.detail", optional=True)
        if url is None and file_id is None:
            bad(param, "input_image needs image_url or file_id")
        inline = split_data_url(url) if url else None
        if inline:
            return Image(media_type=inline[0], data=inline[1], detail=detail, file_id=file_id)
        return Image(url=url, detail=detail, file_id=file_id)
    if kind == "input_file":
        file_data = want_str(part.get("file_data"), f"{param}.file_data", optional=True)
        doc = Document(
            file_id=want_str(part.get("file_id"), f"{param}.file_id", optional=True),
            url=want_str(part.get("file_url"), f"{param}.file_url", optional=True),
            filename=want_str(part.get("filename"), f"{param}.filename", optional=True),
        )
        if file_data is not None:
            inline = split_data_url(file_data)
            doc.media_type, doc.data = inline if inline else (None, file_data)
        if doc.data is None and doc.file_id is None and doc.url is None:
            bad(param, "input_file needs file_data, file_id or file_url")
        return doc
    bad(f"{param}.type", f"unsupported content part type {kind!r}")


def decode_content(content: Any, param: str) -> list[Text | Image | Document]:
    if isinstance(content, str):
        return [Text(content)]
    return [decode_part(p, f"{param}[{i}]") for i, p in enumerate(want_list(content, param))]


# ---------------------------------------------------------------- parts out


def encode_part(part: Text | Image | Document, *, assistant: bool = False) -> dict[str, Any]:
    if isinstance(part, Text):
        return {"type": "output_text" if assistant else "input_text", "text": part.text}
    if isinstance(part, Image):
        url = data_url(part.media_type, part.data) if part.data is not None else part.url
        image = present(image_url=url, file_id=part.file_id, detail=part.detail)
        return {"type": "input_image", **image}
    doc = present(
        file_data=document_data(part),
        file_id=part.file_id,
        file_url=part.url,
        filename=part.filename,
    )
    return {"type": "input_file", **doc}
