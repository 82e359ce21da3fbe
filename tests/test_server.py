"""End to end: the real openai SDK -> the real router (uvicorn, loopback) -> the fake upstream."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest
from conftest import ADMIN_KEY, OTHER_KEY, PROVIDER_KEY, TEAM_KEY, TINY_MODELS

from router.serving.service import RequestLimits

HELLO = [{"role": "user", "content": "Write a haiku about routers"}]
MINI = "gpt-4o-mini-2024-07-18"
SONNET = "claude-3-5-sonnet-20241022"


def stream_post(r, body: dict):  # noqa: ANN201 - a context manager
    """A raw streaming POST to the router, to read the SSE bytes as a client gets them."""
    return httpx.stream(
        "POST",
        r.base_url + "/chat/completions",
        headers={"authorization": f"Bearer {TEAM_KEY}"},
        json=body,
    )


def only(*models: str) -> dict:
    return {"router": {"models": list(models)}}


def test_routed_completion_headers_log_and_forwarded_body(make_router, fake):
    r = make_router()
    raw = r.openai().chat.completions.with_raw_response.create(
        model="p2l", messages=HELLO, temperature=0.3
    )
    resp = raw.parse()
    served = raw.headers["x-router-model"]
    assert served in TINY_MODELS
    assert resp.model == served
    assert resp.choices[0].message.content.startswith(f"[up-{served}] echo:")
    for h in (
        "x-router-decision-id",
        "x-router-strategy",
        "x-router-expected-cost-usd",
        "x-router-budget-remaining-usd",
        "x-router-scoring-ms",
        "x-router-overhead-ms",
    ):
        assert h in raw.headers, h
    assert raw.headers["x-router-strategy"] == "cost-aware"
    assert float(raw.headers["x-router-scoring-ms"]) > 0

    sent = fake.requests[-1]
    assert sent.json["model"] == f"up-{served}"
    assert sent.json["temperature"] == 0.3
    assert "router" not in sent.json
    assert sent.headers["authorization"] == f"Bearer {PROVIDER_KEY}"

    (line,) = r.decisions()
    assert line["decision_id"] == raw.headers["x-router-decision-id"]
    assert line["team"] == "research" and line["status"] == 200
    assert line["chosen"] == served and line["served_by"] == served
    assert 1 <= len(line["candidates"]) <= 5
    assert line["completion_tokens"] == resp.usage.completion_tokens
    assert line["cost_usd"] > 0
    assert "prompt" not in line and "about routers" not in json.dumps(line)


def test_router_field_restricts_candidates_and_strategy(make_router, fake):
    r = make_router()
    c = r.openai()
    raw = c.chat.completions.with_raw_response.create(
        model="auto",
        messages=HELLO,
        extra_body={"router": {"models": [MINI, SONNET], "strategy": "max-quality"}},
    )
    assert raw.headers["x-router-model"] in (MINI, SONNET)
    assert raw.headers["x-router-strategy"] == "max-quality"
    line = r.decisions()[-1]
    assert {c["model"] for c in line["candidates"]} == {MINI, SONNET}


def test_direct_model_request_is_budgeted_and_logged(make_router, fake):
    r = make_router()
    raw = r.openai().chat.completions.with_raw_response.create(model=MINI, messages=HELLO)
    assert raw.parse().model == MINI
    assert raw.headers["x-router-strategy"] == "direct"
    assert fake.requests[-1].json["model"] == f"up-{MINI}"
    line = r.decisions()[-1]
    assert line["requested_model"] == MINI and line["scoring_ms"] == 0
    budget = r.http().get("/v1/budget").json()
    assert budget["spent_usd"] == pytest.approx(line["cost_usd"], abs=1e-12)


def test_stream_is_incremental_and_ends_with_router_chunk(make_router, fake):
    r = make_router()
    fake.behave(f"up-{MINI}", chunk_delay_s=0.05)
    stream = r.openai().chat.completions.create(
        model="p2l",
        messages=[{"role": "user", "content": "one two three four five six"}],
        stream=True,
        extra_body=only(MINI),
    )
    arrivals, chunks = [], []
    for chunk in stream:
        arrivals.append(time.perf_counter())
        chunks.append(chunk)
    content = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content) >= 5
    # Chunks were relayed as they came, not buffered until the end.
    assert arrivals[len(content) // 2] - arrivals[0] > 0.1
    assert any(c.choices and c.choices[0].finish_reason == "stop" for c in chunks)
    assert all(c.model == MINI for c in chunks)
    last = chunks[-1]
    assert last.choices == [] and last.usage is None
    router = last.model_extra["router"]
    assert router["served_by"] == MINI and router["cost_usd"] > 0
    sent = fake.requests[-1].json
    assert sent["stream_options"]["include_usage"] is True  # forced upstream
    line = r.decisions()[-1]
    assert line["stream"] is True and line["ttft_ms"] is not None and line["completion_tokens"] > 0
    assert line["usage_source"] == "upstream"


def test_stream_usage_chunk_then_router_chunk_when_asked(make_router, fake):
    r = make_router()
    with stream_post(
        r,
        {
            "model": "p2l",
            "messages": HELLO,
            "stream": True,
            "stream_options": {"include_usage": True},
            **only(MINI),
        },
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["x-router-model"] == MINI
        events = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    usage_chunk, router_chunk = json.loads(events[-3]), json.loads(events[-2])
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] > 0
    assert "router" in router_chunk and router_chunk["choices"] == []


def test_tools_and_response_format_pass_through(make_router, fake):
    r = make_router()
    tools = [
        {
            "type": "function",
            "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
        }
    ]
    resp = r.openai().chat.completions.create(
        model="p2l", messages=HELLO, tools=tools, tool_choice="required", extra_body=only(MINI)
    )
    assert resp.choices[0].message.tool_calls[0].function.name == "get_weather"
    assert fake.requests[-1].json["tools"] == tools
    assert fake.requests[-1].json["tool_choice"] == "required"
    resp = r.openai().chat.completions.create(
        model=MINI, messages=HELLO, response_format={"type": "json_object"}, seed=7, n=1
    )
    assert isinstance(json.loads(resp.choices[0].message.content), dict)
    sent = fake.requests[-1].json
    assert sent["response_format"] == {"type": "json_object"} and sent["seed"] == 7


def test_models_list(make_router):
    r = make_router()
    ids = [m.id for m in r.openai().models.list()]
    assert ids[:3] == ["p2l", "auto", "router"]
    assert set(TINY_MODELS) <= set(ids)
    assert "off-list-model" in ids  # callable by name, though never routed to
    assert "unkeyed-model" not in ids


async def test_async_sdk_concurrent_requests(make_router, fake):
    r = make_router()
    client = r.async_openai()
    results = await asyncio.gather(
        *[
            client.chat.completions.create(
                model="p2l", messages=[{"role": "user", "content": f"q{i}"}]
            )
            for i in range(12)
        ]
    )
    assert all(res.model in TINY_MODELS for res in results)
    lines = r.decisions()
    assert len(lines) == 12 and len({ln["decision_id"] for ln in lines}) == 12
    spent = r.http().get("/v1/budget").json()["spent_usd"]
    assert spent == pytest.approx(sum(ln["cost_usd"] for ln in lines), abs=1e-9)
    await client.close()


def test_fallback_to_next_candidate(make_router, fake):
    r = make_router()
    first, second = r.preferred(HELLO, [SONNET, MINI])  # the router will choose ``first``
    fake.behave(f"up-{first}", status=503)
    raw = r.openai().chat.completions.with_raw_response.create(
        model="p2l",
        messages=HELLO,
        extra_body={"router": {"models": [SONNET, MINI], "strategy": "max-quality"}},
    )
    line = r.decisions()[-1]
    assert line["chosen"] == first
    assert raw.headers["x-router-model"] == second and line["served_by"] == second
    assert line["fallbacks"][0]["model"] == first and line["fallbacks"][0]["error"] == "503"


def test_every_candidate_failing_is_502(make_router, fake):
    r = make_router()
    for m in (MINI, SONNET):
        fake.behave(f"up-{m}", status=500)
    with pytest.raises(openai.APIStatusError) as ei:
        r.openai().chat.completions.create(
            model="p2l", messages=HELLO, extra_body=only(MINI, SONNET)
        )
    assert ei.value.status_code == 502
    err = ei.value.body
    assert err["type"] == "upstream_error" and err["code"] == "500"
    line = r.decisions()[-1]
    assert line["status"] == 502 and len(line["fallbacks"]) == 2
    assert r.http().get("/v1/budget").json()["reserved_usd"] == 0  # nothing left held


def test_upstream_400_passes_through_without_fallback(make_router, fake):
    r = make_router()
    fake.behave(
        f"up-{MINI}",
        status=400,
        error_body={
            "error": {
                "message": "bad tool schema",
                "type": "invalid_request_error",
                "param": "tools",
                "code": None,
            }
        },
    )
    with pytest.raises(openai.BadRequestError) as ei:
        r.openai().chat.completions.create(model=MINI, messages=HELLO)
    assert ei.value.body["message"] == "bad tool schema" and ei.value.body["param"] == "tools"
    assert r.http().get("/v1/budget").json()["spent_usd"] == 0


@pytest.mark.parametrize(
    ("body", "status", "etype", "param"),
    [
        (b"{not json", 400, "invalid_request_error", None),
        (b"[1, 2]", 400, "invalid_request_error", None),
        (json.dumps({"model": "p2l"}).encode(), 400, "invalid_request_error", "messages"),
        (
            json.dumps({"model": "p2l", "messages": []}).encode(),
            400,
            "invalid_request_error",
            "messages",
        ),
        (
            json.dumps({"model": "p2l", "messages": [{"role": "system", "content": "x"}]}).encode(),
            400,
            "invalid_request_error",
            "messages",
        ),
        (
            json.dumps({"model": "p2l", "messages": HELLO, "n": 17}).encode(),
            400,
            "invalid_request_error",
            "n",
        ),
        (
            json.dumps(
                {"model": "p2l", "messages": HELLO, "router": {"strategy": "yolo"}}
            ).encode(),
            400,
            "invalid_request_error",
            "router.strategy",
        ),
        (
            json.dumps({"model": "no-such-model", "messages": HELLO}).encode(),
            404,
            "invalid_request_error",
            "model",
        ),
        (
            json.dumps({"model": "unkeyed-model", "messages": HELLO}).encode(),
            404,
            "invalid_request_error",
            "model",
        ),
    ],
)
def test_bad_requests_get_openai_errors(make_router, body, status, etype, param):
    r = make_router()
    resp = r.http().post(
        "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    assert resp.status_code == status
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == etype and err["param"] == param and err["message"]
    if status == 404:
        assert err["code"] == "model_not_found"
    (line,) = r.decisions()
    assert line["status"] == status


def test_auth_errors(make_router):
    r = make_router()
    with pytest.raises(openai.AuthenticationError) as ei:
        r.openai(key="wrong").chat.completions.create(model="p2l", messages=HELLO)
    assert ei.value.body["type"] == "authentication_error"
    resp = r.http(key=None).post("/v1/chat/completions", json={"model": "p2l", "messages": HELLO})
    assert resp.status_code == 401 and resp.json()["error"]["type"] == "authentication_error"
    assert r.http(key=None).get("/v1/models").status_code == 401
    assert r.decisions()[-1]["team"] is None


def test_team_allow_list_limits_direct_and_routed(make_router):
    r = make_router()
    with pytest.raises(openai.NotFoundError):
        r.openai(key=OTHER_KEY).chat.completions.create(model=SONNET, messages=HELLO)
    resp = r.openai(key=OTHER_KEY).chat.completions.create(model="p2l", messages=HELLO)
    assert resp.model == MINI


def test_exhausted_budget_is_429_with_reset_time(make_router):
    r = make_router(team={"budget": {"usd": 1e-9}})
    with pytest.raises(openai.RateLimitError) as ei:
        r.openai().chat.completions.create(model="p2l", messages=HELLO)
    err = ei.value.body
    assert err["type"] == "budget_exceeded" and err["code"] == "budget_exceeded"
    assert "resets at" in err["message"]
    b = r.http().get("/v1/budget").json()
    assert b["spent_usd"] == 0 and b["reserved_usd"] == 0 and b["resets_at"]


def test_body_too_large_is_413(make_router):
    r = make_router(service_kw={"limits": RequestLimits(max_body_bytes=1000)})
    resp = r.http().post(
        "/v1/chat/completions",
        json={"model": "p2l", "messages": [{"role": "user", "content": "x" * 2000}]},
    )
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "body_too_large"
    (line,) = r.decisions()
    assert line["status"] == 413 and line["team"] == "research"


def test_unknown_route_and_method_errors_are_openai_shaped(make_router):
    r = make_router()
    resp = r.http().get("/v1/nope")
    assert resp.status_code == 404 and set(resp.json()["error"]) == {
        "message",
        "type",
        "param",
        "code",
    }
    resp = r.http().get("/v1/chat/completions")
    assert resp.status_code == 405 and resp.json()["error"]["type"] == "invalid_request_error"


def test_health_ready_metrics(make_router):
    r = make_router()
    h = r.http(key=None)
    assert h.get("/healthz").json() == {"status": "ok"}
    assert h.get("/readyz").status_code == 200
    r.openai().chat.completions.create(model="p2l", messages=HELLO)
    # /metrics names every team and its spend: the admin key only.
    assert h.get("/metrics").status_code == 401
    assert r.http().get("/metrics").status_code == 403  # a team key
    assert r.http(key="sk-wrong").get("/metrics").status_code == 401
    text = r.http(key=ADMIN_KEY).get("/metrics").text
    assert 'router_requests_total{model="' in text and "router_ready 1" in text
    assert h.get("/docs").status_code == 404 and h.get("/openapi.json").status_code == 404


def test_provider_key_never_leaks(make_router, fake):
    r = make_router()
    for m in (MINI, SONNET):
        fake.behave(
            f"up-{m}", status=401, error_body={"error": {"message": f"bad key {PROVIDER_KEY}"}}
        )
    resp = r.http().post(
        "/v1/chat/completions", json={"model": "p2l", "messages": HELLO, **only(MINI, SONNET)}
    )
    assert resp.status_code == 502
    assert PROVIDER_KEY not in resp.text
    r.service.decisions.flush(10)
    assert PROVIDER_KEY not in r.log_path.read_text()


def test_client_disconnect_mid_stream_settles_and_logs(make_router, fake):
    r = make_router()
    fake.behave(f"up-{MINI}", chunk_delay_s=0.2)
    with stream_post(
        r,
        {
            "model": MINI,
            "stream": True,
            "messages": [{"role": "user", "content": "a b c d e f g h"}],
        },
    ) as resp:
        for line in resp.iter_lines():
            if line.startswith("data: "):
                break  # leave after the first chunk
    deadline = time.monotonic() + 10
    while not r.decisions() and time.monotonic() < deadline:
        time.sleep(0.05)
    (line,) = r.decisions()
    assert line["status"] == 499 and line["usage_source"] == "estimated"
    assert 0 < line["cost_usd"] < line["expected_cost_usd"]
    b = r.http().get("/v1/budget").json()
    assert b["reserved_usd"] == 0 and b["spent_usd"] == pytest.approx(line["cost_usd"], abs=1e-12)


def test_leaderboard_endpoint(make_router):
    r = make_router()
    resp = r.http(key=OTHER_KEY).post("/v1/leaderboard", json={"messages": HELLO, "top_k": 3})
    assert resp.status_code == 200
    board = resp.json()
    assert board["head"] == "grk" and isinstance(board["eta"], float)
    rows = board["models"]
    assert [m["model"] for m in rows] != [] and len(rows) == len(TINY_MODELS)
    assert [m["coef"] for m in rows] == sorted((m["coef"] for m in rows), reverse=True)
    by_name = {m["model"]: m for m in rows}
    # team "other" may only use gpt-4o-mini*: that is its one routable model
    assert [m for m, row in by_name.items() if row["routable"]] == [MINI]
    assert by_name[MINI]["expected_cost_usd"] > 0 and "expected_cost_usd" not in by_name[SONNET]
    pw = board["pairwise"]
    assert len(pw["models"]) == 3 and len(pw["win"]) == 3
    assert pw["win"][0][1] + pw["win"][1][0] + pw["tie"][0][1] + pw["bad"][0][1] == pytest.approx(
        1.0
    )
    bad = r.http().post("/v1/leaderboard", json={"top_k": 3})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "messages"


def test_pacing_adapts_lambda_and_persists_its_state(make_router):
    import sqlite3

    r = make_router(team={"budget": {"usd": 0.01, "pacing": True}, "cost_sensitivity": 5})
    for i in range(3):
        r.openai().chat.completions.create(
            model="p2l", messages=[{"role": "user", "content": f"q{i}"}]
        )
    lambdas = [ln["cost_sensitivity"] for ln in r.decisions()]
    assert len(lambdas) == 3 and all(lam > 0 for lam in lambdas)
    db = sqlite3.connect(r.tmp / "ledger.db")
    (value,) = db.execute("SELECT value FROM state WHERE key = 'pacing:research'").fetchone()
    assert json.loads(value)


def test_stream_broken_mid_way_ends_with_in_band_error_and_done(make_router, fake):
    r = make_router(
        provider={"timeouts": {"connect": 2, "first_byte": 5, "idle": 0.2, "total": 20}}
    )
    fake.behave(f"up-{MINI}", chunk_delay_s=0.5)
    with stream_post(
        r,
        {
            "model": MINI,
            "stream": True,
            "messages": [{"role": "user", "content": "a b c d e f"}],
        },
    ) as resp:
        assert resp.status_code == 200  # the status line went out with the first chunk
        events = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    err = json.loads(events[-3])["error"]
    assert err["type"] == "upstream_error" and err["code"] == "timeout"
    assert "router" in json.loads(events[-2])
    (line,) = r.decisions()
    # No usage came: the prompt and the relayed text are counted and charged.
    assert line["status"] == 502 and line["usage_source"] == "estimated"
    assert line["completion_tokens"] >= 1 and 0 < line["cost_usd"] < line["expected_cost_usd"]
    b = r.http().get("/v1/budget").json()
    assert b["reserved_usd"] == 0 and b["spent_usd"] == pytest.approx(line["cost_usd"], abs=1e-12)


def test_docs_list_the_chat_path_served_by_the_fast_path():
    from router.api.app import create_app

    schema = create_app(None, docs=True).app.openapi()  # type: ignore[arg-type]
    assert schema["paths"]["/v1/chat/completions"]["post"]["summary"] == "Chat Completions"
    assert "/v1/leaderboard" in schema["paths"]
