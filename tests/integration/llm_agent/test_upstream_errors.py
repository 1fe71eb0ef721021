"""Error mapping and retries, counted at the fake upstream."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.fakes.openai_server import FakeOpenAI
from tests.integration.llm_agent.conftest import USER_HI, StartAgent


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["request_id"] == response.headers["x-request-id"]
    error: dict[str, Any] = body["error"]
    return error


@pytest.mark.parametrize(
    ("upstream_status", "status", "code", "attempts"),
    [
        (400, 502, "upstream_error", 1),
        (401, 502, "upstream_auth_failed", 1),
        (403, 502, "upstream_auth_failed", 1),
        (404, 502, "upstream_error", 1),
        (422, 502, "upstream_error", 1),
        (408, 504, "upstream_timeout", 4),
        (429, 429, "upstream_rate_limited", 4),
        (500, 502, "upstream_error", 4),
        (502, 502, "upstream_error", 4),
        (503, 502, "upstream_error", 4),
    ],
)
@pytest.mark.parametrize("path", ["/generate/", "/generate/stream"])
def test_status_codes_map_and_retry_as_the_rules_say(
    agent: httpx.Client,
    upstream: FakeOpenAI,
    path: str,
    upstream_status: int,
    status: int,
    code: str,
    attempts: int,
) -> None:
    upstream.script(*[{"status": upstream_status, "headers": {"Retry-After": "0"}}] * 4)
    response = agent.post(path, json=USER_HI)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    assert error_of(response)["code"] == code
    assert len(upstream.chat_requests) == attempts


def test_a_transient_failure_then_success_is_invisible(
    agent: httpx.Client, upstream: FakeOpenAI
) -> None:
    upstream.script({"status": 500}, {"status": 503}, {"content": "finally"})
    response = agent.post("/generate/", json=USER_HI)
    assert (response.status_code, response.json()["content"]) == (200, "finally")
    assert len(upstream.chat_requests) == 3
    metrics = agent.get("/metrics").text
    assert 'llm_upstream_retries_total{code="upstream_error"} 2.0' in metrics


def test_retry_after_is_waited_out(agent: httpx.Client, upstream: FakeOpenAI) -> None:
    upstream.script({"status": 429, "headers": {"Retry-After": "1"}}, {"content": "ok"})
    started = time.monotonic()
    response = agent.post("/generate/", json=USER_HI)
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.9
    assert len(upstream.chat_requests) == 2


def test_rate_limit_answer_carries_retry_after(agent: httpx.Client, upstream: FakeOpenAI) -> None:
    # Longer than RETRY_AFTER_MAX: not waited out, handed to the caller at once.
    upstream.script(
        {
            "status": 429,
            "headers": {"Retry-After": "120"},
            "error_message": "Rate limit reached for gpt-4o-mini",
        }
    )
    response = agent.post("/generate/", json=USER_HI)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "120"
    error = error_of(response)
    assert error["code"] == "upstream_rate_limited"
    assert error["details"][0]["upstream_message"] == "Rate limit reached for gpt-4o-mini"
    assert len(upstream.chat_requests) == 1


def test_attempts_follow_the_setting(start_agent: StartAgent, upstream: FakeOpenAI) -> None:
    agent = start_agent(retry_max_attempts=2)
    upstream.script(*[{"status": 500}] * 4)
    assert agent.post("/generate/", json=USER_HI).status_code == 502
    assert len(upstream.chat_requests) == 2


@pytest.mark.parametrize("path", ["/generate/", "/generate/stream"])
def test_a_slow_upstream_times_out_after_retries(
    start_agent: StartAgent, upstream: FakeOpenAI, path: str
) -> None:
    agent = start_agent(openai_read_timeout=0.3, retry_max_attempts=2)
    upstream.script(*[{"delay": 2}] * 2)
    response = agent.post(path, json=USER_HI)
    assert response.status_code == 504
    assert error_of(response)["code"] == "upstream_timeout"
    assert len(upstream.chat_requests) == 2


def test_a_dropped_connection_is_retried(agent: httpx.Client, upstream: FakeOpenAI) -> None:
    upstream.script({"drop_after": 0}, {"content": "second time lucky"})
    response = agent.post("/generate/", json=USER_HI)
    assert (response.status_code, response.json()["content"]) == (200, "second time lucky")
    assert len(upstream.chat_requests) == 2


def test_an_unreachable_upstream_is_a_502(start_agent: StartAgent) -> None:
    from tests.support.servers import free_port

    agent = start_agent(openai_base_url=f"http://127.0.0.1:{free_port()}/v1", retry_max_attempts=2)
    response = agent.post("/generate/", json=USER_HI)
    assert response.status_code == 502
    error = error_of(response)
    assert error["code"] == "upstream_error"
    assert "connection" in error["message"]


def test_openai_without_a_key_is_not_configured(
    start_agent: StartAgent, upstream: FakeOpenAI
) -> None:
    agent = start_agent(openai_api_key=None, openai_base_url=None)
    response = agent.post("/generate/", json=USER_HI)
    assert response.status_code == 503
    assert error_of(response)["code"] == "provider_not_configured"
    health = agent.get("/health")
    assert health.status_code == 503
    assert health.json()["status"] == "degraded"
    assert health.json()["checks"]["provider"]["status"] == "failing"
    assert upstream.chat_requests == []


def test_a_local_server_needs_no_key(start_agent: StartAgent, upstream: FakeOpenAI) -> None:
    agent = start_agent(openai_api_key=None)
    assert agent.post("/generate/", json=USER_HI).status_code == 200
    assert agent.get("/health").status_code == 200
