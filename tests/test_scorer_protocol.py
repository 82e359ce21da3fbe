"""Both scoring engines satisfy ``Scorer`` (router/scoring/types.py), the only face of them
the service, the planner and the admin reads use: every member present on real
instances, each method callable the way the protocol calls it (sync or async alike), and
the check itself fails for an engine missing any one member."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY_MODELS

from router.scoring.types import Scorer, ScorerModel


def protocol_members(proto: type) -> dict[str, Any]:
    return {
        name: value
        for name, value in vars(proto).items()
        if not name.startswith("_") and (callable(value) or isinstance(value, property))
    }


@pytest.fixture(scope="module")
def remote_engine(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from router.scoring import write_tiny_checkpoint
    from router.scoring.export import export_backbone
    from router.scoring.exported import load_exported
    from router.scoring.remote import RemoteScorerConfig, RemoteScoringEngine

    root = tmp_path_factory.mktemp("exp")
    src = write_tiny_checkpoint(root / "src", list(TINY_MODELS), hidden_size=64)
    folder = export_backbone(str(src), root / "out", max_length=256)
    config = RemoteScorerConfig(url="http://127.0.0.1:9/v1", api_key="k-scorer")
    return RemoteScoringEngine(load_exported(Path(folder)), config)


@pytest.fixture
def engines(p2l_model: Any, remote_engine: Any) -> list[Any]:
    from router.scoring.engine import ScoringEngine

    return [ScoringEngine(p2l_model), remote_engine]


def test_both_engines_are_scorers(engines: list[Any]) -> None:
    for engine in engines:
        assert isinstance(engine, Scorer), type(engine).__name__
        assert isinstance(engine.model, ScorerModel), type(engine.model).__name__
        assert engine.ready is False  # until warmup


@pytest.mark.parametrize("proto", [Scorer, ScorerModel])
def test_methods_take_the_protocol_call(engines: list[Any], proto: type) -> None:
    """isinstance only sees names: check each method is sync/async as declared and
    accepts the protocol's arguments."""
    for engine in engines:
        target = engine if proto is Scorer else engine.model
        for name, member in protocol_members(proto).items():
            if isinstance(member, property):
                getattr(target, name)  # readable
                continue
            impl = getattr(target, name)
            where = f"{type(target).__name__}.{name}"
            assert inspect.iscoroutinefunction(impl) == inspect.iscoroutinefunction(member), where
            wanted = list(inspect.signature(member).parameters.values())[1:]  # less self
            inspect.signature(impl).bind(*(object() for _ in wanted))  # TypeError if not


def test_what_the_service_reads_of_them(engines: list[Any]) -> None:
    local, remote = engines
    assert local.health() == {} and local.api_key is None  # /readyz unchanged in process
    assert remote.api_key == "k-scorer"
    assert remote.health()["scorer"]["state"] == "up"


def test_an_engine_missing_a_member_is_not_a_scorer(engines: list[Any]) -> None:
    """The check has teeth: drop any one member from a full stand-in and it fails."""
    names = protocol_members(Scorer)
    full = {name: getattr(engines[0], name) for name in names}
    assert isinstance(type("Full", (), full)(), Scorer)
    for missing in names:
        partial = {k: v for k, v in full.items() if k != missing}
        assert not isinstance(type("Partial", (), partial)(), Scorer), missing
