"""Trust, second round: no free work for a team key, no unbounded work for anyone.

Findings 2, 3, 4 and 9 of the review, each made to happen for real against the router on
loopback: a 300 MiB body and a stalled one on the admin API, prompts over
``--max-prompt-tokens`` on every endpoint that scores, a team over its rate limit or its
budget, 4,097 messages, a period change on reload. "Nothing was scored" is read off the
scoring engine's own counter; "nothing was sent" off the fake upstream.
"""

from __future__ import annotations

import socket
import threading
import tracemalloc
from typing import Any

import pytest
import yaml
from conftest import ADMIN_KEY, OTHER_KEY, PROVIDER_KEY, TEAM_KEY, RouterHandle, stalled_post

from router.serving.service import RequestLimits

MINI = "gpt-4o-mini-2024-07-18"


def ask(i: int) -> list[dict[str, Any]]:
    """A prompt of its own per request (the scorer's cache would hide a second score)."""
    return [{"role": "user", "content": f"question {i}: how do ledgers balance?"}]


def scored(r: RouterHandle) -> int:
    return int(r.service.engine.stats()["prompts_scored"])


def post(r: RouterHandle, path: str, body: Any, key: str | None = TEAM_KEY) -> Any:
    return r.http(key).post(path, json=body)


def chat(r: RouterHandle, i: int, **kw: Any) -> Any:
    return post(r, "/v1/chat/completions", {"model": "p2l", "messages": ask(i), **kw})


# ---------------------------------------------------------------- 2. auth before the body


def _raw_post(port: int, path: str, headers: str, body_bytes: int) -> bytes:
    """POST ``body_bytes`` of body (sent from one reused 1 MiB buffer) and return what the
    router answered; the answer is read concurrently, as the router may answer and
    close before the body is all sent."""
    got = bytearray()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(30)

    def read() -> None:
        try:
            while not _complete(got) and (chunk := sock.recv(65536)):
                got.extend(chunk)
        except OSError:
            pass

    reader = threading.Thread(target=read)
    reader.start()
    head = f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{headers}"
    sock.sendall(f"{head}content-length: {body_bytes}\r\n\r\n".encode())
    piece = b" " * 2**20
    sent = 0
    try:
        while sent < body_bytes and not got:
            sock.sendall(piece[: min(len(piece), body_bytes - sent)])
            sent += len(piece)
    except OSError:
        pass  # the router answered and closed: the rest of the body was never wanted
    reader.join(30)
    sock.close()
    return bytes(got)


def _complete(data: bytearray) -> bool:
    """A whole HTTP answer: its head, and as much body as its content-length says."""
    head, sep, body = bytes(data).partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


@pytest.mark.parametrize("path", ["/v1/admin/route-preview", "/v1/admin/whatif"])
def test_a_300_mib_body_without_a_key_is_refused_before_it_is_read(make_router, path):
    r = make_router()
    port = int(r.root.rsplit(":", 1)[1])
    tracemalloc.start()  # the router, this client and the reader share the process
    try:
        data = _raw_post(port, path, "", 300 * 2**20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert data.startswith(b"HTTP/1.1 401"), data[:200]
    assert b"authentication_error" in data
    assert peak < 32 * 2**20  # nothing held the body


@pytest.mark.parametrize("path", ["/v1/admin/route-preview", "/v1/admin/whatif", "/v1/leaderboard"])
def test_a_body_over_the_limit_is_413_with_a_valid_key(make_router, path):
    r = make_router(service_kw={"limits": RequestLimits(max_body_bytes=64 * 1024)})
    port = int(r.root.rsplit(":", 1)[1])
    key = TEAM_KEY if path == "/v1/leaderboard" else ADMIN_KEY
    data = _raw_post(port, path, f"authorization: Bearer {key}\r\n", 300 * 2**20)
    assert data.startswith(b"HTTP/1.1 413"), data[:200]
    assert b"body_too_large" in data


@pytest.mark.parametrize("key", [ADMIN_KEY, None], ids=["admin-key", "no-key"])
def test_a_stalled_admin_body_is_408_or_401_not_held_open(make_router, monkeypatch, key):
    import router.api.fastpath as fastpath

    monkeypatch.setattr(fastpath, "BODY_READ_TIMEOUT_S", 0.3)
    r = make_router()
    port = int(r.root.rsplit(":", 1)[1])
    auth = f"authorization: Bearer {key}\r\n" if key else ""
    data = stalled_post(port, "/v1/admin/whatif", auth, b'{"team": "research", ')
    assert data.startswith(b"HTTP/1.1 408" if key else b"HTTP/1.1 401"), data[:200]


# ---------------------------------------------------------------- 3. bounded scoring


def test_every_endpoint_that_scores_holds_max_prompt_tokens(make_router, fake):
    r = make_router(service_kw={"limits": RequestLimits(max_prompt_tokens=1000)})
    long = [{"role": "user", "content": "ledger " * 5000}]
    before = scored(r)
    calls = [
        post(r, "/v1/chat/completions", {"model": "p2l", "messages": long}),
        post(r, "/v1/chat/completions", {"model": MINI, "messages": long}),
        post(r, "/v1/leaderboard", {"messages": long}),
        post(r, "/v1/admin/route-preview", {"messages": long}),
        post(r, "/v1/admin/route-preview", {"messages": long}, key=ADMIN_KEY),
    ]
    for resp in calls:
        assert resp.status_code == 400, resp.text
        err = resp.json()["error"]
        assert err["param"] == "messages" and "at most 1000" in err["message"]
    assert scored(r) == before and fake.requests == []


@pytest.mark.parametrize("path", ["/v1/admin/route-preview", "/v1/leaderboard"])
def test_more_messages_than_the_bound_is_400_not_500(make_router, path):
    r = make_router()
    many = [{"role": "user", "content": "hi"}] * 4097
    resp = post(r, path, {"messages": many}, key=ADMIN_KEY if "admin" in path else TEAM_KEY)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == "messages"


# ---------------------------------------------------------------- 4. limits before scoring


def test_over_the_rate_limit_nothing_is_scored(make_router, fake):
    r = make_router(team={"rate_limit": {"requests_per_minute": 2}})
    before = scored(r)
    codes = [chat(r, i).status_code for i in range(8)]
    assert codes == [200, 200] + [429] * 6
    assert scored(r) - before == 2
    assert len(fake.requests) == 2


def test_leaderboard_preview_and_whatif_count_against_the_rate_limit(make_router):
    r = make_router(team={"rate_limit": {"requests_per_minute": 3}})
    calls = [
        lambda i: post(r, "/v1/leaderboard", {"messages": ask(i)}),
        lambda i: post(r, "/v1/admin/route-preview", {"messages": ask(i)}),
        lambda i: post(r, "/v1/admin/whatif", {"team": "research", "cost_sensitivity": [1]}),
    ]
    assert [call(i).status_code for i, call in enumerate(calls)] == [200, 200, 200]
    before = scored(r)
    again = [call(10 + i) for i, call in enumerate(calls)] + [chat(r, 20)]
    assert [resp.status_code for resp in again] == [429] * 4
    assert {resp.json()["error"]["code"] for resp in again} == {"rate_limited"}
    assert scored(r) == before
    # The admin key is no team's: its previews are not counted against "research".
    assert post(r, "/v1/admin/route-preview", {"messages": ask(30)}, ADMIN_KEY).status_code == 200


def _spend(r: RouterHandle, team: str, usd: float) -> None:
    """Put ``usd`` of settled spend on the team's current period, as a served request would."""
    svc = r.service
    policy = svc.config.teams[team]
    period = svc.accounts.period(policy)
    now = svc.clock()

    async def go() -> None:
        res = await svc.ledger.reserve(
            team, usd, limit_usd=None, period_key=period.key, ttl_s=60, now=now,
            ref=f"seed-{usd}", period_ends_at=period.end_ts,
        )  # fmt: skip
        await svc.ledger.settle(res, usd, now=now)

    r.run(go())
    svc.accounts.view = type(svc.accounts.view)()  # as a new process would see it


def test_over_budget_nothing_is_scored_or_sent(make_router, fake):
    r = make_router(team={"budget": {"usd": 0.0005, "period": "day"}})
    _spend(r, "research", 3.0)
    before = scored(r)
    for i in range(10):
        resp = chat(r, i)
        assert resp.status_code == 429, resp.text
        assert resp.json()["error"]["code"] == "budget_exceeded"
        assert "resets at" in resp.json()["error"]["message"]
    assert scored(r) == before and fake.requests == []
    # A request whose cheapest model fits is still scored and served (the floor is a floor).
    r2 = make_router(team={"budget": {"usd": 1.0, "period": "day"}})
    assert chat(r2, 0).status_code == 200


# ---------------------------------------------------------------- 9. period change on reload


def _reload(r: RouterHandle) -> None:
    from router.config import load_config

    env = {
        "FAKE_PROVIDER_KEY": PROVIDER_KEY,
        "RESEARCH_KEY": TEAM_KEY,
        "OTHER_KEY": OTHER_KEY,
        "P2L_ROUTER_ADMIN_KEY": ADMIN_KEY,
    }
    cfg = load_config(r.tmp / "providers.yaml", r.tmp / "policies", env)
    r.run(r.service.reload(cfg))


def _set_period(r: RouterHandle, period: str) -> None:
    path = r.tmp / "policies" / "research.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["budget"]["period"] = period
    path.write_text(yaml.safe_dump(doc))


@pytest.mark.parametrize("change", [("day", "week"), ("week", "day"), ("day", "month")])
def test_a_period_change_on_reload_carries_the_spend(make_router, fake, change):
    old, new = change
    r = make_router(team={"budget": {"usd": 10.0, "period": old}})
    _spend(r, "research", 6.0)
    _set_period(r, new)
    _reload(r)
    b = r.http().get("/v1/budget").json()
    assert b["period"] == new
    assert b["spent_usd"] == pytest.approx(6.0, abs=1e-9)
    assert b["remaining_usd"] == pytest.approx(4.0, abs=1e-9)
    # Over the limit in the new period too: $5 more does not fit the $4 left.
    resp = post(r, "/v1/chat/completions", {"model": MINI, "messages": ask(0), "max_tokens": 10})
    assert resp.status_code == 200  # a small request still fits
    _spend(r, "research", 4.5)
    assert chat(r, 1).status_code == 429
    # A second reload with the same rule keeps carrying; a restart on the same ledger too.
    _reload(r)
    assert r.http().get("/v1/budget").json()["spent_usd"] >= 10.5
    r2 = make_router(
        team={"budget": {"usd": 10.0, "period": new}}, ledger=f"sqlite:///{r.tmp / 'ledger.db'}"
    )
    assert r2.http().get("/v1/budget").json()["spent_usd"] >= 10.5
