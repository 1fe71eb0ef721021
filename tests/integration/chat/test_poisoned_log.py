"""Defence in depth, on SQLite and Postgres: events written around every check (raw SQL
into the log and the read models) never make a listing, a feed page, a replay, the read
models' rebuild and verify, or a new turn fail. Odd values are served repaired (lone
surrogates as U+FFFD, containers too deep cut off); events that do not hold what their
type needs are skipped by the fold and logged."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import pytest

from main_backend.values import TOO_DEEP
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.chat.conftest import StartBackend, ask
from tests.support.databases import execute, query

TOKEN = "admin-secret"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def backend(start_backend: StartBackend) -> httpx.Client:
    return start_backend(admin_token=TOKEN)


def deep(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"k": value}
    return value


def insert_event(
    database_url: str,
    thread_id: str,
    version: int,
    type_: str,
    data_json: str,
    metadata_json: str = "{}",
) -> None:
    """One row straight into the log, JSON given as text (so it can hold what Python's
    encoders refuse), recorded at the time of the log's first event."""
    cast = "CAST({} AS jsonb)" if database_url.startswith("postgres") else "{}"
    execute(
        database_url,
        "INSERT INTO events (event_id, thread_id, version, type, data, metadata, "
        "recorded_at) SELECT :event_id, :thread_id, :version, :type, "
        f"{cast.format(':data')}, {cast.format(':metadata')}, recorded_at "
        "FROM events ORDER BY position LIMIT 1",
        event_id=str(uuid.uuid4()),
        thread_id=thread_id,
        version=version,
        type=type_,
        data=data_json,
        metadata=metadata_json,
    )


def test_odd_rows_in_the_log_and_the_read_models_never_make_reads_fail(
    backend: httpx.Client, database_url: str, upstream: FakeOpenAI
) -> None:
    sqlite = database_url.startswith("sqlite")
    first = backend.post("/chat/", json=ask("first question"))
    assert first.status_code == 200, first.text
    thread_id, version = first.json()["thread_id"], first.json()["version"]
    owner = query(database_url, "SELECT owner FROM threads WHERE thread_id = :t", t=thread_id)[0][0]
    too_deep = json.dumps(deep(300))
    # Postgres refuses lone surrogates and NUL in jsonb: those only happen on SQLite.
    odd_text = '"odd \\ud800 text"' if sqlite else '"odd text"'
    odd_rows = [
        ("thread.renamed", '{"title": "unknown type"}'),
        (
            "message.added",
            '{"message_id": "m-no-content", "role": "user", "run_id": null, "partial": false}',
        ),
        (
            "message.added",
            '{"message_id": "m-int", "role": "user", "content": 5, '
            '"run_id": null, "partial": false}',
        ),
        (
            "message.added",
            '{"message_id": "m-odd", "role": "user", "content": '
            + odd_text
            + ', "run_id": null, "partial": false}',
        ),
        ("thread.updated", '{"metadata": ' + too_deep + "}"),
        ("thread.updated", '{"metadata": [1, 2]}'),
        ("thread.updated", '{"title": ' + odd_text + ', "metadata": {"k": ' + odd_text + "}}"),
        ("run.started", '{"model": "no run id"}'),
        ("run.queued", '{"model": "no run id", "messages": []}'),
        ("run.rolled_back", '{"run_id": "r", "message_ids": "m-odd"}'),
        ("run.rolled_back", '{"run_id": "r", "message_ids": [5, null, {"k": 1}]}'),
        ("run.completed", "[1, 2, 3]"),
    ]
    for offset, (type_, data) in enumerate(odd_rows, start=1):
        insert_event(
            database_url, thread_id, version + offset, type_, data, '{"user": ' + odd_text + "}"
        )
    # A whole thread whose creation is odd, and one created with poisoned metadata.
    insert_event(database_url, str(uuid.uuid4()), 1, "thread.created", '{"title": "x"}')
    poisoned = str(uuid.uuid4())
    insert_event(
        database_url,
        poisoned,
        1,
        "thread.created",
        json.dumps(
            {"owner": owner, "title": None, "forked_from": None, "metadata": deep(300)}
        ).replace('"title": null', '"title": ' + odd_text),
    )
    # The read model as an append before these checks existed left it (only JSON columns
    # could take a lone surrogate, escaped; text columns refused it on both engines).
    if sqlite:
        execute(
            database_url,
            "UPDATE threads SET metadata = :m WHERE thread_id = :t",
            m='{"k": "\\ud800"}',
            t=thread_id,
        )

    # Every read answers, before and after the read models are rebuilt from the log.
    for rebuilt in (False, True):
        if rebuilt:
            rebuild = backend.post("/admin/projections/rebuild", headers=ADMIN)
            assert rebuild.status_code == 200, rebuild.text
            verify = backend.get("/admin/projections/verify", headers=ADMIN)
            assert verify.status_code == 200, verify.text
            assert verify.json()["ok"], verify.json()
        for path in (
            "/threads",
            f"/threads/{thread_id}",
            f"/threads/{thread_id}/messages",
            f"/threads/{thread_id}/runs",
        ):
            response = backend.get(path)
            assert response.status_code == 200, (path, response.text)
        for path in (
            "/admin/threads",
            f"/admin/threads/{thread_id}/events",
            f"/admin/threads/{poisoned}/events",
            "/admin/events",
            f"/admin/threads/{thread_id}/replay",
            "/admin/projections/verify",
        ):
            response = backend.get(path, headers=ADMIN)
            assert response.status_code == 200, (path, response.text)

    # The feed lists every row, odd ones repaired, none skipped.
    feed = backend.get("/admin/events", params={"limit": 1000}, headers=ADMIN).json()
    assert len(feed["events"]) == version + len(odd_rows) + 2
    by_type = {e["type"]: e for e in feed["events"]}
    assert by_type["thread.renamed"]["data"] == {"title": "unknown type"}
    assert by_type["run.completed"]["data"] == {"value": [1, 2, 3]}
    assert TOO_DEEP in json.dumps(feed["events"][-1]["data"])
    if sqlite:
        assert "odd \ufffd text" in json.dumps(feed["events"], ensure_ascii=False)

    # The fold skipped the messages that are not messages; the odd text is repaired.
    thread = backend.get(f"/threads/{thread_id}").json()
    assert thread["version"] == version + len(odd_rows)
    messages = backend.get(f"/threads/{thread_id}/messages").json()["messages"]
    contents = [m["content"] for m in messages]
    assert contents == [
        "first question",
        "You said: first question",
        "odd \ufffd text" if sqlite else "odd text",
    ]
    assert thread["title"] == ("odd \ufffd text" if sqlite else "odd text")
    assert thread["metadata"] == {"k": thread["title"]}
    listed = backend.get("/threads").json()["threads"]
    assert {t["id"] for t in listed} == {thread_id, poisoned}

    # The thread goes on: a new turn reads its history past the odd events.
    turn = backend.post("/chat/", json=ask("still there?", thread_id=thread_id))
    assert turn.status_code == 200, turn.text
    rerun = backend.post(f"/admin/threads/{thread_id}/replay", json={}, headers=ADMIN)
    assert rerun.status_code == 200, rerun.text
    # A fork copies the history as the fold reads it (the odd text repaired).
    fork = backend.post(f"/threads/{thread_id}/fork")
    assert fork.status_code == 201, fork.text


@pytest.mark.parametrize(
    "data",
    [
        '{"run_id": "not-a-uuid", "model": "m", "params": {}, "messages": "no list"}',
        json.dumps(
            {"run_id": str(uuid.uuid4()), "model": "m", "params": {}, "messages": [{"role": 1}]}
        ),
    ],
)
def test_a_queued_run_that_cannot_start_is_closed_and_the_thread_goes_on(
    backend: httpx.Client, database_url: str, upstream: FakeOpenAI, data: str
) -> None:
    first = backend.post("/chat/", json=ask("first question")).json()
    thread_id, version = first["thread_id"], first["version"]
    insert_event(database_url, thread_id, version + 1, "run.queued", data)
    rebuild = backend.post("/admin/projections/rebuild", headers=ADMIN)
    assert rebuild.status_code == 200, rebuild.text
    # The sweeper finds the queue waiting on an idle thread and closes the odd run.
    deadline = time.monotonic() + 20
    while backend.get(f"/threads/{thread_id}").json()["status"] == "busy":
        assert time.monotonic() < deadline, "the odd queued run kept the thread busy"
        time.sleep(0.1)
    runs = backend.get(f"/threads/{thread_id}/runs").json()["runs"]
    # The odd event carries the log's first timestamp, so both runs were created at the
    # same instant and their listed order is the run ids' order: compare as a set.
    assert {(r["status"], (r["error"] or {}).get("code")) for r in runs} == {
        ("failed", "internal_error"),
        ("completed", None),
    }
    assert len(runs) == 2
    turn = backend.post("/chat/", json=ask("still there?", thread_id=thread_id))
    assert turn.status_code == 200, turn.text
    verify = backend.get("/admin/projections/verify", headers=ADMIN).json()
    assert verify == {"ok": True, "mismatches": []}


def test_odd_trees_never_make_reads_or_turns_fail(
    backend: httpx.Client, database_url: str, upstream: FakeOpenAI
) -> None:
    """Parents in a cycle, parents unknown or of another thread, a leaf that names no
    message, or none of the right type: every read answers and the thread goes on."""
    other = backend.post("/chat/", json=ask("another thread")).json()
    first = backend.post("/chat/", json=ask("first question")).json()
    thread_id, version = first["thread_id"], first["version"]

    def message(message_id: str, parent: object) -> str:
        data = {"message_id": message_id, "role": "user", "content": f"text {message_id}"}
        return json.dumps({**data, "run_id": None, "partial": False, "parent_id": parent})

    odd_rows = [
        ("message.added", message("x", "y")),
        ("message.added", message("y", "x")),
        ("thread.head_moved", '{"message_id": "x"}'),
    ]
    for offset, (type_, data) in enumerate(odd_rows, start=1):
        insert_event(database_url, thread_id, version + offset, type_, data)
    assert backend.post("/admin/projections/rebuild", headers=ADMIN).status_code == 200

    def reads_answer() -> list[dict[str, Any]]:
        for path in (f"/threads/{thread_id}", f"/threads/{thread_id}/runs"):
            assert backend.get(path).status_code == 200, path
        replay = backend.get(f"/admin/threads/{thread_id}/replay", headers=ADMIN)
        assert replay.status_code == 200, replay.text
        assert backend.get("/admin/projections/verify", headers=ADMIN).json()["ok"]
        listed = backend.get(f"/threads/{thread_id}/messages")
        assert listed.status_code == 200, listed.text
        messages: list[dict[str, Any]] = listed.json()["messages"]
        return messages

    # The cycle is cut where it closes: the path is x and y.
    assert {m["id"] for m in reads_answer()} == {"x", "y"}
    turn = backend.post("/chat/", json=ask("through the cycle", thread_id=thread_id))
    assert turn.status_code == 200, turn.text
    assert turn.json()["message"]["parent_id"] == reads_answer()[-2]["id"]
    prompt = upstream.chat_requests[-1].body["messages"]
    assert [m["content"] for m in prompt] == ["text y", "text x", "through the cycle"]

    # A leaf of the wrong type is skipped; one that names no message empties the path;
    # a parent of another thread ends it there, its text never read.
    version = backend.get(f"/threads/{thread_id}").json()["version"]
    odd_rows = [
        ("thread.head_moved", '{"message_id": 5}'),
        ("thread.head_moved", '{"message_id": "no such message"}'),
        ("message.added", message("z", other["message"]["id"])),
    ]
    for offset, (type_, data) in enumerate(odd_rows, start=1):
        insert_event(database_url, thread_id, version + offset, type_, data)
    assert backend.post("/admin/projections/rebuild", headers=ADMIN).status_code == 200
    assert [m["id"] for m in reads_answer()] == ["z"]
    turn = backend.post("/chat/", json=ask("after z", thread_id=thread_id))
    assert turn.status_code == 200, turn.text
    prompt = upstream.chat_requests[-1].body["messages"]
    assert [m["content"] for m in prompt] == ["text z", "after z"]
    checkout = backend.post(f"/threads/{thread_id}/checkout", json={"message_id": "x"})
    assert checkout.status_code == 200, checkout.text
