"""HTTP-level input on every route that takes a body: who is asking comes first, then
the media type (415), then the body's encoding and JSON syntax (422), in the envelope."""

from __future__ import annotations

import time
from typing import Any

import httpx
import jwt
import pytest

from main_backend.app import create_app
from stubichat_common.errors import ErrorEnvelope
from tests.integration.chat.conftest import StartBackend, backend_settings
from tests.support.databases import event_count

SECRET = "s" * 40
ADMIN_TOKEN = "admin-secret-token"
VALID = b'{"messages": [{"role": "user", "content": "hi"}]}'
JSON = {"content-type": "application/json"}

# (body, headers, status, code, words the message must hold)
BAD_BODIES = {
    "not utf-8": (
        b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}',
        JSON,
        422,
        "invalid_request",
        ["UTF-8", "byte 43"],
    ),
    "nested 1000 deep": (
        b'{"metadata": ' + b"[" * 1000 + b"]" * 1000 + b"}",
        JSON,
        422,
        "invalid_request",
        ["nested too deeply"],
    ),
    "nested objects 5000 deep": (
        b'{"a": ' * 5000 + b"1" + b"}" * 5000,
        JSON,
        422,
        "invalid_request",
        ["nested too deeply"],
    ),
    "malformed": (
        b'{"messages": [',
        JSON,
        422,
        "invalid_request",
        ["not valid JSON", "line 1 column 15", "character 14"],
    ),
    "form content type": (
        VALID,
        {"content-type": "application/x-www-form-urlencoded"},
        415,
        "unsupported_media_type",
        ["Content-Type", "application/x-www-form-urlencoded"],
    ),
    "text/plain": (
        VALID,
        {"content-type": "text/plain"},
        415,
        "unsupported_media_type",
        ["Content-Type", "'text/plain'"],
    ),
    "no content type": (VALID, {}, 415, "unsupported_media_type", ["Content-Type", "missing"]),
}


def user_token(sub: str = "alice") -> str:
    return jwt.encode({"sub": sub, "exp": time.time() + 300}, SECRET, algorithm="HS256")


def body_routes(database_url: str, agent_url: str) -> list[tuple[str, str]]:
    """Every (method, path) whose operation takes a request body, from the OpenAPI schema."""
    schema = create_app(backend_settings(database_url, agent_url)).openapi()
    routes = sorted(
        (method.upper(), path.replace("{thread_id}", "some-thread"))
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        if "requestBody" in operation
    )
    assert len(routes) >= 6, routes  # chat, stream, create, patch, fork, admin replay
    return routes


def send(
    client: httpx.Client,
    method: str,
    path: str,
    body: bytes,
    headers: dict[str, str],
    token: str | None,
) -> httpx.Response:
    if token is not None:
        headers = {**headers, "Authorization": f"Bearer {token}"}
    return client.request(method, path, content=body, headers=headers)


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert (response.status_code, response.headers["content-type"]) == (
        status,
        "application/json",
    ), response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code, error
    assert error["request_id"] == response.headers["x-request-id"]
    return error


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_a_bad_body_is_named_clearly_and_writes_nothing(
    start_backend: StartBackend, database_url: str, agent_url: str, case: str
) -> None:
    backend = start_backend()  # AUTH_MODE=none: the body's problem is the answer
    body, headers, status, code, words = BAD_BODIES[case]
    for method, path in body_routes(database_url, agent_url):
        if path.startswith("/admin"):
            continue
        error = assert_error(send(backend, method, path, body, headers, None), status, code)
        for word in words:
            assert word in error["message"], (path, error)
        if status == 422:
            assert error["details"] == [{"field": "body", "message": error["message"]}]
    assert event_count(database_url) == 0


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_who_is_asking_comes_before_the_body(
    start_backend: StartBackend, database_url: str, agent_url: str, case: str
) -> None:
    backend = start_backend(auth_mode="jwt", secret_key=SECRET, admin_token=ADMIN_TOKEN)
    body, headers, status, code, _ = BAD_BODIES[case]
    for method, path in body_routes(database_url, agent_url):
        right = ADMIN_TOKEN if path.startswith("/admin") else user_token()
        wrong = user_token() if path.startswith("/admin") else "not.a.jwt"
        for token in (None, wrong):
            response = send(backend, method, path, body, headers, token)
            assert_error(response, 401, "unauthorized")
            assert response.headers["www-authenticate"] == "Bearer"
        assert_error(send(backend, method, path, body, headers, right), status, code)
    assert event_count(database_url) == 0


def test_a_disabled_admin_api_says_so_before_the_body(
    start_backend: StartBackend, database_url: str
) -> None:
    backend = start_backend()
    for body, headers, _, _, _ in BAD_BODIES.values():
        response = send(backend, "POST", "/admin/threads/t/replay", body, headers, None)
        assert_error(response, 403, "admin_disabled")


def test_json_media_types_with_parameters_are_json(backend: httpx.Client) -> None:
    for content_type in (
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/merge-patch+json",
    ):
        response = backend.post(
            "/threads", content=b'{"title": "t"}', headers={"content-type": content_type}
        )
        assert response.status_code == 201, (content_type, response.text)


def test_every_route_refuses_a_stranger_as_its_schema_documents(
    start_backend: StartBackend, database_url: str, agent_url: str
) -> None:
    backend = start_backend(auth_mode="jwt", secret_key=SECRET, admin_token=ADMIN_TOKEN)
    schema = create_app(backend_settings(database_url, agent_url)).openapi()
    refused = 0
    for path, operations in schema["paths"].items():
        if path in {"/", "/health", "/metrics"}:
            continue
        url = path.replace("{thread_id}", "some-thread")
        for method, operation in operations.items():
            response = backend.request(method.upper(), url, content=b"\xff", headers=JSON)
            assert_error(response, 401, "unauthorized")
            assert "401" in operation["responses"], (method, path)
            ErrorEnvelope.model_validate(response.json())
            refused += 1
    assert refused >= 17  # every thread, chat and admin operation
    assert event_count(database_url) == 0


def test_a_wrong_method_names_every_method_of_the_path(backend: httpx.Client) -> None:
    for path, allowed in (
        ("/threads", "GET, POST"),
        ("/threads/some-thread", "DELETE, GET, PATCH"),
        ("/chat/", "POST"),
    ):
        response = backend.request("OPTIONS", path)
        assert_error(response, 405, "method_not_allowed")
        assert response.headers["allow"] == allowed
