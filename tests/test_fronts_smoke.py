"""Smoke: the /v1/messages and /v1/responses fronts answer through the real SDKs."""

from __future__ import annotations

import anthropic
import pytest
from conftest import TEAM_KEY

MINI = "gpt-4o-mini-2024-07-18"


@pytest.mark.parametrize("api", ["openai-chat", "anthropic-messages", "openai-responses"])
def test_messages_front(make_router, fake, api):
    r = make_router(provider={"api": api})
    client = anthropic.Anthropic(base_url=r.root, api_key=TEAM_KEY, max_retries=0)
    got = client.messages.create(
        model=MINI, max_tokens=100, messages=[{"role": "user", "content": "Say hello"}]
    )
    assert got.content[0].type == "text" and "hello" in got.content[0].text.lower()
    assert got.usage.input_tokens > 0
    with client.messages.stream(
        model=MINI, max_tokens=100, messages=[{"role": "user", "content": "Say hello"}]
    ) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert "hello" in text.lower() and final.stop_reason == "end_turn"


@pytest.mark.parametrize("api", ["openai-chat", "anthropic-messages", "openai-responses"])
def test_responses_front(make_router, fake, api):
    r = make_router(provider={"api": api})
    client = r.openai()
    got = client.responses.create(model=MINI, input="Say hello")
    assert "hello" in got.output_text.lower()
    events = list(client.responses.create(model=MINI, input="Say hello", stream=True))
    assert events[-1].type == "response.completed"
