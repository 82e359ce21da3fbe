"""Run the real agent CLIs (Claude Code, Codex) offline against a local base URL, and a
throwaway recording server to run them against.

Install the pinned CLIs with ``make agent-clis`` (npm, into the git-ignored
``.cache/agent-clis``); :func:`claude_bin` / :func:`codex_bin` return None when absent and the
tests that need them skip. Pinned: ``@anthropic-ai/claude-code@2.1.332`` (a native Bun
binary from the optional dependency ``@anthropic-ai/claude-code-linux-x64``, linked over
``bin/claude.exe`` by its postinstall; node 20's EBADENGINE warning is harmless) and
``@openai/codex@0.171.0`` (``bin/codex.js`` launches the musl binary from the optional
dependency ``@openai/codex-linux-x64``).

Both run with a fresh temporary HOME (and CODEX_HOME), a clean environment (only PATH,
LANG and the settings below: nothing of the caller's ANTHROPIC_*/OPENAI_*/CODEX_* leaks
in), stdin from /dev/null, and a hard subprocess timeout.

Claude Code (:func:`run_claude`): ``claude -p PROMPT --output-format json --model M
--max-turns 4 --strict-mcp-config --no-session-persistence``

- ``-p`` (print mode) is non-interactive: no onboarding, no theme/trust dialogs, no
  "use this API key?" question (those are interactive-only); it answers and exits.
  stdin must not be a pipe left open (it would be read as more prompt): /dev/null.
- ``ANTHROPIC_BASE_URL`` (no ``/v1``: it POSTs ``{base}/v1/messages?beta=true``);
  ``ANTHROPIC_API_KEY`` sends ``x-api-key``; ``bearer=True`` sets ``ANTHROPIC_AUTH_TOKEN``
  instead, which sends ``Authorization: Bearer``.
- ``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1``: the one that matters. Without it
  the CLI sends ``HEAD {base}/api/hello`` (a connection warm-up) and resolves
  api.anthropic.com (metrics/feature flags) even with a custom base URL; with it, the
  only connection (checked with strace) is to the base URL.
- ``DISABLE_AUTOUPDATER=1``, ``DISABLE_TELEMETRY=1``, ``DISABLE_ERROR_REPORTING=1``:
  each is implied by the one above; set anyway so that a version that splits them up
  stays offline.
- ``--model``: any name is accepted; an unknown one (``p2l``) only prints
  ``[claude-code:unrecognized_model]`` on stderr and gets a default context window.
- ``--max-turns 4``: a runaway tool loop ends instead of hitting the timeout.
- ``--strict-mcp-config``: no MCP servers from any config file; ``--no-session-persistence``:
  no transcript written. Tools run only when allowed (``--allowedTools Bash``); print mode
  denies the rest without asking (``permission_denials`` in the JSON result).

Codex (:func:`run_codex`): ``codex exec --skip-git-repo-check --ephemeral --strict-config
--color never PROMPT`` with ``CODEX_HOME/config.toml`` (see :func:`codex_config`):

- a custom provider ``[model_providers.router]`` with ``base_url = {base}/v1``,
  ``env_key = "ROUTER_KEY"`` (sent as ``Authorization: Bearer``), ``wire_api =
  "responses"`` (POSTs ``{base}/v1/responses``, ``stream: true``), and no retries
  (``request_max_retries = 0``, ``stream_max_retries = 0``) so a failure shows at once;
- ``approval_policy = "never"`` and ``sandbox_mode`` (``read-only`` by default; commands
  still run, in the bundled bubblewrap): exec never stops to ask;
- ``[analytics] enabled = false`` (else it resolves ab.chatgpt.com), ``[features]
  plugins = false`` (else it resolves github.com, api.github.com and chatgpt.com for the
  plugin marketplace), ``remote_plugin``/``apps`` off, ``[feedback]`` off, ``[otel]``
  exporters ``none``, ``check_for_update_on_startup = false``, ``web_search =
  "disabled"``, ``[history] persistence = "none"``; with these, strace shows no DNS
  look-up and one connection: the base URL;
- ``--strict-config`` makes an unknown key an error, so a CLI upgrade that drops or
  renames one of these settings fails loudly instead of silently going online;
  ``--skip-git-repo-check`` lets it run outside a git repository; ``--ephemeral``
  writes no session files.

Quirks worth knowing: Codex warns it cannot create PATH aliases under /tmp (harmless),
that bubblewrap is missing from PATH (it uses its bundled one), and that model metadata
for an unknown model (``p2l``) is missing (fallback metadata: no ``apply_patch`` tool, no
reasoning effort, no ``text.verbosity``; a known name like ``gpt-5.5`` gets those).

``python tests/agent_clis.py [OUTDIR]`` rewrites the request fixtures in
``tests/fixtures/agent_clis/`` from live runs against :class:`RecordingServer`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loopback import LoopbackServer

ROOT = Path(__file__).resolve().parent.parent
CLI_DIR = ROOT / ".cache" / "agent-clis"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "agent_clis"

CLAUDE_CODE_VERSION = "2.1.332"
CODEX_VERSION = "0.171.0"

# ---------------------------------------------------------------- the CLIs


def _bin(name: str) -> str | None:
    path = CLI_DIR / "node_modules" / ".bin" / name
    return str(path) if path.exists() and os.access(path, os.X_OK) else None


def claude_bin() -> str | None:
    """Claude Code's executable under .cache/agent-clis, or None (run ``make agent-clis``)."""
    return _bin("claude")


def codex_bin() -> str | None:
    """Codex's launcher under .cache/agent-clis, or None (run ``make agent-clis``).

    None too when the platform binary (the optional dependency) is missing."""
    launcher = _bin("codex")
    platform_pkg = CLI_DIR / "node_modules" / "@openai" / "codex-linux-x64"
    return launcher if launcher and platform_pkg.is_dir() else None


def _base_env(home: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": home,
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "NO_COLOR": "1",
    }


def claude_env(base_url: str, key: str, home: str, *, bearer: bool = False) -> dict[str, str]:
    """The environment :func:`run_claude` uses (see the module docstring for why)."""
    env = _base_env(home)
    env.update(
        {
            "ANTHROPIC_BASE_URL": base_url.rstrip("/"),
            ("ANTHROPIC_AUTH_TOKEN" if bearer else "ANTHROPIC_API_KEY"): key,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1",
        }
    )
    return env


def run_claude(
    base_url: str,
    key: str,
    prompt: str,
    *,
    model: str,
    timeout: float = 60,
    extra_args: Sequence[str] = (),
    bearer: bool = False,
) -> subprocess.CompletedProcess[str]:
    """One-shot ``claude -p PROMPT --output-format json`` against ``base_url`` (the router's
    root, without /v1), in a fresh temporary HOME that is removed afterwards. Raises
    RuntimeError when the CLI is not installed, subprocess.TimeoutExpired on a hang."""
    exe = claude_bin()
    if exe is None:
        raise RuntimeError("Claude Code is not installed: run `make agent-clis`")
    home = tempfile.mkdtemp(prefix="claude-home-")
    try:
        args = [
            exe,
            "-p",
            prompt,
            "--output-format",
            "json",
            "--model",
            model,
            "--max-turns",
            "4",
            "--strict-mcp-config",
            "--no-session-persistence",
            *extra_args,
        ]
        return subprocess.run(
            args,
            env=claude_env(base_url, key, home, bearer=bearer),
            cwd=home,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    finally:
        shutil.rmtree(home, ignore_errors=True)


def codex_config(base_url: str, *, model: str = "p2l", sandbox: str = "read-only") -> str:
    """The ``config.toml`` :func:`run_codex` writes (see the module docstring for why)."""
    base = base_url.rstrip("/")
    if not base.endswith("/v1"):
        base += "/v1"
    return f"""\
model = {json.dumps(model)}
model_provider = "router"
approval_policy = "never"
sandbox_mode = {json.dumps(sandbox)}
check_for_update_on_startup = false
web_search = "disabled"

[model_providers.router]
name = "p2l-router"
base_url = {json.dumps(base)}
env_key = "ROUTER_KEY"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0
stream_idle_timeout_ms = 30000

[analytics]
enabled = false

[feedback]
enabled = false

[otel]
exporter = "none"
trace_exporter = "none"
metrics_exporter = "none"
log_user_prompt = false

[features]
plugins = false
remote_plugin = false
apps = false

[history]
persistence = "none"
"""


def run_codex(
    base_url: str,
    key: str,
    prompt: str,
    *,
    model: str = "p2l",
    timeout: float = 60,
    extra_args: Sequence[str] = (),
    sandbox: str = "read-only",
) -> subprocess.CompletedProcess[str]:
    """One-shot ``codex exec PROMPT`` against ``base_url`` (the router's root; ``/v1`` is
    appended unless present), with a fresh temporary HOME and CODEX_HOME that are removed
    afterwards. stdout is the final answer; stderr the transcript. Raises RuntimeError when
    the CLI is not installed, subprocess.TimeoutExpired on a hang."""
    exe = codex_bin()
    if exe is None:
        raise RuntimeError("Codex is not installed: run `make agent-clis`")
    home = tempfile.mkdtemp(prefix="codex-home-")
    try:
        codex_home = os.path.join(home, ".codex")
        work = os.path.join(home, "work")
        os.makedirs(codex_home)
        os.makedirs(work)
        with open(os.path.join(codex_home, "config.toml"), "w") as f:
            f.write(codex_config(base_url, model=model, sandbox=sandbox))
        env = _base_env(home)
        env.update({"CODEX_HOME": codex_home, "ROUTER_KEY": key})
        args = [
            exe,
            "exec",
            "--skip-git-repo-check",
            "--ephemeral",
            "--strict-config",
            "--color",
            "never",
            *extra_args,
            prompt,
        ]
        return subprocess.run(
            args,
            env=env,
            cwd=work,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    finally:
        shutil.rmtree(home, ignore_errors=True)


# ---------------------------------------------------------------- recording server

SECRET_HEADERS = {"authorization", "x-api-key", "proxy-authorization", "cookie", "set-cookie"}
KEY_PLACEHOLDER = "<key>"


def redact_headers(headers: dict[str, str], secrets: tuple[str, ...] = ()) -> dict[str, str]:
    """Headers with every credential replaced by ``<key>`` (the auth headers by name, and any
    header whose value holds one of ``secrets``)."""
    out = {}
    for name, value in headers.items():
        if name in SECRET_HEADERS or any(s and s in value for s in secrets):
            out[name] = KEY_PLACEHOLDER
        else:
            out[name] = value
    return out


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names, secrets redacted
    body: Any  # parsed JSON, or the raw text, or None when empty

    def as_fixture(self) -> dict:
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "body": self.body,
        }


@dataclass
class Text:
    """Answer with one text block / output_text."""

    text: str = "DONE"


@dataclass
class ToolCall:
    """Answer with one tool call: an Anthropic ``tool_use`` block, or a Responses
    ``function_call`` item (``custom=True``: a ``custom_tool_call`` with raw ``input``)."""

    name: str
    arguments: dict | str
    call_id: str = field(default_factory=lambda: "call_" + uuid.uuid4().hex[:24])
    custom: bool = False


@dataclass
class Fail:
    """Answer with an HTTP error (to watch a CLI's retries)."""

    status: int = 500
    message: str = "injected failure"


Reply = Text | ToolCall | Fail


def _sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class RecordingServer(LoopbackServer):
    """A throwaway Anthropic Messages + OpenAI Responses server on loopback that records
    every request. ``script(recorded) -> Reply | None`` picks the answer for a model call
    (None: ``Text("DONE")``)."""

    thread_name = "cli-recorder"

    def __init__(
        self,
        script: Callable[[Recorded], Reply | None] | None = None,
        *,
        secrets: tuple[str, ...] = (),
    ) -> None:
        self.script = script
        self.secrets = secrets
        super().__init__()
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def model_calls(self, path: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.method == "POST" and r.path == path]

    # ------------------------------------------------------------ lifecycle

    # ------------------------------------------------------------ the app

    async def _app(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        raw = b""
        while True:
            msg = await receive()
            raw += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
        rec = Recorded(
            method=scope["method"],
            path=scope["path"],
            query=scope.get("query_string", b"").decode("latin-1"),
            headers=redact_headers(headers, self.secrets),
            body=body,
        )
        with self._lock:
            self.requests.append(rec)
        method, path = rec.method, rec.path.rstrip("/") or "/"
        if method == "POST" and path.endswith("/messages/count_tokens"):
            await _json(send, 200, {"input_tokens": _rough_tokens(body)})
        elif method == "POST" and path.endswith("/messages"):
            await self._messages(rec, send)
        elif method == "POST" and path.endswith("/responses"):
            await self._responses(rec, send)
        elif method == "GET" and path.endswith("/models"):
            await _json(send, 200, _models(headers))
        elif method == "HEAD" or path == "/":
            await _json(send, 200, {})
        else:
            await _json(send, 404, {"error": {"type": "not_found", "message": rec.path}})

    def _reply(self, rec: Recorded) -> Reply:
        if self.script is not None:
            r = self.script(rec)
            if r is not None:
                return r
        return Text()

    async def _messages(self, rec: Recorded, send: Any) -> None:
        body = rec.body if isinstance(rec.body, dict) else {}
        model = body.get("model", "unknown")
        reply = self._reply(rec)
        if isinstance(reply, Fail):
            err = {"type": "api_error", "message": reply.message}
            await _json(send, reply.status, {"type": "error", "error": err})
            return
        msg_id = "msg_" + uuid.uuid4().hex[:24]
        usage_in = _rough_tokens(body)
        if isinstance(reply, ToolCall):
            block = {"type": "tool_use", "id": reply.call_id, "name": reply.name, "input": {}}
            args = _as_text(reply.arguments)
            delta = {"type": "input_json_delta", "partial_json": args}
            final = {**block, "input": json.loads(args)}
            stop = "tool_use"
        else:
            block = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": reply.text}
            final = {"type": "text", "text": reply.text}
            stop = "end_turn"
        usage = {
            "input_tokens": usage_in,
            "output_tokens": 5,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }
        if not body.get("stream"):
            await _json(
                send,
                200,
                {
                    "id": msg_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [final],
                    "stop_reason": stop,
                    "stop_sequence": None,
                    "usage": usage,
                },
            )
            return
        events = [
            (
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        "id": msg_id,
                        "type": "message",
                        "role": "assistant",
                        "model": model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": {**usage, "output_tokens": 1},
                    },
                },
            ),
            ("ping", {"type": "ping"}),
            (
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": block},
            ),
            ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop, "stop_sequence": None},
                    "usage": {"output_tokens": 5},
                },
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
        await _stream(send, [_sse(e, d) for e, d in events])

    async def _responses(self, rec: Recorded, send: Any) -> None:
        body = rec.body if isinstance(rec.body, dict) else {}
        model = body.get("model", "unknown")
        reply = self._reply(rec)
        if isinstance(reply, Fail):
            err = {"type": "server_error", "code": None, "param": None, "message": reply.message}
            await _json(send, reply.status, {"error": err})
            return
        resp_id = "resp_" + uuid.uuid4().hex[:24]
        created = int(time.time())
        usage = {
            "input_tokens": _rough_tokens(body),
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 5,
            "output_tokens_details": {"reasoning_tokens": 0},
        }
        usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
        base = {
            "id": resp_id,
            "object": "response",
            "created_at": created,
            "model": model,
            "output": [],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "usage": None,
        }
        item_events: list[tuple[str, dict]] = []
        if isinstance(reply, ToolCall):
            if reply.custom:
                inp = _as_text(reply.arguments)
                item = {
                    "type": "custom_tool_call",
                    "id": "ctc_" + uuid.uuid4().hex[:24],
                    "call_id": reply.call_id,
                    "name": reply.name,
                    "input": inp,
                    "status": "completed",
                }
                item_events = [
                    (
                        "response.output_item.added",
                        {"output_index": 0, "item": {**item, "input": ""}},
                    ),
                    (
                        "response.custom_tool_call_input.delta",
                        {"output_index": 0, "item_id": item["id"], "delta": inp},
                    ),
                    (
                        "response.custom_tool_call_input.done",
                        {"output_index": 0, "item_id": item["id"], "input": inp},
                    ),
                    ("response.output_item.done", {"output_index": 0, "item": item}),
                ]
            else:
                args = _as_text(reply.arguments)
                item = {
                    "type": "function_call",
                    "id": "fc_" + uuid.uuid4().hex[:24],
                    "call_id": reply.call_id,
                    "name": reply.name,
                    "arguments": args,
                    "status": "completed",
                }
                item_events = [
                    (
                        "response.output_item.added",
                        {
                            "output_index": 0,
                            "item": {**item, "arguments": "", "status": "in_progress"},
                        },
                    ),
                    (
                        "response.function_call_arguments.delta",
                        {"output_index": 0, "item_id": item["id"], "delta": args},
                    ),
                    (
                        "response.function_call_arguments.done",
                        {"output_index": 0, "item_id": item["id"], "arguments": args},
                    ),
                    ("response.output_item.done", {"output_index": 0, "item": item}),
                ]
        else:
            text = reply.text
            part = {"type": "output_text", "text": text, "annotations": []}
            item = {
                "type": "message",
                "id": "msg_" + uuid.uuid4().hex[:24],
                "status": "completed",
                "role": "assistant",
                "content": [part],
            }
            ref = {"item_id": item["id"], "output_index": 0, "content_index": 0}
            item_events = [
                (
                    "response.output_item.added",
                    {"output_index": 0, "item": {**item, "status": "in_progress", "content": []}},
                ),
                ("response.content_part.added", {**ref, "part": {**part, "text": ""}}),
                ("response.output_text.delta", {**ref, "delta": text, "logprobs": []}),
                ("response.output_text.done", {**ref, "text": text, "logprobs": []}),
                ("response.content_part.done", {**ref, "part": part}),
                ("response.output_item.done", {"output_index": 0, "item": item}),
            ]
        done = {**base, "status": "completed", "output": [item], "usage": usage}
        if not body.get("stream"):
            await _json(send, 200, done)
            return
        events = [
            ("response.created", {"response": {**base, "status": "in_progress"}}),
            ("response.in_progress", {"response": {**base, "status": "in_progress"}}),
            *item_events,
            ("response.completed", {"response": done}),
        ]
        chunks = [
            _sse(name, {"type": name, "sequence_number": i, **data})
            for i, (name, data) in enumerate(events)
        ]
        await _stream(send, chunks)


def _as_text(arguments: dict | str) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments)


def _rough_tokens(body: Any) -> int:
    return max(1, len(json.dumps(body)) // 4) if body is not None else 1


def _models(headers: dict[str, str]) -> dict:
    if "anthropic-version" in headers:
        m = {
            "type": "model",
            "id": "p2l",
            "display_name": "p2l",
            "created_at": "2025-01-01T00:00:00Z",
        }
        return {"data": [m], "has_more": False, "first_id": "p2l", "last_id": "p2l"}
    return {
        "object": "list",
        "data": [{"id": "p2l", "object": "model", "created": 0, "owned_by": "p2l"}],
    }


async def _json(send: Any, status: int, obj: dict) -> None:
    data = json.dumps(obj).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


async def _stream(send: Any, chunks: list[bytes]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
        }
    )
    for c in chunks:
        await send({"type": "http.response.body", "body": c, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


# ---------------------------------------------------------------- fixtures

FIXTURE_SESSION_ID = "00000000-0000-4000-8000-00000000c1a0"
RECORD_KEY = "sk-router-team-0123456789-SECRET"
ECHO_PATCH = "*** Begin Patch\n*** Add File: hi.txt\n+hi\n*** End Patch\n"


def has_tool_result(rec: Recorded) -> bool:
    """Whether a recorded model call carries a tool's output (either API)."""
    body = rec.body if isinstance(rec.body, dict) else {}
    for m in body.get("messages", []):
        content = m.get("content")
        if isinstance(content, list) and any(c.get("type") == "tool_result" for c in content):
            return True
    return any(
        i.get("type") in ("function_call_output", "custom_tool_call_output")
        for i in body.get("input", [])
        if isinstance(i, dict)
    )


def tool_then_done(call: ToolCall) -> Callable[[Recorded], Reply]:
    """A script: answer ``call`` until the CLI sends a tool result back, then ``DONE``."""
    return lambda rec: Text("DONE") if has_tool_result(rec) else call


def fixture(rec: Recorded, *, cli: str, version: str, note: str) -> dict:
    """A recorded request as a fixture: secrets already ``<key>``; the temp HOME paths and
    the port made stable so that re-recording gives small diffs."""
    text = json.dumps(rec.as_fixture())
    text = text.replace(RECORD_KEY, KEY_PLACEHOLDER)
    # mkdtemp's random suffix, also where Claude Code slugs the path (-tmp-claude-home-XXXX)
    text = re.sub(r"(claude|codex)-home-[A-Za-z0-9_]{8}", r"\1-home", text)
    req = json.loads(text)
    if "host" in req["headers"]:
        req["headers"]["host"] = "127.0.0.1:<port>"
    return {"cli": cli, "version": version, "note": note, "request": req}


def record_fixtures(out: Path = FIXTURES) -> list[Path]:
    """Run each CLI against a RecordingServer and write its model calls as fixtures."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save(name: str, data: dict) -> None:
        path = out / name
        path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
        written.append(path)

    def one(cli, version, run, script, fixtures, **kw) -> None:
        with RecordingServer(script, secrets=(RECORD_KEY,)) as srv:
            p = run(srv.base_url, RECORD_KEY, **kw)
            if p.returncode != 0 or "DONE" not in p.stdout:
                raise RuntimeError(f"{cli} failed: rc={p.returncode}\n{p.stdout}\n{p.stderr}")
            path = "/v1/messages" if cli == "claude-code" else "/v1/responses"
            calls = srv.model_calls(path)
            others = [f"{r.method} {r.path}" for r in srv.requests if r not in calls]
            for index, name, note in fixtures:
                note += f"; {len(calls)} model call(s) in the run" + (
                    f", and also: {', '.join(others)}" if others else ""
                )
                save(name, fixture(calls[index], cli=cli, version=version, note=note))

    claude = CLAUDE_CODE_VERSION
    sid = ["--session-id", FIXTURE_SESSION_ID]
    one(
        "claude-code",
        claude,
        run_claude,
        None,
        [(0, "claude_code_request.json", "claude -p 'say DONE' --model p2l")],
        prompt="say DONE",
        model="p2l",
        extra_args=sid,
    )
    bash = ToolCall("Bash", {"command": "echo hi", "description": "Print hi"}, "toolu_01EchoHi")
    one(
        "claude-code",
        claude,
        run_claude,
        tool_then_done(bash),
        [
            (
                1,
                "claude_code_tool_result_request.json",
                "claude -p ... --allowedTools Bash; the server answered a Bash tool_use "
                "(echo hi); this is the next request, with the tool_result",
            )
        ],
        prompt="Run `echo hi` with the Bash tool, then say DONE",
        model="p2l",
        extra_args=[*sid, "--allowedTools", "Bash"],
    )
    codex = CODEX_VERSION
    one(
        "codex",
        codex,
        run_codex,
        None,
        [(0, "codex_request.json", "codex exec 'say DONE', model p2l (fallback metadata)")],
        prompt="say DONE",
    )
    shell = ToolCall("exec_command", {"cmd": "echo hi"}, "call_EchoHi")
    one(
        "codex",
        codex,
        run_codex,
        tool_then_done(shell),
        [
            (
                1,
                "codex_tool_output_request.json",
                "codex exec, model p2l; the server answered a function_call exec_command "
                "(echo hi); this is the next request, with the function_call_output",
            )
        ],
        prompt="Run `echo hi`, then say DONE",
    )
    patch = ToolCall("apply_patch", ECHO_PATCH, "call_AddHi", custom=True)
    one(
        "codex",
        codex,
        run_codex,
        tool_then_done(patch),
        [
            (
                0,
                "codex_request_gpt55.json",
                "codex exec, model gpt-5.5 (a name Codex knows: custom apply_patch tool, "
                "reasoning effort, text verbosity)",
            ),
            (
                1,
                "codex_custom_tool_output_request.json",
                "codex exec, model gpt-5.5, sandbox workspace-write; the server answered a "
                "custom_tool_call apply_patch (add hi.txt); this is the next request, with the "
                "custom_tool_call_output",
            ),
        ],
        prompt="Create hi.txt containing hi with apply_patch, then say DONE",
        model="gpt-5.5",
        sandbox="workspace-write",
    )
    return written


if __name__ == "__main__":
    for p in record_fixtures(Path(sys.argv[1]) if len(sys.argv) > 1 else FIXTURES):
        print(p)
