"""The admin API over real HTTP, on SQLite and Postgres: auth, listing, the log, replays,
the global feed under concurrent writers, and the read models' rebuild and verify."""

from __future__ import annotations

import base64
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import jwt
import pytest

from main_backend.app import create_app
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.chat.conftest import StartBackend, ask, backend_settings
from tests.support.databases import event_count, execute, query

TOKEN = "admin-secret"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def turn(backend: httpx.Client, content: str, **fields: Any) -> dict[str, Any]:
    response = backend.post("/chat/", json=ask(content, **fields))
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def admin_get(backend: httpx.Client, path: str, **params: Any) -> dict[str, Any]:
    response = backend.get(path, params=params, headers=ADMIN)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def all_events(backend: httpx.Client, thread_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = admin_get(
        backend, f"/admin/threads/{thread_id}/events", limit=1000
    )["events"]
    return events


def as_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


# -- auth -------------------------------------------------------------------------------


def admin_routes(database_url: str, agent_url: str) -> list[tuple[str, str]]:
    schema = create_app(backend_settings(database_url, agent_url, debug=True)).openapi()
    return sorted(
        (method.upper(), path)
        for path, operations in schema["paths"].items()
        if path.startswith("/admin")
        for method in operations
    )


def test_every_admin_route_needs_the_admin_token(
    start_backend: StartBackend, database_url: str, agent_url: str
) -> None:
    routes = admin_routes(database_url, agent_url)
    assert routes == [
        ("GET", "/admin/events"),
        ("GET", "/admin/projections/verify"),
        ("GET", "/admin/threads"),
        ("GET", "/admin/threads/{thread_id}/events"),
        ("GET", "/admin/threads/{thread_id}/replay"),
        ("POST", "/admin/projections/rebuild"),
        ("POST", "/admin/threads/{thread_id}/replay"),
    ]
    backend = start_backend(admin_token=TOKEN)
    thread_id = turn(backend, "hello")["thread_id"]
    basic = base64.b64encode(f"admin:{TOKEN}".encode()).decode()
    refused = [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {basic}"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": "Bearer"},
        {"Authorization": TOKEN},
        {"Authorization": f"Bearer {TOKEN}x"},
    ]
    before = event_count(database_url)

    def call(
        client: httpx.Client, method: str, path: str, headers: dict[str, str]
    ) -> httpx.Response:
        body: dict[str, object] | None = (
            {} if method == "POST" and path.endswith("/replay") else None
        )
        return client.request(
            method, path.replace("{thread_id}", thread_id), json=body, headers=headers
        )

    for method, path in routes:
        for headers in refused:
            response = call(backend, method, path, headers)
            assert (response.status_code, response.json()["error"]["code"]) == (
                401,
                "unauthorized",
            ), (method, path, headers)
            assert response.headers["www-authenticate"] == "Bearer"
        response = call(backend, method, path, ADMIN)
        assert response.status_code == 200, (method, path, response.text)

    disabled = start_backend()  # no ADMIN_TOKEN: the admin API is off
    for method, path in routes:
        for headers in ({}, ADMIN):
            response = call(disabled, method, path, headers)
            assert (response.status_code, response.json()["error"]["code"]) == (
                403,
                "admin_disabled",
            ), (method, path, headers)
    assert event_count(database_url) == before


# -- listing ----------------------------------------------------------------------------


def test_threads_of_every_user_most_recent_first(start_backend: StartBackend) -> None:
    secret = "s" * 40
    backend = start_backend(auth_mode="jwt", secret_key=secret, admin_token=TOKEN)

    def user(sub: str) -> dict[str, str]:
        signed = jwt.encode({"sub": sub, "exp": time.time() + 300}, secret, algorithm="HS256")
        return {"Authorization": f"Bearer {signed}"}

    created = []
    for i, owner in enumerate(["alice", "bob", "alice", "carol", "bob"]):
        response = backend.post("/threads", json={"title": f"t{i}"}, headers=user(owner))
        created.append((response.json()["id"], owner))
    # renaming the oldest makes it the most recently updated
    backend.patch(f"/threads/{created[0][0]}", json={"title": "touched"}, headers=user("alice"))
    expected = [created[0], *reversed(created[1:])]

    seen: list[tuple[str, str]] = []
    cursor = None
    while True:
        page = admin_get(
            backend, "/admin/threads", limit=2, **({"cursor": cursor} if cursor else {})
        )
        assert len(page["threads"]) <= 2
        seen += [(t["id"], t["owner"]) for t in page["threads"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == expected
    first = admin_get(backend, "/admin/threads")["threads"][0]
    assert set(first) == {
        "id",
        "title",
        "created_at",
        "updated_at",
        "version",
        "message_count",
        "status",
        "metadata",
        "head_id",
        "owner",
        "deleted",
    }
    assert (first["title"], first["version"], first["deleted"]) == ("touched", 2, False)
    bobs = admin_get(backend, "/admin/threads", owner="bob")["threads"]
    assert [t["id"] for t in bobs] == [created[4][0], created[1][0]]
    assert admin_get(backend, "/admin/threads", owner="nobody") == {
        "threads": [],
        "next_cursor": None,
    }


def test_a_deleted_thread_stays_visible_to_admins(
    start_backend: StartBackend, database_url: str
) -> None:
    backend = start_backend(admin_token=TOKEN)
    kept = turn(backend, "keep me")["thread_id"]
    gone = turn(backend, "delete me")
    thread_id = gone["thread_id"]
    assert backend.delete(f"/threads/{thread_id}").status_code == 204
    assert backend.get(f"/threads/{thread_id}").status_code == 404

    listed = admin_get(backend, "/admin/threads")["threads"]
    assert [t["id"] for t in listed] == [kept]
    with_deleted = admin_get(backend, "/admin/threads", include_deleted="true")["threads"]
    assert [t["id"] for t in with_deleted] == [thread_id, kept]
    assert (with_deleted[0]["deleted"], with_deleted[0]["owner"]) == (True, "local")
    assert (with_deleted[1]["deleted"], with_deleted[1]["owner"]) == (False, "local")
    assert [
        t["id"]
        for t in admin_get(backend, "/admin/threads", owner="local", include_deleted=True)[
            "threads"
        ]
    ] == [thread_id, kept]

    events = all_events(backend, thread_id)
    assert [e["type"] for e in events][-1] == "thread.deleted"
    assert [e["version"] for e in events] == list(range(1, gone["version"] + 2))
    replay = admin_get(backend, f"/admin/threads/{thread_id}/replay")
    assert replay["at_version"] == gone["version"] + 1
    assert [m["content"] for m in replay["messages"]] == ["delete me", "You said: delete me"]
    before = event_count(database_url)
    rerun = backend.post(
        f"/admin/threads/{thread_id}/replay", json={"at_version": 2}, headers=ADMIN
    )
    assert rerun.status_code == 200, rerun.text
    assert rerun.json()["message"]["content"] == "You said: delete me"
    assert event_count(database_url) == before


# -- the log ----------------------------------------------------------------------------


def test_a_threads_events_page_with_next_from_version(start_backend: StartBackend) -> None:
    backend = start_backend(admin_token=TOKEN)
    first = turn(backend, "one", temperature=0.4)
    thread_id = first["thread_id"]
    last = turn(backend, "two", thread_id=thread_id)
    whole = all_events(backend, thread_id)
    assert [e["version"] for e in whole] == list(range(1, last["version"] + 1))
    assert [e["type"] for e in whole[:5]] == [
        "thread.created",
        "message.added",
        "run.started",
        "message.added",
        "run.completed",
    ]
    started = whole[2]
    assert set(started) == {
        "position",
        "event_id",
        "thread_id",
        "version",
        "type",
        "data",
        "metadata",
        "recorded_at",
    }
    assert started["data"] == {
        "run_id": first["run_id"],
        "model": "gpt-4o-mini",
        "params": {"temperature": 0.4, "max_tokens": None},
        "prompt_version": 2,
        "parent_id": whole[1]["data"]["message_id"],
    }
    assert started["metadata"]["user"] == "local"

    pages: list[list[dict[str, Any]]] = []
    from_version: int | None = 1
    while from_version is not None:
        page = admin_get(
            backend, f"/admin/threads/{thread_id}/events", from_version=from_version, limit=4
        )
        pages.append(page["events"])
        from_version = page["next_from_version"]
    assert [len(p) for p in pages] == [4, 4, 1]
    assert [e for p in pages for e in p] == whole
    assert admin_get(backend, f"/admin/threads/{thread_id}/events", from_version=100) == {
        "events": [],
        "next_from_version": None,
    }
    exact = admin_get(backend, f"/admin/threads/{thread_id}/events", limit=len(whole))
    assert (len(exact["events"]), exact["next_from_version"]) == (len(whole), None)


def test_the_global_feed_sees_every_event_once_while_turns_are_written(
    start_backend: StartBackend, database_url: str
) -> None:
    backend = start_backend(admin_token=TOKEN)
    writers_done = threading.Event()

    def writer(name: str) -> None:
        with httpx.Client(base_url=backend.base_url, timeout=30) as client:
            thread_id = turn(client, f"{name} 0")["thread_id"]
            for i in range(1, 4):
                turn(client, f"{name} {i}", thread_id=thread_id)

    seen: list[dict[str, Any]] = []
    after, pages_while_writing = 0, 0
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(writer, name) for name in ("a", "b")]

        def when_written() -> None:
            for future in futures:
                future.result()
            writers_done.set()

        threading.Thread(target=when_written, daemon=True).start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            finished = writers_done.is_set()
            page = admin_get(backend, "/admin/events", after_position=after, limit=3)
            assert len(page["events"]) <= 3
            if page["events"]:
                assert page["next_after_position"] == page["events"][-1]["position"]
            else:
                assert page["next_after_position"] == after
            seen += page["events"]
            after = page["next_after_position"]
            pages_while_writing += bool(page["events"]) and not finished
            if not page["events"]:
                # On Postgres an event shows once the transactions begun before it ended
                # (the backend's own, e.g. a lease renewal): done when all were read.
                if finished and len(seen) >= event_count(database_url):
                    break
                time.sleep(0.01)
        for future in futures:
            future.result()  # a writer's failure fails the test

    assert pages_while_writing > 1, "the feed was never read while turns were written"
    ids = [e["event_id"] for e in seen]
    assert len(ids) == len(set(ids))
    # In feed order: by position on SQLite, by (transaction id, position) on Postgres.
    rows = query(database_url, "SELECT position, coalesce(xid, 0) FROM events")
    xids = {position: int(str(xid)) for position, xid in rows}
    keys = [(xids[e["position"]], e["position"]) for e in seen]
    assert keys == sorted(set(keys))
    stored = {row[0] for row in query(database_url, "SELECT event_id FROM events")}
    assert set(ids) == stored and len(ids) == 2 * 4 * 4 + 2
    for thread_id in {e["thread_id"] for e in seen}:
        versions = [e["version"] for e in seen if e["thread_id"] == thread_id]
        assert versions == list(range(1, len(versions) + 1))
    assert admin_get(backend, "/admin/events", after_position=after) == {
        "events": [],
        "next_after_position": after,
    }


# -- replay -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({}, id="plain"),
        pytest.param({"system_prompt": "Be brief. Sois bref ✨."}, id="system-prompt"),
        pytest.param(
            {"system_prompt": "Deployment default.", "max_context_tokens": 60}, id="trimmed"
        ),
    ],
)
def test_a_replay_shows_exactly_the_prompt_each_turn_sent(
    start_backend: StartBackend, upstream: FakeOpenAI, settings: dict[str, Any]
) -> None:
    backend = start_backend(admin_token=TOKEN, **settings)
    trimmed = "max_context_tokens" in settings
    own_prompt = {"system_prompt": "Réponds en français, s'il te plaît."} if trimmed else {}
    padding = " — grüße 🌍 " + "y" * 40
    first = turn(backend, "question 0" + padding, **own_prompt)
    thread_id = first["thread_id"]
    turn(backend, "question 1" + padding, thread_id=thread_id, temperature=0.2, max_tokens=50)
    last = turn(backend, "question 2" + padding, thread_id=thread_id, model="gpt-4o")

    started = [e for e in all_events(backend, thread_id) if e["type"] == "run.started"]
    assert len(started) == len(upstream.chat_requests) == 3
    for i, event in enumerate(started):
        version = event["data"]["prompt_version"]
        replay = admin_get(backend, f"/admin/threads/{thread_id}/replay", at_version=version)
        sent = upstream.chat_requests[i].body
        prompt = replay["prompt"]
        assert as_json(prompt["messages"]) == as_json(sent["messages"]), i
        assert prompt["model"] == sent["model"] == event["data"]["model"]
        assert prompt["params"]["temperature"] == sent["temperature"]
        assert prompt["params"] == event["data"]["params"]
        # the thread as of that version, folded from the log
        assert replay["at_version"] == replay["thread"]["version"] == version
        assert replay["thread"]["status"] == "idle" and replay["thread"]["id"] == thread_id
        assert replay["messages"][-1]["content"] == f"question {i}" + padding
        assert replay["thread"]["message_count"] == len(replay["messages"]) == 2 * i + 1
    assert [r.body["model"] for r in upstream.chat_requests] == [
        "gpt-4o-mini",
        "gpt-4o-mini",
        "gpt-4o",
    ]
    assert [r.body["temperature"] for r in upstream.chat_requests] == [0.7, 0.2, 0.7]
    assert upstream.chat_requests[1].body["max_tokens"] == 50
    last_sent = upstream.chat_requests[2].body["messages"]
    if trimmed:  # the window dropped the oldest messages, and the replay did the same
        assert last_sent[0] == {"role": "system", "content": own_prompt["system_prompt"]}
        assert 2 <= len(last_sent) < 6
    elif settings:
        assert last_sent[0] == {"role": "system", "content": settings["system_prompt"]}
        assert len(last_sent) == 6
    else:
        assert len(last_sent) == 5

    # At a version no run started on: what a new turn there would send.
    current = admin_get(backend, f"/admin/threads/{thread_id}/replay")
    assert current["at_version"] == current["thread"]["version"] == last["version"]
    assert current["thread"] == {**backend.get(f"/threads/{thread_id}").json(), "status": "idle"}
    # The replay marks messages a rollback took out of the history (none was here) and
    # those on the active path (all of them: one branch).
    assert [m.pop("rolled_back") for m in current["messages"]] == [False] * len(current["messages"])
    assert [m.pop("active") for m in current["messages"]] == [True] * len(current["messages"])
    assert current["messages"] == backend.get(f"/threads/{thread_id}/messages").json()["messages"]
    assert (current["prompt"]["model"], current["prompt"]["params"]) == (
        "gpt-4o-mini",
        {"temperature": 0.7, "max_tokens": None},
    )
    assert current["prompt"]["messages"][-1] == {
        "role": "assistant",
        "content": last["message"]["content"],
    }
    created = admin_get(backend, f"/admin/threads/{thread_id}/replay", at_version=1)
    assert created["messages"] == [] and created["thread"]["message_count"] == 0
    system = own_prompt.get("system_prompt") or settings.get("system_prompt")
    assert created["prompt"]["messages"] == (
        [{"role": "system", "content": system}] if system else []
    )


def test_a_replay_rerun_appends_nothing(
    start_backend: StartBackend, upstream: FakeOpenAI, database_url: str
) -> None:
    backend = start_backend(admin_token=TOKEN, system_prompt="Be brief.")
    first = turn(backend, "What is 2+2?", temperature=0.3, max_tokens=40)
    thread_id = first["thread_id"]
    turn(backend, "And 3+3?", thread_id=thread_id)
    before = (event_count(database_url), backend.get(f"/threads/{thread_id}").json())
    original = upstream.chat_requests[0].body

    upstream.script({"content": "Four, again."})
    response = backend.post(
        f"/admin/threads/{thread_id}/replay", json={"at_version": 2}, headers=ADMIN
    )
    assert response.status_code == 200, response.text
    rerun = response.json()
    assert set(rerun) == {"at_version", "prompt", "message", "usage", "model"}
    assert rerun["at_version"] == 2
    assert rerun["message"] == {"role": "assistant", "content": "Four, again."}
    assert rerun["model"] == "gpt-4o-mini"
    assert rerun["usage"]["total_tokens"] > 0
    assert rerun["prompt"] == {
        "model": "gpt-4o-mini",
        "params": {"temperature": 0.3, "max_tokens": 40},
        "messages": original["messages"],
    }
    sent = upstream.chat_requests[-1].body
    assert as_json(sent["messages"]) == as_json(original["messages"])
    assert (sent["model"], sent["temperature"], sent["max_tokens"]) == ("gpt-4o-mini", 0.3, 40)

    upstream.script({"content": "4"})
    other = backend.post(
        f"/admin/threads/{thread_id}/replay",
        headers=ADMIN,
        json={"at_version": 2, "model": "gpt-4o", "temperature": 1.5, "max_tokens": 7},
    ).json()
    sent = upstream.chat_requests[-1].body
    assert (sent["model"], sent["temperature"], sent["max_tokens"]) == ("gpt-4o", 1.5, 7)
    assert as_json(sent["messages"]) == as_json(original["messages"])
    assert (other["model"], other["message"]["content"]) == ("gpt-4o", "4")
    assert other["prompt"]["params"] == {"temperature": 1.5, "max_tokens": 7}

    latest = backend.post(f"/admin/threads/{thread_id}/replay", json={}, headers=ADMIN).json()
    assert latest["at_version"] == before[1]["version"]
    assert latest["prompt"]["messages"][-1]["role"] == "assistant"
    assert (event_count(database_url), backend.get(f"/threads/{thread_id}").json()) == before


def test_a_failing_rerun_is_an_llm_error_and_appends_nothing(
    start_backend: StartBackend, upstream: FakeOpenAI, database_url: str
) -> None:
    backend = start_backend(admin_token=TOKEN)
    thread_id = turn(backend, "hi")["thread_id"]
    before = event_count(database_url)
    upstream.script({"status": 500}, {"status": 500}, {"status": 500}, {"status": 500})
    response = backend.post(
        f"/admin/threads/{thread_id}/replay", json={"at_version": 2}, headers=ADMIN
    )
    assert response.status_code in (502, 503), response.text
    assert response.json()["error"]["code"] in ("llm_upstream_error", "llm_agent_unavailable")
    assert event_count(database_url) == before


# -- read models ------------------------------------------------------------------------


def test_rebuild_then_verify_and_a_tampered_read_model_is_reported_and_fixed(
    start_backend: StartBackend, database_url: str
) -> None:
    backend = start_backend(admin_token=TOKEN)
    thread_id = turn(backend, "one")["thread_id"]
    turn(backend, "two", thread_id=thread_id)
    backend.patch(f"/threads/{thread_id}", json={"title": "Numbers"})
    other = turn(backend, "another thread")["thread_id"]
    events = event_count(database_url)

    rebuilt = backend.post("/admin/projections/rebuild", headers=ADMIN)
    assert rebuilt.status_code == 200, rebuilt.text
    report = rebuilt.json()
    assert (report["events"], report["threads"], report["messages"]) == (events, 2, 6)
    assert report["duration_ms"] >= 0
    assert admin_get(backend, "/admin/projections/verify") == {"ok": True, "mismatches": []}

    assert (
        execute(
            database_url, "UPDATE threads SET title = 'tampered' WHERE thread_id = :t", t=thread_id
        )
        == 1
    )
    assert (
        execute(
            database_url,
            "UPDATE messages SET role = 'assistant' WHERE thread_id = :t AND version = 2",
            t=other,
        )
        == 1
    )
    verdict = admin_get(backend, "/admin/projections/verify")
    assert verdict["ok"] is False
    mismatches = sorted(verdict["mismatches"], key=lambda m: m["kind"])
    assert [
        (m["kind"], m["thread_id"], m["field"], m["expected"], m["actual"]) for m in mismatches
    ] == [
        ("message", other, "role", "user", "assistant"),
        ("thread", thread_id, "title", "Numbers", "tampered"),
    ]
    assert backend.get(f"/threads/{thread_id}").json()["title"] == "tampered"

    again = backend.post("/admin/projections/rebuild", headers=ADMIN).json()
    assert again["events"] == events
    assert admin_get(backend, "/admin/projections/verify") == {"ok": True, "mismatches": []}
    assert backend.get(f"/threads/{thread_id}").json()["title"] == "Numbers"
    assert event_count(database_url) == events


# -- bad input --------------------------------------------------------------------------


def test_bad_admin_requests_are_refused_and_append_nothing(
    start_backend: StartBackend, upstream: FakeOpenAI, database_url: str
) -> None:
    backend = start_backend(admin_token=TOKEN, allowed_models="gpt-4o-mini,gpt-4o", max_tokens=100)
    answered = turn(backend, "hello")
    thread_id, current = answered["thread_id"], answered["version"]
    before, calls = event_count(database_url), len(upstream.chat_requests)
    replay = f"/admin/threads/{thread_id}/replay"

    invalid: list[tuple[str, str, dict[str, Any] | None, dict[str, Any] | None, str | None]] = [
        ("GET", replay, {"at_version": 0}, None, "at_version"),
        ("GET", replay, {"at_version": current + 1}, None, "at_version"),
        ("GET", replay, {"at_version": -3}, None, "at_version"),
        ("GET", replay, {"at_version": "two"}, None, None),
        ("POST", replay, None, {"at_version": 0}, "at_version"),
        ("POST", replay, None, {"at_version": current + 1}, "at_version"),
        ("POST", replay, None, {"temperature": 2.5}, "temperature"),
        ("POST", replay, None, {"temperature": "0.5"}, "temperature"),
        ("POST", replay, None, {"max_tokens": 0}, "max_tokens"),
        ("POST", replay, None, {"max_tokens": 101}, "max_tokens"),
        ("POST", replay, None, {"model": "gpt-5-unknown"}, "model"),
        ("POST", replay, None, {"model": ""}, "model"),
        ("POST", replay, None, {"stream": True}, "stream"),
        ("GET", "/admin/threads", {"limit": 0}, None, None),
        ("GET", "/admin/threads", {"limit": 101}, None, None),
        ("GET", "/admin/threads", {"cursor": "not-a-cursor"}, None, "cursor"),
        ("GET", f"/admin/threads/{thread_id}/events", {"limit": 0}, None, None),
        ("GET", f"/admin/threads/{thread_id}/events", {"limit": 1001}, None, None),
        ("GET", f"/admin/threads/{thread_id}/events", {"from_version": 0}, None, None),
        ("GET", "/admin/events", {"limit": 0}, None, None),
        ("GET", "/admin/events", {"limit": 1001}, None, None),
        ("GET", "/admin/events", {"after_position": -1}, None, None),
    ]
    for method, path, params, body, field in invalid:
        response = backend.request(method, path, params=params, json=body, headers=ADMIN)
        assert (response.status_code, response.json()["error"]["code"]) == (
            422,
            "invalid_request",
        ), (method, params, body, response.text)
        if field is not None:
            fields = [d["field"] for d in response.json()["error"]["details"]]
            assert any(f.split(".")[-1] == field for f in fields), (fields, params, body)

    for method, path, body in (
        ("GET", "/events", None),
        ("GET", "/replay", None),
        ("POST", "/replay", {}),
    ):
        response = backend.request(
            method, f"/admin/threads/no-such-thread{path}", json=body, headers=ADMIN
        )
        assert (response.status_code, response.json()["error"]["code"]) == (
            404,
            "thread_not_found",
        ), (method, path)

    assert (event_count(database_url), len(upstream.chat_requests)) == (before, calls)
    assert backend.get(f"/threads/{thread_id}").json()["version"] == current
