"""The redactor: every secret the router holds, in every escaping a provider or gateway
writes, is masked in upstream text; text without a secret is left as it was."""

from __future__ import annotations

import hashlib
import json
from urllib.parse import quote

import pytest

from router.redaction import MASK, Redactor, decode

KEY = "sk-prov/a+b=c_0123456789"  # '/' and '+' so that each escaping differs
TEAM = "sk-team-research"
ADMIN = "sk-admin-ops"


def _digest(s: str) -> bytes:
    return hashlib.sha256(s.encode()).digest()


def escapings(secret: str) -> dict[str, str]:
    """The forms a provider's error text has been seen to quote a key in."""
    json_slash = secret.replace("/", "\\/")
    u_all = "".join(f"\\u{ord(c):04x}" for c in secret)
    url = quote(secret, safe="")
    return {
        "plain": secret,
        "json_slash": json_slash,
        "u_escape": u_all,
        "u_upper": "".join(f"\\u{ord(c):04X}" for c in secret),
        "url": url,
        "url_lower": "".join(f"%{ord(c):02x}" if not c.isalnum() else c for c in secret),
        "html": "".join(f"&#x{ord(c):x};" for c in secret),
        "json_in_json": json.dumps(json.dumps(secret))[1:-1],
        "url_then_json": quote(secret, safe="").replace("%", "\\u0025"),
        "double_url": quote(quote(secret, safe=""), safe=""),
    }


R = Redactor([KEY, None, "short"], [_digest(TEAM), _digest(ADMIN)])


@pytest.mark.parametrize("escaping", list(escapings(KEY)))
@pytest.mark.parametrize("secret", [KEY, TEAM, ADMIN], ids=["provider", "team", "admin"])
def test_every_escaping_of_every_secret_is_masked(secret, escaping):
    form = escapings(secret)[escaping]
    text = f'{{"error": {{"message": "Incorrect API key provided: {form}. Check it."}}}}'
    out = R.text(text)
    assert secret not in decode(out)
    assert form not in out
    assert MASK in out and "Incorrect API key provided" in out


def test_text_without_a_secret_is_returned_unchanged():
    text = '{"error": {"message": "bad \\u00e9 request \\/ 50%25 &amp; more"}}'
    assert R.text(text) is text
    assert Redactor().text(text) is text


def test_values_are_walked_keys_included():
    body = {"error": {"message": f"key {KEY}", "param": [TEAM, 3, None], KEY: True}}
    out = R.value(body)
    assert json.dumps(out).count(MASK) == 3
    assert KEY not in json.dumps(out) and TEAM not in json.dumps(out)
    assert out["error"]["param"][1:] == [3, None]


def test_a_client_key_inside_a_longer_token_is_found_by_a_stricter_cut():
    out = R.text(f"header was Authorization:Bearer:{TEAM}; done")
    assert TEAM not in out and MASK in out


def test_short_secrets_are_not_looked_for():
    assert Redactor(["abc"]).text("abcabc") == "abcabc"


def test_surrogate_pairs_decode_to_one_character():
    assert decode("\\ud83d\\ude00") == "\U0001f600"
