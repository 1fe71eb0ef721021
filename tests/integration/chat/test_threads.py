"""The threads API: create, list with cursors, read, rename, delete, page messages."""

from __future__ import annotations

import httpx
import pytest

from tests.integration.chat.conftest import ask
from tests.support.databases import event_count


def create(backend: httpx.Client, **body: object) -> dict[str, object]:
    response = backend.post("/threads", json=body)
    assert response.status_code == 201, response.text
    thread: dict[str, object] = response.json()
    return thread


def test_create_get_patch_delete(backend: httpx.Client, database_url: str) -> None:
    thread = create(backend, title="Plans", metadata={"project": "x"})
    assert (
        thread["title"],
        thread["metadata"],
        thread["version"],
        thread["message_count"],
        thread["status"],
    ) == ("Plans", {"project": "x"}, 1, 0, "idle")
    assert backend.get(f"/threads/{thread['id']}").json() == thread

    renamed = backend.patch(f"/threads/{thread['id']}", json={"title": "Holiday plans"})
    assert renamed.status_code == 200
    assert (renamed.json()["title"], renamed.json()["version"]) == ("Holiday plans", 2)
    assert renamed.json()["metadata"] == {"project": "x"}
    retagged = backend.patch(f"/threads/{thread['id']}", json={"metadata": {"project": "y"}})
    assert retagged.json()["metadata"] == {"project": "y"}
    assert retagged.json()["title"] == "Holiday plans"

    assert backend.delete(f"/threads/{thread['id']}").status_code == 204
    for method, path in (
        ("GET", ""),
        ("PATCH", ""),
        ("DELETE", ""),
        ("GET", "/messages"),
        ("POST", "/cancel"),
    ):
        body = {"title": "x"} if method == "PATCH" else None
        gone = backend.request(method, f"/threads/{thread['id']}{path}", json=body)
        assert (gone.status_code, gone.json()["error"]["code"]) == (404, "thread_not_found")
    assert thread["id"] not in [t["id"] for t in backend.get("/threads").json()["threads"]]
    # the events stay: deletion is one more event
    assert event_count(database_url, str(thread["id"])) == 4


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("POST", {"title": 5}),
        ("POST", {"metadata": "x"}),
        ("POST", {"title": "a\u0000"}),
        ("POST", {"other": 1}),
        ("PATCH", {}),
        ("PATCH", {"metadata": None}),
        ("PATCH", {"title": "t" * 501}),
    ],
)
def test_bad_thread_bodies_are_422_and_write_nothing(
    backend: httpx.Client, database_url: str, method: str, body: dict[str, object]
) -> None:
    existing = create(backend)
    before = event_count(database_url)
    path = "/threads" if method == "POST" else f"/threads/{existing['id']}"
    response = backend.request(method, path, json=body)
    assert (response.status_code, response.json()["error"]["code"]) == (422, "invalid_request")
    assert event_count(database_url) == before


def test_listing_is_most_recent_first_with_cursors(backend: httpx.Client) -> None:
    ids = [create(backend, title=f"t{i}")["id"] for i in range(7)]
    # touching the oldest makes it the most recent
    backend.patch(f"/threads/{ids[0]}", json={"title": "touched"})
    expected = [ids[0], *reversed(ids[1:])]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = backend.get("/threads", params=params).json()
        seen += [t["id"] for t in page["threads"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == expected
    bad = backend.get("/threads", params={"cursor": "not-a-cursor"})
    assert (bad.status_code, bad.json()["error"]["code"]) == (422, "invalid_request")
    assert backend.get("/threads", params={"limit": 0}).status_code == 422


def test_messages_page_oldest_first(backend: httpx.Client) -> None:
    thread_id = backend.post("/chat/", json=ask("q1")).json()["thread_id"]
    for i in range(2, 5):
        backend.post("/chat/", json=ask(f"q{i}", thread_id=thread_id))
    pages, after = [], 0
    while True:
        page = backend.get(
            f"/threads/{thread_id}/messages", params={"after_version": after, "limit": 3}
        ).json()
        pages.append([m["content"] for m in page["messages"]])
        if page["next_cursor"] is None:
            break
        after = int(page["next_cursor"])
    flat = [c for page in pages for c in page]
    assert flat == [
        "q1",
        "You said: q1",
        "q2",
        "You said: q2",
        "q3",
        "You said: q3",
        "q4",
        "You said: q4",
    ]
    assert [len(p) for p in pages] == [3, 3, 2]


def test_unknown_routes_and_methods_use_the_envelope(backend: httpx.Client) -> None:
    assert backend.get("/nowhere").json()["error"]["code"] == "not_found"
    assert backend.put("/threads").json()["error"]["code"] == "method_not_allowed"


def test_service_routes(backend: httpx.Client) -> None:
    assert backend.get("/").json() == {
        "service": "main-backend",
        "version": "0.1.0",
        "status": "ok",
    }
    health = backend.get("/health")
    assert health.status_code == 200
    assert {k: v["status"] for k, v in health.json()["checks"].items()} == {
        "database": "ok",
        "migrations": "ok",
        "llm_agent": "ok",
    }
    backend.post("/chat/", json=ask("hi"))
    metrics = backend.get("/metrics").text
    assert (
        'http_request_duration_seconds_count{method="POST",route="/chat/",status="200"}' in metrics
    )
    assert 'stubichat_runs_total{status="completed"} 1.0' in metrics
    assert "stubichat_event_appends_total 5.0" in metrics  # created, question, started, answer, end
    assert 'stubichat_llm_duration_seconds_count{model="gpt-4o-mini"} 1.0' in metrics
    assert 'stubichat_llm_time_to_first_token_seconds_count{model="gpt-4o-mini"} 1.0' in metrics
    assert 'stubichat_llm_tokens_total{kind="completion",model="gpt-4o-mini"}' in metrics
    assert "stubichat_active_streams 0.0" in metrics
    stale = backend.post(
        "/chat/",
        json=ask(
            "again",
            thread_id=backend.get("/threads").json()["threads"][0]["id"],
            expected_version=1,
        ),
    )
    assert stale.status_code == 409
    assert "stubichat_version_conflicts_total" in backend.get("/metrics").text
    assert 'stubichat_errors_total{code="version_conflict"} 1.0' in backend.get("/metrics").text


def test_health_reports_a_schema_behind_the_migration_head(
    database_url: str, start_backend: object
) -> None:
    from alembic import command

    from tests.support.databases import alembic_config

    command.downgrade(alembic_config(database_url), "0002")
    backend = start_backend()  # type: ignore[operator]
    health = backend.get("/health")
    assert health.status_code == 503
    body = health.json()
    assert body["status"] == "degraded"
    assert body["checks"]["migrations"]["status"] == "failing"
    assert body["checks"]["migrations"]["current"] == "0002"
