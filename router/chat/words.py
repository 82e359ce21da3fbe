"""The user's own words in a conversation: what P2L scores.

P2L was trained on user turns only. In an agent loop most requests add nothing but tool
results (Anthropic carries them inside user messages, Responses as items, chat as
``tool`` turns) and the assistant's tool calls; the user's words stay the same, so the
scorer's input (and its coefficient cache key) stays the same on every such turn.
"""

from __future__ import annotations

from router.chat.model import ChatRequest, Text


def user_texts(req: ChatRequest) -> list[str]:
    """The text of each user turn that holds some, in order; tool results, images and
    documents are not the user's words."""
    out = []
    for m in req.messages:
        if m.role != "user":
            continue
        text = "\n".join(p.text for p in m.parts if isinstance(p, Text))
        if text:
            out.append(text)
    return out


def user_messages(req: ChatRequest) -> list[dict[str, str]]:
    """:func:`user_texts` as chat user messages (what the scorer renders)."""
    return [{"role": "user", "content": t} for t in user_texts(req)]
