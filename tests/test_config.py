"""Configuration: the shipped providers.yaml and policies/ load cleanly, and a bad file is
refused with its file and dotted field named, never with a secret in the message."""

from __future__ import annotations

import csv
import textwrap
from pathlib import Path

import pytest
import yaml

from router.config import (
    ADMIN_KEY_ENV,
    DEFAULT_TEAM,
    load_config,
    load_policies,
    load_providers,
)
from router.errors import ConfigError
from router.policy import STRATEGY_NAMES

ROOT = Path(__file__).resolve().parents[1]
PROVIDERS = ROOT / "providers.yaml"
POLICIES = ROOT / "policies"
CAPABILITIES = {"tools", "vision"}  # what router.policy.request_needs can ask for

# Every provider key variable the shipped catalog names, set to recognisable fake values.
ALL_PROVIDER_KEYS = {
    "OPENAI_API_KEY": "sk-openai-SECRET-1",
    "ANTHROPIC_API_KEY": "sk-ant-SECRET-2",
    "GEMINI_API_KEY": "gm-SECRET-3",
    "DEEPSEEK_API_KEY": "sk-ds-SECRET-4",
    "MISTRAL_API_KEY": "ms-SECRET-5",
    "TOGETHER_API_KEY": "tg-SECRET-6",
}


def _tsv_path() -> Path | None:
    """shared/ sits beside the checkout (sessions and CI) or, on some machines, inside it."""
    here = Path(__file__).resolve()
    for base in (here.parents[2], here.parents[1]):
        path = base / "shared" / "data" / "p2l-arena-models.tsv"
        if path.is_file():
            return path
    return None


def _arena_names() -> dict[str, float]:
    path = _tsv_path()
    if path is None:
        pytest.skip("shared/data/p2l-arena-models.tsv is not beside this checkout")
    lines = [ln for ln in path.read_text().splitlines() if ln and not ln.startswith("#")]
    rows = list(csv.DictReader(lines, delimiter="\t"))
    return {r["name"]: float(r["example_cost_usd_per_1k_responses"]) for r in rows}


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


GOOD_PROVIDERS = """\
    providers:
      acme: {base_url: "https://acme.example/v1/", api_key_env: ACME_KEY}
      local: {base_url: "http://127.0.0.1:9/v1"}
    models:
      acme-large:
        provider: acme
        upstream_model: large-2025
        input_usd_per_mtok: 2.0
        output_usd_per_mtok: 8.0
        supports: [tools]
      local-small: {provider: local, input_usd_per_mtok: 0, output_usd_per_mtok: 0}
"""


@pytest.fixture
def providers_file(tmp_path: Path) -> Path:
    return _write(tmp_path / "providers.yaml", GOOD_PROVIDERS)


def _problems(exc: pytest.ExceptionInfo[ConfigError]) -> dict[str, str]:
    """field -> "file: message" for each problem of a ConfigError."""
    return {p.field: f"{p.file}: {p.message}" for p in exc.value.problems}


# ---------------------------------------------------------------- the shipped files


TEAM_KEYS = {"RESEARCH_KEY": "rk-SECRET", "P2L_ROUTER_DEFAULT_KEY": "dk-SECRET"}


def test_shipped_config_refuses_to_start_without_its_team_keys() -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(PROVIDERS, POLICIES, env={})
    problems = {(p.file, p.field): p.message for p in exc.value.problems}
    assert (
        "P2L_ROUTER_DEFAULT_KEY is unset"
        in problems[(str(POLICIES / "default.yaml"), "api_keys_env[0]")]
    )
    assert "RESEARCH_KEY is unset" in problems[(str(POLICIES / "research.yaml"), "api_keys_env[0]")]


def test_shipped_config_loads_without_provider_keys() -> None:
    cfg = load_config(PROVIDERS, POLICIES, env=TEAM_KEYS)
    assert set(cfg.catalog.skipped) == set(cfg.catalog.providers)
    assert cfg.catalog.available_models() == {}
    assert cfg.auth_enabled and not cfg.admin_enabled
    assert {"default", "research"} <= set(cfg.teams)
    # Only the expected start-up warnings: no glob that matches nothing, no stray name.
    for w in cfg.warnings:
        assert w.startswith("provider "), w


def test_shipped_config_with_every_key_set() -> None:
    env = {**ALL_PROVIDER_KEYS, **TEAM_KEYS, ADMIN_KEY_ENV: "adm-SECRET"}
    cfg = load_config(PROVIDERS, POLICIES, env=env)
    assert cfg.catalog.skipped == {}
    assert set(cfg.catalog.available_models()) == set(cfg.catalog.models)
    assert cfg.warnings == ()
    assert cfg.auth_enabled
    assert cfg.team_for_key("rk-SECRET").name == "research"
    assert cfg.team_for_key("dk-SECRET").name == "default"
    assert cfg.team_for_key("nope") is None
    assert cfg.is_admin("adm-SECRET") and not cfg.is_admin("rk-SECRET")
    assert cfg.catalog.providers["openai"].api_key == "sk-openai-SECRET-1"


def test_shipped_catalog_is_well_formed() -> None:
    cat = load_providers(PROVIDERS, env={})
    assert len(cat.models) >= 25
    names_by_upstream: dict[tuple[str, str], str] = {}
    for name, m in cat.models.items():
        assert m.provider in cat.providers, name
        assert m.upstream_model, name
        assert m.input_usd_per_mtok > 0 and m.output_usd_per_mtok > 0, name
        assert m.output_usd_per_mtok >= m.input_usd_per_mtok, name
        assert m.expected_output_tokens is not None and 100 <= m.expected_output_tokens <= 5000, (
            name
        )
        # every shipped model says what it can do (`[]` included): none is left unknown
        assert m.supports is not None and m.supports <= CAPABILITIES, (name, m.supports)
        # one catalog entry per upstream model of a provider
        other = names_by_upstream.setdefault((m.provider, m.upstream_model), name)
        assert other == name, f"{name} and {other} call the same upstream model"
    for p in cat.providers.values():
        assert p.base_url.startswith("https://") and p.api_key_env, p.name


def test_shipped_yaml_has_no_duplicate_keys() -> None:
    """PyYAML keeps the last of two equal keys silently; a repeated model would hide."""

    class StrictLoader(yaml.SafeLoader):
        pass

    def mapping(loader: StrictLoader, node: yaml.MappingNode) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node)
            assert key not in seen, f"duplicate key {key!r} at line {key_node.start_mark.line + 1}"
            seen.add(key)
        return loader.construct_mapping(node)

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    for path in [PROVIDERS, *sorted(POLICIES.glob("*.yaml"))]:
        yaml.load(path.read_text(), Loader=StrictLoader)


def test_shipped_policies_values() -> None:
    teams = load_policies(POLICIES, env={"RESEARCH_KEY": "r", "P2L_ROUTER_DEFAULT_KEY": "d"})
    d, r = teams["default"], teams["research"]
    assert d.api_keys_env == ["P2L_ROUTER_DEFAULT_KEY"] and d.key_count == 1
    assert d.strategy == "cost-aware" and d.budget.usd and d.budget.usd <= 50
    assert r.api_keys_env == ["RESEARCH_KEY"] and r.key_count == 1
    assert r.rate_limit is not None and r.rate_limit.requests_per_minute
    assert r.budget.timezone == "America/New_York" and r.budget.pacing
    assert r.strategy == "cost-aware" and r.max_cost_per_request_usd
    assert r.deny and r.allow != ["*"]
    assert not r.allows("o1-preview") and r.allows("gpt-4o-2024-08-06")
    assert not r.allows("gemini-exp-1206") and r.allows("gemini-1.5-pro-002")


def test_every_tsv_arena_name_is_mapped_or_listed_as_skipped() -> None:
    arena = _arena_names()
    cat = load_providers(PROVIDERS, env={})
    header = "".join(
        ln for ln in PROVIDERS.read_text().splitlines() if ln.startswith("#")
    )  # the comment that lists skipped names
    missing = [n for n in arena if n not in cat.models and n not in header]
    assert missing == [], f"arena names neither mapped nor listed as skipped: {missing}"
    assert len(set(arena) & set(cat.models)) >= 30


def test_tsv_names_in_catalog_are_well_formed() -> None:
    arena = _arena_names()
    cat = load_providers(PROVIDERS, env={})
    present = [n for n in arena if n in cat.models]
    assert present
    for name in present:
        m = cat.models[name]
        assert m.provider in cat.providers
        assert m.expected_output_tokens
        # The expected cost of 1,000 answers is the TSV's figure within the price changes
        # noted in providers.yaml (o1-mini and DeepSeek got cheaper, Mixtral 8x22B moved
        # to a cheaper host): never more than 6x away.
        ours = m.output_usd_per_mtok * m.expected_output_tokens / 1000
        assert arena[name] / 6 <= ours <= arena[name] * 6, (name, ours, arena[name])


# ---------------------------------------------------------------- loading rules


def test_minimal_valid_files(providers_file: Path, tmp_path: Path) -> None:
    _write(tmp_path / "policies" / "alpha.yaml", "api_keys_env: [ALPHA_KEY]\nbudget: none\n")
    _write(tmp_path / "policies" / "b.yml", "team: beta\nstrategy: strict\nbudget: {usd: 1}\n")
    cfg = load_config(
        providers_file, tmp_path / "policies", env={"ALPHA_KEY": "a-key", "ACME_KEY": "k"}
    )
    assert set(cfg.teams) == {"alpha", "beta"}
    assert cfg.teams["beta"].file.endswith("b.yml")
    assert cfg.catalog.providers["acme"].base_url == "https://acme.example/v1"
    large = cfg.catalog.models["acme-large"]
    assert large.upstream_model == "large-2025" and large.supports == frozenset({"tools"})
    assert cfg.catalog.models["local-small"].upstream_model == "local-small"  # default: the key
    assert large.cost_usd(1_000_000, 500_000) == pytest.approx(6.0)
    t = cfg.teams["alpha"]
    assert (t.budget.usd, t.budget.period, t.budget.timezone, t.strategy) == (
        None,
        "day",
        "UTC",
        "cost-aware",
    )
    assert t.allow == ["*"] and t.deny == [] and t.rate_limit is None
    assert cfg.catalog.models["local-small"].supports is None  # not declared: unknown


def test_unset_provider_key_skips_provider(providers_file: Path) -> None:
    cat = load_providers(providers_file, env={})
    assert cat.skipped == {"acme": "ACME_KEY"}
    assert cat.available("acme-large") is None
    assert "acme-large" in cat.models  # still known, just not a candidate
    assert set(cat.available_models()) == {"local-small"}  # no api_key_env: never skipped
    assert cat.providers["acme"].api_key is None


def test_skipped_provider_warns_in_load_config(providers_file: Path, tmp_path: Path) -> None:
    _write(tmp_path / "policies" / "r.yaml", "api_keys_env: [R_KEY]\nbudget: none\n")
    cfg = load_config(providers_file, tmp_path / "policies", env={"R_KEY": "r"})
    assert any("'acme'" in w and "ACME_KEY" in w for w in cfg.warnings)


@pytest.mark.parametrize("files", [{}, {"research.yaml": "budget: {usd: 5}\n"}])
def test_no_client_key_anywhere_is_refused(providers_file: Path, tmp_path: Path, files) -> None:
    (tmp_path / "policies").mkdir()
    for name, text in files.items():
        _write(tmp_path / "policies" / name, text)
    with pytest.raises(ConfigError) as exc:
        load_config(providers_file, tmp_path / "policies", env={})
    (p,) = exc.value.problems
    assert (p.file, p.field) == (str(tmp_path / "policies"), "api_keys_env")
    assert "--allow-unauthenticated" in p.message


def test_unauthenticated_mode_serves_team_default_from_its_file(
    providers_file: Path, tmp_path: Path
) -> None:
    pol = _write(tmp_path / "policies" / "default.yaml", "budget: {usd: 3, period: week}\n")
    _write(tmp_path / "policies" / "research.yaml", "budget: none\n")
    cfg = load_config(providers_file, tmp_path / "policies", env={}, allow_unauthenticated=True)
    assert not cfg.auth_enabled
    assert cfg.team_for_key(None) is cfg.teams[DEFAULT_TEAM]
    assert cfg.team_for_key("anything") is cfg.teams[DEFAULT_TEAM]
    (w,) = [w for w in cfg.warnings if "auth is off" in w]
    assert str(pol) in w and "$3 per week" in w


def test_unauthenticated_mode_needs_a_default_team_file(
    providers_file: Path, tmp_path: Path
) -> None:
    _write(tmp_path / "policies" / "research.yaml", "budget: none\n")
    with pytest.raises(ConfigError) as exc:
        load_config(providers_file, tmp_path / "policies", env={}, allow_unauthenticated=True)
    (p,) = exc.value.problems
    assert p.file == str(tmp_path / "policies" / "default.yaml") and "budget" in p.message


def test_one_key_turns_auth_on(providers_file: Path, tmp_path: Path) -> None:
    _write(tmp_path / "policies" / "research.yaml", "api_keys_env: [RESEARCH_KEY]\nbudget: none\n")
    _write(tmp_path / "policies" / "open.yaml", "budget: none\n")  # no key: unreachable
    env = {"RESEARCH_KEY": "rk"}
    cfg = load_config(providers_file, tmp_path / "policies", env=env, allow_unauthenticated=True)
    assert cfg.auth_enabled and DEFAULT_TEAM not in cfg.teams
    assert any("auth stays on" in w for w in cfg.warnings)
    assert cfg.team_for_key("rk").name == "research"
    assert cfg.team_for_key(None) is None and cfg.team_for_key("") is None
    assert cfg.team_for_key("rk ") is None and cfg.team_for_key("RK") is None


@pytest.mark.parametrize("value", [None, ""])
def test_named_key_variable_unset_or_empty_is_refused(tmp_path: Path, value) -> None:
    pol = _write(
        tmp_path / "policies" / "research.yaml",
        "api_keys_env: [RESEARCH_KEY, SPARE_KEY]\nbudget: none\n",
    )
    env = {"RESEARCH_KEY": "rk"} | ({} if value is None else {"SPARE_KEY": value})
    with pytest.raises(ConfigError) as exc:
        load_policies(tmp_path / "policies", env=env)
    (p,) = exc.value.problems
    assert (p.file, p.field) == (str(pol), "api_keys_env[1]")
    assert p.message.startswith("SPARE_KEY is unset or empty")
    assert str(exc.value).startswith(f"{pol}: api_keys_env[1]: SPARE_KEY")


def test_unmatched_glob_warns_naming_file(providers_file: Path, tmp_path: Path) -> None:
    pol = _write(
        tmp_path / "policies" / "default.yaml",
        'budget: none\nallow: ["acme-*", "nothing-*"]\ndeny: ["zzz"]\n',
    )
    cfg = load_config(providers_file, tmp_path / "policies", env={}, allow_unauthenticated=True)
    joined = "\n".join(cfg.warnings)
    assert f"{pol}: allow: 'nothing-*'" in joined and f"{pol}: deny: 'zzz'" in joined
    assert "'acme-*'" not in joined


# ---------------------------------------------------------------- errors name file and field


@pytest.mark.parametrize(
    ("model_body", "field", "message"),
    [
        (
            "{provider: acme, input_usd_per_mtok: 1, output_usd_per_mtok: 2, inptu: 3}",
            "models.m.inptu",
            "unknown field",
        ),
        ("{provider: acme, input_usd_per_mtok: 1}", "models.m.output_usd_per_mtok", "missing"),
        (
            "{provider: acme, input_usd_per_mtok: -1, output_usd_per_mtok: 2}",
            "models.m.input_usd_per_mtok",
            "greater than or equal to 0",
        ),
        (
            "{provider: nobody, input_usd_per_mtok: 1, output_usd_per_mtok: 2}",
            "models.m.provider",
            "unknown provider 'nobody' (known: acme)",
        ),
        (
            "{provider: acme, input_usd_per_mtok: 1, output_usd_per_mtok: 2, context_window: 0}",
            "models.m.context_window",
            "greater than 0",
        ),
        ("[1, 2]", "models.m", "must be a mapping"),
    ],
)
def test_model_errors_name_file_and_field(
    tmp_path: Path, model_body: str, field: str, message: str
) -> None:
    path = _write(
        tmp_path / "providers.yaml",
        f"providers:\n  acme: {{base_url: https://a.example/v1}}\nmodels:\n  m: {model_body}\n",
    )
    with pytest.raises(ConfigError) as exc:
        load_providers(path, env={})
    problems = _problems(exc)
    assert field in problems, problems
    assert problems[field].startswith(f"{path}: ") and message in problems[field]
    assert f"{path}: {field}: " in str(exc.value)


@pytest.mark.parametrize(
    ("provider_body", "field", "message"),
    [
        ("{base_url: ftp://a.example}", "providers.acme.base_url", "http://"),
        (
            "{base_url: https://a.example, api_key: sk-inline}",
            "providers.acme.api_key",
            "unknown field",
        ),
        (
            "{base_url: https://a.example, timeouts: {idle: 0}}",
            "providers.acme.timeouts.idle",
            "greater than 0",
        ),
        (
            "{base_url: https://a.example, timeouts: {idel: 5}}",
            "providers.acme.timeouts.idel",
            "unknown field",
        ),
        (
            "{base_url: https://a.example, max_retries: 11}",
            "providers.acme.max_retries",
            "less than or equal",
        ),
        ("{api_key_env: X}", "providers.acme.base_url", "missing"),
    ],
)
def test_provider_errors_name_file_and_field(
    tmp_path: Path, provider_body: str, field: str, message: str
) -> None:
    path = _write(tmp_path / "providers.yaml", f"providers:\n  acme: {provider_body}\n")
    with pytest.raises(ConfigError) as exc:
        load_providers(path, env={})
    problems = _problems(exc)
    assert field in problems and message in problems[field], problems


def test_unknown_top_level_and_no_providers(tmp_path: Path) -> None:
    path = _write(tmp_path / "providers.yaml", "provider: {}\n")
    with pytest.raises(ConfigError) as exc:
        load_providers(path, env={})
    assert "provider" in _problems(exc)
    empty = _write(tmp_path / "empty.yaml", "models: {}\n")
    with pytest.raises(ConfigError, match="no providers defined"):
        load_providers(empty, env={})
    scalar = _write(tmp_path / "scalar.yaml", "just text\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_providers(scalar, env={})


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_providers(tmp_path / "nope.yaml", env={})
    assert str(tmp_path / "nope.yaml") in str(exc.value) and "cannot read" in str(exc.value)
    with pytest.raises(ConfigError, match="policies folder not found"):
        load_policies(tmp_path / "nope", env={})


def test_bad_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "providers.yaml",
        "providers:\n  acme: {base_url: https://a.example}\nmodels:\n  m: [unclosed\n",
    )
    with pytest.raises(ConfigError) as exc:
        load_providers(path, env={})
    msg = str(exc.value)
    assert msg.startswith(f"{path}: invalid YAML at line ") and "column" in msg
    line = int(msg.split("at line ")[1].split(",")[0])
    assert 4 <= line <= 5  # the unclosed flow sequence, or the end of input just after it

    pol = _write(tmp_path / "policies" / "t.yaml", "budget:\n  usd: 5\n period: day\n")
    with pytest.raises(ConfigError) as exc:
        load_policies(tmp_path / "policies", env={})
    assert f"{pol}: invalid YAML at line 3" in str(exc.value)


@pytest.mark.parametrize(
    ("policy", "field", "message"),
    [
        (
            "budget: {usd: 5, timezone: Mars/Olympus}",
            "budget.timezone",
            "unknown IANA time zone 'Mars/Olympus'",
        ),
        ("strategy: fastest", "strategy", "'cost-aware'"),
        ("budget: {usd: -5}", "budget.usd", "greater than or equal to 0"),
        ("budget: {period: fortnight}", "budget.period", "'day'"),
        ("budget: {on_exhausted: pray}", "budget.on_exhausted", "'cheapest'"),
        ("budget: {usd: 5, limit: 3}", "budget.limit", "unknown field"),
        ("cost_sensitivity: -1", "cost_sensitivity", "greater than or equal to 0"),
        ("max_cost_per_request_usd: 0", "max_cost_per_request_usd", "greater than 0"),
        ("allow: gpt-4o*", "allow", "valid list"),
        ("opponent_mix: {a: 0, b: 0}", "opponent_mix", "positive sum"),
        ("stratgy: strict", "stratgy", "unknown field"),
        # budget and rate_limit
        ("strategy: strict", "budget", "`budget: none` for no limit"),
        ("budget:", "budget", "is empty; write `budget: none`"),
        ("budget: {period: week}", "budget.usd", "`budget: none` for no limit"),
        ("budget: unlimited", "budget", "valid dictionary"),
        ("budget: none\nrate_limit: {}", "rate_limit", "set requests_per_minute and/or"),
        (
            "budget: none\nrate_limit: {requests_per_minute: 0}",
            "rate_limit.requests_per_minute",
            "greater than 0",
        ),
        (
            "budget: none\nrate_limit: {tokens_per_minute: -5}",
            "rate_limit.tokens_per_minute",
            "greater than 0",
        ),
        (
            "budget: none\nrate_limit: {tokens_per_minute: 1.5}",
            "rate_limit.tokens_per_minute",
            "integer",
        ),
        ("budget: none\nrate_limit: {rpm: 10}", "rate_limit.rpm", "unknown field"),
        ("budget: none\nrate_limit: 100", "rate_limit", "valid dictionary"),
    ],
)
def test_policy_errors_name_file_and_field(
    tmp_path: Path, policy: str, field: str, message: str
) -> None:
    path = _write(tmp_path / "policies" / "team.yaml", policy + "\n")
    with pytest.raises(ConfigError) as exc:
        load_policies(tmp_path / "policies", env={})
    problems = _problems(exc)
    assert field in problems, problems
    assert problems[field].startswith(f"{path}: ") and message in problems[field], problems[field]


def test_every_strategy_name_is_accepted(tmp_path: Path) -> None:
    for s in STRATEGY_NAMES:
        _write(tmp_path / "policies" / f"{s}.yaml", f"strategy: {s}\nbudget: none\n")
    teams = load_policies(tmp_path / "policies", env={})
    assert {t.strategy for t in teams.values()} == set(STRATEGY_NAMES)


def test_non_mapping_policy_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "policies" / "t.yaml", "- a\n- b\n")
    with pytest.raises(ConfigError) as exc:
        load_policies(tmp_path / "policies", env={})
    assert str(exc.value) == f"{path}: must be a mapping of policy fields"


def test_duplicate_team_names_both_files(tmp_path: Path) -> None:
    first = _write(tmp_path / "policies" / "a.yaml", "team: research\nbudget: none\n")
    second = _write(tmp_path / "policies" / "research.yaml", "budget: {usd: 1}\n")
    with pytest.raises(ConfigError) as exc:
        load_policies(tmp_path / "policies", env={})
    (p,) = exc.value.problems
    assert (p.file, p.field) == (str(second), "team")
    assert str(first) in p.message and "'research'" in p.message


def test_duplicate_key_across_teams_is_refused_without_the_key(tmp_path: Path) -> None:
    _write(tmp_path / "policies" / "a.yaml", "api_keys_env: [A_KEY]\nbudget: none\n")
    b = _write(tmp_path / "policies" / "b.yaml", "api_keys_env: [OTHER, B_KEY]\nbudget: none\n")
    secret = "sk-shared-SECRET-999"
    with pytest.raises(ConfigError) as exc:
        load_policies(tmp_path / "policies", env={"A_KEY": secret, "B_KEY": secret, "OTHER": "o"})
    (p,) = exc.value.problems
    assert (p.file, p.field) == (str(b), "api_keys_env[1]")
    assert "B_KEY" in p.message and "'a'" in p.message
    assert secret not in str(exc.value) and secret not in repr(exc.value.problems)


def test_same_key_twice_in_one_team_is_fine(tmp_path: Path) -> None:
    _write(tmp_path / "policies" / "a.yaml", "api_keys_env: [K1, K2]\nbudget: none\n")
    teams = load_policies(tmp_path / "policies", env={"K1": "same", "K2": "same"})
    assert teams["a"].key_count == 1


def test_load_config_collects_problems_from_both_files(tmp_path: Path) -> None:
    prov = _write(tmp_path / "providers.yaml", "providers:\n  acme: {base_url: nope}\n")
    pol = _write(tmp_path / "policies" / "t.yaml", "strategy: fastest\n")
    with pytest.raises(ConfigError) as exc:
        load_config(prov, tmp_path / "policies", env={})
    files = {p.file for p in exc.value.problems}
    assert files == {str(prov), str(pol)}


# ---------------------------------------------------------------- secrets


def test_keys_never_in_repr_dump_or_warnings(providers_file: Path, tmp_path: Path) -> None:
    _write(tmp_path / "policies" / "research.yaml", "api_keys_env: [RESEARCH_KEY]\nbudget: none\n")
    env = {
        "ACME_KEY": "sk-acme-SECRET-42",
        "RESEARCH_KEY": "team-SECRET-77",
        ADMIN_KEY_ENV: "admin-SECRET-88",
    }
    cfg = load_config(providers_file, tmp_path / "policies", env=env)
    assert cfg.catalog.providers["acme"].api_key == "sk-acme-SECRET-42"
    assert cfg.team_for_key("team-SECRET-77") is cfg.teams["research"]
    assert cfg.is_admin("admin-SECRET-88")
    views = [
        repr(cfg),
        str(cfg),
        repr(cfg.catalog.providers["acme"]),
        repr(cfg.teams["research"]),
        cfg.model_dump_json(),
        str(cfg.model_dump()),
        "\n".join(cfg.warnings),
    ]
    for text in views:
        for secret in env.values():
            assert secret not in text


def test_keys_never_in_error_messages(tmp_path: Path) -> None:
    prov = _write(
        tmp_path / "providers.yaml",
        "providers:\n  acme: {base_url: https://a.example, api_key_env: ACME_KEY, max_retries: -1}\n",
    )
    _write(tmp_path / "policies" / "a.yaml", "api_keys_env: [A_KEY]\nstrategy: nope\n")
    env = {"ACME_KEY": "sk-acme-SECRET-42", "A_KEY": "team-SECRET-77"}
    with pytest.raises(ConfigError) as exc:
        load_config(prov, tmp_path / "policies", env=env)
    for secret in env.values():
        assert secret not in str(exc.value)


# ---------------------------------------------------------------- loader edge cases


def test_name_field_in_model_is_a_config_error(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "providers.yaml",
        "providers:\n  acme: {base_url: https://a.example}\n"
        "models:\n  m: {name: other, provider: acme, input_usd_per_mtok: 1, output_usd_per_mtok: 1}\n",
    )
    with pytest.raises(ConfigError) as exc:
        load_providers(path, env={})
    assert "models.m.name" in _problems(exc)


def test_name_field_in_policy_is_a_config_error(tmp_path: Path) -> None:
    _write(tmp_path / "policies" / "t.yaml", "name: research\n")
    with pytest.raises(ConfigError) as exc:
        load_policies(tmp_path / "policies", env={})
    assert "name" in _problems(exc)


def test_providers_as_a_list_is_a_config_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "providers.yaml", "providers:\n  - acme\n")
    with pytest.raises(ConfigError) as exc:
        load_providers(path, env={})
    assert "providers" in _problems(exc)


def test_duplicate_model_key_is_a_config_error(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "providers.yaml",
        "providers:\n  acme: {base_url: https://a.example}\nmodels:\n"
        "  m: {provider: acme, input_usd_per_mtok: 1, output_usd_per_mtok: 1}\n"
        "  m: {provider: acme, input_usd_per_mtok: 9, output_usd_per_mtok: 9}\n",
    )
    with pytest.raises(ConfigError, match="line 5, column 3: duplicate key 'm'"):
        load_providers(path, env={})


# ---------------------------------------------------------------- budget, rate limit, admin


@pytest.mark.parametrize(
    ("policy", "usd", "rpm", "tpm"),
    [
        ("budget: none", None, None, None),
        ("budget: None", None, None, None),
        ("budget: {usd: null, period: week}", None, None, None),
        ("budget: {usd: 0}", 0.0, None, None),
        ("budget: {usd: 12.5}\nrate_limit: {requests_per_minute: 60}", 12.5, 60, None),
        ("budget: none\nrate_limit: {tokens_per_minute: 90000}", None, None, 90000),
        (
            "budget: none\nrate_limit: {requests_per_minute: 5, tokens_per_minute: 7}",
            None,
            5,
            7,
        ),
    ],
)
def test_budget_and_rate_limit_values(tmp_path: Path, policy: str, usd, rpm, tpm) -> None:
    _write(tmp_path / "policies" / "team.yaml", policy + "\n")
    t = load_policies(tmp_path / "policies", env={})["team"]
    assert t.budget.usd == usd
    rate = t.rate_limit
    got = None if rate is None else (rate.requests_per_minute, rate.tokens_per_minute)
    assert got == (None if rpm is None and tpm is None else (rpm, tpm))


@pytest.mark.parametrize(
    ("admin", "key", "want"),
    [
        (None, "anything", False),  # unset: closed to everyone
        ("", "", False),
        ("", "anything", False),
        ("adm-1", "adm-1", True),
        ("adm-1", "adm-2", False),
        ("adm-1", "adm-1 ", False),
        ("adm-1", "", False),
        ("adm-1", None, False),
        ("adm-1", "rk", False),  # a team key is not the admin key
    ],
)
def test_admin_key(providers_file: Path, tmp_path: Path, admin, key, want) -> None:
    _write(tmp_path / "policies" / "r.yaml", "api_keys_env: [R_KEY]\nbudget: none\n")
    env = {"R_KEY": "rk"} | ({} if admin is None else {ADMIN_KEY_ENV: admin})
    cfg = load_config(providers_file, tmp_path / "policies", env=env)
    assert cfg.admin_enabled == bool(admin)
    assert cfg.is_admin(key) is want


def test_admin_key_may_not_be_a_team_key(providers_file: Path, tmp_path: Path) -> None:
    pol = _write(tmp_path / "policies" / "r.yaml", "api_keys_env: [R_KEY]\nbudget: none\n")
    env = {"R_KEY": "same-SECRET", ADMIN_KEY_ENV: "same-SECRET"}
    with pytest.raises(ConfigError) as exc:
        load_config(providers_file, tmp_path / "policies", env=env)
    (p,) = exc.value.problems
    assert p.file == str(pol) and ADMIN_KEY_ENV in p.message
    assert "same-SECRET" not in str(exc.value)
