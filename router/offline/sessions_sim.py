"""``p2l-router simulate --sessions``: agent conversations routed turn by turn under each
``session.affinity`` (``off``, ``sticky``, ``cache-aware``), with the provider's prompt
cache billed as it would be, so the cost of switching models mid-conversation shows.

A trace is a list of sessions, each a list of turns (the chat messages the client
sends). The shipped set (:func:`agent_traces`) is made by a seeded generator: every
session opens with a system prompt and a request from :data:`AGENT_REQUESTS`, then the
agent calls tools and reads their results (the context grows by a tool result each
turn), and the user speaks again every few turns. A trace file (JSON Lines, one
``{"turns": [[messages], ...]}`` per session) may be given instead.

Per turn: P2L scores the user's words (tool results do not change them, so an agent
loop is scored once per user message), the candidates are priced as the router prices
them for the affinity (router/serving/sessions.py), the team's strategy decides with
the router's own ``decide``, and the turn is billed as the provider would bill it:
the model that served the previous turn reads that turn's prompt and output from its
cache (turns are taken to come well within ``cache_ttl_s``), the rest of the prompt is
written where the provider bills writes, and every model answers ``OUTPUT_TOKENS``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from router.config import Catalog, TeamPolicy
from router.errors import NoCandidateError
from router.ledger.sessions import SessionState
from router.offline.simulate import jsonl_rows
from router.policy import Candidate, decide, eligible_models, request_needs, route_scores
from router.serving.sessions import cache_price, warm_prefix

AFFINITIES = ("off", "sticky", "cache-aware")
# The baseline row of ``--whole-prompt``: ``off`` with P2L scoring each turn's whole
# prompt (tool results included), as a client that carries tool results in user messages
# (Anthropic's protocol, Claude Code) was scored before P2L took only the user's words.
WHOLE_PROMPT = "off/whole"
OUTPUT_TOKENS = 300  # each turn's answer, priced and billed (agent turns are short)
TURN_GAP_S = 20.0  # seconds between turns: well within every provider's cache TTL

AGENT_REQUESTS = (
    "Rename the function parse_config to load_config across the repository and fix the callers.",
    "The test test_checkout_total fails with an off-by-one error; find the cause and fix it.",
    "Add a --dry-run flag to the deploy script that prints the commands instead of running them.",
    "Write unit tests for the date parsing helpers in utils/dates.py.",
    "Our CI is slow; find the three slowest test files and suggest how to speed them up.",
    "Migrate the settings module from configparser to pydantic-settings.",
    "Find why the API returns 500 on an empty JSON body and make it return a 400.",
    "Add type hints to the payments package and make mypy pass.",
    "Refactor the UserService class: split the email logic into its own module.",
    "Upgrade the project from Python 3.9 to 3.12 and fix whatever breaks.",
    "Explain what the retry decorator in net/retry.py does and add jitter to it.",
    "Implement pagination for the /orders endpoint with a cursor.",
    "The Docker image is 2 GB; make it smaller with a multi-stage build.",
    "Find and remove dead code in the reporting module.",
    "Add structured JSON logging to the worker processes.",
    "Port the bash release script to a Python script with argparse.",
    "There is a race condition in the cache warmer; find it and fix it with a lock.",
    "Write a GitHub Actions workflow that runs lint and tests on every pull request.",
    "Add a CSV export to the admin dashboard's user table.",
    "Replace the hand-written SQL in repo/orders.py with SQLAlchemy Core queries.",
    "Profile the image resize endpoint and make it at least twice as fast.",
    "Document the public functions of the sdk package with docstrings.",
    "Add rate limiting to the login endpoint: five attempts per minute per IP.",
    "Convert the callbacks in the JavaScript upload widget to async/await.",
    "Find every place we build file paths with string concatenation and use pathlib.",
)
FOLLOW_UPS = (
    "Good. Now also update the README to match.",
    "That broke the integration tests; look at the failure and fix it.",
    "Please keep the old name as a deprecated alias for one release.",
    "Run the full test suite and summarise what still fails.",
    "Can you make the change smaller? Only touch the files that need it.",
    "Add a changelog entry for this.",
    "Now handle the edge case where the input is empty.",
    "Looks right. Commit it with a clear message.",
)
TOOLS = ("read_file", "grep", "run_tests", "list_dir", "edit_file", "git_diff")


def agent_traces(sessions: int = 50, turns: int = 20, *, seed: int = 0) -> list[list[list[dict]]]:
    """The shipped trace set: ``sessions`` agent conversations of ``turns`` requests each.
    Between user messages (every 4-6 turns) the agent calls a tool and the client sends
    back its result (200-2,000 words of file or test output), so the context grows."""
    rng = random.Random(seed)
    words = [
        "def",
        "return",
        "self",
        "import",
        "value",
        "result",
        "error",
        "test",
        "path",
        "config",
        "data",
    ]
    out = []
    for s in range(sessions):
        msgs: list[dict[str, Any]] = [
            {"role": "system", "content": "You are a coding agent working in the user's repo."},
            {"role": "user", "content": AGENT_REQUESTS[s % len(AGENT_REQUESTS)]},
        ]
        session = [list(msgs)]
        next_user = rng.randint(4, 6)
        for t in range(1, turns):
            if t == next_user:
                msgs.append({"role": "assistant", "content": "Done; here is what changed."})
                msgs.append({"role": "user", "content": rng.choice(FOLLOW_UPS)})
                next_user += rng.randint(4, 6)
            else:
                call = f"call_{s}_{t}"
                tool = rng.choice(TOOLS)
                args = json.dumps({"path": f"src/mod{rng.randint(1, 40)}.py"})
                result = " ".join(rng.choice(words) for _ in range(rng.randint(200, 2000)))
                msgs.append({
                    "role": "assistant", "content": None,
                    "tool_calls": [{"id": call, "type": "function",
                                    "function": {"name": tool, "arguments": args}}],
                })  # fmt: skip
                msgs.append({"role": "tool", "tool_call_id": call, "content": result})
            session.append(list(msgs))
        out.append(session)
    return out


def load_traces(path: str | Path) -> list[list[list[dict]]]:
    """A JSONL trace file: one ``{"turns": [[message, ...], ...]}`` per session."""
    out = []
    for where, row in jsonl_rows(path):
        turns = row.get("turns") if isinstance(row, dict) else None
        if (
            not isinstance(turns, list)
            or not turns
            or not all(isinstance(t, list) and t for t in turns)
        ):
            raise ValueError(f"{where}: expected {{'turns': [[messages], ...]}}")
        out.append(turns)
    if not out:
        raise ValueError(f"{path}: no sessions")
    return out


@dataclass(frozen=True)
class AffinityResult:
    affinity: str
    sessions: int
    turns: int
    spend_usd: float  # billed as the providers would, cache reads and writes included
    mean_score: float  # mean route score of the chosen models
    switches: int  # turns served by another model than the turn before

    @property
    def switches_per_session(self) -> float:
        return self.switches / self.sessions if self.sessions else 0.0


def simulate_sessions(
    traces: Sequence[Sequence[list[dict]]],
    *,
    team: TeamPolicy,
    catalog: Catalog,
    model_list: Sequence[str],
    head: str,
    score_fn: Callable[[list[dict]], Sequence[float]],
    tokens_fn: Callable[[list[dict]], int],
    user_key: Callable[[list[dict]], str],
    affinities: Sequence[str] = AFFINITIES,
    whole_prompt: Callable[[list[dict]], list[dict]] | None = None,
) -> list[AffinityResult]:
    """Route every turn of every session under each affinity (see the module doc).
    ``score_fn`` is called once per distinct ``user_key`` (the scorer input).
    ``whole_prompt``: the messages as a scorer that saw tool results as user text would
    take them; given, a :data:`WHOLE_PROMPT` row is added (``off`` scored on those)."""
    # Each turn's scorer input and prompt tokens, once for all affinities.
    coefs_of: dict[str, list[float]] = {}

    def coefs(messages: list[dict]) -> list[float]:
        key = user_key(messages)
        if key not in coefs_of:
            coefs_of[key] = [float(c) for c in score_fn(messages)]
        return coefs_of[key]

    prepared = []
    for session in traces:
        turns = []
        for messages in session:
            whole = coefs(whole_prompt(messages)) if whole_prompt is not None else None
            turns.append((coefs(messages), tokens_fn(messages), messages, whole))
        prepared.append(turns)
    results = []
    rows = [*affinities, *([WHOLE_PROMPT] if whole_prompt is not None else [])]
    for affinity in rows:
        spend = score_sum = 0.0
        n_turns = switches = 0
        for s, session in enumerate(prepared):
            state: SessionState | None = None
            now = 0.0
            for t, (user_coefs, prompt, messages, whole) in enumerate(session):
                coefs_t = whole if affinity == WHOLE_PROMPT and whole is not None else user_coefs
                now += TURN_GAP_S
                cands = _candidates(
                    catalog, team, model_list, head, coefs_t, messages, prompt, state, now,
                    cache_aware=affinity == "cache-aware",
                )  # fmt: skip
                try:
                    d = decide(
                        cands,
                        strategy=team.strategy,
                        cost_sensitivity=team.cost_sensitivity,
                        cap_usd=team.max_cost_per_request_usd,
                        seed=s * 1000 + t,
                        coefs=dict(zip(model_list, coefs_t, strict=True)),
                        opponent_mix=team.opponent_mix,
                    )
                except NoCandidateError:
                    continue
                ranked = [c.model for c in d.ranking]
                chosen = d.ranking[0]
                if affinity == "sticky" and state is not None and state.model in ranked:
                    chosen = d.ranking[ranked.index(state.model)]
                cfg = catalog.models[chosen.model]
                ttl = catalog.providers[cfg.provider].cache_ttl_s
                warm = warm_prefix(state, chosen.model, prompt, ttl, now) if state else 0
                spend += cache_price(cfg, prompt, OUTPUT_TOKENS, warm).cost_usd
                score_sum += chosen.score
                n_turns += 1
                if state is not None and state.model != chosen.model:
                    switches += 1
                state = SessionState(
                    chosen.model, now, prompt, OUTPUT_TOKENS, (state.turns if state else 0) + 1
                )
        results.append(
            AffinityResult(
                affinity,
                len(traces),
                n_turns,
                spend,
                score_sum / n_turns if n_turns else float("nan"),
                switches,
            )  # fmt: skip
        )
    return results


def _candidates(
    catalog: Catalog, team: TeamPolicy, model_list: Sequence[str], head: str,
    coefs: list[float], messages: list[dict], prompt: int, state: SessionState | None,
    now: float, *, cache_aware: bool,
) -> list[Candidate]:  # fmt: skip
    needs = request_needs({"messages": messages})
    try:
        names = eligible_models(model_list, catalog, team, None, needs, prompt_tokens=prompt,
                                max_tokens=OUTPUT_TOKENS)  # fmt: skip
    except NoCandidateError:
        return []
    index = {m: i for i, m in enumerate(model_list)}
    betas = [coefs[index[m]] for m in names]
    scores = route_scores(head, betas)
    out = []
    for m, b, sc in zip(names, betas, scores, strict=True):
        cfg = catalog.models[m]
        if cache_aware and state is not None:
            ttl = catalog.providers[cfg.provider].cache_ttl_s
            warm = warm_prefix(state, m, prompt, ttl, now)
            cost = cache_price(cfg, prompt, OUTPUT_TOKENS, warm).cost_usd
        else:
            cost = cfg.cost_usd(prompt, OUTPUT_TOKENS)
        out.append(Candidate(m, float(b), float(sc), cost))
    return out


def tool_results_as_user_text(messages: list[dict]) -> list[dict]:
    """``messages`` with each tool result as a user message (the scorer then reads it, as
    it read an Anthropic client's ``tool_result`` blocks before it took only the user's
    words); tool calls without text are left out."""
    out = []
    for m in messages:
        if m.get("role") == "tool":
            out.append({"role": "user", "content": m.get("content") or ""})
        elif m.get("content"):
            out.append(m)
    return out


def format_table(results: Sequence[AffinityResult], cost_sensitivity: float | None = None) -> str:
    """The table; with ``cost_sensitivity`` (a cost-aware team's λ) a column of what that
    strategy maximises per turn: mean score - λ x spend per turn."""
    base = next((r.spend_usd for r in results if r.affinity == "off"), None)
    head = f"{'affinity':<12} {'turns':>6} {'spend $':>11} {'vs off':>7} {'mean score':>11} {'switches/session':>17}"
    if cost_sensitivity is not None:
        head += f" {'score-λ·$/turn':>15}"
    rows = [head, "-" * len(head)]
    for r in results:
        ratio = f"{r.spend_usd / base:.2f}x" if base else "-"
        row = (
            f"{r.affinity:<12} {r.turns:>6} {r.spend_usd:>11.4f} {ratio:>7} "
            f"{r.mean_score:>11.4f} {r.switches_per_session:>17.2f}"
        )
        if cost_sensitivity is not None:
            value = r.mean_score - cost_sensitivity * r.spend_usd / r.turns if r.turns else 0.0
            row += f" {value:>15.4f}"
        rows.append(row)
    return "\n".join(rows)
