"""A Redis that loses its memory (FLUSHALL, a restart without persistence) is noticed, not
taken for a new period: router/ledger/epoch.py.

Against a private redis-server (``private_redis``: its own port, nothing on disk), so that
FLUSHALL and restarts touch no other test. The ledger tests drive ``RedisLedger`` as
several processes would (several instances on one store); the router tests run the real
router over loopback against the fake upstream, and acknowledge with the real command
(``p2l-router ledger ack-reset`` in a subprocess).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ADMIN_KEY, RedisServer, RouterHandle, default_models
from test_trust import (
    HELLO,
    MINI,
    budget,
    chat,
    check_answer,
    held_request,
    readyz,
    reported_cost,
    wait_until,
)

from router.ledger import (
    InsufficientBudget,
    Ledger,
    LedgerError,
    LedgerLost,
    SettlementJournal,
    create_ledger,
)
from router.ledger.epoch import ACK, ADOPTED, FRESH, LOST

ROOT = Path(__file__).resolve().parents[1]
O1 = "o1-mini"  # $3 / $12 per 1M tokens
P = "day:2026-11-28"
T0 = 1_800_000_000.0


def ledger_cli(url: str, *args: str) -> subprocess.CompletedProcess:
    """``p2l-router ledger ...`` as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "router", "ledger", *args, "--ledger", url],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


# ---------------------------------------------------------------- the ledger


@pytest.fixture
def epoch_url(private_redis: RedisServer) -> str:
    return f"{private_redis.url}?prefix=epoch:"


@pytest.fixture
async def ledgers(epoch_url: str) -> AsyncIterator[Callable[[], Ledger]]:
    """New ledger instances on one store: each is another router process."""
    opened: list[Ledger] = []

    def make() -> Ledger:
        ledger = create_ledger(epoch_url)
        opened.append(ledger)
        return ledger

    yield make
    for ledger in opened:
        await ledger.close()


async def spend(ledger: Ledger, amount: float, *, ref: str, limit: float | None = 1.0) -> None:
    r = await ledger.reserve("t", amount, limit_usd=limit, period_key=P, ttl_s=60, now=T0, ref=ref)
    await ledger.settle(r, amount, now=T0)


async def test_first_use_creates_the_epoch_and_every_process_adopts_it(ledgers, private_redis):
    a, b = ledgers(), ledgers()
    await spend(a, 0.4, ref="d1")
    await a.check_epoch()
    await b.check_epoch()
    assert a.epoch.known.kind == FRESH and b.epoch.known == a.epoch.known
    assert a.lost is None and private_redis.client.get("epoch:epoch") is not None
    # A store with data but no sentinel (a ledger older than epochs) is adopted as it is.
    private_redis.client.delete("epoch:epoch")
    c = ledgers()
    assert (await c.usage("t", P, now=T0)).spent_usd == pytest.approx(0.4)
    assert c.epoch.known.kind == ADOPTED


@pytest.mark.parametrize("how", ["flushall", "restart"])
async def test_a_wiped_store_refuses_money_until_acknowledged(
    ledgers, private_redis, epoch_url, how
):
    a = ledgers()
    await spend(a, 0.9, ref="d1")
    with pytest.raises(InsufficientBudget):
        await a.reserve("t", 0.2, limit_usd=1.0, period_key=P, ttl_s=60, now=T0)
    held = await a.reserve("t", 0.05, limit_usd=1.0, period_key=P, ttl_s=60, now=T0, ref="d2")
    if how == "flushall":
        private_redis.client.flushall()
    else:
        private_redis.restart()
        with contextlib.suppress(LedgerError):  # the pooled connection died: an outage
            await a.check()
    for op in (
        lambda: a.reserve("t", 0.2, limit_usd=1.0, period_key=P, ttl_s=60, now=T0),
        lambda: a.usage("t", P, now=T0),
        lambda: a.settle(held, 0.05, now=T0),
    ):
        with pytest.raises(LedgerLost, match="lost its data") as info:
            await op()
        assert "ack-reset" in str(info.value) and isinstance(info.value, LedgerError)
    assert a.lost is not None
    # The loss is written down: a process started now refuses too, instead of a new epoch.
    stored = private_redis.client.get("epoch:epoch")
    assert stored is not None and b'"lost"' in stored
    late = ledgers()
    with pytest.raises(LedgerLost):
        await late.usage("t", P, now=T0)
    assert ledger_cli(epoch_url, "status").returncode == 1
    done = ledger_cli(epoch_url, "ack-reset", "--note", "test: no persistence")
    assert done.returncode == 0, done.stderr
    assert "acknowledged" in done.stdout
    for ledger in (a, late):  # both pick it up at their next operation
        assert (await ledger.usage("t", P, now=T0)).spent_usd == 0
        assert ledger.lost is None and ledger.epoch.known.kind == ACK
    assert a.reset_acknowledged["note"] == "test: no persistence"
    await spend(a, 0.9, ref="d3")  # a new epoch: what was spent before the wipe is gone
    assert ledger_cli(epoch_url, "status").returncode == 0
    again = ledger_cli(epoch_url, "ack-reset")  # nothing to acknowledge now
    assert again.returncode == 1 and "not marked lost" in again.stderr


async def test_concurrent_requests_see_one_loss_and_one_acknowledgement(
    ledgers, private_redis, caplog
):
    a = ledgers()
    await spend(a, 0.1, ref="d1")
    private_redis.client.flushall()

    async def one(i: int) -> BaseException | None:
        try:
            await a.reserve("t", 0.01, limit_usd=1.0, period_key=P, ttl_s=60, now=T0)
        except LedgerError as exc:
            return exc
        return None

    got = await asyncio.gather(*(one(i) for i in range(50)))
    assert all(isinstance(x, LedgerLost) for x in got)
    await a.epoch.acknowledge()
    assert await asyncio.gather(*(one(i) for i in range(50))) == [None] * 50
    messages = [x.getMessage() for x in caplog.records]
    assert sum("LEDGER LOST" in m for m in messages) == 1
    assert sum("ledger reset acknowledged" in m for m in messages) == 1
    assert (await a.usage("t", P, now=T0)).reserved_usd == pytest.approx(0.5)


async def test_a_new_epoch_written_into_the_wiped_store_is_not_taken_for_the_old_one(
    ledgers, private_redis
):
    a = ledgers()
    await spend(a, 0.9, ref="d1")
    private_redis.client.flushall()
    b = ledgers()  # started after the wipe: it cannot tell, and starts a fresh epoch
    await spend(b, 0.1, ref="d2")
    with pytest.raises(LedgerLost, match="replaced by fresh epoch"):
        await a.usage("t", P, now=T0)  # a knew the old one: it marks the store lost ...
    with pytest.raises(LedgerLost):
        await spend(b, 0.1, ref="d3")  # ... and b stops too
    assert (await a.epoch.read()).kind == LOST


async def test_an_older_epoch_brought_back_is_a_loss(ledgers, private_redis):
    """A snapshot restored from before the last acknowledged reset rolls spend back."""
    a = ledgers()
    await a.check_epoch()
    acks = []
    for note in ("first", "second"):
        private_redis.client.flushall()
        with pytest.raises(LedgerLost):
            await a.usage("t", P, now=T0)
        acks.append((await a.epoch.acknowledge(note=note)).raw)
        await a.check_epoch()
        assert a.lost is None and a.epoch.known.raw == acks[-1]
    private_redis.client.set("epoch:epoch", acks[0])
    with pytest.raises(LedgerLost, match="went back to an older ack epoch"):
        await a.usage("t", P, now=T0)
    assert (await a.epoch.read()).kind == LOST


async def test_a_settle_refused_by_a_wiped_store_is_journaled_and_replayed_after_ack(
    ledgers, private_redis, tmp_path
):
    a = ledgers()
    journal = SettlementJournal(tmp_path / "j")
    try:
        r = await a.reserve("t", 0.3, limit_usd=1.0, period_key=P, ttl_s=60, now=T0, ref="d1")
        private_redis.client.flushall()
        with pytest.raises(LedgerLost):
            await a.settle(r, 0.25, now=T0)
        await journal.append(r, 0.25, now=T0)
        assert await journal.replay(a) == 0 and journal.pending_count() == 1
        await a.epoch.acknowledge()
        assert await journal.replay(a) == 1
        assert await a.total_spent("t") == pytest.approx(0.25)
        assert (await a.usage("t", P, now=T0)).spent_usd == pytest.approx(0.25)
    finally:
        journal.close()


def test_ack_reset_names_what_it_cannot_do(tmp_path):
    bad = subprocess.run(
        [sys.executable, "-m", "router", "ledger", "ack-reset", "--ledger",
         f"sqlite:///{tmp_path / 'x.db'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 2 and "only a Redis ledger" in bad.stderr
    assert not (tmp_path / "x.db").exists()


# ---------------------------------------------------------------- the router


def start(make_router: Callable[..., RouterHandle], redis: RedisServer, tmp: Path, **kw: Any):
    models = default_models()
    models[O1]["expected_output_tokens"] = 1  # reserves little, settles more: overspends
    return make_router(
        ledger=f"{redis.url}?prefix=router:&socket_timeout=2",
        service_kw={"journal_path": str(tmp / "router.journal")},
        models=models,
        **kw,
    )


def overspend(r: RouterHandle, limit: float) -> None:
    """Requests until the team's budget refuses them: it has spent more than its limit."""
    for i in range(40):
        resp = chat(r, {"model": O1, "messages": [{"role": "user", "content": f"spend {i}"}]})
        if resp.status_code == 429:
            assert resp.json()["error"]["code"] == "budget_exceeded"
            break
        assert resp.status_code == 200, resp.text
    assert budget(r)["spent_usd"] > limit


def metric(r: RouterHandle, name: str) -> float:
    text = r.http(ADMIN_KEY).get("/metrics").text
    (line,) = [ln for ln in text.splitlines() if ln.startswith(name + " ")]
    return float(line.split()[1])


def assert_ledger_unavailable(resp: httpx.Response, lost: bool = True) -> None:
    assert resp.status_code == 503, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "not_ready" and err["code"] == "ledger_unavailable"
    assert ("lost its data" in err["message"]) == lost


@pytest.mark.parametrize("how", ["flushall", "restart"])
def test_router_refuses_a_team_over_budget_after_a_wipe_until_acknowledged(
    private_redis, make_router, tmp_path, caplog, how
):
    limit = 0.00005
    r = start(make_router, private_redis, tmp_path, team={"budget": {"usd": limit}})
    overspend(r, limit)
    assert metric(r, "router_ledger_lost") == 0
    private_redis.client.flushall() if how == "flushall" else private_redis.restart()
    # The next check (a request or a probe) sees the loss; the first call after a restart
    # may still meet a dead pooled connection, which is a plain outage.
    body = wait_until(lambda: (b := readyz(r))["status"] == "ledger_lost" and b, "the loss")
    assert "lost its data" in body["error"] and "ack-reset" in body["error"]
    assert httpx.get(r.root + "/readyz").status_code == 503
    for _ in range(3):  # not served again: no fresh period from an empty store
        assert_ledger_unavailable(chat(r, {"model": O1, "messages": HELLO}))
    assert_ledger_unavailable(r.http().get("/v1/budget"))
    assert metric(r, "router_ledger_lost") == 1
    errors = [x for x in caplog.records if "LEDGER LOST" in x.getMessage()]
    assert len(errors) == 1 and errors[0].levelno == logging.ERROR  # loud, and once

    done = ledger_cli(f"{private_redis.url}?prefix=router:", "ack-reset", "--note", "drill")
    assert done.returncode == 0, done.stderr
    ready = wait_until(lambda: (b := readyz(r))["status"] == "ready" and b, "the acknowledgement")
    assert ready["ledger_reset_acknowledged"]["note"] == "drill"
    assert any("ledger reset acknowledged" in x.getMessage() for x in caplog.records)
    assert metric(r, "router_ledger_lost") == 0
    resp = chat(r, {"model": MINI, "messages": HELLO, "max_tokens": 5})  # a new epoch
    assert resp.status_code == 200, resp.text
    assert budget(r)["spent_usd"] == pytest.approx(r.decisions()[-1]["cost_usd"], abs=1e-12)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_router_settle_across_a_wipe_is_journaled_then_replayed_after_ack(
    private_redis, make_router, fake, tmp_path, stream
):
    r = start(make_router, private_redis, tmp_path)
    body = {"model": MINI, "messages": HELLO}
    with ThreadPoolExecutor(1) as pool:
        go, fut = held_request(r, fake, pool, body, stream)  # reserved before the wipe
        private_redis.client.flushall()
        go.set()
        status, got = fut.result(timeout=30)
    usage = check_answer(fake, stream, status, got)  # the client has its answer
    line = r.decisions()[-1]
    cost = reported_cost(MINI, usage)
    assert line["status"] == 200 and line["cost_usd"] == pytest.approx(cost, abs=1e-12)
    assert [e.ref for e in r.service.journal.entries()] == [line["decision_id"]]
    assert readyz(r)["status"] == "ledger_lost" and readyz(r)["journaled_settlements"] == 1
    done = ledger_cli(f"{private_redis.url}?prefix=router:", "ack-reset")
    assert done.returncode == 0, done.stderr
    wait_until(lambda: readyz(r).get("journaled_settlements") is None, "the journal to drain")
    assert r.run(r.service.ledger.total_spent("research")) == pytest.approx(cost, abs=1e-9)
    rows = r.run(r.service.ledger.spend_rows("research"))
    assert [row["ref"] for row in rows] == [line["decision_id"]]
    assert budget(r)["spent_usd"] == pytest.approx(cost, abs=1e-9)


def test_ledger_reads_with_redis_down_are_503_not_500(private_redis, make_router, tmp_path):
    r = start(make_router, private_redis, tmp_path)
    assert chat(r, {"model": MINI, "messages": HELLO}).status_code == 200
    private_redis.kill()
    assert_ledger_unavailable(r.http().get("/v1/budget"), lost=False)
    assert_ledger_unavailable(chat(r, {"model": MINI, "messages": HELLO}), lost=False)
    admin = r.http(ADMIN_KEY)
    for path in ("/v1/admin/teams", "/v1/admin/decisions", "/v1/admin/stats"):
        assert_ledger_unavailable(admin.get(path), lost=False)
    assert readyz(r)["status"] == "ready"  # an outage is per request, not a lost ledger
