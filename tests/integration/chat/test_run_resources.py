"""Runs as resources, over real HTTP on SQLite and Postgres: listed newest first, read one
by one in each status, cancelled by id; where a run's stream can be joined (`Location`)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.fakes.openai_server import FakeOpenAI
from tests.integration.chat.conftest import StartBackend, ask, wait_idle
from tests.integration.chat.test_auth import SECRET, auth
from tests.integration.chat.test_poisoned_log import insert_event
from tests.support.databases import execute, query
from tests.support.sse import parse_sse

TOKEN = "admin-secret"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
RUN_FIELDS = {
    "id",
    "thread_id",
    "status",
    "created_at",
    "started_at",
    "ended_at",
    "model",
    "usage",
    "error",
    "message_id",
    "cancelled_by",
}


@pytest.fixture
def backend(start_backend: StartBackend) -> httpx.Client:
    return start_backend(admin_token=TOKEN)


def location(thread_id: str, run_id: str) -> str:
    return f"/threads/{thread_id}/runs/{run_id}/stream"


def error_code(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


def test_runs_are_listed_newest_first_a_page_at_a_time(
    backend: httpx.Client, upstream: FakeOpenAI
) -> None:
    upstream.script({"content": "one", "usage": {"prompt_tokens": 3, "completion_tokens": 1}})
    first = backend.post("/chat/", json=ask("first"))
    assert first.status_code == 200, first.text
    thread_id = first.json()["thread_id"]
    assert first.headers["Location"] == location(thread_id, first.json()["run_id"])
    answers = [first.json()]
    for n in range(2, 5):
        answers.append(backend.post("/chat/", json=ask(f"q{n}", thread_id=thread_id)).json())
    run_ids = [a["run_id"] for a in reversed(answers)]

    seen: list[dict[str, Any]] = []
    cursor = None
    for expected_size in (3, 1):
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = backend.get(f"/threads/{thread_id}/runs", params=params)
        assert page.status_code == 200, page.text
        assert len(page.json()["runs"]) == expected_size
        seen += page.json()["runs"]
        cursor = page.json()["next_cursor"]
    assert cursor is None
    assert [r["id"] for r in seen] == run_ids

    oldest = seen[-1]
    assert set(oldest) == RUN_FIELDS
    assert oldest["thread_id"] == thread_id
    assert (oldest["status"], oldest["error"], oldest["cancelled_by"]) == ("completed", None, None)
    assert oldest["message_id"] == first.json()["message"]["id"]
    assert oldest["model"] == first.json()["model"]
    assert oldest["usage"]["prompt_tokens"] == 3 and oldest["usage"]["completion_tokens"] == 1
    assert oldest["created_at"] == oldest["started_at"] <= oldest["ended_at"]
    assert backend.get(f"/threads/{thread_id}/runs/{oldest['id']}").json() == oldest

    bad = backend.get(f"/threads/{thread_id}/runs", params={"cursor": "not-a-cursor"})
    assert error_code(bad) == (422, "invalid_request")
    empty = backend.post("/threads", json={}).json()["id"]
    assert backend.get(f"/threads/{empty}/runs").json() == {"runs": [], "next_cursor": None}


def test_a_failed_run_names_its_error(backend: httpx.Client, upstream: FakeOpenAI) -> None:
    upstream.script({"status": 401})
    failed = backend.post("/chat/", json=ask("Will this work?"))
    assert failed.status_code == 502
    details = failed.json()["error"]["details"][0]
    run = backend.get(f"/threads/{details['thread_id']}/runs/{details['run_id']}").json()
    assert run["status"] == "failed"
    assert run["error"]["code"] == "llm_upstream_error"
    assert run["error"]["message"] == failed.json()["error"]["message"]
    assert (run["message_id"], run["usage"], run["cancelled_by"]) == (None, None, None)
    assert run["ended_at"] is not None


def test_a_running_run_is_cancelled_by_its_id(
    backend: httpx.Client, upstream: FakeOpenAI, database_url: str
) -> None:
    upstream.script({"chunks": [f"w{i} " for i in range(50)], "chunk_delay": 0.1})
    text = ""
    with backend.stream("POST", "/chat/stream", json=ask("Go on")) as live:
        assert live.status_code == 200
        for line in live.iter_lines():
            text += line + "\n"
            if line == "event: delta" and text.count("event: delta") == 1:
                started = parse_sse(text)[0]
                thread_id, run_id = started.data["thread_id"], started.data["run_id"]
                assert live.headers["Location"] == location(thread_id, run_id)
                running = backend.get(f"/threads/{thread_id}/runs/{run_id}").json()
                assert (running["status"], running["ended_at"]) == ("running", None)
                assert running["model"] == "gpt-4o-mini"
                cancelled = backend.post(f"/threads/{thread_id}/runs/{run_id}/cancel")
                assert (cancelled.status_code, cancelled.json()) == (202, {"run_id": run_id})
    events = parse_sse(text)
    assert events[-1].event == "run.cancelled"
    wait_idle(backend, thread_id)
    run = backend.get(f"/threads/{thread_id}/runs/{run_id}").json()
    assert (run["status"], run["cancelled_by"]) == ("cancelled", "user")
    assert run["message_id"] == events[-1].data["message"]["id"]
    assert run["ended_at"] is not None
    # The log says who cancelled it.
    [(data,)] = query(
        database_url,
        "SELECT data FROM events WHERE thread_id = :t AND type = 'run.cancelled'",
        t=thread_id,
    )
    stored = data if isinstance(data, dict) else json.loads(str(data))
    assert stored["cancelled_by"] == "user"
    # An ended run is not cancelled again (nor is the thread's next run).
    again = backend.post(f"/threads/{thread_id}/runs/{run_id}/cancel")
    assert error_code(again) == (409, "no_active_run")


def test_a_run_of_the_past_never_cancels_the_threads_current_run(
    backend: httpx.Client, upstream: FakeOpenAI
) -> None:
    done = backend.post("/chat/", json=ask("first")).json()
    thread_id = done["thread_id"]
    upstream.script({"chunks": [f"w{i} " for i in range(50)], "chunk_delay": 0.1})
    with backend.stream("POST", "/chat/stream", json=ask("second", thread_id=thread_id)) as live:
        for line in live.iter_lines():
            if line == "event: delta":
                old = backend.post(f"/threads/{thread_id}/runs/{done['run_id']}/cancel")
                assert error_code(old) == (409, "no_active_run")
                assert backend.get(f"/threads/{thread_id}").json()["status"] == "busy"
                assert backend.post(f"/threads/{thread_id}/cancel").status_code == 202
                break
    wait_idle(backend, thread_id)
    statuses = [r["status"] for r in backend.get(f"/threads/{thread_id}/runs").json()["runs"]]
    assert statuses == ["cancelled", "completed"]


def test_streams_and_repeats_say_where_the_run_can_be_joined(backend: httpx.Client) -> None:
    key = {"Idempotency-Key": "join-me"}
    with backend.stream("POST", "/chat/stream", json=ask("hello"), headers=key) as live:
        body = "".join(live.iter_text())
    started = parse_sse(body)[0]
    assert started.event == "run.started"
    thread_id, run_id = started.data["thread_id"], started.data["run_id"]
    assert live.headers["Location"] == location(thread_id, run_id)
    repeat = backend.post("/chat/stream", json=ask("hello"), headers=key)
    assert repeat.headers["Location"] == location(thread_id, run_id)
    streamed = backend.post("/chat/", json={**ask("again", thread_id=thread_id), "stream": True})
    assert streamed.headers["Location"].startswith(f"/threads/{thread_id}/runs/")


def test_unknown_runs_and_runs_of_other_threads_are_not_found(backend: httpx.Client) -> None:
    first = backend.post("/chat/", json=ask("one")).json()
    other = backend.post("/chat/", json=ask("two")).json()
    thread_id, run_id = first["thread_id"], first["run_id"]
    for path in (
        f"/threads/{thread_id}/runs/no-such-run",
        f"/threads/{thread_id}/runs/{other['run_id']}",  # another thread's
        f"/threads/no-such-thread/runs/{run_id}",
    ):
        assert error_code(backend.get(path)) == (404, "run_not_found"), path
        assert error_code(backend.post(path + "/cancel")) == (404, "run_not_found"), path
    assert error_code(backend.get("/threads/no-such-thread/runs")) == (404, "thread_not_found")
    backend.delete(f"/threads/{thread_id}")
    assert error_code(backend.get(f"/threads/{thread_id}/runs/{run_id}")) == (
        404,
        "run_not_found",
    )


def test_another_users_runs_are_not_found(start_backend: StartBackend) -> None:
    backend = start_backend(auth_mode="jwt", secret_key=SECRET)
    alices = backend.post("/chat/", json=ask("mine"), headers=auth("alice")).json()
    thread_id, run_id = alices["thread_id"], alices["run_id"]
    path = f"/threads/{thread_id}/runs/{run_id}"
    assert backend.get(path, headers=auth("alice")).status_code == 200
    assert error_code(backend.get(path, headers=auth("bob"))) == (404, "run_not_found")
    cancel = backend.post(path + "/cancel", headers=auth("bob"))
    assert error_code(cancel) == (404, "run_not_found")
    listed = backend.get(f"/threads/{thread_id}/runs", headers=auth("bob"))
    assert error_code(listed) == (404, "thread_not_found")


def test_rebuild_and_verify_cover_the_runs(
    backend: httpx.Client, upstream: FakeOpenAI, database_url: str
) -> None:
    first = backend.post("/chat/", json=ask("one")).json()
    thread_id = first["thread_id"]
    upstream.script({"status": 401})
    backend.post("/chat/", json=ask("two", thread_id=thread_id))
    runs = backend.get(f"/threads/{thread_id}/runs").json()["runs"]
    assert [r["status"] for r in runs] == ["failed", "completed"]
    assert backend.get("/admin/projections/verify", headers=ADMIN).json()["ok"]

    execute(database_url, "UPDATE runs SET status = 'running' WHERE run_id = :r", r=runs[0]["id"])
    execute(database_url, "DELETE FROM runs WHERE run_id = :r", r=runs[1]["id"])
    mismatches = backend.get("/admin/projections/verify", headers=ADMIN).json()["mismatches"]
    assert {
        "kind": "run",
        "thread_id": thread_id,
        "run_id": runs[0]["id"],
        "field": "status",
        "expected": "failed",
        "actual": "running",
    } in mismatches
    assert {"kind": "missing_run", "thread_id": thread_id, "run_id": runs[1]["id"]} in mismatches

    rebuilt = backend.post("/admin/projections/rebuild", headers=ADMIN).json()
    assert rebuilt["runs"] == 2
    assert backend.get("/admin/projections/verify", headers=ADMIN).json() == {
        "ok": True,
        "mismatches": [],
    }
    assert backend.get(f"/threads/{thread_id}/runs").json()["runs"] == runs


def test_odd_run_events_never_break_the_runs_listing(
    backend: httpx.Client, database_url: str
) -> None:
    answered = backend.post("/chat/", json=ask("first question")).json()
    thread_id, run_id, version = answered["thread_id"], answered["run_id"], answered["version"]
    odd_rows = [
        ("run.completed", '{"run_id": "never-started", "message_id": "m"}'),
        ("run.started", '{"run_id": 42, "model": "not a string id"}'),
        ("run.started", '{"run_id": "odd-run", "model": ["not", "a", "string"]}'),
        ("run.failed", '{"run_id": "odd-run", "error": "not an object"}'),
        ("run.cancelled", '{"run_id": "odd-run", "message_id": 5, "cancelled_by": "nobody"}'),
        ("run.cancelled", '{"run_id": "' + run_id + '", "message_id": "second end"}'),
        ("run.started", "[1, 2, 3]"),
    ]
    for offset, (type_, data) in enumerate(odd_rows, start=1):
        insert_event(database_url, thread_id, version + offset, type_, data)
    rebuilt = backend.post("/admin/projections/rebuild", headers=ADMIN)
    assert rebuilt.status_code == 200, rebuilt.text
    assert backend.get("/admin/projections/verify", headers=ADMIN).json()["ok"]

    listing = backend.get(f"/threads/{thread_id}/runs")
    assert listing.status_code == 200, listing.text
    runs = {r["id"]: r for r in listing.json()["runs"]}
    assert set(runs) == {run_id, "odd-run"}
    assert runs[run_id]["status"] == "completed"  # its second end is skipped
    odd = runs["odd-run"]
    assert (odd["status"], odd["model"]) == ("failed", None)
    assert odd["error"] == {"code": "internal_error", "message": "the run failed"}
    assert backend.get(f"/threads/{thread_id}/runs/odd-run").json() == odd
