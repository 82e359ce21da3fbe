"""The admin API over loopback after real traffic through the router: totals match the
ledger and the decision log, team keys see only their team, no key is 401."""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import httpx
import openai
import pytest
from conftest import ADMIN_KEY, OTHER_KEY, TEAM_KEY
from test_history import FORGED_CURSORS, line

MSG = [{"role": "user", "content": "Explain the CAP theorem in two sentences."}]


@pytest.fixture
def router(make_router):
    h = make_router()
    research, other = h.openai(TEAM_KEY), h.openai(OTHER_KEY)
    for i in range(4):
        research.chat.completions.create(
            model="p2l", messages=[{"role": "user", "content": f"question {i} about databases"}]
        )
    for _chunk in research.chat.completions.create(model="p2l", messages=MSG, stream=True):
        pass
    other.chat.completions.create(model="p2l", messages=MSG)
    with pytest.raises(openai.NotFoundError):
        research.chat.completions.create(model="no-such-model", messages=MSG)
    h.decisions()  # the log file is written
    h.run(h.service.history.flush())  # and the ledger's history has every line
    return h


def _log_totals(lines):
    spend, count = defaultdict(float), defaultdict(int)
    for x in lines:
        spend[x["team"]] += x["cost_usd"] or 0.0
        count[x["team"]] += 1
    return spend, count


def test_totals_match_ledger_and_log(router):
    lines = router.decisions()
    spend, count = _log_totals(lines)
    assert count == {"research": 6, "other": 1}
    admin = router.http(ADMIN_KEY)
    teams = admin.get("/v1/admin/teams").json()
    assert teams["object"] == "list"
    by_team = {t["team"]: t for t in teams["data"]}
    assert set(by_team) == {"research", "other"}
    for name in ("research", "other"):
        ledger_total = router.run(router.service.ledger.total_spent(name))
        assert by_team[name]["spent_usd"] == pytest.approx(ledger_total, abs=1e-9)
        assert by_team[name]["spent_usd"] == pytest.approx(spend[name], abs=1e-9)
    r = by_team["research"]
    assert r["limit_usd"] == 100.0 and 0 <= r["elapsed_share"] <= 1
    assert r["cost_sensitivity_now"] == r["cost_sensitivity"]
    if r["elapsed_share"]:
        assert r["projected_spend_usd"] == pytest.approx(r["spent_usd"] / r["elapsed_share"])

    stats = admin.get("/v1/admin/stats", params={"bucket": "1m"}).json()
    assert stats["bucket_s"] == 60
    got_spend, got_count = defaultdict(float), defaultdict(int)
    for g in stats["groups"]:
        got_spend[g["team"]] += g["spend_usd"]
        got_count[g["team"]] += g["requests"]
    for name in ("research", "other"):
        assert got_spend[name] == pytest.approx(spend[name], abs=1e-9)
        assert got_count[name] == count[name]
    assert sum(g["errors"] for g in stats["groups"]) == 1
    assert sum(b["requests"] for b in stats["buckets"]) == len(lines)
    assert sum(g["share"] for g in stats["groups"] if g["team"] == "research") == pytest.approx(1)
    assert (stats["decisions"], stats["truncated"]) == (len(lines), False)
    assert stats["oldest"] == min(x["ts"] for x in lines)


def test_decisions_pages_and_lookup(router):
    lines = router.decisions()
    admin = router.http(ADMIN_KEY)
    seen, cursor = [], None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = admin.get("/v1/admin/decisions", params=params).json()
        seen += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(x["decision_id"] for x in seen) == sorted(x["decision_id"] for x in lines)
    assert [x["ts"] for x in seen] == sorted((x["ts"] for x in seen), reverse=True)
    one = lines[0]
    assert admin.get(f"/v1/admin/decisions/{one['decision_id']}").json() == one
    errors = admin.get("/v1/admin/decisions", params={"status": "error"}).json()["data"]
    assert [x["status"] for x in errors] == [404]
    recent = admin.get("/v1/admin/decisions", params={"since": "1h", "team": "other"}).json()
    assert [x["team"] for x in recent["data"]] == ["other"]
    bad = admin.get("/v1/admin/decisions", params={"since": "yesterday"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "since"
    assert admin.get("/v1/admin/decisions/nope").status_code == 404


def test_team_key_sees_only_its_team(router):
    lines = router.decisions()
    other_id = next(x["decision_id"] for x in lines if x["team"] == "other")
    team = router.http(TEAM_KEY)
    assert [t["team"] for t in team.get("/v1/admin/teams").json()["data"]] == ["research"]
    mine = team.get("/v1/admin/decisions").json()["data"]
    assert mine and {x["team"] for x in mine} == {"research"}
    denied = team.get("/v1/admin/decisions", params={"team": "other"})
    assert denied.status_code == 403 and denied.json()["error"]["type"] == "permission_error"
    assert team.get(f"/v1/admin/decisions/{other_id}").status_code == 404
    stats = team.get("/v1/admin/stats").json()
    assert {g["team"] for g in stats["groups"]} == {"research"}
    wi = team.post("/v1/admin/whatif", json={"team": "other", "cost_sensitivity": [1.0]})
    assert wi.status_code == 403
    preview = team.post("/v1/admin/route-preview", json={"messages": MSG}).json()
    assert [t["team"] for t in preview["teams"]] == ["research"]

    anon = router.http(None)
    for path in ("/v1/admin/teams", "/v1/admin/decisions", "/v1/admin/stats"):
        r = anon.get(path)
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert router.http("sk-wrong").get("/v1/admin/teams").status_code == 401


def test_route_preview_and_whatif(router):
    admin = router.http(ADMIN_KEY)
    preview = admin.post("/v1/admin/route-preview", json={"messages": MSG}).json()
    assert preview["head"] == "grk" and preview["models"]
    picks = {t["team"]: t for t in preview["teams"]}
    assert picks["other"]["chosen"] == "gpt-4o-mini-2024-07-18"  # its only allowed model
    assert picks["research"]["chosen"] in {m["model"] for m in preview["models"]}
    assert picks["research"]["expected_cost_usd"] > 0
    # What the router actually chose for the same prompt (same λ, nothing spent that moves it)
    logged = [x for x in router.decisions() if x["team"] == "other" and x["status"] == 200]
    assert logged[0]["chosen"] == picks["other"]["chosen"]

    lams = [0.0, 10.0, 1e3, 1e6]
    wi = admin.post(
        "/v1/admin/whatif", json={"team": "research", "cost_sensitivity": lams, "limit": 50}
    ).json()
    assert wi["team"] == "research" and [p["cost_sensitivity"] for p in wi["points"]] == lams
    spends = [p["spend_usd"] for p in wi["points"]]
    assert spends == sorted(spends, reverse=True)  # a dearer λ never spends more
    assert {p["requests"] for p in wi["points"]} == {5}  # the five routed decisions
    bad = admin.post("/v1/admin/whatif", json={"team": "research", "cost_sensitivity": []})
    assert bad.status_code == 400


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_forged_cursor_is_a_400_naming_cursor(make_router, request, backend):
    ledger = request.getfixturevalue("redis_url") if backend == "redis" else None
    h = make_router(ledger=ledger)
    h.run(h.service.ledger.record_decisions([line(i, time.time() - i) for i in range(3)]))
    admin = h.http(ADMIN_KEY)
    for why, cursor in FORGED_CURSORS.items():
        r = admin.get("/v1/admin/decisions", params={"limit": 1, "cursor": cursor})
        err = r.json()["error"]
        assert (r.status_code, err["param"], err["type"]) == (
            400, "cursor", "invalid_request_error"
        ), why  # fmt: skip
        assert "invalid cursor" in err["message"], why
    first = admin.get("/v1/admin/decisions", params={"limit": 1}).json()
    nxt = admin.get("/v1/admin/decisions", params={"limit": 1, "cursor": first["next_cursor"]})
    assert nxt.status_code == 200 and len(nxt.json()["data"]) == 1
    bad = admin.get("/v1/admin/decisions", params={"status": "teapot"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "status"


STALL_DECISIONS = 40_000  # enough that summarising them on the loop stalls it for most of the call


def test_stats_over_many_decisions_leave_the_loop_free(make_router):
    """While a stats call summarises many decisions, /healthz polled back to back keeps
    being answered: some poll sent in the second half of the call is answered before the
    call is. (Summarised on the event loop, the loop answered nothing from the end of the
    read to the end of the call, most of it.) Order, not a time limit: a slow machine is
    slow on both sides."""
    h = make_router()
    now = time.time()
    for start in range(0, STALL_DECISIONS, 5000):
        batch = [line(i, now - 3600 + i * 0.05) for i in range(start, start + 5000)]
        h.run(h.service.ledger.record_decisions(batch), timeout=120)
    polls: list[tuple[float, float]] = []  # (sent, answered), perf_counter
    stop = threading.Event()

    def poll() -> None:
        with httpx.Client(base_url=h.root, timeout=120) as client:
            while not stop.is_set():
                sent = time.perf_counter()
                assert client.get("/healthz").status_code == 200
                polls.append((sent, time.perf_counter()))

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    while not polls:
        time.sleep(0.01)
    start = time.perf_counter()
    stats = h.http(ADMIN_KEY).get("/v1/admin/stats", params={"since": "30d"})
    end = time.perf_counter()
    stop.set()
    poller.join(60)
    assert stats.status_code == 200 and stats.json()["decisions"] == STALL_DECISIONS
    middle = (start + end) / 2
    answered = [p for p in polls if p[0] >= middle and p[1] <= end]
    assert answered, f"no /healthz answered in the second half of a {end - start:.2f} s call"
