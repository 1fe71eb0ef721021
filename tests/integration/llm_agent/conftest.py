"""An llm_agent served over real HTTP, in front of the wire-level fake OpenAI upstream."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest

from llm_agent.app import create_app
from llm_agent.settings import Settings
from tests.fakes.openai_server import FakeOpenAI
from tests.support.servers import serve_in_thread

StartAgent = Callable[..., httpx.Client]


def agent_settings(upstream_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "llm_provider": "openai",
        "openai_api_key": "sk-test",
        "openai_base_url": upstream_url,
        "openai_connect_timeout": 2.0,
        "openai_read_timeout": 2.0,
        "retry_base_delay": 0.01,
        "retry_max_delay": 0.02,
    }
    return Settings(_env_file=None, **{**values, **overrides})


@pytest.fixture
def start_agent(upstream: FakeOpenAI) -> Iterator[StartAgent]:
    """Start an agent with settings overrides; returns an HTTP client bound to it."""
    with ExitStack() as stack:

        def start(**overrides: Any) -> httpx.Client:
            app = create_app(agent_settings(upstream.url, **overrides))
            base_url = stack.enter_context(serve_in_thread(app))
            return stack.enter_context(httpx.Client(base_url=base_url, timeout=20))

        yield start


@pytest.fixture
def agent(start_agent: StartAgent) -> httpx.Client:
    return start_agent()


USER_HI = {"messages": [{"role": "user", "content": "hi"}]}
