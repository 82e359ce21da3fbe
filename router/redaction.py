"""Keeping the router's secrets out of everything a team can see.

Upstream text (an error body, an error event in a stream, a transport error) reaches the
client's error message, the decision log, the decision history, the admin API and the
console. A provider that quotes the key it was sent puts the router's provider key in all
of them, and providers and gateways quote it escaped: JSON's ``\\/`` and ``\\uXXXX``,
URL percent-encoding, HTML entities, or escaped twice. Matching the raw text misses every
such form, so :meth:`Redactor.text` first *decodes* the text (each escaping, repeated
until nothing changes, a few rounds at most) and matches the secrets in the decoded text;
when one is found, the decoded text with the secret masked is what is shown.

The secrets: the keys the router holds in plain text (provider keys, the scoring
engine's key), and the client and admin keys, which the config keeps only as SHA-256
digests (router/config.py): those are found by hashing every key-shaped token of the
decoded text. Structured bodies (an upstream JSON error relayed to the client) are
walked with :meth:`Redactor.value`, every string decoded and matched the same way.

No library decodes "every escaping" and matches against digests, hence this module.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote

MASK = "***"
# A secret shorter than this is not looked for: masking every "abc" would garble text
# and hide nothing worth hiding (config checks keep real keys far longer).
MIN_SECRET_CHARS = 8
# Decoding rounds: text escaped twice (a JSON string inside a JSON string, then URL) is
# still found; more rounds than this cannot be needed by anything a gateway writes.
MAX_ROUNDS = 4

_JSON_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|[\"\\/bfnrt])")
_SIMPLE = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
# Where a client key may start and end inside text, from the loosest cut to the
# strictest: a key is found when one of these cuts gives exactly it.
_TOKENS = tuple(
    re.compile(chars + "{" + str(MIN_SECRET_CHARS) + ",}")
    for chars in (
        r"[^\s\"'<>`,;()\[\]{}]",
        r"[A-Za-z0-9_\-.~+/=]",
        r"[A-Za-z0-9_\-.]",
        r"[A-Za-z0-9_\-]",
    )
)


def _json_unescape(s: str) -> str:
    def one(m: re.Match[str]) -> str:
        g = m.group(1)
        return chr(int(g[1:], 16)) if g[0] == "u" else _SIMPLE[g]

    out = _JSON_ESCAPE.sub(one, s)
    # A \uD83D\uDE00 pair decodes to two surrogates; join them into one character.
    return (
        out.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        if _has_surrogate(out)
        else out
    )


def _has_surrogate(s: str) -> bool:
    return any("\ud800" <= c <= "\udfff" for c in s)


def decode(text: str) -> str:
    """``text`` with JSON, URL and HTML escapes undone, repeatedly (see the docstring)."""
    for _ in range(MAX_ROUNDS):
        out = text
        if "\\" in out:
            out = _json_unescape(out)
        if "%" in out:
            out = unquote(out, errors="replace")
        if "&" in out:
            out = html.unescape(out)
        if out == text:
            break
        text = out
    return text


class Redactor:
    """Masks the router's secrets in text and in JSON-shaped values."""

    def __init__(self, secrets: Iterable[str | None] = (), digests: Iterable[bytes] = ()) -> None:
        plain = {s for s in secrets if s and len(s) >= MIN_SECRET_CHARS}
        self._plain = sorted(plain, key=len, reverse=True)  # a key inside a longer one
        self._digests = frozenset(digests)

    def __bool__(self) -> bool:
        return bool(self._plain or self._digests)

    def text(self, text: str) -> str:
        """``text`` as it was when it holds no secret; else decoded, the secrets masked."""
        if not self or not text:
            return text
        decoded = decode(text)
        masked = self._mask(decoded)
        return text if masked is decoded else masked

    def value(self, obj: Any) -> Any:
        """A JSON-shaped value with every string (keys included) passed through :meth:`text`."""
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, dict):
            return {
                self.text(k) if isinstance(k, str) else k: self.value(v) for k, v in obj.items()
            }
        if isinstance(obj, list | tuple):
            return [self.value(v) for v in obj]
        return obj

    def _mask(self, s: str) -> str:
        """``s`` itself when nothing is masked (the caller compares identity)."""
        out = s
        for secret in self._plain:
            if secret in out:
                out = out.replace(secret, MASK)
        if self._digests:
            for pattern in _TOKENS:
                hits = {
                    m.group(0)
                    for m in pattern.finditer(out)
                    if _digest(m.group(0)) in self._digests
                }
                for hit in sorted(hits, key=len, reverse=True):
                    out = out.replace(hit, MASK)
        return s if out == s else out


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
