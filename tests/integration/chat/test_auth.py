"""JWT users and ownership: another user's thread (and run) is a 404 on every route."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import jwt
import pytest
from pydantic import ValidationError

from main_backend.app import create_app
from main_backend.settings import Settings
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.chat.conftest import StartBackend, ask, backend_settings
from tests.support.databases import event_count, query

SECRET = "s" * 40


def token(
    sub: str | None = "alice", *, key: str = SECRET, expires_in: float = 300, **claims: Any
) -> str:
    payload = {
        **({"sub": sub} if sub is not None else {}),
        "exp": time.time() + expires_in,
        **claims,
    }
    return jwt.encode(payload, key, algorithm="HS256")


def auth(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user)}"}


@pytest.fixture
def backend(start_backend: StartBackend) -> httpx.Client:
    return start_backend(auth_mode="jwt", secret_key=SECRET)


def thread_routes(database_url: str, agent_url: str) -> list[tuple[str, str]]:
    """Every (method, path) of the API that names a thread, from the OpenAPI schema."""
    schema = create_app(backend_settings(database_url, agent_url, debug=True)).openapi()
    return sorted(
        (method.upper(), path)
        for path, operations in schema["paths"].items()
        if "{thread_id}" in path and not path.startswith("/admin")
        for method in operations
    )


def test_every_thread_route_hides_other_users_threads(
    backend: httpx.Client, upstream: FakeOpenAI, database_url: str, agent_url: str
) -> None:
    answered = backend.post("/chat/", json=ask("mine"), headers=auth("alice")).json()
    alices, alices_run = answered["thread_id"], answered["run_id"]
    routes = thread_routes(database_url, agent_url)
    assert len(routes) >= 6, routes  # get, patch, delete, messages, cancel, fork, …
    before = event_count(database_url)
    bodies: dict[str, dict[str, str]] = {"PATCH": {"title": "stolen"}, "POST": {}}
    # Routes whose body must name something, so only the thread can be what is refused.
    lg_run = {"assistant_id": "chat", "input": {"messages": [{"type": "human", "content": "x"}]}}
    valid: dict[str, dict[str, Any]] = {
        "/threads/{thread_id}/checkout": {"message_id": answered["message"]["id"]},
        "/threads/{thread_id}/messages/{message_id}/edit": {"content": "stolen"},
        "/langgraph/threads/{thread_id}": {"metadata": {"stolen": True}},
        "/langgraph/threads/{thread_id}/runs": lg_run,
        "/langgraph/threads/{thread_id}/runs/stream": lg_run,
        "/langgraph/threads/{thread_id}/runs/wait": lg_run,
        "/langgraph/threads/{thread_id}/state/checkpoint": {
            "checkpoint": {"checkpoint_id": answered["message"]["id"]}
        },
    }
    for method, path in routes:
        body = valid.get(path, bodies.get(method))
        # A route naming one of the thread's runs (or messages) does not name the
        # thread either.
        path = path.replace("{run_id}", alices_run)
        path = path.replace("{message_id}", answered["message"]["parent_id"])
        path = path.replace("{checkpoint_id}", answered["message"]["id"])
        url = path.replace("{thread_id}", alices)
        response = backend.request(method, url, json=body, headers=auth("bob"))
        assert response.status_code == 404, (method, path, response.text)
        expected = "run_not_found" if alices_run in path else "thread_not_found"
        assert response.json()["error"]["code"] == expected
        missing = backend.request(
            method, path.replace("{thread_id}", "no-such-thread"), json=body, headers=auth("bob")
        )
        assert missing.json() == {
            **response.json(),
            "error": {
                **response.json()["error"],
                "message": missing.json()["error"]["message"],
                "request_id": missing.json()["error"]["request_id"],
            },
            # The LangGraph routes' `detail` is the message.
            **({"detail": missing.json()["detail"]} if "detail" in response.json() else {}),
        }
    for path in ("/chat/", "/chat/stream"):
        response = backend.post(path, json=ask("hi", thread_id=alices), headers=auth("bob"))
        assert (response.status_code, response.json()["error"]["code"]) == (404, "thread_not_found")
    assert event_count(database_url) == before
    assert backend.get(f"/threads/{alices}", headers=auth("alice")).status_code == 200


def test_lists_and_idempotency_keys_are_per_user(
    backend: httpx.Client, upstream: FakeOpenAI
) -> None:
    key = {"Idempotency-Key": "same-key"}
    a = backend.post("/chat/", json=ask("from alice"), headers={**auth("alice"), **key})
    b = backend.post("/chat/", json=ask("from bob"), headers={**auth("bob"), **key})
    assert (a.status_code, b.status_code) == (200, 200)
    assert a.json()["thread_id"] != b.json()["thread_id"]
    listed = backend.get("/threads", headers=auth("bob")).json()["threads"]
    assert [t["id"] for t in listed] == [b.json()["thread_id"]]


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer",
        "Basic YWxpY2U6cHc=",
        f"Bearer {token(expires_in=-120)}",
        f"Bearer {token(key='another-secret-of-sufficient-length!!')}",
        f"Bearer {token(sub=None)}",
        f"Bearer {token(sub='')}",
        # A subject that could never be stored as an owner (Postgres refuses NUL in text).
        "Bearer " + token(sub="al\x00ice"),
        "Bearer " + token(sub="al\ud800ice"),
        "Bearer not.a.jwt",
        "Bearer " + jwt.encode({"sub": "alice", "exp": time.time() + 300}, None, algorithm="none"),
        # PyJWT coerces numeric strings; a NumericDate is a JSON number.
        f"Bearer {token(exp=str(int(time.time() + 300)))}",
        f"Bearer {token(nbf=str(int(time.time() - 300)))}",
        f"Bearer {token(iat=str(int(time.time())))}",
        f"Bearer {token(iat=True)}",
    ],
)
def test_missing_expired_and_forged_tokens_are_401(
    backend: httpx.Client, database_url: str, header: str | None
) -> None:
    headers = {} if header is None else {"Authorization": header}
    for method, path, body in (
        ("GET", "/threads", None),
        ("POST", "/chat/", ask("hi")),
        ("POST", "/threads", {}),
    ):
        response = backend.request(method, path, json=body, headers=headers)
        assert response.status_code == 401, (path, header)
        assert response.json()["error"]["code"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"
    assert event_count(database_url) == 0


def test_a_small_clock_skew_is_tolerated(backend: httpx.Client) -> None:
    skewed = {"Authorization": f"Bearer {token(expires_in=-5)}"}
    assert backend.get("/threads", headers=skewed).status_code == 200


def test_audience_and_issuer_are_checked_when_configured(start_backend: StartBackend) -> None:
    backend = start_backend(
        auth_mode="jwt",
        secret_key=SECRET,
        jwt_audience="stubichat",
        jwt_issuer="https://auth.example.com",
    )
    good = token(aud="stubichat", iss="https://auth.example.com")
    assert backend.get("/threads", headers={"Authorization": f"Bearer {good}"}).status_code == 200
    for bad in (
        token(aud="other", iss="https://auth.example.com"),
        token(aud="stubichat", iss="https://evil.example.com"),
        token(),
    ):
        response = backend.get("/threads", headers={"Authorization": f"Bearer {bad}"})
        assert response.status_code == 401


def test_jwt_mode_needs_a_strong_secret() -> None:
    with pytest.raises(ValidationError, match="SECRET_KEY"):
        Settings(_env_file=None, auth_mode="jwt", secret_key="short")
    with pytest.raises(ValidationError, match="SECRET_KEY"):
        Settings(_env_file=None, auth_mode="jwt")


def test_a_user_token_never_opens_the_admin_api(start_backend: StartBackend) -> None:
    backend = start_backend(auth_mode="jwt", secret_key=SECRET, admin_token="admin-secret")
    response = backend.get("/admin/threads", headers=auth("alice"))
    assert (response.status_code, response.json()["error"]["code"]) == (401, "unauthorized")


class TestFork:
    def test_a_fork_holds_the_history_up_to_a_version(
        self, backend: httpx.Client, upstream: FakeOpenAI, database_url: str
    ) -> None:
        alice = auth("alice")
        first = backend.post(
            "/chat/", json=ask("one", system_prompt="Be kind."), headers=alice
        ).json()
        thread_id = first["thread_id"]
        backend.patch(f"/threads/{thread_id}", json={"title": "Original"}, headers=alice)
        backend.post("/chat/", json=ask("two", thread_id=thread_id), headers=alice)

        fork = backend.post(
            f"/threads/{thread_id}/fork", json={"at_version": first["version"]}, headers=alice
        )
        assert fork.status_code == 201, fork.text
        forked = fork.json()
        assert forked["id"] != thread_id and forked["message_count"] == 2
        assert forked["title"] is None  # the title was set after the fork point
        messages = backend.get(f"/threads/{forked['id']}/messages", headers=alice).json()
        assert [m["content"] for m in messages["messages"]] == ["one", "You said: one"]
        assert event_count(database_url, forked["id"]) == 3
        [(data,)] = query(
            database_url,
            "SELECT data FROM events WHERE thread_id = :t AND version = 1",
            t=forked["id"],
        )
        data = data if isinstance(data, dict) else json.loads(str(data))
        assert data["forked_from"] == {"thread_id": thread_id, "version": first["version"]}
        assert data["owner"] == "alice"

        # The fork is a thread like any other: its history reaches the next prompt.
        backend.post("/chat/", json=ask("three", thread_id=forked["id"]), headers=alice)
        assert upstream.chat_requests[-1].body["messages"] == [
            {"role": "system", "content": "Be kind."},
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": "You said: one"},
            {"role": "user", "content": "three"},
        ]
        whole = backend.post(f"/threads/{thread_id}/fork", headers=alice).json()
        assert (whole["message_count"], whole["title"]) == (4, "Original")

    @pytest.mark.parametrize("at_version", [0, 99, "2"])
    def test_a_bad_fork_point_is_422(
        self, backend: httpx.Client, database_url: str, at_version: object
    ) -> None:
        alice = auth("alice")
        thread_id = backend.post("/threads", json={}, headers=alice).json()["id"]
        before = event_count(database_url)
        response = backend.post(
            f"/threads/{thread_id}/fork", json={"at_version": at_version}, headers=alice
        )
        assert (response.status_code, response.json()["error"]["code"]) == (422, "invalid_request")
        assert event_count(database_url) == before
