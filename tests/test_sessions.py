"""Sessions: identity, state in the ledger (SQLite and Redis, shared by replicas), and
the team's ``session.affinity`` (sticky, cache-aware, off) through the real router."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from conftest import ADMIN_KEY

from router.chat.codecs.anthropic import AnthropicMessagesCodec
from router.chat.codecs.responses import OpenAIResponsesCodec
from router.config import load_policies
from router.config.files import ConfigError
from router.ledger import create_ledger
from router.ledger.sessions import SessionState
from router.protocol import parse_chat
from router.serving.sessions import (
    cache_price,
    conversation_head,
    identify,
    session_digest,
    warm_prefix,
)

HAIKU, SONNET, MINI, FLASH = (
    "claude-3-5-haiku-20241022",
    "claude-3-5-sonnet-20241022",
    "gpt-4o-mini-2024-07-18",
    "gemini-1.5-flash-002",
)


def chat(body: dict[str, Any]):
    return parse_chat({"model": "p2l", **body}, max_n=16)


def typed_from(codec: Any, body: dict[str, Any]):
    """A protocol request as a non-chat front hands it over: the typed request set."""
    req = chat({"messages": [{"role": "user", "content": "x"}]})
    req._typed = codec.decode_request(body)
    return req


# ---------------------------------------------------------------- identity


def test_each_source_identifies_the_session_and_only_digests_leave():
    msgs = [{"role": "user", "content": "fix the bug"}]
    header = identify("t", chat({"messages": msgs}), header="sess-123")
    assert header.source == "header" and header.id == session_digest("t", "sess-123")
    assert "sess-123" not in header.id and header.id.startswith("ses_")
    # The header wins over everything else.
    both = chat({"messages": msgs, "prompt_cache_key": "pck-1"})
    assert identify("t", both, header="sess-123") == header

    pck = identify("t", both)
    assert pck.source == "prompt_cache_key" and pck.id == session_digest("t", "pck-1")

    claude = typed_from(
        AnthropicMessagesCodec(),
        {
            "model": "claude",
            "max_tokens": 10,
            "metadata": {"user_id": "user_abc_account__session_42"},
            "messages": [{"role": "user", "content": "hi"}],
        },
    )
    meta = identify("t", claude, front="anthropic-messages")
    assert meta.source == "metadata"
    assert meta.id == session_digest("t", "user_abc_account__session_42")

    codex = typed_from(
        OpenAIResponsesCodec(),
        {"model": "gpt", "input": "hi", "prompt_cache_key": "codex-conv-9"},
    )
    resp = identify("t", codex, front="openai-responses")
    assert resp.source == "prompt_cache_key" and resp.id == session_digest("t", "codex-conv-9")

    prev = identify("t", codex.model_copy(), front="openai-chat", previous_session="ses_abc")
    assert prev.source == "previous_response" and prev.id == "ses_abc"

    derived = identify("t", chat({"messages": msgs}))
    assert derived.source == "derived"
    assert derived.id == session_digest("t", conversation_head(chat({"messages": msgs})))
    # Teams never share a session, even for the same value.
    assert identify("u", chat({"messages": msgs}), header="sess-123").id != header.id


def test_derived_session_is_the_same_on_every_turn_of_a_conversation():
    first = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "list the files"},
    ]
    later = first + [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "ls", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "a.py b.py"},
        {"role": "user", "content": "now read a.py"},
    ]
    a = identify("t", chat({"messages": first}))
    b = identify("t", chat({"messages": later}))
    assert a == b and a.source == "derived"
    other = identify("t", chat({"messages": [{"role": "user", "content": "something else"}]}))
    assert other.id != a.id


# ---------------------------------------------------------------- pricing arithmetic


def test_cache_price_arithmetic():
    from router.config import ModelConfig

    claude = ModelConfig(
        name="c",
        provider="p",
        input_usd_per_mtok=3.0,
        output_usd_per_mtok=15.0,
        cached_input_usd_per_mtok=0.3,
        cache_write_usd_per_mtok=3.75,
    )
    gpt = ModelConfig(
        name="g", provider="p", input_usd_per_mtok=2.5, output_usd_per_mtok=10.0,
        cached_input_usd_per_mtok=1.25,
    )  # fmt: skip
    state = SessionState("c", at=1000.0, prompt_tokens=9000, output_tokens=500, turns=3)
    # Warm: the last turn's prompt + output read at the cached price, the new tail written.
    warm = warm_prefix(state, "c", 10_000, ttl_s=300, now=1100)
    assert warm == 9500
    p = cache_price(claude, 10_000, 200, warm)
    assert p.cost_usd == pytest.approx((9500 * 0.3 + 500 * 3.75 + 200 * 15) / 1e6)
    assert p.uncached_cost_usd == pytest.approx((10_000 * 3 + 200 * 15) / 1e6)
    assert (p.cache_read_tokens, p.cache_write_tokens) == (9500, 500)
    # Past the provider's cache TTL, or on another model: nothing is warm.
    assert warm_prefix(state, "c", 10_000, ttl_s=300, now=1301) == 0
    assert warm_prefix(state, "g", 10_000, ttl_s=300, now=1100) == 0
    # A cold model that bills writes pays the write premium on the whole prompt ...
    cold = cache_price(claude, 10_000, 200, 0)
    assert cold.cost_usd == pytest.approx((10_000 * 3.75 + 200 * 15) / 1e6)
    # ... one that does not bill writes pays the plain input price.
    assert cache_price(gpt, 10_000, 200, 0).cost_usd == pytest.approx((25_000 + 2000) / 1e6)
    # A prefix longer than this prompt (the client trimmed its history) reads only the prompt.
    assert warm_prefix(state, "c", 4000, ttl_s=300, now=1100) == 4000


# ---------------------------------------------------------------- config


def test_session_config_defaults_and_errors_name_file_and_field(tmp_path: Path):
    pol = tmp_path / "policies"
    pol.mkdir()
    (pol / "a.yaml").write_text(yaml.safe_dump({"budget": "none"}))
    teams = load_policies(pol, {})
    assert teams["a"].session.affinity == "cache-aware" and teams["a"].session.ttl_s == 3600
    (pol / "a.yaml").write_text(yaml.safe_dump({"budget": "none", "session": {"affinity": "on"}}))
    with pytest.raises(ConfigError) as err:
        load_policies(pol, {})
    assert "a.yaml" in str(err.value) and "session.affinity" in str(err.value)
    (pol / "a.yaml").write_text(yaml.safe_dump({"budget": "none", "session": {"ttl_s": 0}}))
    with pytest.raises(ConfigError) as err:
        load_policies(pol, {})
    assert "session.ttl_s" in str(err.value)


# ---------------------------------------------------------------- the store


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_session_state_store_expires_counts_and_caps(backend: str, tmp_path: Path, request):
    url = f"sqlite:///{tmp_path / 'l.db'}" if backend == "sqlite" else request.getfixturevalue(
        "redis_url"
    )  # fmt: skip

    async def go() -> None:
        ledger = create_ledger(url)
        try:
            assert await ledger.get_session("s1", now=100) is None
            s = await ledger.record_session_turn(
                "s1", model="m1", prompt_tokens=10, output_tokens=5, now=100, ttl_s=50
            )
            assert (s.model, s.turns) == ("m1", 1)
            s = await ledger.record_session_turn(
                "s1", model="m2", prompt_tokens=30, output_tokens=7, now=120, ttl_s=50
            )
            assert s == await ledger.get_session("s1", now=130)
            assert (s.model, s.prompt_tokens, s.output_tokens, s.turns) == ("m2", 30, 7, 2)
            assert await ledger.get_session("s1", now=171) is None  # past ttl_s
            s = await ledger.record_session_turn(
                "s1", model="m2", prompt_tokens=1, output_tokens=1, now=200, ttl_s=50
            )
            assert s.turns == 1  # an expired session starts over
            ledger.session_cap = 3
            for i in range(6):
                await ledger.record_session_turn(
                    f"c{i}", model="m", prompt_tokens=1, output_tokens=1, now=300 + i, ttl_s=1e6
                )
            kept = [await ledger.get_session(f"c{i}", now=400) for i in range(6)]
            assert kept[-1] is not None  # the newest stays
            assert [k is not None for k in kept] == [False] * 3 + [True] * 3
        finally:
            await ledger.close()

    asyncio.run(go())


def test_turn_recorded_after_the_answer_seen_at_once_and_drained(tmp_path: Path):
    """The session's write is off the response path: while the ledger file is locked by
    another process the turn is still seen by this process's next request, it reaches the
    ledger once the lock goes, and ``drain`` (a graceful stop) waits for it."""
    import sqlite3

    from router.observability.decisions import DecisionRecord
    from router.serving.sessions import Sessions

    db = tmp_path / "l.db"
    pol = tmp_path / "policies"
    pol.mkdir()
    (pol / "t.yaml").write_text(yaml.safe_dump({"budget": "none"}))
    team = load_policies(pol, {})["t"]
    req = chat({"messages": [{"role": "user", "content": "hello"}]})

    async def go() -> None:
        ledger = create_ledger(f"sqlite:///{db}?busy_timeout=5")
        sessions = Sessions(lambda: ledger, lambda: 1000.0)
        try:
            turn = await sessions.open(team, req, DecisionRecord(decision_id="d1"))
            assert turn.state is None
            other = sqlite3.connect(db, isolation_level=None)  # another process's write lock
            other.execute("BEGIN IMMEDIATE")
            rec = DecisionRecord(decision_id="d1")
            sessions.settled(turn, "m1", 40, 7, rec)  # returns at once
            assert rec.session["turn"] == 1 and rec.session["id"] == turn.sid.id
            await asyncio.sleep(0.05)  # the write is waiting on the lock
            reader = sqlite3.connect(db)
            assert reader.execute("SELECT COUNT(*) FROM sessions").fetchone() == (0,)
            reader.close()
            rec2 = DecisionRecord(decision_id="d2")
            second = await sessions.open(team, req, rec2)
            assert second.state == SessionState("m1", 1000.0, 40, 7, 1)
            assert rec2.session["turn"] == 2 and rec2.session["previous_model"] == "m1"
            other.execute("ROLLBACK")
            other.close()
            await sessions.drain()
            assert await ledger.get_session(turn.sid.id, now=1001) == second.state
        finally:
            await ledger.close()

    asyncio.run(go())


# ---------------------------------------------------------------- through the router


def priced(**models: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A catalog of ``models`` on the fake provider (``up-<name>`` upstream), tools allowed
    unless a model says otherwise."""
    return {
        name: {
            "provider": "fake",
            "upstream_model": f"up-{name}",
            "supports": ["tools"],
            **spec,
        }
        for name, spec in models.items()
    }


def turns(text: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    first = [{"role": "user", "content": text}]
    second = first + [
        {"role": "assistant", "content": "Done: the first part."},
        {"role": "user", "content": "and the second part"},
    ]
    return first, second


def ask(r: Any, messages: list, session: str, models: list[str], **kw: Any) -> Any:
    return r.openai().chat.completions.with_raw_response.create(
        model="p2l",
        messages=messages,
        max_tokens=10,
        extra_headers={"x-session-id": session},
        extra_body={"router": {"models": models}},
        **kw,
    )


def test_sticky_keeps_the_model_while_p2l_prefers_another(make_router):
    first, second = turns("write a haiku about the sea")
    best, other = make_router().preferred(second, [HAIKU, MINI])
    r = make_router(team={"strategy": "max-quality", "session": {"affinity": "sticky"}})
    ask(r, first, "conv-1", [other])  # turn 1: the session's model is `other`
    raw = ask(r, second, "conv-1", [best, other])
    line = r.decisions()[-1]
    assert raw.headers["x-router-model"] == other == line["served_by"]
    assert line["session"]["source"] == "header"
    assert line["session"]["previous_model"] == other and line["session"]["kept"] is True
    assert line["session"]["turn"] == 2 and "reason" not in line["session"]
    assert line["reason"].startswith(f"session sticky: kept {other} (max-quality preferred {best}")
    assert "conv-1" not in r.log_path.read_text()  # only the digest is logged
    # A third turn on the same session counts on.
    ask(r, second + [{"role": "user", "content": "again"}], "conv-1", [best, other])
    assert r.decisions()[-1]["session"]["turn"] == 3


@pytest.mark.parametrize("why", ["cap", "fails", "cannot"])
def test_sticky_leaves_with_a_reason(make_router, fake, why: str):
    first, second = turns("explain tides to a child")
    best, other = make_router().preferred(second, [HAIKU, MINI])
    models = priced(
        **{
            best: {"input_usd_per_mtok": 0.1, "output_usd_per_mtok": 0.1},
            other: {
                "input_usd_per_mtok": 100.0,
                "output_usd_per_mtok": 100.0,
                **({"supports": []} if why == "cannot" else {}),
            },
        }
    )
    r = make_router(
        team={"strategy": "max-quality", "session": {"affinity": "sticky"}}, models=models
    )
    ask(r, first, "conv-2", [other])
    kw: dict[str, Any] = {}
    if why == "cap":
        kw["extra_body"] = {"router": {"models": [best, other], "max_cost_usd": 0.0005}}
    if why == "fails":
        fake.behave(f"up-{other}", status=500)
    if why == "cannot":
        kw["tools"] = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    if "extra_body" in kw:
        raw = r.openai().chat.completions.with_raw_response.create(
            model="p2l", messages=second, max_tokens=10,
            extra_headers={"x-session-id": "conv-2"}, **kw,
        )  # fmt: skip
    else:
        raw = ask(r, second, "conv-2", [best, other], **kw)
    line = r.decisions()[-1]
    assert raw.headers["x-router-model"] == best == line["served_by"]
    s = line["session"]
    assert s["previous_model"] == other and s["kept"] is False and s["turn"] == 2
    expected = {
        "cap": f"sticky: {other} is over the cap or the budget left; routed afresh",
        "fails": f"{other} failed (500); served by {best}",
        "cannot": f"sticky: {other} cannot take this request",
    }[why]
    assert s["reason"].startswith(expected), s["reason"]


def test_sticky_leaves_a_model_whose_circuit_is_open(make_router, fake):
    """The session's model sits on a provider whose circuit opened (one failed call,
    a long cooldown): sticky routes afresh without trying it, and says why."""
    first, second = turns("summarise the plot of hamlet")
    best, other = make_router().preferred(second, [HAIKU, MINI])
    models = priced(
        **{
            best: {"input_usd_per_mtok": 1.0, "output_usd_per_mtok": 1.0},
            other: {"input_usd_per_mtok": 1.0, "output_usd_per_mtok": 1.0, "provider": "flaky"},
        }
    )
    r = make_router(
        team={"strategy": "max-quality", "session": {"affinity": "sticky"}},
        models=models,
        more_providers={"flaky": {"circuit": {"failures": 1, "cooldown_s": 600}}},
    )
    ask(r, first, "conv-open", [other])
    fake.behave(f"up-{other}", status=500)  # a call by name fails: the circuit opens
    with pytest.raises(openai.InternalServerError):
        r.openai().chat.completions.create(
            model=other, messages=first, max_tokens=10,
            extra_headers={"x-session-id": "another"},
        )  # fmt: skip
    fake.clear()  # the provider would answer again; the open circuit keeps it untried
    raw = ask(r, second, "conv-open", [best, other])
    line = r.decisions()[-1]
    assert raw.headers["x-router-model"] == best == line["served_by"]
    assert not line["fallbacks"]
    assert [q.json["model"] for q in fake.requests] == [f"up-{best}"]
    s = line["session"]
    assert s["previous_model"] == other and s["kept"] is False and s["turn"] == 2
    assert s["reason"] == f"sticky: {other}'s provider circuit is open; routed afresh"


@pytest.mark.parametrize("sensitivity", [1e5, 1e-3])
def test_cache_aware_stays_when_the_cache_outweighs_the_gain(make_router, sensitivity: float):
    """Same list prices; ``other`` served turn 1 and reads its cache at a tenth of the
    input price, ``best`` (which P2L prefers) would write it at 1.25x. Where cost weighs
    much (``cost_sensitivity`` 1e5 score units per USD) the session stays on ``other``;
    where it hardly weighs, the score gain moves it to ``best``. The logged costs are the
    arithmetic of the prices and the turn-1 usage."""
    cached_price = 10.0
    first, second = turns("summarise the plot of hamlet")
    best, other = make_router().preferred(second, [HAIKU, MINI])
    models = priced(
        **{
            best: {
                "input_usd_per_mtok": 100.0,
                "output_usd_per_mtok": 1.0,
                "cache_write_usd_per_mtok": 125.0,
            },
            other: {
                "input_usd_per_mtok": 100.0,
                "output_usd_per_mtok": 1.0,
                "cached_input_usd_per_mtok": cached_price,
            },
        }
    )
    r = make_router(team={"cost_sensitivity": sensitivity, "session": {}}, models=models)
    ask(r, first, "conv-3", [other])
    one = r.decisions()[-1]
    raw = ask(r, second, "conv-3", [best, other])
    line = r.decisions()[-1]
    rows = {c["model"]: c for c in line["candidates"]}
    o, b = rows[other], rows[best]
    prompt = round((o["uncached_cost_usd"] - 10 * 1.0 / 1e6) * 1e6 / 100.0)
    warm = min(prompt, one["prompt_tokens"] + one["completion_tokens"])
    assert o["cache_read_tokens"] == warm > 0 and o["cache_write_tokens"] == 0
    assert o["expected_cost_usd"] == pytest.approx(
        (prompt * 100 - warm * (100 - cached_price) + 10 * 1.0) / 1e6, abs=1e-9
    )
    # The cold model pays the whole prompt at its write price.
    assert b["cache_read_tokens"] == 0 and b["cache_write_tokens"] == prompt
    assert b["expected_cost_usd"] == pytest.approx((prompt * 125 + 10) / 1e6, abs=1e-9)
    assert b["uncached_cost_usd"] == pytest.approx((prompt * 100 + 10) / 1e6, abs=1e-9)
    s = line["session"]
    if sensitivity > 1:
        assert line["served_by"] == other and s["kept"] is True
        # The reservation is never below the uncached cost.
        assert float(raw.headers["x-router-expected-cost-usd"]) == pytest.approx(
            o["uncached_cost_usd"], abs=1e-8
        )
    else:
        assert line["served_by"] == best and s["kept"] is False
        assert s["reason"].startswith(f"cost-aware chose {best} over {other}")


def test_off_routes_every_turn_afresh_and_summarize_counts_switches(make_router, capsys):
    first, second = turns("name three rivers")
    best, other = make_router().preferred(second, [HAIKU, MINI])
    r = make_router(team={"strategy": "max-quality", "session": {"affinity": "off"}})
    ask(r, first, "conv-4", [other])
    ask(r, second, "conv-4", [best, other])
    ask(r, first, "conv-5", [other])  # another session, one turn
    line = r.decisions()[-2]
    assert line["served_by"] == best and line["session"]["previous_model"] == other
    assert line["session"]["reason"].startswith("affinity off")
    assert "uncached_cost_usd" not in line["candidates"][0]

    from router.cli import main

    assert main(["decisions", "summarize", str(r.log_path), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)["sessions"]
    assert (got["sessions"], got["turns"], got["switches"]) == (2, 3, 1)
    assert got["switches_per_session"] == 0.5
    assert main(["decisions", "summarize", str(r.log_path)]) == 0
    assert "sessions: 2 (3 turns), 1 switches (0.50 per session" in capsys.readouterr().out
    # The admin API's stats (from the ledger's history) give the same summary.
    admin = r.http(ADMIN_KEY)
    deadline = time.monotonic() + 5
    while (stats := admin.get("/v1/admin/stats").json())["decisions"] < 3:
        assert time.monotonic() < deadline, stats
        time.sleep(0.02)
    assert stats["sessions"] == got


def test_two_replicas_on_one_redis_share_session_state(make_router, redis_url):
    first, second = turns("plan a trip to lisbon")
    best, other = make_router().preferred(second, [HAIKU, MINI])
    team = {"strategy": "max-quality", "session": {"affinity": "sticky"}}
    a = make_router(ledger=redis_url, team=team)
    b = make_router(ledger=redis_url, team=team)
    ask(a, first, "conv-5", [other])
    ask(b, second, "conv-5", [best, other])
    line = b.decisions()[-1]
    assert line["session"]["previous_model"] == other and line["session"]["turn"] == 2
    assert line["served_by"] == other and line["session"]["kept"] is True


def test_derived_session_through_the_router(make_router):
    first, second = turns("count to five in french")
    r = make_router()
    r.openai().chat.completions.create(model="p2l", messages=first, max_tokens=10)
    r.openai().chat.completions.create(model="p2l", messages=second, max_tokens=10)
    one, two = r.decisions()[-2:]
    assert one["session"]["id"] == two["session"]["id"]
    assert two["session"]["source"] == "derived" and two["session"]["turn"] == 2
    assert two["session"]["previous_model"] == one["served_by"]
    # A turn that names another model leaves the session's model, and says so.
    other = MINI if one["served_by"] != MINI else HAIKU
    third = second + [{"role": "user", "content": "and to ten"}]
    r.openai().chat.completions.create(model=other, messages=third, max_tokens=10)
    s = r.decisions()[-1]["session"]
    assert s["turn"] == 3 and s["kept"] is False
    assert s["reason"] == f"{other} requested by name"


# ---------------------------------------------------------------- P2L sees the user's words


def agent_loop_chat(n_tool_turns: int) -> list[dict[str, Any]]:
    msgs: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a coding agent."},
        {"role": "user", "content": "rename foo to bar across the repo"},
    ]
    for i in range(n_tool_turns):
        msgs += [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": f"call_{i}",
                        "type": "function",
                        "function": {"name": "grep", "arguments": f'{{"pattern": "foo{i}"}}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": f"call_{i}", "content": f"src/a{i}.py: foo()"},
        ]
    return msgs


def agent_loop_anthropic(n_tool_turns: int) -> dict[str, Any]:
    msgs: list[dict[str, Any]] = [{"role": "user", "content": "rename foo to bar across the repo"}]
    for i in range(n_tool_turns):
        msgs += [
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": f"toolu_{i}", "name": "grep",
                     "input": {"pattern": f"foo{i}"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": f"toolu_{i}",
                     "content": f"src/a{i}.py: foo()"},
                ],
            },
        ]  # fmt: skip
    return {"model": "claude", "max_tokens": 100, "system": "You code.", "messages": msgs}


def agent_loop_responses(n_tool_turns: int) -> dict[str, Any]:
    items: list[dict[str, Any]] = [
        {"role": "user", "content": [{"type": "input_text", "text": "rename foo to bar"}]}
    ]
    for i in range(n_tool_turns):
        items += [
            {"type": "function_call", "call_id": f"c{i}", "name": "grep",
             "arguments": f'{{"pattern": "foo{i}"}}'},
            {"type": "function_call_output", "call_id": f"c{i}", "output": f"a{i}.py: foo()"},
        ]  # fmt: skip
    return {"model": "gpt", "input": items}


def test_p2l_input_is_the_same_on_every_turn_that_adds_only_tool_results(p2l_model):
    from router.serving.planning import scoring_messages

    chat_inputs = {p2l_model.render(agent_loop_chat(n)) for n in range(4)}
    assert len(chat_inputs) == 1
    claude = [
        scoring_messages(typed_from(AnthropicMessagesCodec(), agent_loop_anthropic(n)),
                         "anthropic-messages")
        for n in range(4)
    ]  # fmt: skip
    assert all(c == claude[0] for c in claude)
    assert claude[0] == [{"role": "user", "content": "rename foo to bar across the repo"}]
    codex = [
        scoring_messages(typed_from(OpenAIResponsesCodec(), agent_loop_responses(n)),
                         "openai-responses")
        for n in range(4)
    ]  # fmt: skip
    assert all(c == codex[0] for c in codex)
    assert codex[0] == [{"role": "user", "content": "rename foo to bar"}]
    # The same words render the same scorer input whatever front they came in on.
    assert p2l_model.render(claude[0]) == p2l_model.render(
        [{"role": "user", "content": "rename foo to bar across the repo"}]
    )
    # New words from the user change it.
    more = agent_loop_anthropic(2)
    more["messages"].append({"role": "assistant", "content": "Done."})
    more["messages"].append({"role": "user", "content": "now run the tests"})
    words = scoring_messages(typed_from(AnthropicMessagesCodec(), more), "anthropic-messages")
    assert [m["content"] for m in words][-1] == "now run the tests"


def test_an_agent_loop_is_scored_once_through_the_router(make_router):
    r = make_router()
    engine = r.service.engine
    before = engine.stats()
    for n in range(4):
        r.openai().chat.completions.create(
            model="p2l", messages=agent_loop_chat(n), max_tokens=5,
            tools=[{"type": "function", "function": {"name": "grep", "parameters": {}}}],
        )  # fmt: skip
    after = engine.stats()
    assert after["cache_misses"] - before["cache_misses"] == 1
    assert after["cache_hits"] - before["cache_hits"] == 3
