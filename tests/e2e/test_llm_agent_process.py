"""`uvicorn llm_agent.main:app` as a real process, configured only by its environment,
in front of the fake upstream running as its own process."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import FakeUpstream
from tests.support.servers import ServiceProcess
from tests.support.sse import parse_sse

pytestmark = pytest.mark.e2e


@pytest.fixture
def upstream_url(fake_upstream: FakeUpstream) -> str:
    fake_upstream.reset()
    return fake_upstream.url


def start(env: dict[str, str], tmp_path: Path) -> ServiceProcess:
    service = ServiceProcess("llm_agent.main:app", env, tmp_path / "agent.log")
    service.wait_ready("/health")
    return service


def test_openai_provider_streams_and_logs_json_lines(upstream_url: str, tmp_path: Path) -> None:
    service = start(
        {
            "OPENAI_API_KEY": "sk-e2e",
            "OPENAI_BASE_URL": upstream_url,
            "LOG_JSON": "true",
            "DEFAULT_MODEL": "gpt-4o",
            "ALLOWED_MODELS": "gpt-4o,gpt-4",
        },
        tmp_path,
    )
    try:
        httpx.post(
            upstream_url.removesuffix("/v1") + "/_fake/script",
            json={"behaviours": [{"chunks": ["Streaming ", "works."]}]},
        )
        response = httpx.post(
            service.url + "/generate/stream",
            json={"messages": [{"role": "user", "content": "go"}]},
            headers={"X-Request-ID": "e2e-stream-1"},
            timeout=10,
        )
        events = parse_sse(response.text)
        assert [e.event for e in events] == ["delta", "delta", "done"]
        assert "".join(e.data["text"] for e in events[:-1]) == "Streaming works."
        assert events[-1].data["model"] == "gpt-4o"
        recorded = httpx.get(upstream_url.removesuffix("/v1") + "/_fake/requests").json()
        chat = [r for r in recorded["requests"] if r["path"].endswith("/chat/completions")]
        assert chat[-1]["headers"]["authorization"] == "Bearer sk-e2e"
        assert chat[-1]["headers"]["x-request-id"] == "e2e-stream-1"
    finally:
        service.stop()

    records = [json.loads(line) for line in service.output().splitlines() if line.strip()]
    assert records, "the service logged nothing"
    access = [
        r["record"]["extra"]
        for r in records
        if r["record"]["extra"].get("path") == "/generate/stream"
    ]
    assert access == [
        {
            "request_id": "e2e-stream-1",
            "method": "POST",
            "path": "/generate/stream",
            "status": 200,
            "latency_ms": access[0]["latency_ms"],
        }
    ]
    assert isinstance(access[0]["latency_ms"], float)
    # uvicorn's own lines come through loguru too, as JSON
    assert any("Uvicorn running" in r["text"] for r in records)


def test_echo_is_the_keyless_default(tmp_path: Path) -> None:
    service = start({}, tmp_path)
    try:
        info = httpx.get(service.url + "/").json()
        assert info["provider"] == "echo"
        answer = httpx.post(
            service.url + "/generate/",
            json={"messages": [{"role": "user", "content": "Hello, how are you?"}]},
        ).json()
        assert answer["content"] == "Echo: Hello, how are you?"
    finally:
        service.stop()
    assert "POST /generate/ 200" in service.output()
