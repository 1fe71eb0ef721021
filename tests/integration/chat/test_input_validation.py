"""Bad input is a 422 that writes nothing, on SQLite and Postgres: strings that are not
Unicode scalar values or hold NUL, metadata too deep or too large, whitespace-only
content, integers past the bound; an empty body counts as `{}`; a replay of a thread
with nothing to answer is refused before the LLM agent is called."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from main_backend.app import create_app
from main_backend.values import MAX_INTEGER, MAX_VERSION, METADATA_MAX_BYTES
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.chat.conftest import StartBackend, ask, backend_settings
from tests.support.databases import event_count

TOKEN = "admin-secret"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def backend(start_backend: StartBackend) -> httpx.Client:
    return start_backend(admin_token=TOKEN)


def nested(depth: int) -> str:
    """A JSON object `depth` levels deep, as text."""
    return '{"k":' * depth + "1" + "}" * depth


def raw(backend: httpx.Client, method: str, path: str, body: str) -> httpx.Response:
    """Send `body` as is: httpx cannot encode a lone surrogate itself."""
    return backend.request(method, path, content=body.encode(), headers=JSON)


def assert_refused(response: httpx.Response, field: str) -> None:
    assert response.status_code == 422, response.text[:300]
    error = response.json()["error"]
    assert error["code"] == "invalid_request", error
    assert field in [d["field"] for d in error.get("details", [])], error


def assert_readable(backend: httpx.Client, thread_id: str) -> None:
    for path in ("/threads", f"/threads/{thread_id}", f"/threads/{thread_id}/messages"):
        assert backend.get(path).status_code == 200, path
    for path in ("/admin/threads", f"/admin/threads/{thread_id}/events", "/admin/events"):
        assert backend.get(path, headers=ADMIN).status_code == 200, path


LONE = '"\\ud800"'
LOW = '"a\\udfffb"'
NUL = '"a\\u0000b"'
# (method, path, JSON body with {id} for a thread's id, field named in the 422)
BAD_BODIES = [
    ("POST", "/threads", '{"metadata":{"k":' + LONE + "}}", "metadata.k"),
    ("POST", "/threads", '{"metadata":{"a":[1,{"b":' + LOW + "}]}}", "metadata.a.1.b"),
    ("POST", "/threads", '{"metadata":{' + LONE + ":1}}", "metadata"),
    ("POST", "/threads", '{"metadata":{"k":' + NUL + "}}", "metadata.k"),
    ("POST", "/threads", '{"metadata":' + nested(260) + "}", "metadata"),
    ("POST", "/threads", '{"metadata":' + nested(33) + "}", "metadata"),
    ("POST", "/threads", '{"title":' + LONE + "}", "title"),
    ("POST", "/threads", json.dumps({"metadata": {"k": "x" * METADATA_MAX_BYTES}}), "metadata"),
    ("PATCH", "/threads/{id}", '{"metadata":{"k":' + LONE + "}}", "metadata.k"),
    ("PATCH", "/threads/{id}", '{"metadata":' + nested(260) + "}", "metadata"),
    ("PATCH", "/threads/{id}", '{"title":' + LOW + "}", "title"),
    (
        "POST",
        "/chat/",
        '{"messages":[{"role":"user","content":' + LONE + "}]}",
        "messages.0.content",
    ),
    (
        "POST",
        "/chat/",
        '{"messages":[{"role":"user","content":"hi"}],"metadata":' + nested(400) + "}",
        "metadata",
    ),
    (
        "POST",
        "/chat/",
        '{"messages":[{"role":"user","content":"hi"}],"metadata":' + nested(300) + "}",
        "metadata",
    ),
    (
        "POST",
        "/chat/",
        '{"messages":[{"role":"user","content":"hi"}],"metadata":{"x":' + LONE + "}}",
        "metadata.x",
    ),
    (
        "POST",
        "/chat/",
        '{"messages":[{"role":"user","content":"hi"}],"system_prompt":' + LONE + "}",
        "system_prompt",
    ),
    (
        "POST",
        "/chat/",
        '{"messages":[{"role":"user","content":"hi"}],"model":' + LONE + "}",
        "model",
    ),
    (
        "POST",
        "/chat/stream",
        '{"messages":[{"role":"user","content":' + LOW + "}]}",
        "messages.0.content",
    ),
    ("POST", "/chat/", '{"messages":[{"role":"user","content":" \\n\\t "}]}', "messages.0.content"),
    (
        "POST",
        "/chat/",
        '{"thread_id":"{id}","messages":[{"role":"user","content":"   "}]}',
        "messages.0.content",
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    BAD_BODIES,
    ids=[f"{m} {p} {f} {i}" for i, (m, p, _, f) in enumerate(BAD_BODIES)],
)
def test_bad_values_are_refused_before_anything_is_appended(
    backend: httpx.Client,
    database_url: str,
    upstream: FakeOpenAI,
    method: str,
    path: str,
    body: str,
    field: str,
) -> None:
    thread_id = backend.post("/threads", json={"title": "t"}).json()["id"]
    before = event_count(database_url)
    response = raw(
        backend, method, path.replace("{id}", thread_id), body.replace("{id}", thread_id)
    )
    assert_refused(response, field)
    assert event_count(database_url) == before
    assert upstream.chat_requests == []
    assert_readable(backend, thread_id)


def test_the_same_limits_hold_for_values_that_do_not_come_through_the_schemas(
    backend: httpx.Client, database_url: str
) -> None:
    """A fork copies what it reads; the domain refuses what the schemas would have."""
    from main_backend.errors import InvalidEvent
    from main_backend.events.types import THREAD_CREATED, NewEvent, check_new_events

    for data, metadata in (
        ({"owner": "u", "title": "\ud800", "metadata": {}, "forked_from": None}, {}),
        ({"owner": "u", "title": None, "metadata": {"k": "\udc00"}, "forked_from": None}, {}),
        (
            {"owner": "u", "title": None, "metadata": json.loads(nested(40)), "forked_from": None},
            {},
        ),
        ({"owner": "u", "title": None, "metadata": {}, "forked_from": None}, {"user": "\ud800"}),
        ({"owner": "\ud800", "title": None, "metadata": {}, "forked_from": None}, {}),
    ):
        with pytest.raises(InvalidEvent):
            check_new_events("t", [NewEvent(THREAD_CREATED, data, metadata)], 0)


def test_good_unicode_and_metadata_at_the_limits_are_kept(backend: httpx.Client) -> None:
    metadata = {"emoji": "\U0001f600 é 中", "deep": json.loads(nested(31))}
    created = backend.post("/threads", json={"title": "\U0001f600", "metadata": metadata})
    assert created.status_code == 201, created.text
    assert created.json()["metadata"] == metadata
    # A surrogate pair escaped in JSON is one valid character.
    paired = raw(backend, "POST", "/threads", '{"title":"\\ud83d\\ude00"}')
    assert paired.status_code == 201 and paired.json()["title"] == "\U0001f600"


def test_nul_in_a_path_or_query_string_is_refused_on_every_engine(
    backend: httpx.Client, database_url: str
) -> None:
    """Postgres cannot even compare text with NUL in it: refused before any query."""
    thread_id = backend.post("/threads", json={"title": "t"}).json()["id"]
    before = event_count(database_url)
    for method, path, params, field in (
        ("GET", "/threads/a%00b", {}, "path.thread_id"),
        ("PATCH", "/threads/a%00b", {}, "path.thread_id"),
        ("GET", "/threads", {"cursor": "a\x00"}, "query.cursor"),
        ("GET", "/admin/threads", {"owner": "a\x00"}, "query.owner"),
        ("GET", "/admin/threads/a%00b/events", {}, "path.thread_id"),
    ):
        response = backend.request(
            method,
            path,
            params=params,
            headers=ADMIN,
            json={"title": "x"} if method == "PATCH" else None,
        )
        assert_refused(response, field)
    assert event_count(database_url) == before
    assert_readable(backend, thread_id)


# -- integers ----------------------------------------------------------------------------


def integer_inputs(database_url: str, agent_url: str) -> list[tuple[str, str, str, str]]:
    """Every integer a request can carry: (method, path, "query" or "body", name)."""
    schema = create_app(
        backend_settings(database_url, agent_url, debug=True, admin_token=TOKEN)
    ).openapi()
    components = schema["components"]["schemas"]

    def is_integer(prop: dict[str, Any]) -> bool:
        return prop.get("type") == "integer" or any(
            p.get("type") == "integer" for p in prop.get("anyOf", [])
        )

    found = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                if is_integer(parameter["schema"]):
                    found.append((method.upper(), path, "query", parameter["name"]))
            content = operation.get("requestBody", {}).get("content", {})
            body_schema = content.get("application/json", {}).get("schema", {})
            refs = [body_schema, *body_schema.get("anyOf", [])]
            for ref in (r["$ref"] for r in refs if "$ref" in r):
                model = components[ref.rsplit("/", 1)[-1]]
                for name, prop in model.get("properties", {}).items():
                    if is_integer(prop):
                        found.append((method.upper(), path, "body", name))
    return sorted(found)


def test_every_integer_input_is_bounded(
    backend: httpx.Client, database_url: str, agent_url: str, upstream: FakeOpenAI
) -> None:
    inputs = integer_inputs(database_url, agent_url)
    names = {name for *_, name in inputs}
    assert {
        "after_version",
        "after_position",
        "from_version",
        "at_version",
        "expected_version",
        "max_tokens",
        "limit",
    } <= names, inputs
    thread_id = backend.post("/chat/", json=ask("hi")).json()["thread_id"]
    before = event_count(database_url)
    asked = len(upstream.chat_requests)
    for huge in (2**63, MAX_INTEGER + 1, 10**30):
        for method, path, where, name in inputs:
            url = path.replace("{thread_id}", thread_id)
            headers = ADMIN if path.startswith("/admin") else {}
            body: dict[str, Any] | None = None
            params: dict[str, Any] = {}
            if where == "query":
                params[name] = huge
                body = {} if method == "POST" else None
            else:
                body = {name: huge}
                if path.startswith("/chat"):
                    body = {**ask("hi"), **body}
            response = backend.request(method, url, params=params, json=body, headers=headers)
            assert_refused(response, name if where == "body" else f"query.{name}")
    # Versions are 32-bit columns: one past the bound is refused, the bound itself reaches
    # the database without overflowing it (Postgres: "integer out of range" was a 500).
    for method, path, where, name in inputs:
        if "version" not in name:
            continue
        url = path.replace("{thread_id}", thread_id)
        headers = ADMIN if path.startswith("/admin") else {}
        for value in (MAX_VERSION + 1, MAX_VERSION):
            params = {name: value} if where == "query" else {}
            body = ({} if method == "POST" else None) if where == "query" else {name: value}
            if body is not None and path.startswith("/chat"):
                body = {**ask("hi"), "thread_id": thread_id, **body}
            response = backend.request(method, url, params=params, json=body, headers=headers)
            if value > MAX_VERSION:
                assert_refused(response, name if where == "body" else f"query.{name}")
            else:
                assert response.status_code < 500, (method, url, name, response.text)
    assert event_count(database_url) == before
    assert len(upstream.chat_requests) == asked


# -- empty bodies ------------------------------------------------------------------------


def test_an_empty_body_is_an_empty_object_where_every_field_is_optional(
    backend: httpx.Client, upstream: FakeOpenAI
) -> None:
    created = backend.post("/threads")
    assert created.status_code == 201, created.text
    assert created.json()["metadata"] == {} and created.json()["title"] is None
    with_type = backend.post("/threads", headers=JSON)
    assert with_type.status_code == 201, with_type.text
    thread_id = backend.post("/chat/", json=ask("hi")).json()["thread_id"]
    forked = backend.post(f"/threads/{thread_id}/fork")
    assert forked.status_code == 201, forked.text
    rerun = backend.post(f"/admin/threads/{thread_id}/replay", headers=ADMIN)
    assert rerun.status_code == 200, rerun.text
    # The chat body's fields are optional too: an empty one says what is missing.
    assert_refused(backend.post("/chat/"), "messages")


# -- replay of nothing -------------------------------------------------------------------


def test_a_rerun_with_nothing_to_answer_is_refused_before_the_agent_is_called(
    backend: httpx.Client, database_url: str, upstream: FakeOpenAI
) -> None:
    thread_id = backend.post("/threads", json={"title": "empty"}).json()["id"]
    chatted = backend.post("/chat/", json=ask("hi")).json()["thread_id"]
    before = event_count(database_url)
    for url, body in (
        (f"/admin/threads/{thread_id}/replay", {}),
        (f"/admin/threads/{chatted}/replay", {"at_version": 1}),
    ):
        response = backend.post(url, json=body, headers=ADMIN)
        assert_refused(response, "at_version")
    assert len(upstream.chat_requests) == 1  # the chat turn's
    assert event_count(database_url) == before
    # Showing the replay (no LLM call) still works.
    assert backend.get(f"/admin/threads/{thread_id}/replay", headers=ADMIN).status_code == 200
