"""The agent-CLI harness itself: the real Claude Code and Codex run offline against the
recording server in tests/agent_clis.py and finish a one-shot and a tool round trip.

Skipped when the CLIs are not installed (``make agent-clis``). The fixture checks at the
end need no CLI."""

from __future__ import annotations

import json

import pytest
from agent_clis import (
    FIXTURES,
    KEY_PLACEHOLDER,
    RecordingServer,
    ToolCall,
    claude_bin,
    codex_bin,
    run_claude,
    run_codex,
    tool_then_done,
)

KEY = "sk-router-team-harness-SECRET"

needs_claude = pytest.mark.skipif(
    claude_bin() is None,
    reason="Claude Code not installed in .cache/agent-clis (run `make agent-clis`)",
)
needs_codex = pytest.mark.skipif(
    codex_bin() is None,
    reason="Codex (with its linux-x64 binary) not installed in .cache/agent-clis "
    "(run `make agent-clis`)",
)


def _texts(content) -> list[str]:
    if isinstance(content, str):
        return [content]
    return [c.get("text", "") for c in content if isinstance(c, dict)]


def _claude_result(stdout: str) -> dict:
    result = json.loads(stdout)
    assert result["is_error"] is False, result
    return result


@needs_claude
def test_claude_code_one_shot_sends_one_streaming_messages_call():
    with RecordingServer(secrets=(KEY,)) as srv:
        p = run_claude(srv.base_url, KEY, "say DONE", model="p2l")
        assert p.returncode == 0, p.stderr
        assert _claude_result(p.stdout)["result"] == "DONE"
        # nothing but the model call: no HEAD /api/hello, no count_tokens, no side requests
        assert [(r.method, r.path) for r in srv.requests] == [("POST", "/v1/messages")]
    rec = srv.requests[0]
    assert rec.query == "beta=true"
    assert rec.headers["anthropic-version"] == "2023-06-01"
    assert "claude-code-20250219" in rec.headers["anthropic-beta"].split(",")
    assert rec.headers["x-api-key"] == KEY_PLACEHOLDER
    assert "authorization" not in rec.headers
    body = rec.body
    assert body["model"] == "p2l"
    assert body["stream"] is True
    assert isinstance(body["max_tokens"], int)
    assert any(isinstance(b, dict) and "cache_control" in b for b in body["system"])
    assert {t["name"] for t in body["tools"]} >= {"Bash", "Read", "Edit", "Write"}
    user = [m for m in body["messages"] if m["role"] == "user"]
    assert "say DONE" in _texts(user[0]["content"])
    session = json.loads(body["metadata"]["user_id"])["session_id"]
    assert session == rec.headers["x-claude-code-session-id"]


@needs_claude
def test_claude_code_bearer_token_is_sent_as_authorization():
    with RecordingServer(secrets=(KEY,)) as srv:
        p = run_claude(srv.base_url, KEY, "say DONE", model="p2l", bearer=True)
        assert p.returncode == 0, p.stderr
    rec = srv.model_calls("/v1/messages")[0]
    assert rec.headers["authorization"] == KEY_PLACEHOLDER
    assert "x-api-key" not in rec.headers


@needs_claude
def test_claude_code_bash_tool_round_trip():
    bash = ToolCall("Bash", {"command": "echo hi", "description": "Print hi"}, "toolu_01Hi")
    with RecordingServer(tool_then_done(bash), secrets=(KEY,)) as srv:
        p = run_claude(
            srv.base_url,
            KEY,
            "Run `echo hi` with the Bash tool, then say DONE",
            model="p2l",
            extra_args=["--allowedTools", "Bash"],
        )
        assert p.returncode == 0, p.stderr
        result = _claude_result(p.stdout)
        assert result["result"] == "DONE"
        assert result["num_turns"] == 2
    first, second = srv.model_calls("/v1/messages")
    assistant, tool_turn = second.body["messages"][-2:]
    assert assistant == {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": "toolu_01Hi", "name": "Bash", "input": bash.arguments}
        ],
    }
    [result_block] = tool_turn["content"]
    assert tool_turn["role"] == "user"
    assert result_block["type"] == "tool_result"
    assert result_block["tool_use_id"] == "toolu_01Hi"
    assert result_block["content"] == "hi"
    assert result_block["is_error"] is False


@needs_codex
def test_codex_one_shot_sends_one_streaming_responses_call():
    with RecordingServer(secrets=(KEY,)) as srv:
        p = run_codex(srv.base_url, KEY, "say DONE")
        assert p.returncode == 0, p.stderr
        assert p.stdout.strip() == "DONE"
        assert [(r.method, r.path) for r in srv.requests] == [("POST", "/v1/responses")]
    rec = srv.requests[0]
    assert rec.headers["authorization"] == KEY_PLACEHOLDER
    assert rec.headers["accept"] == "text/event-stream"
    body = rec.body
    assert body["model"] == "p2l"
    assert body["stream"] is True
    assert body["store"] is False
    assert body["include"] == ["reasoning.encrypted_content"]
    assert body["prompt_cache_key"]
    assert any(t.get("name") == "exec_command" for t in body["tools"])
    users = [i for i in body["input"] if i.get("type") == "message" and i["role"] == "user"]
    assert users[-1]["content"] == [{"type": "input_text", "text": "say DONE"}]
    assert [i["role"] for i in body["input"]][:1] == ["developer"]


@needs_codex
def test_codex_exec_command_round_trip():
    shell = ToolCall("exec_command", {"cmd": "echo hi"}, "call_Hi")
    with RecordingServer(tool_then_done(shell), secrets=(KEY,)) as srv:
        p = run_codex(srv.base_url, KEY, "Run `echo hi`, then say DONE")
        assert p.returncode == 0, p.stderr
        assert p.stdout.strip() == "DONE"
    first, second = srv.model_calls("/v1/responses")
    call, output = second.body["input"][-2:]
    assert call["type"] == "function_call"
    assert (call["call_id"], call["name"]) == ("call_Hi", "exec_command")
    assert json.loads(call["arguments"]) == {"cmd": "echo hi"}
    assert output["type"] == "function_call_output"
    assert output["call_id"] == "call_Hi"
    assert "hi" in output["output"].splitlines()


# ---------------------------------------------------------------- the recorded fixtures

FIXTURE_FILES = {
    "claude_code_request.json": "/v1/messages",
    "claude_code_tool_result_request.json": "/v1/messages",
    "codex_request.json": "/v1/responses",
    "codex_tool_output_request.json": "/v1/responses",
    "codex_request_gpt55.json": "/v1/responses",
    "codex_custom_tool_output_request.json": "/v1/responses",
}


@pytest.mark.parametrize("name", sorted(FIXTURE_FILES))
def test_fixture_is_a_secret_free_model_call(name):
    data = json.loads((FIXTURES / name).read_text())
    req = data["request"]
    assert req["method"] == "POST"
    assert req["path"] == FIXTURE_FILES[name]
    assert req["body"]["stream"] is True
    for header in ("authorization", "x-api-key"):
        if header in req["headers"]:
            assert req["headers"][header] == KEY_PLACEHOLDER
    assert "SECRET" not in json.dumps(data)
