"""Reloads and shutdowns with real signals, while streams are in flight: the request keeps
the config it started with, is settled and logged once, and the client gets [DONE]."""

from __future__ import annotations

import json
import signal

import httpx
import pytest
import yaml
from conftest import TEAM_KEY, write_config
from router_process import RouterProcess

SLOW = "gpt-4o-2024-08-06"
FAST = "gpt-4o-mini-2024-07-18"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory):
    from conftest import TINY_MODELS

    from router.scoring import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("ck") / "tiny", list(TINY_MODELS))


def start_router(tmp_path, checkpoint, fake, *extra: str) -> RouterProcess:
    providers, policies, env = write_config(tmp_path, fake.base_url)
    r = RouterProcess(
        tmp_path,
        checkpoint=checkpoint,
        providers=providers,
        policies=policies,
        env=env,
        extra=extra,
    )
    r.providers = providers  # type: ignore[attr-defined]
    return r.wait_ready()


def open_stream(client: httpx.Client, model: str) -> httpx.Response:
    body = {
        "model": model,
        "stream": True,
        "messages": [{"role": "user", "content": "Tell me a long story about routers please"}],
    }
    req = client.build_request(
        "POST",
        "/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {TEAM_KEY}"},
    )
    resp = client.send(req, stream=True)
    assert resp.status_code == 200
    return resp


def events(lines) -> list[object]:
    out: list[object] = []
    for line in lines:
        if line.startswith("data: "):
            data = line[len("data: ") :]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def test_stream_survives_removal_of_its_model_by_sighup(tmp_path, checkpoint, fake):
    fake.behave(f"up-{SLOW}", chunk_delay_s=0.3)
    r = start_router(tmp_path, checkpoint, fake)
    try:
        with httpx.Client(base_url=r.root, timeout=30) as client:
            resp = open_stream(client, SLOW)
            lines = resp.iter_lines()
            first = next(ln for ln in lines if ln.startswith("data: "))
            cfg = yaml.safe_load(r.providers.read_text())
            del cfg["models"][SLOW]
            r.providers.write_text(yaml.safe_dump(cfg))
            r.signal(signal.SIGHUP)
            r.wait_log("config reloaded")
            rest = events([first, *lines])
        assert rest[-1] == "[DONE]"
        assert rest[-2]["router"]["served_by"] == SLOW
        assert not any("error" in e for e in rest if isinstance(e, dict))
        # The model is gone for new requests ...
        gone = httpx.post(
            r.root + "/v1/chat/completions",
            json={"model": SLOW, "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": f"Bearer {TEAM_KEY}"},
        )
        assert gone.status_code == 404
    finally:
        r.stop()
    # ... and the stream that started before the reload was settled and logged once.
    lines = [d for d in r.decisions() if d["requested_model"] == SLOW]
    assert [d["status"] for d in lines] == [200, 404]
    assert lines[0]["usage_source"] == "upstream" and lines[0]["cost_usd"] > 0
    assert r.ledger_spent("research") == pytest.approx(lines[0]["cost_usd"], abs=1e-12)


def test_sigterm_lets_short_streams_finish_and_ends_long_ones_in_band(tmp_path, checkpoint, fake):
    fake.behave(f"up-{SLOW}", chunk_delay_s=1.0)  # outlives the grace
    fake.behave(f"up-{FAST}", chunk_delay_s=0.05)  # finishes within it
    r = start_router(tmp_path, checkpoint, fake, "--shutdown-grace-s", "1.5")
    try:
        with (
            httpx.Client(base_url=r.root, timeout=30) as slow,
            httpx.Client(base_url=r.root, timeout=30) as fast,
        ):
            long_stream = open_stream(slow, SLOW)
            long_lines = long_stream.iter_lines()
            first = next(ln for ln in long_lines if ln.startswith("data: "))
            short_stream = open_stream(fast, FAST)
            r.signal(signal.SIGTERM)
            short = events(short_stream.iter_lines())
            long = events([first, *long_lines])
        assert r.wait_exit() == 0
    finally:
        r.stop()
    assert short[-1] == "[DONE]" and short[-2]["router"]["served_by"] == FAST
    assert not any("error" in e for e in short if isinstance(e, dict))
    assert long[-1] == "[DONE]"
    assert long[-2]["router"]["served_by"] == SLOW
    assert long[-3]["error"]["code"] == "shutting_down"
    logged = {d["requested_model"]: d for d in r.decisions()}
    assert logged[FAST]["status"] == 200
    assert logged[SLOW]["status"] == 503 and logged[SLOW]["error"] == "router shutting down"
    assert logged[SLOW]["usage_source"] == "estimated" and logged[SLOW]["cost_usd"] > 0
    total = logged[FAST]["cost_usd"] + logged[SLOW]["cost_usd"]
    assert r.ledger_spent("research") == pytest.approx(total, abs=1e-12)
    assert "client disconnected" not in r.err_log.read_text()
