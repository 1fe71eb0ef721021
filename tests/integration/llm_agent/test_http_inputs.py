"""HTTP-level input of the agent: the token comes before the body, the body's media
type, encoding and JSON are named clearly, and every string that would be forwarded
upstream is checked alike (no NUL, no lone surrogate) before anything is sent."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from llm_agent.app import create_app
from stubichat_common.errors import ErrorEnvelope
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.llm_agent.conftest import StartAgent, agent_settings

TOKEN = "agent-s3cret"
PATHS = ["/generate/", "/generate/stream"]
JSON = {"content-type": "application/json"}
VALID = b'{"messages": [{"role": "user", "content": "hi"}]}'
HI = '[{"role": "user", "content": "hi"}]'

BAD_BODIES = {
    "not utf-8": (
        b'{"messages": [{"role": "user", "content": "\xc3\x28"}]}',
        JSON,
        422,
        "invalid_request",
        "not valid UTF-8",
    ),
    "nested 1000 deep": (
        b'{"stop": ' + b"[" * 1000 + b"]" * 1000 + b"}",
        JSON,
        422,
        "invalid_request",
        "nested too deeply",
    ),
    "malformed": (b'{"messages": ]', JSON, 422, "invalid_request", "line 1 column 14"),
    "form content type": (
        VALID,
        {"content-type": "application/x-www-form-urlencoded"},
        415,
        "unsupported_media_type",
        "Content-Type",
    ),
    "text/plain": (
        VALID,
        {"content-type": "text/plain"},
        415,
        "unsupported_media_type",
        "'text/plain'",
    ),
    "no content type": (VALID, {}, 415, "unsupported_media_type", "Content-Type"),
}


def asking_hi(fields: str) -> str:
    return '{"messages": ' + HI + ", " + fields + "}"


# Raw JSON, so that lone surrogates can be written as the escapes a client would send.
BAD_STRINGS = [
    (asking_hi('"user": "a\\u0000b"'), "user"),
    (asking_hi('"user": "\\ud800"'), "user"),
    (asking_hi('"stop": "end\\u0000"'), "stop"),
    (asking_hi('"stop": ["ok", "\\u0000"]'), "stop"),
    (asking_hi('"stop": "\\udfff"'), "stop"),
    (asking_hi('"stop": ["ok", "x\\ud83d"]'), "stop"),
    (asking_hi('"model": "gpt\\u0000"'), "model"),
    (asking_hi('"model": "gpt-\\udc00"'), "model"),
    ('{"messages": [{"role": "user", "content": "\\ud800 lone"}]}', "messages.0.content"),
    (
        '{"messages": [{"role": "user", "content": "ok"}, '
        '{"role": "assistant", "content": "\\ude00"}]}',
        "messages.1.content",
    ),
]


@pytest.fixture
def nothing_reaches_the_upstream(upstream: FakeOpenAI) -> Iterator[None]:
    yield
    assert upstream.chat_requests == []


@pytest.mark.usefixtures("nothing_reaches_the_upstream")
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(("raw", "field"), BAD_STRINGS)
def test_every_forwarded_string_is_checked(
    start_agent: StartAgent, path: str, raw: str, field: str
) -> None:
    agent = start_agent(allowed_models="*")
    response = agent.post(path, content=raw.encode(), headers=JSON)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert field in [d["field"] for d in error["details"]], error
    assert field in error["message"]


@pytest.mark.parametrize("path", PATHS)
def test_a_surrogate_pair_is_a_character_and_is_forwarded(
    start_agent: StartAgent, upstream: FakeOpenAI, path: str
) -> None:
    agent = start_agent()
    raw = '{"messages": [{"role": "user", "content": "smile \\ud83d\\ude00"}], "user": "\\u00e9"}'
    response = agent.post(path, content=raw.encode(), headers=JSON)
    assert response.status_code == 200, response.text
    [sent] = upstream.chat_requests
    assert sent.body["messages"][0]["content"] == "smile \U0001f600"
    assert sent.body["user"] == "\u00e9"


@pytest.mark.usefixtures("nothing_reaches_the_upstream")
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_a_bad_body_is_named_clearly(start_agent: StartAgent, path: str, case: str) -> None:
    agent = start_agent()
    body, headers, status, code, words = BAD_BODIES[case]
    response = agent.post(path, content=body, headers=headers)
    assert (response.status_code, response.headers["content-type"]) == (
        status,
        "application/json",
    ), response.text
    error = response.json()["error"]
    assert (error["code"], error["request_id"]) == (code, response.headers["x-request-id"])
    assert words in error["message"]


@pytest.mark.usefixtures("nothing_reaches_the_upstream")
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_the_token_comes_before_the_body(start_agent: StartAgent, path: str, case: str) -> None:
    agent = start_agent(llm_agent_token=TOKEN)
    body, headers, status, code, _ = BAD_BODIES[case]
    for auth in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        response = agent.post(path, content=body, headers={**headers, **auth})
        assert response.status_code == 401, (auth, response.text)
        assert response.json()["error"]["code"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"
    right = agent.post(path, content=body, headers={**headers, "Authorization": f"Bearer {TOKEN}"})
    assert (right.status_code, right.json()["error"]["code"]) == (status, code)


def test_every_route_refuses_a_stranger_as_its_schema_documents(start_agent: StartAgent) -> None:
    agent = start_agent(llm_agent_token=TOKEN)
    schema = create_app(agent_settings("http://127.0.0.1:9/v1")).openapi()
    refused = 0
    for path, operations in schema["paths"].items():
        if path in {"/", "/health", "/metrics"}:
            continue
        for method, operation in operations.items():
            response = agent.request(method.upper(), path, content=b"\xff", headers=JSON)
            assert response.status_code == 401, (method, path, response.text)
            assert "401" in operation["responses"], (method, path)
            ErrorEnvelope.model_validate(response.json())
            refused += 1
    assert refused == 3  # /models, /generate/, /generate/stream
