"""Service routes, request ids, bearer auth, metrics and the last-resort 500."""

from __future__ import annotations

import httpx
import pytest

from llm_agent.app import create_app
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.llm_agent.conftest import USER_HI, StartAgent, agent_settings
from tests.support.servers import serve_in_thread


def test_root_names_the_provider_and_default_model(agent: httpx.Client) -> None:
    assert agent.get("/").json() == {
        "service": "llm-agent",
        "version": "0.1.0",
        "provider": "openai",
        "default_model": "gpt-4o-mini",
    }


def test_echo_provider_says_so_plainly(start_agent: StartAgent, upstream: FakeOpenAI) -> None:
    agent = start_agent(llm_provider="echo")
    assert agent.get("/").json()["provider"] == "echo"
    health = agent.get("/health").json()
    assert (health["status"], health["provider"]) == ("ok", "echo")
    assert "echo" in health["checks"]["provider"]["note"]
    answer = agent.post("/generate/", json=USER_HI).json()
    assert (answer["content"], answer["provider"]) == ("Echo: hi", "echo")
    assert upstream.chat_requests == []


def test_auto_provider_follows_the_api_key(start_agent: StartAgent) -> None:
    assert start_agent(llm_provider="auto").get("/").json()["provider"] == "openai"
    keyless = start_agent(llm_provider="auto", openai_api_key=None)
    assert keyless.get("/").json()["provider"] == "echo"


def test_models_lists_the_allowed_models(start_agent: StartAgent) -> None:
    agent = start_agent(allowed_models="m1,m2", default_model="m2")
    assert agent.get("/models").json() == {"default": "m2", "models": ["m1", "m2"]}


def test_docs_only_in_debug(start_agent: StartAgent) -> None:
    assert start_agent().get("/openapi.json").status_code == 404
    assert start_agent(debug=True).get("/openapi.json").status_code == 200


@pytest.mark.parametrize("incoming", [None, "", "has spaces", "x" * 200])
def test_a_missing_or_unusable_request_id_is_replaced(
    agent: httpx.Client, incoming: str | None
) -> None:
    headers = {} if incoming is None else {"X-Request-ID": incoming}
    response = agent.get("/", headers=headers)
    request_id = response.headers["x-request-id"]
    assert request_id and request_id != incoming and " " not in request_id


def test_the_request_id_is_kept_on_errors(agent: httpx.Client) -> None:
    response = agent.post("/generate/", json={}, headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    assert response.json()["error"]["request_id"] == "abc-123"


class TestBearerToken:
    @pytest.fixture
    def agent(self, start_agent: StartAgent) -> httpx.Client:
        return start_agent(llm_agent_token="s3cret")

    @pytest.mark.parametrize("header", [None, "Bearer wrong", "s3cret", "Basic s3cret"])
    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("POST", "/generate/"),
            ("POST", "/generate/stream"),
            ("GET", "/models"),
        ],
    )
    def test_protected_routes_refuse_without_the_token(
        self,
        agent: httpx.Client,
        upstream: FakeOpenAI,
        method: str,
        path: str,
        header: str | None,
    ) -> None:
        headers = {} if header is None else {"Authorization": header}
        response = agent.request(method, path, json=USER_HI, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"
        assert upstream.chat_requests == []

    def test_the_token_opens_them(self, agent: httpx.Client) -> None:
        auth = {"Authorization": "Bearer s3cret"}
        assert agent.post("/generate/", json=USER_HI, headers=auth).status_code == 200
        assert agent.get("/models", headers=auth).status_code == 200

    @pytest.mark.parametrize("path", ["/", "/health", "/metrics"])
    def test_public_routes_stay_open(self, agent: httpx.Client, path: str) -> None:
        assert agent.get(path).status_code == 200


def test_metrics_cover_requests_latency_tokens_and_errors(
    agent: httpx.Client, upstream: FakeOpenAI
) -> None:
    upstream.script(
        {"usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}},
        {"chunks": ["a", "b"]},
    )
    agent.post("/generate/", json=USER_HI)
    agent.post("/generate/stream", json=USER_HI)
    agent.post("/generate/", json={"messages": []})
    response = agent.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert (
        'http_request_duration_seconds_count{method="POST",route="/generate/",status="200"} 1.0'
    ) in text
    assert (
        'http_request_duration_seconds_count{method="POST",route="/generate/",status="422"} 1.0'
    ) in text
    assert (
        'llm_upstream_duration_seconds_count{model="gpt-4o-mini",outcome="ok",'
        'provider="openai"} 2.0'
    ) in text
    assert (
        'llm_time_to_first_token_seconds_count{model="gpt-4o-mini",provider="openai"} 1.0' in text
    )
    assert 'llm_tokens_total{kind="prompt",model="gpt-4o-mini",provider="openai"}' in text
    assert 'llm_errors_total{code="invalid_request"} 1.0' in text
    assert "llm_active_streams 0.0" in text


def test_an_unexpected_failure_is_a_500_envelope_without_a_trace(upstream: FakeOpenAI) -> None:
    app = create_app(agent_settings(upstream.url))

    @app.get("/explode")
    async def explode() -> None:
        raise RuntimeError("secret internals")

    with serve_in_thread(app) as url, httpx.Client(base_url=url) as client:
        response = client.get("/explode", headers={"X-Request-ID": "boom-1"})
    assert response.status_code == 500
    assert response.json() == {
        "error": {
            "code": "internal_error",
            "message": "an unexpected error occurred; see the service logs",
            "request_id": "boom-1",
        }
    }
    assert "secret internals" not in response.text
