"""RouterMetrics: the exposition parsed back with prometheus_client's own parser; the
multiprocess mode with real worker processes sharing one PROMETHEUS_MULTIPROC_DIR."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from router.observability.metrics import (
    MULTIPROC_ENV,
    OVERHEAD_BUCKETS_S,
    SCORING_BUCKETS_S,
    UPSTREAM_BUCKETS_S,
    RouterMetrics,
    mark_process_dead,
    prepare_multiprocess_dir,
    render_multiprocess,
)

REPO = Path(__file__).resolve().parents[1]


def families(body: bytes) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def value(fams: dict, family: str, sample: str, **labels: str) -> float:
    hits = [s.value for s in fams[family].samples if s.name == sample and s.labels == labels]
    assert len(hits) == 1, (family, sample, labels, fams[family].samples)
    return hits[0]


def buckets(fams: dict, family: str, **labels: str) -> dict[float, float]:
    return {
        float(s.labels["le"]): s.value
        for s in fams[family].samples
        if s.name == family + "_bucket"
        and {k: v for k, v in s.labels.items() if k != "le"} == labels
    }


def test_requests_spend_and_attempts_exposed_with_types_labels_and_buckets():
    m = RouterMetrics()
    m.record_request("red", "gpt-4o", 200, 0.0004, 0.003, 1.2, [("o1", "500"), ("o1", "timeout")])
    m.record_request("red", "gpt-4o", 200, 0.0008, None, 0.2)
    m.record_request(None, None, 401, 0.0001)  # auth failed: no scoring, nothing sent upstream
    m.record_spend("red", "gpt-4o", 0.25, 1000, 200)
    m.record_spend("red", "gpt-4o", 0.5, 10, None)
    m.record_attempts("openai", 2)
    m.record_attempts("openai", 1)
    body, ctype = m.render()
    assert ctype.startswith("text/plain")
    f = families(body)

    for name in ("router_requests", "router_spend_usd", "router_tokens", "router_fallbacks"):
        assert f[name].type == "counter"
    assert f["router_upstream_attempts"].type == "counter"
    for name in ("router_overhead_seconds", "router_scoring_seconds", "router_upstream_seconds"):
        assert f[name].type == "histogram" and f[name].documentation

    req = "router_requests_total"
    assert value(f, "router_requests", req, team="red", model="gpt-4o", status="200") == 2
    assert value(f, "router_requests", req, team="", model="", status="401") == 1
    assert (
        value(f, "router_spend_usd", "router_spend_usd_total", team="red", model="gpt-4o") == 0.75
    )
    tok = "router_tokens_total"
    assert value(f, "router_tokens", tok, team="red", kind="prompt") == 1010
    assert value(f, "router_tokens", tok, team="red", kind="completion") == 200
    fb = "router_fallbacks_total"
    assert value(f, "router_fallbacks", fb, model="o1", error="500") == 1
    assert value(f, "router_fallbacks", fb, model="o1", error="timeout") == 1
    att = "router_upstream_attempts_total"
    assert value(f, "router_upstream_attempts", att, provider="openai") == 3

    ovh = buckets(f, "router_overhead_seconds", team="red")
    assert sorted(ovh) == [*OVERHEAD_BUCKETS_S, float("inf")]
    assert ovh[0.00025] == 0 and ovh[0.0005] == 1 and ovh[0.001] == 2 and ovh[float("inf")] == 2
    assert buckets(f, "router_overhead_seconds", team="")[0.0001] == 1
    assert value(f, "router_overhead_seconds", "router_overhead_seconds_count", team="red") == 2
    assert sorted(buckets(f, "router_scoring_seconds")) == [*SCORING_BUCKETS_S, float("inf")]
    assert value(f, "router_scoring_seconds", "router_scoring_seconds_count") == 1
    ups = buckets(f, "router_upstream_seconds", model="gpt-4o")
    assert sorted(ups) == [*UPSTREAM_BUCKETS_S, float("inf")]
    assert ups[0.1] == 0 and ups[0.25] == 1 and ups[2.5] == 2
    assert buckets(f, "router_upstream_seconds", model="") == {}  # the 401 went nowhere


def test_callbacks_read_at_scrape_time_counters_as_counters_gauges_as_gauges():
    m = RouterMetrics()
    state = {"ready": False, "hits": 3}

    def scorer_stats() -> dict[str, float]:
        return {"cache_hits": state["hits"], "cache_misses": 7, "queued": 4, "batches": 2,
                "forward_seconds_total": 1.5, "avg_batch_size": 2.5, "unknown_key": 9}  # fmt: skip

    m.set_callbacks(
        ready=lambda: state["ready"],
        scorer_stats=scorer_stats,
        circuit_states=lambda: {"openai": "closed", "anthropic": "half_open", "groq": 2},
        journal_pending=lambda: 5,
        decision_log_lost=lambda: 1,
    )
    f = families(m.render()[0])
    assert f["router_ready"].type == "gauge" and value(f, "router_ready", "router_ready") == 0
    for key, n in (
        ("cache_hits", 3),
        ("cache_misses", 7),
        ("batches", 2),
        ("forward_seconds", 1.5),
    ):
        fam = f"router_scorer_{key}"
        assert f[fam].type == "counter" and value(f, fam, fam + "_total") == n
    for key, n in (("queued", 4), ("avg_batch_size", 2.5)):
        fam = f"router_scorer_{key}"
        assert f[fam].type == "gauge" and value(f, fam, fam) == n
    assert not any("unknown" in name for name in f)
    circ = "router_circuit_state"
    assert f[circ].type == "gauge"
    assert [value(f, circ, circ, provider=p) for p in ("openai", "anthropic", "groq")] == [0, 1, 2]
    assert value(f, "router_journal_pending", "router_journal_pending") == 5
    lost = "router_decision_log_lost_lines"
    assert f[lost].type == "counter" and value(f, lost, lost + "_total") == 1

    state.update(ready=True, hits=10)
    f = families(m.render()[0])
    assert value(f, "router_ready", "router_ready") == 1
    assert value(f, "router_scorer_cache_hits", "router_scorer_cache_hits_total") == 10


def test_a_failing_callback_is_left_out_not_the_scrape(caplog):
    m = RouterMetrics()
    m.set_callbacks(ready=lambda: True, scorer_stats=lambda: 1 / 0)
    m.record_request("red", "m", 200, 0.001)
    f = families(m.render()[0])
    assert value(f, "router_ready", "router_ready") == 1
    assert not any(name.startswith("router_scorer_") for name in f)
    assert "router_requests" in f and "scorer_stats failed" in caplog.text


def test_two_instances_in_one_process_do_not_collide():
    a, b = RouterMetrics(), RouterMetrics()
    a.record_request("red", "m", 200, 0.001)
    a.record_request("red", "m", 200, 0.001)
    b.record_request("red", "m", 200, 0.001)
    key = {"team": "red", "model": "m", "status": "200"}
    assert value(families(a.render()[0]), "router_requests", "router_requests_total", **key) == 2
    assert value(families(b.render()[0]), "router_requests", "router_requests_total", **key) == 1


WORKER = textwrap.dedent(
    """
    import sys
    from router.observability.metrics import RouterMetrics
    team, n, ready, pending = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", int(sys.argv[4])
    m = RouterMetrics()
    m.set_callbacks(
        ready=lambda: ready,
        journal_pending=lambda: pending,
        circuit_states=lambda: {"openai": 2 if ready else 0},
        scorer_stats=lambda: {"cache_hits": n, "queued": 1},
    )
    for i in range(n):
        m.record_request(team, "gpt-4o", 200, 0.0005, 0.002, 0.3, [("o1", "timeout")])
        m.record_spend(team, "gpt-4o", 0.125, 100, 10)
        m.record_attempts("openai", 1)
    if len(sys.argv) > 5:
        sys.stdout.buffer.write(m.render()[0])
    """
)


def run_worker(mpdir: Path, *args: object) -> subprocess.Popen[bytes]:
    env = {**os.environ, MULTIPROC_ENV: str(mpdir), "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-c", WORKER, *map(str, args)]
    return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE)


def test_multiprocess_workers_are_summed(tmp_path, monkeypatch):
    mpdir = tmp_path / "prom"
    prepare_multiprocess_dir(str(mpdir))
    a = run_worker(mpdir, "red", 30, 1, 2)
    b = run_worker(mpdir, "blue", 20, 0, 3)
    assert a.wait(60) == 0 and b.wait(60) == 0

    f = families(render_multiprocess(str(mpdir))[0])
    req = "router_requests_total"
    assert value(f, "router_requests", req, team="red", model="gpt-4o", status="200") == 30
    assert value(f, "router_requests", req, team="blue", model="gpt-4o", status="200") == 20
    assert value(f, "router_fallbacks", "router_fallbacks_total", model="o1", error="timeout") == 50
    att = "router_upstream_attempts_total"
    assert value(f, "router_upstream_attempts", att, provider="openai") == 50
    assert (
        value(f, "router_spend_usd", "router_spend_usd_total", team="red", model="gpt-4o") == 3.75
    )
    assert value(f, "router_scoring_seconds", "router_scoring_seconds_count") == 50
    assert f["router_scoring_seconds"].type == "histogram"
    assert value(f, "router_scoring_seconds", "router_scoring_seconds_bucket", le="0.0025") == 50
    assert value(f, "router_scorer_cache_hits", "router_scorer_cache_hits_total") == 50
    assert f["router_scorer_cache_hits"].type == "counter"
    assert value(f, "router_ready", "router_ready") == 0  # livemin: one worker not ready
    assert value(f, "router_journal_pending", "router_journal_pending") == 5  # livesum
    circ = "router_circuit_state"
    assert value(f, circ, circ, provider="openai") == 2  # livemax: the worst view

    # A worker's own render (RouterMetrics in multiprocess mode) sees all three workers.
    c = run_worker(mpdir, "red", 5, 1, 0, "render")
    out, _ = c.communicate(timeout=60)
    assert c.returncode == 0
    f = families(out)
    assert value(f, "router_requests", req, team="red", model="gpt-4o", status="200") == 35
    assert value(f, "router_journal_pending", "router_journal_pending") == 5

    # The not-ready worker exits for good: its live gauges stop counting, its totals stay.
    monkeypatch.setenv(MULTIPROC_ENV, str(mpdir))
    mark_process_dead(b.pid)
    f = families(render_multiprocess(str(mpdir))[0])
    assert value(f, "router_ready", "router_ready") == 1
    assert value(f, "router_journal_pending", "router_journal_pending") == 2
    assert value(f, "router_requests", req, team="blue", model="gpt-4o", status="200") == 20


def test_multiprocess_dir_set_after_import_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    with pytest.raises(RuntimeError, match="before the process starts"):
        RouterMetrics()
