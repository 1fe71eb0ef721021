"""Shared set-up of the end-to-end tests: real processes on loopback ports.

- `fake_upstream`: the wire-level fake OpenAI server as its own process (module-wide),
  scripted over HTTP; `upstream` is the same, reset before each test.
- `llm_agent_url`: `uvicorn llm_agent.main:app` in front of it (module-wide; stateless).
- `backends`: starts `uvicorn main_backend.main:app` processes (or another app path, such
  as `tests.support.crashing_backend:app`) on the test's database and stops every one of
  them at teardown.
- `ask`, `chat`, `messages_of`: a chat request's body, a `POST /chat/` and a thread's
  messages, on one of those processes.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from main_backend.db import create_database
from main_backend.events.fold import ThreadState
from main_backend.events.store import EventStore
from main_backend.events.types import StoredEvent
from tests.support.servers import REPO_ROOT, ServiceProcess, stop_process

HTTP_TIMEOUT = httpx.Timeout(30.0, connect=5.0)


class FakeUpstream:
    """The fake OpenAI process and its control API (`/_fake/...`)."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes.openai_server", "--port", "0"],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if not line.startswith("FAKE_OPENAI_URL="):
            self.close()
            raise RuntimeError(f"the fake upstream did not start: {line!r}")
        self.url = line.removeprefix("FAKE_OPENAI_URL=")  # …/v1, for OPENAI_BASE_URL
        self.base = self.url.removesuffix("/v1")

    def script(self, *behaviours: dict[str, Any]) -> None:
        response = httpx.post(
            self.base + "/_fake/script", json={"behaviours": list(behaviours)}, timeout=5
        )
        response.raise_for_status()

    def reset(self) -> None:
        httpx.post(self.base + "/_fake/reset", timeout=5).raise_for_status()

    def chat_requests(self) -> list[dict[str, Any]]:
        response = httpx.get(self.base + "/_fake/requests", timeout=5)
        response.raise_for_status()
        return [
            r
            for r in response.json()["requests"]
            if r["method"] == "POST" and r["path"] == "/v1/chat/completions"
        ]

    def close(self) -> None:
        stop_process(self.process)
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture(scope="module")
def fake_upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream()
    try:
        yield fake
    finally:
        fake.close()


@pytest.fixture
def upstream(fake_upstream: FakeUpstream) -> FakeUpstream:
    """The module's fake upstream with an empty script and no recorded requests."""
    fake_upstream.reset()
    return fake_upstream


def agent_env(fake_upstream: FakeUpstream) -> dict[str, str]:
    """An llm_agent on the openai provider, in front of the fake upstream, retrying fast."""
    return {
        "LLM_PROVIDER": "openai",
        "OPENAI_API_KEY": "sk-e2e",
        "OPENAI_BASE_URL": fake_upstream.url,
        "RETRY_BASE_DELAY": "0.01",
        "RETRY_MAX_DELAY": "0.02",
    }


@pytest.fixture(scope="module")
def llm_agent_url(
    fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    agent = ServiceProcess(
        "llm_agent.main:app",
        agent_env(fake_upstream),
        tmp_path_factory.mktemp("llm-agent") / "agent.log",
    )
    try:
        agent.wait_ready("/health")
        yield agent.url
    finally:
        agent.stop()


class Backends:
    """Main backend processes over one database; all stopped at teardown."""

    def __init__(self, database_url: str, agent_url: str, log_dir: Path) -> None:
        self.env = {
            "DATABASE_URL": database_url,
            "LLM_AGENT_URL": agent_url,
            "RUN_LEASE_SECONDS": "1",
            "RUN_POLL_SECONDS": "0.2",
            "LOG_LEVEL": "INFO",
        }
        self.log_dir = log_dir
        self.started: list[ServiceProcess] = []

    def start(self, app: str = "main_backend.main:app", **env: str) -> ServiceProcess:
        log = self.log_dir / f"backend-{len(self.started) + 1}.log"
        backend = ServiceProcess(app, {**self.env, **env}, log)
        self.started.append(backend)
        wait_healthy(backend)
        return backend

    def stop_all(self) -> None:
        for backend in self.started:
            backend.stop()

    def logs(self) -> str:
        return "\n".join(f"----- {b.log_path.name}\n{b.output()}" for b in self.started)


def wait_healthy(service: ServiceProcess, timeout: float = 30) -> None:
    """Until `/health` answers 200 (the database at head and the agent reachable)."""
    service.wait_ready("/health", timeout=timeout)
    last: httpx.Response | None = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            last = httpx.get(service.url + "/health", timeout=5)
            if last.status_code == 200:
                return
        except httpx.TransportError:
            pass
        if service.process.poll() is not None:
            break
        time.sleep(0.1)
    detail = last.text if last is not None else "no answer"
    raise RuntimeError(f"{service.url} is not healthy: {detail}\n{service.output()}")


@pytest.fixture
def backends(database_url: str, llm_agent_url: str, tmp_path: Path) -> Iterator[Backends]:
    group = Backends(database_url, llm_agent_url, tmp_path)
    try:
        yield group
    finally:
        group.stop_all()


def ask(content: str, **fields: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], **fields}


def chat(client: httpx.Client, backend: ServiceProcess, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(backend.url + "/chat/", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def messages_of(
    client: httpx.Client, backend: ServiceProcess, thread_id: str
) -> list[dict[str, Any]]:
    response = client.get(f"{backend.url}/threads/{thread_id}/messages")
    assert response.status_code == 200, response.text
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


def poll(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """`check()`'s first truthy result, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def read_log(database_url: str, thread_id: str) -> tuple[list[StoredEvent], ThreadState | None]:
    """The thread's events and read model, straight from the database."""

    async def read() -> tuple[list[StoredEvent], ThreadState | None]:
        db = create_database(database_url)
        try:
            store = EventStore(db)
            return await store.read_thread(thread_id), await store.get_thread(thread_id)
        finally:
            await db.dispose()

    return asyncio.run(read())
