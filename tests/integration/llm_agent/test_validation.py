"""Bad input is a clear 4xx in the envelope, and nothing reaches the upstream."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fakes.openai_server import FakeOpenAI
from tests.integration.llm_agent.conftest import USER_HI, StartAgent

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def agent(start_agent: StartAgent) -> httpx.Client:
    return start_agent(
        max_tokens=1000, max_messages=5, max_content_chars=100, max_request_bytes=4096
    )


@pytest.fixture(autouse=True)
def nothing_reaches_the_upstream(upstream: FakeOpenAI) -> Iterator[None]:
    yield
    assert upstream.chat_requests == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"messages": HI, "model": "gpt-unknown"}, "model"),
        ({"messages": HI, "temperature": 2.5}, "temperature"),
        ({"messages": HI, "temperature": -1}, "temperature"),
        ({"messages": HI, "temperature": "hot"}, "temperature"),
        ({"messages": HI, "max_tokens": 1001}, "max_tokens"),
        ({"messages": HI, "max_tokens": 0}, "max_tokens"),
        ({"messages": HI, "top_p": 2}, "top_p"),
        ({"messages": HI, "stop": ["1", "2", "3", "4", "5"]}, "stop"),
        ({"messages": HI, "surprise": True}, "surprise"),
        ({"messages": []}, "messages"),
        ({"messages": "hi"}, "messages"),
        ({}, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
        ({"messages": [{"role": "user", "content": ""}]}, "messages.0.content"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
        ({"messages": [{"role": "user", "content": "nul\u0000byte"}]}, "messages.0.content"),
        ({"messages": [{"role": "user", "content": "x" * 101}]}, "messages.0.content"),
        ({"messages": HI * 6}, "messages"),
    ],
)
@pytest.mark.parametrize("path", ["/generate/", "/generate/stream"])
def test_invalid_requests_name_the_field(
    agent: httpx.Client, path: str, body: dict[str, Any], field: str
) -> None:
    response = agent.post(path, json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert field in [d["field"] for d in error["details"]]
    assert field in error["message"]
    assert error["request_id"] == response.headers["x-request-id"]


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b'"text"', b""])
def test_malformed_bodies_are_422(agent: httpx.Client, content: bytes) -> None:
    response = agent.post(
        "/generate/", content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"


def test_an_oversized_body_is_413(agent: httpx.Client) -> None:
    body = {"messages": [{"role": "user", "content": "x" * 5000}]}
    response = agent.post("/generate/", json=body)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_an_oversized_chunked_body_is_413(agent: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}]}'

    response = agent.post(
        "/generate/", content=chunks(), headers={"content-type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_unknown_paths_and_methods_use_the_envelope(agent: httpx.Client) -> None:
    missing = agent.get("/nowhere")
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")
    wrong_method = agent.get("/generate/stream")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"


def test_a_valid_request_still_passes(agent: httpx.Client, upstream: FakeOpenAI) -> None:
    # Guards the fixture above: the agent does call the upstream for good input.
    assert agent.post("/generate/", json=USER_HI).status_code == 200
    upstream.reset()
