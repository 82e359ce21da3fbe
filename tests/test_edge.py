"""Bad input and bad clients at the edge: a clear 4xx in OpenAI's shape, never a 5xx,
nothing forwarded, nothing charged; slow clients are cut off."""

from __future__ import annotations

import socket
import threading

import pytest
from conftest import TEAM_KEY, stalled_post

from router.api.server import BoundedHttpToolsProtocol


def post(r, body, **kw):
    return r.http().post("/v1/chat/completions", json=body, **kw)


def assert_error(resp, status: int, param: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    if param is not None:
        assert err["param"] == param
    return err


def nested(depth: int) -> object:
    v: object = "x"
    for _ in range(depth):
        v = [v]
    return v


@pytest.mark.parametrize("depth", [100, 255, 1024, 5000])
def test_deeply_nested_json_is_400_and_never_forwarded(make_router, fake, depth):
    r = make_router()
    fake.clear()
    body = '{"model": "p2l", "messages": [{"role": "user", "content": "hi"}], "x": '
    raw = body + "[" * depth + "]" * depth + "}"
    resp = r.http().post(
        "/v1/chat/completions", content=raw, headers={"content-type": "application/json"}
    )
    err = assert_error(resp, 400)
    assert "deeper than" in err["message"] or "not valid JSON" in err["message"]
    assert fake.requests == []


@pytest.mark.parametrize(
    ("field", "value"),
    [("stream", "no"), ("stream", 0), ("n", "2"), ("max_tokens", 1.5), ("max_tokens", "10")],
)
def test_typed_fields_are_strict(make_router, fake, field, value):
    r = make_router()
    fake.clear()
    body = {"model": "p2l", "messages": [{"role": "user", "content": "hi"}], field: value}
    assert_error(post(r, body), 400, field)
    assert fake.requests == []


def test_too_many_messages_is_400(make_router, fake):
    r = make_router()
    fake.clear()
    msgs = [{"role": "user", "content": "a"}] * 100_000
    err = assert_error(post(r, {"model": "p2l", "messages": msgs}), 400, "messages")
    assert "4096" in err["message"]
    assert fake.requests == [] and r.decisions()[-1]["status"] == 400


def test_prompt_over_the_token_cap_is_400_and_the_loop_stays_free(make_router, fake):
    from router.serving.planning import Planner

    r = make_router()
    planner: Planner = r.service._parts.planner
    planner.max_prompt_tokens = 50_000
    fake.clear()
    text = "lorem ipsum dolor sit amet " * 300_000  # ~7.9 MiB
    done = threading.Event()
    healthy_before_done: list[bool] = []

    def probe() -> None:
        while not done.is_set():
            ok = r.http().get("/healthz").status_code == 200
            healthy_before_done.append(ok and not done.is_set())

    t = threading.Thread(target=probe)
    t.start()
    try:
        resp = post(r, {"model": "p2l", "messages": [{"role": "user", "content": text}]})
    finally:
        done.set()
        t.join()
    err = assert_error(resp, 400, "messages")
    assert "at most 50000" in err["message"]
    assert any(healthy_before_done), "/healthz was not answered while the big body was counted"
    assert fake.requests == []
    assert r.http().get("/v1/budget").json()["spent_usd"] == 0


class QuickHead(BoundedHttpToolsProtocol):
    header_timeout_s = 0.3


def test_a_client_that_never_finishes_its_headers_is_disconnected(make_router):
    r = make_router(server_kw={"protocol": QuickHead})
    port = int(r.root.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")  # and then nothing
        s.settimeout(30)
        assert s.recv(1024) == b""  # the router closed the connection


def test_a_stalled_body_is_408_and_nothing_forwarded(make_router, fake, monkeypatch):
    import router.api.fastpath as fastpath

    monkeypatch.setattr(fastpath, "BODY_READ_TIMEOUT_S", 0.3)
    r = make_router()
    fake.clear()
    port = int(r.root.rsplit(":", 1)[1])

    data = stalled_post(
        port, "/v1/chat/completions", f"authorization: Bearer {TEAM_KEY}\r\n", b'{"model": "p2l", '
    )
    assert data.startswith(b"HTTP/1.1 408"), data[:200]
    assert b"request_timeout" in data
    assert fake.requests == []
