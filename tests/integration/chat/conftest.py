"""The main backend over real HTTP, in front of a real llm_agent and the fake upstream.

All three run in this process's threads (each app with its own event loop);
the database is a fresh migrated one on each engine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest

from llm_agent.app import create_app as create_agent
from main_backend.app import create_app as create_backend
from main_backend.settings import Settings
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.llm_agent.conftest import agent_settings
from tests.support.servers import serve_in_thread

StartBackend = Callable[..., httpx.Client]


@pytest.fixture
def agent_url(upstream: FakeOpenAI) -> Iterator[str]:
    with serve_in_thread(create_agent(agent_settings(upstream.url, allowed_models="*"))) as url:
        yield url


def backend_settings(database_url: str, agent_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "llm_agent_url": agent_url,
        "llm_agent_timeout": 10,
        "run_lease_seconds": 2,
        "run_poll_seconds": 0.1,
        "allowed_models": "*",
        "sse_ping_seconds": 5,
    }
    return Settings(_env_file=None, **{**values, **overrides})


@pytest.fixture
def start_backend(database_url: str, agent_url: str) -> Iterator[StartBackend]:
    with ExitStack() as stack:

        def start(**overrides: Any) -> httpx.Client:
            app = create_backend(backend_settings(database_url, agent_url, **overrides))
            url = stack.enter_context(serve_in_thread(app))
            return stack.enter_context(httpx.Client(base_url=url, timeout=30))

        yield start


@pytest.fixture
def backend(start_backend: StartBackend) -> httpx.Client:
    return start_backend()


def ask(content: str, **fields: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], **fields}


def wait_idle(backend: httpx.Client, thread_id: str, timeout: float = 20) -> dict[str, Any]:
    """The thread once its run has ended (runs go on apart from their requests)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        thread: dict[str, Any] = backend.get(f"/threads/{thread_id}").json()
        if thread["status"] == "idle":
            return thread
        time.sleep(0.05)
    raise AssertionError(f"thread {thread_id} stayed busy")
