"""The P2L scorer input, exactly as P2L was trained: user turns only, then the CLS token.

No torch here: the server validates request messages with ``user_turns`` before it
queues anything.
"""

from __future__ import annotations

from typing import Any, Protocol

from router.errors import InvalidRequestError

CLS_TEXT = "<|cls|>"
CLS_REPLACEMENT = "<cls>"


class ChatTokenizer(Protocol):
    cls_token: str | None

    def apply_chat_template(self, conversation: Any, **kw: Any) -> Any: ...


def _bad(message: str) -> InvalidRequestError:
    return InvalidRequestError(message, param="messages")


def _content_text(content: Any, where: str) -> str:
    """A message's text: a string as is, content parts' text parts joined with newlines."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise _bad(
                    f"{where}.content[{j}] must be a content part object with a 'type' "
                    '(e.g. {"type": "text", "text": "..."})'
                )
            if part["type"] == "text":
                text = part.get("text")
                if not isinstance(text, str):
                    raise _bad(f"{where}.content[{j}] is a text part without a string 'text'")
                texts.append(text)
            # image_url, input_audio, file, ...: the scorer reads text only
        return "\n".join(texts)
    raise _bad(f"{where}.content must be a string or an array of content parts")


def user_turns(messages: Any, *, cls_tokens: tuple[str, ...] = (CLS_TEXT,)) -> list[dict[str, str]]:
    """The user messages, in order, as ``{"role": "user", "content": text}``.

    System, assistant and tool turns are dropped, and so are user turns without text
    (image-only); a literal CLS token in user text becomes ``<cls>`` so each scorer row
    holds exactly one CLS.
    """
    if not isinstance(messages, list):
        raise _bad("'messages' must be an array of message objects")
    turns: list[dict[str, str]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _bad(f"{where} must be an object with a 'role' and 'content'")
        role = message.get("role")
        if not isinstance(role, str):
            raise _bad(f"{where} needs a string 'role' (system, user, assistant or tool)")
        if role != "user":
            continue
        text = _content_text(message.get("content"), where)
        for cls in cls_tokens:
            text = text.replace(cls, CLS_REPLACEMENT)
        if text:
            turns.append({"role": "user", "content": text})
    if not turns:
        raise _bad("'messages' must contain at least one user message with text content")
    return turns


def render(tokenizer: ChatTokenizer, messages: Any) -> str:
    """The exact scorer input text: chat template over the user turns + the CLS token."""
    cls = tokenizer.cls_token
    if not cls:
        raise ValueError("the P2L tokenizer has no cls_token")
    turns = user_turns(messages, cls_tokens=tuple(dict.fromkeys((CLS_TEXT, cls))))
    text = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=False)
    return text + cls
