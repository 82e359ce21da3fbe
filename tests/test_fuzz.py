"""Property-based fuzz of ``POST /v1/chat/completions`` through the real router on
loopback: arbitrary JSON, near-valid chat bodies with one field mutated, bytes that are
not JSON, wrong content types and odd authorization headers.

The fake upstream answers every request normally, so no 5xx is ever legitimate here.
Properties: never a 5xx; every error body is exactly OpenAI's
``{"error": {"message", "type", "param", "code"}}`` with a non-empty message; a 200 has
choices (a stream: chunks with choices, no in-band error, ending ``[DONE]``); the
router's memory (it runs in this process, in a thread) stays bounded over the run; an
answer went upstream exactly once and a refusal not at all.

The router is started once per test and the hypothesis property runs inside the test
body (fixtures are function-scoped; one router for 1,000 examples keeps this fast).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import OTHER_KEY, TEAM_KEY, TINY_MODELS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "1000"))  # raise it for a deeper local run
RSS_GROWTH_LIMIT_MB = 200
ERROR_KEYS = {"message", "type", "param", "code"}
BIG = 2**70  # past int64: pydantic, orjson and SQLite all have limits near here

# ------------------------------------------------------------------ strategies

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-BIG, max_value=BIG)
    | st.sampled_from([0, -1, 1, 2**31, 2**53 + 1, 2**63, 2**64, -(2**63) - 1, 10**30])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([1e308, -1e308, 5e-324, 0.5, 1.0, 16.0])
    | st.text(max_size=40)
    | st.sampled_from(["", "p2l", "auto", "router", "\x00", "<|cls|>", "🙂" * 20, "\ud800"])
)


def json_values(max_leaves: int = 20) -> st.SearchStrategy[Any]:
    return st.recursive(
        json_scalars,
        lambda inner: (
            st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
        ),
        max_leaves=max_leaves,
    )


def deep(depth: int) -> Any:
    v: Any = "x"
    for i in range(depth):
        v = [v] if i % 2 else {"k": v}
    return v


MODELS = st.sampled_from(["p2l", "auto", "router", *TINY_MODELS, "off-list-model"])
ROUTED_WEIGHT = 0.3  # routed requests pay for P2L scoring; most examples go direct

text_content = st.text(max_size=60) | st.sampled_from(["hi", "hello world", "<|cls|>" * 3])
content = text_content | st.lists(
    st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url"]), "text": text_content}),
    min_size=1,
    max_size=3,
)
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "user"]), "content": content}
)


@st.composite
def chat_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A valid chat body: mostly direct models, some routed ones."""
    routed = draw(st.floats(0, 1)) < ROUTED_WEIGHT
    model = draw(st.sampled_from(["p2l", "auto"]) if routed else MODELS)
    msgs = draw(st.lists(message, min_size=0, max_size=3))
    body: dict[str, Any] = {"model": model, "messages": [*msgs, {"role": "user", "content": "hi"}]}
    if draw(st.booleans()):
        body["stream"] = draw(st.booleans())
    if draw(st.booleans()):
        body["max_tokens"] = draw(st.integers(1, 64))
    if draw(st.integers(0, 4)) == 0:
        body["n"] = draw(st.integers(1, 3))
    if body.get("stream") and draw(st.booleans()):
        body["stream_options"] = {"include_usage": draw(st.booleans())}
    if draw(st.integers(0, 5)) == 0:
        body["tools"] = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
        body["tool_choice"] = draw(st.sampled_from(["auto", "required", "none"]))
    if routed and draw(st.booleans()):
        body["router"] = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "max_cost_usd": st.floats(1e-9, 1.0),
                    "strategy": st.sampled_from(["strict", "cost-aware", "max-quality", "lp"]),
                    "seed": st.integers(0, 2**31),
                    "models": st.lists(st.sampled_from(TINY_MODELS), min_size=1, max_size=3),
                },
            )
        )
    return body


FIELDS = [
    "model", "messages", "stream", "n", "max_tokens", "max_completion_tokens", "tools",
    "tool_choice", "functions", "stream_options", "router", "temperature", "response_format",
]  # fmt: skip


@st.composite
def mutated_bodies(draw: st.DrawFn) -> Any:
    """A valid chat body with one field (or one router option) replaced, removed or
    added with a value of any type, or one message broken."""
    body = draw(chat_bodies())
    where = draw(st.sampled_from(["field", "field", "drop", "router", "message", "deep"]))
    if where == "field":
        body[draw(st.sampled_from(FIELDS))] = draw(json_values())
    elif where == "drop":
        body.pop(draw(st.sampled_from(["model", "messages"])), None)
    elif where == "router":
        key = draw(st.sampled_from(["max_cost_usd", "models", "strategy", "seed", "other"]))
        body["router"] = {key: draw(json_values(8))}
    elif where == "message":
        i = draw(st.integers(0, len(body["messages"]) - 1))
        body["messages"][i] = draw(
            json_values(8)
            | st.fixed_dictionaries({"role": json_values(3), "content": json_values(8)})
        )
    else:
        body[draw(st.sampled_from(FIELDS))] = deep(draw(st.integers(30, 200)))
    return body


def encode(value: Any, ascii_only: bool) -> bytes:
    # json.dumps writes lone surrogates as \ud800 escapes: valid JSON, invalid Unicode.
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


not_json = st.binary(max_size=200) | st.sampled_from(
    [b"", b"{", b"[]", b"null", b'{"model": "p2l",', b"\xff\xfe{}", b"NaN", b"1e999999",
     b'{"model": "p2l", "messages": [{"role": "user", "content": "hi"}]}' + b"\x00",
     b'{"a":' * 10_000, b'{"model": "p2l", "model": 1, "messages": []}']
)  # fmt: skip
content_types = st.sampled_from(
    ["application/json", "application/json", "text/plain", "application/x-www-form-urlencoded",
     "multipart/form-data; boundary=x", "application/json; charset=latin-1", None]
)  # fmt: skip
authorization = st.sampled_from(
    [f"Bearer {TEAM_KEY}"] * 24
    + [f"Bearer {OTHER_KEY}", None, "Bearer", "Bearer sk-wrong", f"Basic {TEAM_KEY}", TEAM_KEY]
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    kind = draw(st.sampled_from(["json", "mutated", "mutated", "mutated", "valid", "raw"]))
    if kind == "raw":
        raw = draw(not_json)
    else:
        value = {
            "json": json_values(),
            "mutated": mutated_bodies(),
            "valid": chat_bodies(),
        }[kind]
        raw = encode(draw(value), draw(st.booleans()))
    headers = {}
    ctype, auth = draw(content_types), draw(authorization)
    if ctype is not None:
        headers["content-type"] = ctype
    if auth is not None:
        headers["authorization"] = auth
    return raw, headers


# ------------------------------------------------------------------ properties


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def check_error(resp: httpx.Response) -> None:
    body = resp.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == ERROR_KEYS, err
    assert isinstance(err["message"], str) and err["message"].strip(), err
    assert isinstance(err["type"], str) and err["type"], err
    assert err["param"] is None or isinstance(err["param"], str), err
    assert err["code"] is None or isinstance(err["code"], str), err


def check_stream(text: str) -> None:
    events = [ln[len("data: ") :] for ln in text.split("\n\n") if ln.startswith("data: ")]
    assert events and events[-1] == "[DONE]", text[-500:]
    chunks = [json.loads(e) for e in events[:-1]]
    assert not any("error" in c for c in chunks), text[-500:]
    assert any(c.get("choices") for c in chunks), text[-500:]


def check(resp: httpx.Response, sent: bytes) -> None:
    s = resp.status_code
    assert s < 500, (s, resp.text[:500], sent[:300])
    if s != 200:
        check_error(resp)
        return
    if resp.headers.get("content-type", "").startswith("text/event-stream"):
        check_stream(resp.text)
        return
    choices = resp.json()["choices"]
    assert isinstance(choices, list) and choices, resp.text[:500]


FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def test_chat_fuzz_never_5xx_and_errors_are_openai_shaped(make_router, fake):
    r = make_router()
    client = httpx.Client(base_url=r.root, timeout=30)
    url = "/v1/chat/completions"
    # Warm up (first scoring, first upstream connection) before taking the baseline.
    for model in ("p2l", TINY_MODELS[0]):
        ok = client.post(url, json={"model": model, "messages": [{"role": "user", "content": "a"}]},
                         headers={"authorization": f"Bearer {TEAM_KEY}"})  # fmt: skip
        assert ok.status_code == 200, ok.text
    rss0 = rss_mb()
    statuses: dict[int, int] = {}

    @FUZZ_SETTINGS
    @given(req=requests())
    def prop(req: tuple[bytes, dict[str, str]]) -> None:
        raw, headers = req
        fake.clear()  # also keeps the fake's own records out of the memory figure
        resp = client.post(url, content=raw, headers=headers)
        statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1
        check(resp, raw)
        # An answer was sent upstream exactly once; a refusal was never sent.
        assert len(fake.requests) == (1 if resp.status_code == 200 else 0), fake.requests

    try:
        prop()
    finally:
        client.close()
    growth = rss_mb() - rss0
    print(f"fuzz statuses {dict(sorted(statuses.items()))}; RSS grew {growth:.1f} MB")
    assert sum(statuses.values()) >= EXAMPLES
    # Both kinds were exercised: answers and refusals.
    assert statuses.get(200, 0) > EXAMPLES // 20 and statuses.get(400, 0) > EXAMPLES // 10
    assert growth < RSS_GROWTH_LIMIT_MB


# ------------------------------------------------------------------ usage objects
#
# The upstream answers normally but reports any usage at all: well-formed with cache
# classes and reasoning, one field replaced by anything (negative, a fraction, text, a
# bool, more than its whole), null, missing, or JSON junk. An independent oracle says
# which are trustworthy. Properties: always a 200 (a stream: no in-band error, [DONE]);
# the reservation is released; a trustworthy usage is billed as ``upstream`` at exactly
# its class prices; any other is ``estimated`` and never billed below the input (or the
# output) reported; the ledger's spend is the decision log's to 1e-9.

USAGE_EXAMPLES = int(os.environ.get("FUZZ_USAGE_EXAMPLES", "150"))
BILLED = "gpt-4o-mini-2024-07-18"
CLASS_PRICES = {"input": 0.15, "output": 0.60, "cached": 0.075, "write": 0.1875, "write_1h": 0.30}
DROP = object()
odd_counts = (
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6)
    | st.text(max_size=4)
    | st.sampled_from([-1, 2**40, "12", 3.0, DROP])
)
CLASS_KEYS = ("cached_tokens", "cache_write_tokens", "cache_write_1h_tokens")


@st.composite
def usage_objects(draw: st.DrawFn) -> Any:
    from fake_upstream import NO_USAGE

    kind = draw(st.sampled_from(["good", "good", "odd", "odd", "missing", "null", "junk"]))
    if kind == "missing":
        return NO_USAGE
    if kind == "null":
        return None
    if kind == "junk":
        return draw(json_values(6))
    prompt, completion = draw(st.integers(0, 5000)), draw(st.integers(0, 2000))
    left, details = prompt, {}
    for key in CLASS_KEYS:
        if draw(st.booleans()):
            details[key] = draw(st.integers(0, left))
            left -= details[key]
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": details,
    }
    if draw(st.booleans()):
        usage["completion_tokens_details"] = {"reasoning_tokens": draw(st.integers(0, completion))}
    if kind == "odd":
        where = draw(
            st.sampled_from(["prompt_tokens", "completion_tokens", *CLASS_KEYS, "reasoning"])
        )
        value = draw(odd_counts | st.integers(prompt + 1, prompt + 10**6))
        target = (
            usage
            if where in ("prompt_tokens", "completion_tokens")
            else usage.setdefault("completion_tokens_details", {})
            if where == "reasoning"
            else details
        )
        key = "reasoning_tokens" if where == "reasoning" else where
        if value is DROP:
            target.pop(key, None)
        else:
            target[key] = value
    return usage


def whole(v: Any) -> bool:
    return type(v) is int and v >= 0


def trustworthy(u: Any) -> bool:
    """The oracle: every count a whole number >= 0 (classes may be absent or null), the
    classes within the prompt, reasoning within the completion."""
    if not isinstance(u, dict) or not whole(u.get("prompt_tokens")):
        return False
    if not whole(u.get("completion_tokens")):
        return False
    d = u.get("prompt_tokens_details") or {}
    cd = u.get("completion_tokens_details") or {}
    classes = [d.get(k) for k in CLASS_KEYS]
    if any(v is not None and not whole(v) for v in classes):
        return False
    r = cd.get("reasoning_tokens")
    if r is not None and (not whole(r) or r > u["completion_tokens"]):
        return False
    return sum(v or 0 for v in classes) <= u["prompt_tokens"]


def class_cost(u: dict) -> float:
    p, d = CLASS_PRICES, u.get("prompt_tokens_details") or {}
    read, w5, w1 = (d.get(k) or 0 for k in CLASS_KEYS)
    uncached = u["prompt_tokens"] - read - w5 - w1
    return (
        uncached * p["input"] + read * p["cached"] + w5 * p["write"] + w1 * p["write_1h"]
        + u["completion_tokens"] * p["output"]
    ) / 1e6  # fmt: skip


def test_usage_fuzz_never_raises_never_undercharges(make_router, fake):
    from conftest import default_models

    models = default_models()
    models[BILLED].update(
        input_usd_per_mtok=CLASS_PRICES["input"],
        output_usd_per_mtok=CLASS_PRICES["output"],
        cached_input_usd_per_mtok=CLASS_PRICES["cached"],
        cache_write_usd_per_mtok=CLASS_PRICES["write"],
        cache_write_1h_usd_per_mtok=CLASS_PRICES["write_1h"],
    )
    # A budget no example can exhaust: a trusted count of 2**40 tokens bills $164,927.
    r = make_router(models=models, team={"budget": {"usd": 1e12}})
    client = httpx.Client(base_url=r.root, timeout=30)
    auth = {"authorization": f"Bearer {TEAM_KEY}"}
    sources: dict[str, int] = {}
    n_logged = 0

    @settings(max_examples=USAGE_EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(usage=usage_objects(), streamed=st.booleans(), wants=st.booleans())
    def prop(usage: Any, streamed: bool, wants: bool) -> None:
        nonlocal n_logged
        fake.clear()
        fake.behave(usage=usage)
        body: dict[str, Any] = {"model": BILLED, "messages": [{"role": "user", "content": "hi"}]}
        if streamed:
            body.update(stream=True, stream_options={"include_usage": wants})
        resp = client.post("/v1/chat/completions", json=body, headers=auth)
        assert resp.status_code == 200, resp.text[:500]
        if streamed:
            check_stream(resp.text)
        else:
            assert resp.json()["choices"]
        lines = r.decisions()
        assert len(lines) == n_logged + 1
        n_logged += 1
        line = lines[-1]
        assert line["status"] == 200, line
        sources[line["usage_source"]] = sources.get(line["usage_source"], 0) + 1
        cost = line["cost_usd"]
        assert cost >= 0 and math.isfinite(cost)
        if trustworthy(usage):
            assert line["usage_source"] == "upstream", (usage, line)
            assert cost == pytest.approx(class_cost(usage), abs=1e-12)
        else:
            assert line["usage_source"] == "estimated", (usage, line)
            said = usage if isinstance(usage, dict) else {}
            floor = 0.0
            if whole(said.get("prompt_tokens")):
                floor += said["prompt_tokens"] * CLASS_PRICES["input"] / 1e6
            if whole(said.get("completion_tokens")):
                floor += said["completion_tokens"] * CLASS_PRICES["output"] / 1e6
            assert cost >= floor - 1e-15, (usage, line)
        budget = client.get("/v1/budget", headers=auth).json()
        assert budget["reserved_usd"] == 0, budget  # the hold was released

    try:
        prop()
    finally:
        client.close()
    spent = r.http(TEAM_KEY).get("/v1/budget").json()["spent_usd"]
    logged = sum(ln["cost_usd"] for ln in r.decisions())
    print(f"usage fuzz sources {sources}")
    assert abs(spent - logged) < 1e-9
    assert sources.get("upstream", 0) and sources.get("estimated", 0)
