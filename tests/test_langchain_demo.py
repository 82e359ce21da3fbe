"""LangChain's ``ChatOpenAI`` against the demo (tiny checkpoint, built-in echo provider):
invoke, stream, tools and structured output run end to end offline."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from conftest import ThreadServer
from pydantic import BaseModel, Field


class Weather(BaseModel):
    """The weather in a city."""

    city: str = Field(description="the city")
    unit: str = Field(json_schema_extra={"enum": ["celsius", "fahrenheit"]})
    days: int = Field(ge=1, le=7)


class Forecast(BaseModel):
    city: str
    highs: list[float]
    sunny: bool
    place: Weather


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from router.api.app import create_app
    from router.offline.demo import prepare_demo
    from router.scoring import ScoringEngine, load_p2l
    from router.serving.service import RouterService

    root = tmp_path_factory.mktemp("demo")
    demo = prepare_demo(root)
    service = RouterService(
        demo.config,
        ledger_url=demo.ledger_url,
        decision_log=str(root / "decisions.jsonl"),
        engine=ScoringEngine(load_p2l(str(demo.checkpoint), device="cpu")),
        transports=demo.transports,
    )
    with ThreadServer(create_app(service)) as srv:
        import httpx

        base = f"http://127.0.0.1:{srv.port}"
        deadline = time.monotonic() + 30
        while httpx.get(base + "/readyz").status_code != 200:  # the warm-up
            assert time.monotonic() < deadline, "the demo never became ready"
            time.sleep(0.02)
        yield base + "/v1"


def test_chat_openai_drives_the_demo(demo_url: str) -> None:
    from langchain_core.messages import HumanMessage
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=demo_url, api_key="demo", model="p2l", max_retries=0)
    msg = [HumanMessage("What is the weather in Lisbon?")]

    answer = llm.invoke(msg)
    assert "echo: What is the weather in Lisbon?" in answer.content
    streamed = "".join(chunk.content for chunk in llm.stream(msg))
    assert "echo: What is the weather in Lisbon?" in streamed

    called = llm.bind_tools([Weather]).invoke(msg)
    [call] = called.tool_calls
    assert call["name"] == "Weather"
    Weather.model_validate(call["args"])
    assert call["args"]["unit"] == "celsius" and call["args"]["days"] == 1

    forecast = llm.with_structured_output(Forecast).invoke(msg)
    assert isinstance(forecast, Forecast) and forecast.place.days >= 1
