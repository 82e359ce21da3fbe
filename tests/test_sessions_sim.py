"""``p2l-router simulate --sessions``: agent traces routed under each session affinity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from router.config import load_policies, load_providers
from router.offline.sessions_sim import (
    OUTPUT_TOKENS,
    WHOLE_PROMPT,
    agent_traces,
    format_table,
    load_traces,
    simulate_sessions,
    tool_results_as_user_text,
)
from router.offline.simulate import rough_prompt_tokens
from router.scoring.inputs import user_turns

CATALOG = {
    "providers": {
        "anthropic": {"base_url": "https://a.example", "api": "anthropic-messages",
                      "api_key_env": "K"},
        "cheap": {"base_url": "https://c.example/v1", "api_key_env": "K"},
    },
    "models": {
        "claude-3-5-haiku-20241022": {"provider": "anthropic", "input_usd_per_mtok": 0.8,
                                      "output_usd_per_mtok": 4.0,
                                      "cached_input_usd_per_mtok": 0.08,
                                      "cache_write_usd_per_mtok": 1.0},
        "gpt-4o-mini-2024-07-18": {"provider": "cheap", "input_usd_per_mtok": 0.15,
                                   "output_usd_per_mtok": 0.6},
    },
}  # fmt: skip


@pytest.fixture
def setup(tmp_path: Path):
    (tmp_path / "providers.yaml").write_text(yaml.safe_dump(CATALOG))
    pol = tmp_path / "policies"
    pol.mkdir()
    (pol / "agents.yaml").write_text(yaml.safe_dump({"budget": "none"}))
    catalog = load_providers(tmp_path / "providers.yaml", env={"K": "x"})
    return tmp_path, catalog, load_policies(pol, {})["agents"]


def key(messages):
    return json.dumps(user_turns(messages))


def test_shipped_traces_grow_and_add_tool_results_between_user_turns():
    traces = agent_traces()
    assert len(traces) == 50 and all(len(s) == 20 for s in traces)
    session = traces[0]
    sizes = [rough_prompt_tokens(t) for t in session]
    assert sizes == sorted(sizes) and sizes[-1] > 10 * sizes[0]
    # Most turns add only a tool result: the user's words (the scorer input) do not change.
    assert len({key(t) for t in session}) <= 5
    assert any(m["role"] == "tool" for m in session[-1])
    assert agent_traces() == traces  # seeded: the same set every time


def test_simulate_sessions_scores_once_per_user_input_and_bills_the_cache(setup, p2l_model):
    _, catalog, team = setup
    models = [m for m in p2l_model.model_list if m in catalog.models]
    assert len(models) == 2
    traces = agent_traces(sessions=4, turns=8)
    calls = []

    def score(messages):
        calls.append(key(messages))
        coefs, _ = p2l_model.forward([p2l_model.render(messages)])
        return coefs[0]

    results = simulate_sessions(
        traces, team=team, catalog=catalog, model_list=p2l_model.model_list,
        head=p2l_model.head, score_fn=score, tokens_fn=rough_prompt_tokens, user_key=key,
    )  # fmt: skip
    assert [r.affinity for r in results] == ["off", "sticky", "cache-aware"]
    assert all(r.turns == 32 and r.sessions == 4 for r in results)
    assert len(calls) == len(set(calls)) == len({key(t) for s in traces for t in s})
    off, sticky, _ = results
    assert sticky.switches <= off.switches
    assert all(r.spend_usd > 0 and 0 <= r.mean_score <= 1 for r in results)


def test_the_whole_prompt_baseline_scores_every_turn(setup, p2l_model):
    """``off/whole``: P2L reads each turn's tool results too, so every turn that adds one
    is a new scorer input (the agent loop is rescored each turn, as before P2L took the
    user's words only); the other rows are the same as without it."""
    _, catalog, team = setup
    traces = agent_traces(sessions=3, turns=8)
    calls: list[str] = []

    def score(messages):
        calls.append(key(messages))
        return p2l_model.forward([p2l_model.render(messages)])[0][0]

    kw = dict(team=team, catalog=catalog, model_list=p2l_model.model_list,
              head=p2l_model.head, score_fn=score, tokens_fn=rough_prompt_tokens, user_key=key)  # fmt: skip
    results = simulate_sessions(traces, whole_prompt=tool_results_as_user_text, **kw)
    assert [r.affinity for r in results] == ["off", "sticky", "cache-aware", WHOLE_PROMPT]
    whole_keys = {key(tool_results_as_user_text(t)) for sess in traces for t in sess}
    assert len(whole_keys) == sum(len(sess) for sess in traces)  # every turn differs
    assert set(calls) == whole_keys | {key(t) for sess in traces for t in sess}
    assert results[:3] == simulate_sessions(traces, **kw)
    assert results[3].turns == 24
    # The table's value column: what a cost-aware team maximises per turn.
    table = format_table(results, 20.0).splitlines()
    assert "score-λ·$/turn" in table[0] and table[-1].startswith(WHOLE_PROMPT)
    r = results[3]
    assert float(table[-1].split()[-1]) == pytest.approx(
        r.mean_score - 20.0 * r.spend_usd / r.turns, abs=1e-4
    )
    assert "score-λ" not in format_table(results)


def test_billing_arithmetic_of_one_session(setup, p2l_model):
    """One model only: turn 1 writes the whole prompt to Anthropic's cache, turn 2 reads
    turn 1's prompt and output and writes the rest."""
    _, catalog, team = setup
    team = team.model_copy(update={"allow": ["claude-3-5-haiku-20241022"]})
    first = [{"role": "user", "content": "fix the bug " * 50}]
    second = first + [{"role": "assistant", "content": "ok " * 100},
                      {"role": "user", "content": "and the test"}]  # fmt: skip
    [off] = simulate_sessions(
        [[first, second]], team=team, catalog=catalog, model_list=p2l_model.model_list,
        head=p2l_model.head, score_fn=lambda m: p2l_model.forward([p2l_model.render(m)])[0][0],
        tokens_fn=rough_prompt_tokens, user_key=key, affinities=["off"],
    )  # fmt: skip
    p1, p2, out = rough_prompt_tokens(first), rough_prompt_tokens(second), OUTPUT_TOKENS
    warm = min(p2, p1 + out)
    want = (p1 * 1.0 + out * 4.0) + (warm * 0.08 + (p2 - warm) * 1.0 + out * 4.0)
    assert off.spend_usd == pytest.approx(want / 1e6)
    assert off.switches == 0


def test_cli_simulate_sessions_from_a_trace_file(setup, tiny_checkpoint, capsys, monkeypatch):
    from router.cli import main

    tmp, _, _ = setup
    monkeypatch.setenv("K", "x")
    traces = tmp / "traces.jsonl"
    traces.write_text(
        "\n".join(json.dumps({"turns": s}) for s in agent_traces(sessions=2, turns=4))
    )
    assert load_traces(traces) == agent_traces(sessions=2, turns=4)
    argv = ["simulate", "--sessions", str(traces), "--team", "agents",
            "--providers", str(tmp / "providers.yaml"), "--policies", str(tmp / "policies"),
            "--p2l-model", str(tiny_checkpoint), "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "2 sessions, 8 turns" in out
    for affinity in ("off", "sticky", "cache-aware"):
        assert affinity in out
    assert main([*argv, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["affinity"] for r in rows} == {"off", "sticky", "cache-aware"}
    assert all(r["turns"] == 8 for r in rows)
    assert main([*argv, "--whole-prompt"]) == 0
    assert "off/whole" in capsys.readouterr().out
