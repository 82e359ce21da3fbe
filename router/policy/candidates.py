"""Which models may serve a request, and what each would cost: the policy's inputs.

Pure (no I/O, no clock). ``eligible_models`` narrows the P2L model list by catalog, team,
request and model limits, naming the filter that emptied the set; ``make_candidates``
attaches each survivor's route score and expected cost. The policy builds on the
configuration models (:mod:`router.config`), never the other way round.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, NamedTuple

from router.config import DEFAULT_EXPECTED_OUTPUT_TOKENS, Catalog, ModelConfig, TeamPolicy
from router.errors import InvalidRequestError, NoCandidateError
from router.policy.outcomes import route_scores
from router.policy.text import name_list

__all__ = [
    "DEFAULT_EXPECTED_OUTPUT_TOKENS",
    "Candidate",
    "Price",
    "check_fits",
    "eligible_models",
    "expected_cost_usd",
    "expected_output_tokens",
    "make_candidates",
    "price_table",
    "request_needs",
]


@dataclass(frozen=True)
class Candidate:
    model: str
    coef: float
    score: float
    expected_cost_usd: float


class Price(NamedTuple):
    """A routable model's prices and this prompt's expected cost (USD)."""

    input_usd_per_mtok: float
    output_usd_per_mtok: float
    expected_cost_usd: float


def request_needs(body: Mapping[str, Any]) -> frozenset[str]:
    """Capabilities a chat request needs from its model: ``tools`` when it sends tools or
    functions, ``vision`` when a message has an image part."""
    needs: set[str] = set()
    if body.get("tools") or body.get("functions"):
        needs.add("tools")
    for msg in body.get("messages") or ():
        content = msg.get("content") if isinstance(msg, Mapping) else None
        if isinstance(content, list) and any(
            isinstance(p, Mapping) and p.get("type") in ("image_url", "input_image")
            for p in content
        ):
            needs.add("vision")
    return frozenset(needs)


def expected_output_tokens(
    model: ModelConfig, max_tokens: int | None, learned: float | None = None
) -> int:
    """Output tokens to price a request at before it runs: the caller's max_tokens (an
    upper bound, so the reservation cannot be short), else the model's learned average,
    else its configured figure, else a default."""
    if max_tokens is not None and max_tokens > 0:
        return int(max_tokens)
    if learned is not None and learned > 0:
        return max(1, round(learned))
    if model.expected_output_tokens:
        return model.expected_output_tokens
    return DEFAULT_EXPECTED_OUTPUT_TOKENS


def expected_cost_usd(model: ModelConfig, prompt_tokens: int, output_tokens: int) -> float:
    """Prompt × input price + output × output price (prices per 1M tokens)."""
    return model.cost_usd(prompt_tokens, output_tokens)


def check_fits(model: ModelConfig, prompt_tokens: int, output_tokens: int) -> None:
    """Refuse (400) a request to ``model`` whose prompt plus output cannot fit its declared
    ``context_window``; the provider would refuse it anyway, after a reservation and a round
    trip. ``param`` is ``messages`` when the prompt alone is too long, else ``max_tokens``.
    A model without ``context_window`` fits everything."""
    window = model.context_window
    if window is None or prompt_tokens + output_tokens <= window:
        return
    if prompt_tokens >= window:
        raise InvalidRequestError(
            f"the prompt is about {prompt_tokens} tokens; {model.name}'s context window is "
            f"{window} tokens",
            param="messages",
            code="context_length_exceeded",
        )
    raise InvalidRequestError(
        f"the prompt (about {prompt_tokens} tokens) plus up to {output_tokens} output tokens "
        f"is {prompt_tokens + output_tokens} tokens; {model.name}'s context window is {window} "
        f"tokens (lower max_tokens to at most {window - prompt_tokens})",
        param="max_tokens",
        code="context_length_exceeded",
    )


def _fits(model: ModelConfig, prompt_tokens: int, output_tokens: int) -> bool:
    return model.context_window is None or prompt_tokens + output_tokens <= model.context_window


def eligible_models(
    model_list: Sequence[str],
    catalog: Catalog,
    team: TeamPolicy,
    requested: Sequence[str] | None,
    needs: frozenset[str] = frozenset(),
    *,
    prompt_tokens: int | None = None,
    max_tokens: int | None = None,
    learned_output_tokens: Mapping[str, float] | None = None,
) -> list[str]:
    """The models this request may be routed to, in ``model_list`` order.

    P2L models ∩ models of a provider whose key is set ∩ the team's allow/deny globs ∩ the
    request's ``router.models`` ∩ models whose ``supports`` covers ``needs`` ∩ models whose
    ``context_window`` holds the prompt plus the expected output (when ``prompt_tokens`` is
    given). A model that declares no ``supports`` is unknown, not incapable: it stays. When
    a filter leaves nothing, NoCandidateError names that filter and what it was given.
    """
    # The file's name only: a client must not learn the router's paths.
    team_file = PurePath(team.file).name if team.file else f"team {team.name!r}"
    listed = [m for m in model_list if m in catalog.models]
    if not listed:
        raise NoCandidateError(
            f"none of the P2L model's {len(model_list)} models {name_list(model_list)} is "
            f"listed in {catalog.source}; its `models:` keys must be names from model_list.json"
        )
    available = catalog.available_models()
    served = [m for m in listed if m in available]
    if not served:
        keys = sorted({catalog.skipped[catalog.models[m].provider] for m in listed})
        raise NoCandidateError(
            f"the P2L models listed in {catalog.source} {name_list(listed)} are all served by "
            f"providers whose key is unset ({', '.join(keys)})"
        )
    allowed = [m for m in served if team.allows(m)]
    if not allowed:
        deny = f" deny {team.deny}" if team.deny else ""
        raise NoCandidateError(
            f"no model allowed by {team_file} allow {team.allow}{deny} is served by a "
            f"configured provider (served: {name_list(served)})"
        )
    if requested is not None:
        wanted = set(requested)
        picked = [m for m in allowed if m in wanted]
        if not picked:
            raise NoCandidateError(
                f"none of router.models {name_list(requested)} is a candidate for team "
                f"{team.name!r} (candidates: {name_list(allowed)})",
                param="router.models",
            )
        allowed = picked
    if needs:
        allowed = _capable(allowed, available, needs, catalog.source)
    if prompt_tokens is not None:
        learned = learned_output_tokens or {}
        output = {
            m: expected_output_tokens(available[m], max_tokens, learned.get(m)) for m in allowed
        }
        fitting = [m for m in allowed if _fits(available[m], prompt_tokens, output[m])]
        if not fitting:
            raise _no_fit(allowed, available, prompt_tokens, output, max_tokens)
        allowed = fitting
    return allowed


def _capable(
    names: list[str], models: Mapping[str, ModelConfig], needs: frozenset[str], source: str
) -> list[str]:
    capable = [m for m in names if models[m].supports is None or needs <= models[m].supports]
    if not capable:
        declared = ", ".join(f"{m} {sorted(models[m].supports or ())}" for m in names[:8])
        raise NoCandidateError(
            f"the request needs {', '.join(sorted(needs))} and no candidate "
            f"{name_list(names)} declares it under `supports` in {source} ({declared})"
        )
    return capable


def _no_fit(
    names: list[str],
    models: Mapping[str, ModelConfig],
    prompt_tokens: int,
    output: Mapping[str, int],
    max_tokens: int | None,
) -> NoCandidateError:
    windows = ", ".join(
        f"{m} {models[m].context_window} < {prompt_tokens + output[m]}" for m in names[:8]
    )
    what = "max_tokens" if max_tokens else "expected output"
    prompt_alone = all(prompt_tokens >= (models[m].context_window or 0) for m in names)
    return NoCandidateError(
        f"context window: the prompt is about {prompt_tokens} tokens and the answer needs up "
        f"to {max(output.values())} more ({what}); no candidate's context_window holds that "
        f"({windows})",
        param="messages" if prompt_alone or not max_tokens else "max_tokens",
    )


def make_candidates(
    models: Sequence[str],
    coefs: Mapping[str, float],
    *,
    head: str,
    catalog: Catalog,
    prompt_tokens: int,
    max_tokens: int | None = None,
    learned_output_tokens: Mapping[str, float] | None = None,
    choices: int = 1,
) -> list[Candidate]:
    """Candidates for ``models`` (eligible names) from the prompt's coefs by model name;
    ``choices`` (the request's ``n``) multiplies the expected output."""
    learned = learned_output_tokens or {}
    betas = [float(coefs[m]) for m in models]
    scores = route_scores(head, betas)
    out = []
    for m, b, s in zip(models, betas, scores, strict=True):
        cfg = catalog.models[m]
        tokens = expected_output_tokens(cfg, max_tokens, learned.get(m)) * choices
        out.append(Candidate(m, b, float(s), expected_cost_usd(cfg, prompt_tokens, tokens)))
    return out


def price_table(
    catalog: Catalog,
    models: list[str],
    prompt_tokens: int,
    max_tokens: int | None,
    learned: dict[str, float] | None = None,
) -> dict[str, Price]:
    """model -> its Price for this prompt, for routable models (the leaderboard's columns)."""
    out = {}
    for name in models:
        cfg = catalog.models[name]
        tokens = expected_output_tokens(cfg, max_tokens, (learned or {}).get(name))
        out[name] = Price(
            cfg.input_usd_per_mtok,
            cfg.output_usd_per_mtok,
            expected_cost_usd(cfg, prompt_tokens, tokens),
        )
    return out
