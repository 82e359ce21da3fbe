"""Trust, end to end through the real router: no lost spend, no double billing, no open door.

Each finding of the trust review is a test on loopback: the real router (uvicorn in a
thread), the real fake upstream, a real SQLite file with another connection holding its
write lock, a real Redis server (a private one, frozen with SIGSTOP, for the outage).
Money is asserted exactly: the ledger's spend equals the decision log's ``cost_usd`` (to
1e-9), and the bodies the fake upstream received are counted per model.

Our billing rule, asserted here: the router charges what the provider reports. A request
whose connection dropped, or whose answer was refused as too large, brings no usage; its
reservation is released and nothing is charged, although the provider may bill a request
that reached it. The decision log keeps ``may_have_arrived`` for reconciling such cases.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import (
    ADMIN_KEY,
    OTHER_KEY,
    PRICES,
    TEAM_KEY,
    RouterHandle,
    ThreadServer,
    default_models,
    free_socket,
    write_config,
)

MINI = "gpt-4o-mini-2024-07-18"  # $0.15 / $0.60 per 1M tokens
CHEAP = "gemini-1.5-flash-002"
SONNET = "claude-3-5-sonnet-20241022"  # not in team "other"'s allow list
HELLO = [{"role": "user", "content": "Write a haiku about ledgers"}]
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]


# ---------------------------------------------------------------- helpers


def wait_until(pred: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    """Poll ``pred`` until it is truthy (a deadline, not an ordering sleep)."""
    deadline = time.monotonic() + timeout
    while not (got := pred()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)
    return got


def chat(r: RouterHandle, body: dict, key: str | None = TEAM_KEY) -> httpx.Response:
    return r.http(key).post("/v1/chat/completions", json=body)


def chat_stream(r: RouterHandle, body: dict) -> tuple[int, list[Any]]:
    """A raw streamed POST: the status and every ``data:`` payload as the client read it
    (JSON objects, and the string ``[DONE]``)."""
    events: list[Any] = []
    with r.http().stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as resp:
        if resp.status_code != 200:
            resp.read()
            return resp.status_code, [resp.json()]
        for line in resp.iter_lines():
            if line.startswith("data: "):
                data = line.removeprefix("data: ")
                events.append(data if data == "[DONE]" else json.loads(data))
    return 200, events


def ask(r: RouterHandle, body: dict, stream: bool) -> tuple[int, Any]:
    if stream:
        return chat_stream(r, body)
    resp = chat(r, body)
    return resp.status_code, resp.json()


def answer_text(stream: bool, got: Any) -> str:
    if not stream:
        return got["choices"][0]["message"]["content"]
    return "".join(
        (c["choices"][0]["delta"].get("content") or "")
        for c in got
        if isinstance(c, dict) and c.get("choices")
    )


def bodies(fake: Any, model: str) -> int:
    return len(fake.bodies_for(f"up-{model}"))


def reported_cost(model: str, usage: dict) -> float:
    """What the provider's usage costs at the catalog price: the amount to be billed."""
    i, o = PRICES[model]
    return (usage["prompt_tokens"] * i + usage["completion_tokens"] * o) / 1e6


def ledger_total(r: RouterHandle) -> float:
    return r.run(r.service.ledger.total_spent("research"))


def spend_rows(db: Path) -> list[tuple[str, float]]:
    """The ledger file's spend rows, read by another connection (WAL: never blocked)."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute("SELECT ref, amount FROM spend ORDER BY ts").fetchall()


@contextlib.contextmanager
def write_lock(db: Path) -> Iterator[None]:
    """Another process holding the SQLite ledger's write lock."""
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


def budget(r: RouterHandle) -> dict:
    return r.http().get("/v1/budget").json()


def readyz(r: RouterHandle) -> dict:
    return httpx.get(r.root + "/readyz").json()


@contextlib.contextmanager
def serving(
    root: Path, fake: Any, p2l_model: Any, ledger: str, **config_kw: Any
) -> Iterator[RouterHandle]:
    """A router that a test can stop and start again on the same ledger (a restart)."""
    from router.api.app import create_app
    from router.config import load_config
    from router.scoring import ScoringEngine
    from router.serving.service import RouterService

    root.mkdir(parents=True, exist_ok=True)
    providers, policies, env = write_config(root, fake.base_url, **config_kw)
    service = RouterService(
        load_config(providers, policies, env),
        ledger_url=ledger,
        decision_log=str(root / "decisions.jsonl"),
        engine=ScoringEngine(p2l_model),
    )
    with ThreadServer(create_app(service)) as srv:
        url = f"http://127.0.0.1:{srv.port}"
        wait_until(lambda: httpx.get(url + "/readyz").status_code == 200, "readiness", 30)
        yield RouterHandle(url + "/v1", url, service, root / "decisions.jsonl", root)


def held_request(
    r: RouterHandle, fake: Any, pool: ThreadPoolExecutor, body: dict, stream: bool
) -> tuple[threading.Event, Future]:
    """Send ``body`` and return once the fake upstream holds it (reserved, not settled)."""
    go = threading.Event()
    fake.behave(f"up-{body['model']}", hold=go)
    n = len(fake.requests)
    fut = pool.submit(ask, r, body, stream)
    fake.wait_for_requests(n + 1)
    return go, fut


def check_answer(fake: Any, stream: bool, status: int, got: Any, model: str = MINI) -> dict:
    """The client got the whole answer; returns the usage the provider reported."""
    from router.offline.echo import completion_for

    assert status == 200, got
    sent = fake.requests[-1].json
    full = completion_for(sent)
    assert answer_text(stream, got) == full["choices"][0]["message"]["content"]
    if stream:
        assert got[-1] == "[DONE]" and got[-2]["router"]["served_by"] == model
        assert sum(1 for c in got if isinstance(c, dict) and "router" in c) == 1
    return full["usage"]


# ---------------------------------------------------------------- 1. SQLite locked at settle


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_sqlite_locked_at_settle_answers_journals_and_replays_once(
    make_router, fake, tmp_path, stream
):
    db = tmp_path / "trust.db"
    r = make_router(ledger=f"sqlite:///{db}?busy_timeout=0.2")
    body = {"model": MINI, "messages": HELLO}
    with ThreadPoolExecutor(1) as pool:
        go, fut = held_request(r, fake, pool, body, stream)
        with write_lock(db):
            go.set()  # the upstream answers; the router settles against a locked ledger
            status, got = fut.result(timeout=30)
            usage = check_answer(fake, stream, status, got)
            (line,) = r.decisions()
            cost = line["cost_usd"]
            assert line["status"] == 200 and line["usage_source"] == "upstream"
            assert cost > 0 and abs(cost - reported_cost(MINI, usage)) < 1e-12
            # The ledger does not have it; the journal does, durably, and budgets count it.
            assert ledger_total(r) == 0 and spend_rows(db) == []
            on_disk = r.service.journal.path.read_text().splitlines()
            assert [json.loads(x)["ref"] for x in on_disk] == [line["decision_id"]]
            b = budget(r)
            assert abs(b["journaled_usd"] - cost) < 1e-12 and abs(b["spent_usd"] - cost) < 1e-12
            assert readyz(r) == {"status": "ready", "journaled_settlements": 1}
        # The lock is gone: the background drain hands the settlement to the ledger.
        wait_until(lambda: ledger_total(r) > 0, "the journal to drain")
    assert spend_rows(db) == [(line["decision_id"], pytest.approx(cost, abs=1e-12))]
    assert abs(ledger_total(r) - cost) < 1e-9
    wait_until(lambda: "journaled_settlements" not in readyz(r), "readyz to clear")
    b = budget(r)
    assert b["journaled_usd"] == 0 and b["reserved_usd"] == 0
    assert abs(b["spent_usd"] - cost) < 1e-9
    assert r.service.journal.path.read_bytes() == b""
    assert bodies(fake, MINI) == 1 and len(r.decisions()) == 1


def test_journal_left_at_shutdown_is_replayed_once_by_the_next_router(fake, tmp_path, p2l_model):
    db = tmp_path / "restart.db"
    ledger = f"sqlite:///{db}?busy_timeout=0.2"
    journal = Path(f"{db}.journal")
    body = {"model": MINI, "messages": HELLO}
    with contextlib.ExitStack() as locked, ThreadPoolExecutor(1) as pool:
        with serving(tmp_path / "a", fake, p2l_model, ledger) as a:
            go, fut = held_request(a, fake, pool, body, False)
            locked.enter_context(write_lock(db))  # held until router A has stopped
            go.set()
            status, got = fut.result(timeout=30)
            usage = check_answer(fake, False, status, got)
            (line,) = a.decisions()
        # Router A stopped with the ledger still locked: its last replay failed too.
        left = journal.read_bytes()
        assert [json.loads(x)["ref"] for x in left.splitlines()] == [line["decision_id"]]
        assert spend_rows(db) == []
    cost = reported_cost(MINI, usage)
    assert abs(line["cost_usd"] - cost) < 1e-12
    with serving(tmp_path / "b", fake, p2l_model, ledger) as b:  # replays at start
        assert spend_rows(db) == [(line["decision_id"], pytest.approx(cost, abs=1e-12))]
        assert journal.read_bytes() == b""
        assert readyz(b) == {"status": "ready"}
        assert abs(budget(b)["spent_usd"] - cost) < 1e-9 and budget(b)["reserved_usd"] == 0
    # A crash between the ledger's settle and the journal's rewrite leaves the entry on
    # disk: the next router replays it again, and the ledger still charges it once.
    journal.write_bytes(left)
    with serving(tmp_path / "c", fake, p2l_model, ledger) as c:
        assert journal.read_bytes() == b""
        assert spend_rows(db) == [(line["decision_id"], pytest.approx(cost, abs=1e-12))]
        assert abs(ledger_total(c) - cost) < 1e-9
    assert bodies(fake, MINI) == 1


# ---------------------------------------------------------------- 2. Redis down at settle


def test_redis_frozen_at_settle_answers_journals_and_replays_once(make_router, fake, private_redis):
    url, proc = private_redis.url, private_redis.proc
    # socket_timeout: how long a ledger call waits on a Redis that does not answer.
    r = make_router(ledger=f"{url}?socket_timeout=0.5&prefix=trust:")
    body = {"model": MINI, "messages": HELLO}
    frozen = False
    try:
        with ThreadPoolExecutor(1) as pool:
            go, fut = held_request(r, fake, pool, body, False)
            os.kill(proc.pid, signal.SIGSTOP)  # reserved; now Redis stops answering
            frozen = True
            go.set()
            status, got = fut.result(timeout=30)
            usage = check_answer(fake, False, status, got)
            (line,) = r.decisions()
            assert line["status"] == 200 and line["cost_usd"] > 0
            assert readyz(r) == {"status": "ready", "journaled_settlements": 1}
            pending = r.service.journal.entries()
            assert [e.ref for e in pending] == [line["decision_id"]]
            assert pending[0].cost_usd == line["cost_usd"]
    finally:
        if frozen:
            os.kill(proc.pid, signal.SIGCONT)
    # The settle that timed out may still run now (Redis reads what was sent before it
    # froze); the replay settles the same ref again: the ledger charges it once.
    wait_until(lambda: "journaled_settlements" not in readyz(r), "the journal to drain")
    cost = reported_cost(MINI, usage)
    assert abs(line["cost_usd"] - cost) < 1e-12
    rows = r.run(r.service.ledger.spend_rows("research"))
    assert [row["ref"] for row in rows] == [line["decision_id"]]
    assert abs(ledger_total(r) - cost) < 1e-9
    b = budget(r)
    assert abs(b["spent_usd"] - cost) < 1e-9 and b["journaled_usd"] == 0 and b["reserved_usd"] == 0
    assert bodies(fake, MINI) == 1


# ---------------------------------------------------------------- 3. double billing


def assert_nothing_charged(r: RouterHandle, line: dict) -> None:
    """A failed attempt brings no usage: the reservation is released, nothing charged."""
    assert line["cost_usd"] in (None, 0)
    assert ledger_total(r) == 0
    b = budget(r)
    assert b["spent_usd"] == 0 and b["reserved_usd"] == 0


def test_drop_after_read_is_502_and_the_body_arrived_once(make_router, fake):
    r = make_router()
    fake.behave(f"up-{MINI}", drop_after_read=True)
    resp = chat(r, {"model": MINI, "messages": HELLO})
    assert resp.status_code == 502 and resp.json()["error"]["code"] == "disconnect"
    assert bodies(fake, MINI) == 1
    (line,) = r.decisions()
    assert line["status"] == 502 and line["attempts"] == 1
    assert line["fallbacks"] == [
        {
            "model": MINI,
            "error": "disconnect",
            "message": line["fallbacks"][0]["message"],
            "attempts": 1,
            "may_have_arrived": True,
        }
    ]
    assert_nothing_charged(r, line)


def test_drop_on_a_pooled_connection_is_not_resent(make_router, fake):
    r = make_router()
    assert chat(r, {"model": MINI, "messages": HELLO}).status_code == 200
    fake.behave(f"up-{MINI}", drop_once=True)
    resp = chat(r, {"model": MINI, "messages": [{"role": "user", "content": "second"}]})
    assert resp.status_code == 502  # not silently retried on a fresh connection
    first, second = fake.requests
    assert second.client_port == first.client_port  # it went over the pooled connection
    assert second.disconnected and bodies(fake, MINI) == 2
    good, dropped = r.decisions()
    assert dropped["status"] == 502 and dropped["attempts"] == 1
    assert abs(ledger_total(r) - good["cost_usd"]) < 1e-9  # only the answered one
    assert budget(r)["reserved_usd"] == 0
    # The drop was for one request only: the next one is answered.
    assert chat(r, {"model": MINI, "messages": HELLO}).status_code == 200
    assert bodies(fake, MINI) == 3


def test_routed_drop_falls_back_to_another_model_each_body_once(make_router, fake):
    r = make_router()
    fake.behave(drop_once=True)  # whichever model is tried first drops
    resp = chat(r, {"model": "p2l", "messages": HELLO, "router": {"models": [MINI, CHEAP]}})
    assert resp.status_code == 200
    (line,) = r.decisions()
    (fb,) = line["fallbacks"]
    assert fb["error"] == "disconnect" and fb["may_have_arrived"] is True
    assert fb["attempts"] == 1 and line["attempts"] == 2
    assert (
        fb["model"] == line["chosen"] and line["served_by"] == ({MINI, CHEAP} - {fb["model"]}).pop()
    )
    assert bodies(fake, MINI) == 1 and bodies(fake, CHEAP) == 1
    # Only the answer that came back is charged, at what the provider reported.
    served = line["served_by"]
    assert abs(line["cost_usd"] - reported_cost(served, resp.json()["usage"])) < 1e-12
    assert abs(ledger_total(r) - line["cost_usd"]) < 1e-9
    assert budget(r)["reserved_usd"] == 0


def test_connection_refused_is_retried_then_502_with_no_body_sent(make_router, fake):
    sock = free_socket()  # a port that was free: nothing listens there once closed
    port = sock.getsockname()[1]
    sock.close()
    r = make_router(provider={"base_url": f"http://127.0.0.1:{port}/v1", "max_retries": 1})
    resp = chat(r, {"model": MINI, "messages": HELLO})
    assert resp.status_code == 502 and resp.json()["error"]["code"] == "connect"
    (line,) = r.decisions()
    assert line["attempts"] == 2  # nothing was sent, so the retry was safe
    assert line["fallbacks"][0]["may_have_arrived"] is False
    assert fake.requests == []
    assert_nothing_charged(r, line)


# ---------------------------------------------------------------- 4, 5. catalog filters


def catalog(**overrides: dict) -> dict:
    """The conftest catalog with some models' fields changed (None removes a field)."""
    models = default_models()
    for name, fields in overrides.items():
        for k, v in fields.items():
            if v is None:
                models[name].pop(k, None)
            else:
                models[name][k] = v
    return models


def test_context_window_excludes_a_model_and_refuses_it_directly(make_router, fake):
    r = make_router(models=catalog(**{MINI: {"context_window": 300}}))
    long = [{"role": "user", "content": "ledger " * 400}]
    resp = chat(r, {"model": "p2l", "messages": long, "max_tokens": 10,
                    "router": {"models": [MINI, CHEAP]}})  # fmt: skip
    assert resp.status_code == 200 and resp.headers["x-router-model"] == CHEAP
    routed = r.decisions()[-1]
    assert [c["model"] for c in routed["candidates"]] == [CHEAP]
    resp = chat(r, {"model": MINI, "messages": long, "max_tokens": 10})
    assert resp.status_code == 400
    err = resp.json()["error"]
    assert err["code"] == "context_length_exceeded" and err["param"] == "messages"
    prompt = r.service.tokens.prompt_tokens(long)  # the router's own count
    assert prompt > 300
    assert err["message"] == (
        f"the prompt is about {prompt} tokens; {MINI}'s context window is 300 tokens"
    )
    assert r.decisions()[-1]["status"] == 400
    assert bodies(fake, MINI) == 0 and bodies(fake, CHEAP) == 1
    # A short prompt fits the same model: the window, not the model, refused the other.
    assert chat(r, {"model": MINI, "messages": HELLO, "max_tokens": 10}).status_code == 200
    assert bodies(fake, MINI) == 1
    b = budget(r)
    assert b["reserved_usd"] == 0
    assert abs(b["spent_usd"] - sum(ln["cost_usd"] or 0 for ln in r.decisions())) < 1e-9


def test_a_model_that_declares_no_supports_stays_a_tools_candidate(make_router, fake):
    r = make_router(models=catalog(**{MINI: {"supports": None}, CHEAP: {"supports": ["vision"]}}))
    body = {"messages": HELLO, "tools": TOOLS}
    resp = chat(r, {**body, "model": "p2l", "router": {"models": [MINI, CHEAP]}})
    assert resp.status_code == 200 and resp.headers["x-router-model"] == MINI
    assert [c["model"] for c in r.decisions()[-1]["candidates"]] == [MINI]
    assert fake.requests[-1].json["tools"] == TOOLS
    resp = chat(r, {**body, "model": MINI})
    assert resp.status_code == 200
    assert fake.requests[-1].json["tools"] == TOOLS and bodies(fake, MINI) == 2
    assert bodies(fake, CHEAP) == 0


# ---------------------------------------------------------------- 6. size caps


LIMITS = {"limits": {"max_sse_event_bytes": 4096, "max_response_bytes": 8192}}
HUGE = 16 << 20


def wait_disconnected(fake: Any, model: str) -> Any:
    rec = next(x for x in fake.requests if x.json["model"] == f"up-{model}")
    wait_until(lambda: rec.disconnected, "the fake to see the router hang up")
    return rec


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_huge_answer_is_502_too_large_and_not_read_to_the_end(make_router, fake, stream):
    r = make_router(provider=LIMITS)
    fake.behave(f"up-{MINI}", **({"huge_line": HUGE} if stream else {"huge_body": HUGE}))
    tracemalloc.start()  # the router, the fake and this client share the process
    try:
        status, got = ask(r, {"model": MINI, "messages": HELLO}, stream)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert status == 502, got
    assert peak < HUGE // 4  # nothing held the payload
    body = got if not stream else got[0]
    assert body["error"]["type"] == "upstream_error" and body["error"]["code"] == "too_large"
    (line,) = r.decisions()
    assert line["status"] == 502 and line["fallbacks"][0]["error"] == "too_large"
    rec = wait_disconnected(fake, MINI)
    assert rec.bytes_sent < HUGE // 2  # the router hung up instead of reading it all
    assert_nothing_charged(r, line)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_routed_huge_answer_falls_back_to_the_next_candidate(make_router, fake, stream):
    r = make_router(provider=LIMITS)
    huge = {"huge_line": HUGE} if stream else {"huge_body": HUGE}
    fake.behave(fail_times=1, **huge)  # the first model tried answers too much
    body = {"model": "p2l", "messages": HELLO, "router": {"models": [MINI, CHEAP]}}
    status, got = ask(r, body, stream)
    (line,) = r.decisions()
    (fb,) = line["fallbacks"]
    served = line["served_by"]
    assert fb["error"] == "too_large" and fb["model"] == line["chosen"] != served
    usage = check_answer(fake, stream, status, got, served)
    assert abs(line["cost_usd"] - reported_cost(served, usage)) < 1e-12
    assert abs(ledger_total(r) - line["cost_usd"]) < 1e-9
    assert bodies(fake, MINI) == 1 and bodies(fake, CHEAP) == 1
    wait_disconnected(fake, fb["model"])


# ---------------------------------------------------------------- 7. rate limits


@pytest.fixture(params=["sqlite", "redis"])
def rate_ledger(request) -> str | None:
    return None if request.param == "sqlite" else request.getfixturevalue("redis_url")


def test_rate_limit_refuses_the_third_request_unforwarded(make_router, fake, rate_ledger):
    r = make_router(ledger=rate_ledger, team={"rate_limit": {"requests_per_minute": 2}})
    body = {"model": MINI, "messages": HELLO}
    assert [chat(r, body).status_code for _ in range(2)] == [200, 200]
    resp = chat(r, body)
    assert resp.status_code == 429
    err = resp.json()["error"]
    assert err["type"] == "rate_limited" and err["code"] == "rate_limited"
    assert 1 <= int(resp.headers["retry-after"]) <= 30  # 60 s / 2 requests
    assert bodies(fake, MINI) == 2
    lines = r.decisions()
    assert [ln["status"] for ln in lines] == [200, 200, 429]
    assert lines[-1]["cost_usd"] is None and lines[-1]["attempts"] == 0
    b = budget(r)
    assert b["reserved_usd"] == 0
    assert abs(b["spent_usd"] - sum(ln["cost_usd"] or 0 for ln in lines)) < 1e-9


# ---------------------------------------------------------------- 8. circuit breaker


def test_circuit_opens_after_failures_and_sends_nothing(make_router, fake):
    r = make_router(provider={"circuit": {"failures": 2, "cooldown_s": 60}, "max_retries": 0})
    fake.behave(f"up-{MINI}", status=500)
    body = {"model": MINI, "messages": HELLO}
    assert [chat(r, body).status_code for _ in range(2)] == [502, 502]
    assert bodies(fake, MINI) == 2
    resp = chat(r, body)
    assert resp.status_code == 502 and resp.json()["error"]["code"] == "circuit_open"
    assert bodies(fake, MINI) == 2  # nothing sent while the circuit is open
    line = r.decisions()[-1]
    assert line["attempts"] == 0
    assert [(f["error"], f["attempts"]) for f in line["fallbacks"]] == [("circuit_open", 0)]
    assert line["fallbacks"][0]["may_have_arrived"] is False
    metrics = r.http(ADMIN_KEY).get("/metrics").text
    assert 'router_circuit_state{provider="fake"} 2.0' in metrics.splitlines()
    assert ledger_total(r) == 0 and budget(r)["reserved_usd"] == 0


# ---------------------------------------------------------------- 9. no open door


@pytest.mark.parametrize("key", ["sk-wrong", None], ids=["wrong-key", "no-key"])
def test_wrong_or_missing_key_is_401_everywhere(make_router, fake, key):
    r = make_router()
    client = r.http(key)
    calls = [
        client.post("/v1/chat/completions", json={"model": MINI, "messages": HELLO}),
        client.post("/v1/chat/completions", json={"model": "p2l", "messages": HELLO}),
        client.get("/v1/budget"),
        client.post("/v1/leaderboard", json={"messages": HELLO}),
    ]
    for resp in calls:
        assert resp.status_code == 401, resp.text
        assert resp.json()["error"]["type"] == "authentication_error"
    assert fake.requests == []
    assert [(ln["status"], ln["team"]) for ln in r.decisions()] == [(401, None), (401, None)]
    for path in ("/docs", "/openapi.json"):  # served only with --docs
        assert httpx.get(r.root + path).status_code == 404


def test_errors_name_the_team_file_but_never_the_routers_paths(make_router):
    r = make_router()
    other = r.http(key=OTHER_KEY)
    resp = other.post("/v1/chat/completions", json={"model": SONNET, "messages": HELLO})
    assert resp.status_code == 404
    message = resp.json()["error"]["message"]
    assert "other.yaml" in message and str(r.tmp) not in message
    routed = other.post(
        "/v1/chat/completions",
        json={"model": "p2l", "messages": HELLO, "router": {"models": [SONNET]}},
    )
    assert routed.status_code == 400 and str(r.tmp) not in routed.text
