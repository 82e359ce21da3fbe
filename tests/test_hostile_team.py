"""Trust, second round: a malicious team member holding a valid team key, and a hostile
upstream, against the real router on loopback.

Findings 1 and 8 of the review: a provider that quotes the router's key (escaped the ways
gateways escape it) or the prompt in its error text must not put either where a team can
read it: the client's answer, the decision log, the decision history, the admin API
(which the console renders as it is).
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from conftest import ADMIN_KEY, TEAM_KEY, RouterHandle

from router.redaction import decode

MINI = "gpt-4o-mini-2024-07-18"
HELLO = [{"role": "user", "content": "Write a haiku about ledgers"}]
# '/' and '+' make each escaping differ from the plain key.
PROVIDER_KEY = "sk-prov/a+b=c_0123456789"
SECRETS = (PROVIDER_KEY, TEAM_KEY, ADMIN_KEY)


def escapings(secret: str) -> dict[str, str]:
    return {
        "plain": secret,
        "json_slash": secret.replace("/", "\\/"),
        "u_escape": "".join(f"\\u{ord(c):04x}" for c in secret),
        "url": quote(secret, safe=""),
        "html": "".join(f"&#x{ord(c):x};" for c in secret),
        "double_url": quote(quote(secret, safe=""), safe=""),
    }


def hostile_body(form: str) -> bytes:
    """An error body that quotes each of the router's secrets in the escaping ``form``."""
    quoted = " ".join(escapings(s)[form] for s in SECRETS)
    return b'{"error": {"message": "Incorrect API key provided: ' + quoted.encode() + b'"}}'


def team_view(r: RouterHandle, decision_id: str) -> str:
    """Everything a team key can read about one decision: its log line, its history
    page and its history entry (what the console shows)."""
    team = r.http(TEAM_KEY)
    deadline = time.monotonic() + 15
    while (one := team.get(f"/v1/admin/decisions/{decision_id}")).status_code == 404:
        assert time.monotonic() < deadline, "the decision never reached the history"
        time.sleep(0.05)
    page = team.get("/v1/admin/decisions", params={"limit": 200})
    assert one.status_code == page.status_code == 200
    log = [ln for ln in r.decisions() if ln["decision_id"] == decision_id]
    assert len(log) == 1
    return "\n".join([json.dumps(log[0]), one.text, page.text])


def assert_no_secret(text: str) -> None:
    plain = decode(text)
    for secret in SECRETS:
        assert secret not in plain
        for form in escapings(secret).values():
            assert form not in text


@pytest.mark.parametrize("form", list(escapings(PROVIDER_KEY)))
@pytest.mark.parametrize("mode", ["502", "400-relayed", "stream-error"])
def test_keys_quoted_upstream_in_any_escaping_never_reach_a_team(make_router, fake, mode, form):
    r = make_router(provider_key=PROVIDER_KEY)
    body = hostile_body(form)
    if mode == "stream-error":
        fake.behave(f"up-{MINI}", stream_error_raw=body)
    else:
        fake.behave(f"up-{MINI}", status=500 if mode == "502" else 400, error_raw=body)
    req = {"model": MINI, "messages": HELLO, "stream": mode == "stream-error"}
    resp = r.http(TEAM_KEY).post("/v1/chat/completions", json=req)
    assert resp.status_code == {"502": 502, "400-relayed": 400, "stream-error": 200}[mode]
    assert "Incorrect API key provided" in resp.text  # the rest of the text is relayed
    assert "***" in resp.text
    seen = resp.text + team_view(r, resp.headers["x-router-decision-id"])
    assert_no_secret(seen)
    assert len(fake.requests) == 1  # what was sent upstream carried the key, once


@pytest.mark.parametrize("status", [401, 403])
def test_provider_text_about_credentials_is_not_relayed(make_router, fake, status):
    r = make_router(provider_key=PROVIDER_KEY)
    fake.behave(f"up-{MINI}", status=status, error_raw=hostile_body("json_slash"))
    resp = r.http(TEAM_KEY).post("/v1/chat/completions", json={"model": MINI, "messages": HELLO})
    assert resp.status_code == 502
    err = resp.json()["error"]
    assert err["code"] == str(status)
    assert "refused the router's credentials" in err["message"]
    seen = resp.text + team_view(r, resp.headers["x-router-decision-id"])
    assert "Incorrect API key" not in seen
    assert_no_secret(seen)


PROMPT = "My diary entry: the merger closes Friday at 4pm, tell no one"


def _quoting_prompt(status: int) -> bytes:
    msg = f"Invalid content in messages[0]: '{PROMPT}' (unsupported)"
    return json.dumps(
        {"error": {"message": msg, "type": "invalid_request_error", "param": "messages"}}
    ).encode()


@pytest.mark.parametrize("status", [400, 500])
def test_upstream_text_quoting_the_prompt_stays_out_of_the_log(make_router, fake, status):
    r = make_router()
    fake.behave(f"up-{MINI}", status=status, error_raw=_quoting_prompt(status))
    ask = [{"role": "user", "content": PROMPT}]
    resp = r.http(TEAM_KEY).post("/v1/chat/completions", json={"model": MINI, "messages": ask})
    assert resp.status_code == (400 if status == 400 else 502)
    if status == 400:  # the client's own request: the provider's words go back to it
        assert PROMPT in resp.json()["error"]["message"]
    seen = team_view(r, resp.headers["x-router-decision-id"])
    assert PROMPT not in seen and "merger" not in seen
    line = next(ln for ln in r.decisions() if ln["decision_id"] in seen)
    # A short, prompt-free summary: the status and the error's identifiers.
    text = line["error"] if status == 400 else line["fallbacks"][0]["message"]
    assert text.startswith("fake: upstream returned") or "upstream returned" in text
    assert "invalid_request_error" in text and "param messages" in text


def test_with_log_prompts_the_upstream_text_is_kept_scrubbed(make_router, fake):
    r = make_router(team={"log_prompts": True}, provider_key=PROVIDER_KEY)
    body = _quoting_prompt(400)[:-3] + b" " + PROVIDER_KEY.replace("/", "\\/").encode() + b'"}}'
    fake.behave(f"up-{MINI}", status=400, error_raw=body)
    ask = [{"role": "user", "content": PROMPT}]
    resp = r.http(TEAM_KEY).post("/v1/chat/completions", json={"model": MINI, "messages": ask})
    assert resp.status_code == 400
    seen = team_view(r, resp.headers["x-router-decision-id"])
    line: dict[str, Any] = json.loads(seen.splitlines()[0])
    assert PROMPT in line["error"]  # the team asked for prompts in its log
    assert_no_secret(seen + resp.text)


def test_admin_key_reads_the_same_scrubbed_history(make_router, fake):
    r = make_router(provider_key=PROVIDER_KEY)
    fake.behave(f"up-{MINI}", status=500, error_raw=hostile_body("u_escape"))
    resp = r.http(TEAM_KEY).post("/v1/chat/completions", json={"model": MINI, "messages": HELLO})
    team_view(r, resp.headers["x-router-decision-id"])
    admin = httpx.get(
        r.root + "/v1/admin/decisions", headers={"authorization": f"Bearer {ADMIN_KEY}"}
    )
    assert admin.status_code == 200 and admin.json()["data"]
    assert_no_secret(admin.text)
