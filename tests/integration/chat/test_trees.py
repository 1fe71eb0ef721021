"""Threads are trees, over real HTTP on both engines: edit, regenerate and checkout, what
each sends upstream, their errors (which append nothing), streaming, idempotency, the
`if_busy` policies, the admin replay at a version, fork, and the read models' rebuild."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from tests.fakes.openai_server import FakeOpenAI
from tests.integration.chat.conftest import StartBackend, ask, wait_idle
from tests.integration.chat.test_admin import ADMIN, TOKEN, admin_get, all_events, turn
from tests.integration.chat.test_auth import SECRET, auth
from tests.integration.chat.test_double_texting import (
    generating,
    prompt_of,
    slow,
    wait_run,
)
from tests.support.sse import Event, delta_text, parse_sse, run_stream_path


@pytest.fixture
def backend(start_backend: StartBackend) -> httpx.Client:
    return start_backend(admin_token=TOKEN)


def path(backend: httpx.Client, thread_id: str, **headers: str) -> list[dict[str, Any]]:
    """The active path, as `GET /threads/{id}/messages` lists it."""
    response = backend.get(f"/threads/{thread_id}/messages", headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["next_cursor"] is None
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


def contents(messages: list[dict[str, Any]]) -> list[str]:
    return [m["content"] for m in messages]


def thread_of(backend: httpx.Client, thread_id: str, **headers: str) -> dict[str, Any]:
    thread: dict[str, Any] = backend.get(f"/threads/{thread_id}", headers=headers).json()
    return thread


def edit(
    backend: httpx.Client, thread_id: str, message_id: str, content: str, **fields: Any
) -> httpx.Response:
    headers = fields.pop("headers", None)
    return backend.post(
        f"/threads/{thread_id}/messages/{message_id}/edit",
        json={"content": content, **fields},
        headers=headers,
    )


def regenerate(
    backend: httpx.Client, thread_id: str, message_id: str, **fields: Any
) -> httpx.Response:
    headers = fields.pop("headers", None)
    return backend.post(
        f"/threads/{thread_id}/messages/{message_id}/regenerate", json=fields, headers=headers
    )


def checkout(
    backend: httpx.Client, thread_id: str, message_id: str, **fields: Any
) -> httpx.Response:
    headers = fields.pop("headers", None)
    params = fields.pop("params", None)
    return backend.post(
        f"/threads/{thread_id}/checkout",
        json={"message_id": message_id, **fields},
        headers=headers,
        params=params,
    )


def answered(response: httpx.Response) -> dict[str, Any]:
    """The answer message of an edit or regeneration answered like `/chat/`."""
    assert response.status_code == 200, response.text
    message: dict[str, Any] = response.json()["message"]
    return message


def moved(response: httpx.Response) -> list[dict[str, Any]]:
    """The new active path a checkout answers."""
    assert response.status_code == 200, response.text
    assert response.json()["next_cursor"] is None
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


def listed(message: dict[str, Any], sibling_ids: list[str]) -> dict[str, Any]:
    """A message of a response as a listing shows it."""
    return {**message, "sibling_ids": sibling_ids}


def run_of(backend: httpx.Client, thread_id: str, run_id: str) -> dict[str, Any]:
    run: dict[str, Any] = backend.get(f"/threads/{thread_id}/runs/{run_id}").json()
    return run


def replay(backend: httpx.Client, thread_id: str, at_version: int) -> dict[str, Any]:
    return admin_get(backend, f"/admin/threads/{thread_id}/replay", at_version=at_version)


def assert_read_models_are_the_fold(backend: httpx.Client, thread_id: str) -> None:
    """The read models equal a fresh fold of the log, and a rebuild from the log serves
    the very same thread and active path."""
    assert admin_get(backend, "/admin/projections/verify") == {"ok": True, "mismatches": []}
    thread, listing = thread_of(backend, thread_id), path(backend, thread_id)
    rebuilt = backend.post("/admin/projections/rebuild", headers=ADMIN)
    assert rebuilt.status_code == 200, rebuilt.text
    assert admin_get(backend, "/admin/projections/verify") == {"ok": True, "mismatches": []}
    assert thread_of(backend, thread_id) == thread
    assert path(backend, thread_id) == listing


def two_turns(backend: httpx.Client) -> tuple[str, list[dict[str, Any]]]:
    """A thread of Q1, its answer, Q2, its answer; and its listing."""
    thread_id = turn(backend, "Q1")["thread_id"]
    turn(backend, "Q2", thread_id=thread_id)
    listing = path(backend, thread_id)
    assert [m["role"] for m in listing] == ["user", "assistant", "user", "assistant"]
    return thread_id, listing


# Edit -------------------------------------------------------------------------------------


def test_an_edit_is_a_sibling_of_the_question_answered_on_its_own_branch(
    backend: httpx.Client, upstream: FakeOpenAI
) -> None:
    thread_id, before = two_turns(backend)
    _, a1, q2, a2 = before
    response = edit(backend, thread_id, q2["id"], "Q2 edited")
    answer = answered(response)
    assert answer["content"] == "You said: Q2 edited" and answer["role"] == "assistant"

    after = path(backend, thread_id)
    assert contents(after) == ["Q1", "You said: Q1", "Q2 edited", "You said: Q2 edited"]
    assert after[:2] == before[:2]
    edited = after[2]
    assert (edited["role"], edited["run_id"]) == ("user", None)
    assert edited["parent_id"] == q2["parent_id"] == a1["id"]
    assert edited["sibling_ids"] == [q2["id"], edited["id"]]
    assert edited["version"] > a2["version"]
    assert after[3] == listed(answer, [answer["id"]])
    assert answer["parent_id"] == edited["id"]
    thread = thread_of(backend, thread_id)
    assert thread["head_id"] == answer["id"]
    assert (thread["message_count"], thread["version"]) == (6, response.json()["version"])
    assert response.headers["location"] == run_stream_path(thread_id, answer["run_id"])

    # The prompt holds the path up to the edited question, never the old branch.
    assert prompt_of(upstream, 2) == [
        ("user", "Q1"),
        ("assistant", "You said: Q1"),
        ("user", "Q2 edited"),
    ]
    # Pages run along the active path alone: the cursor steps over the old branch.
    first = backend.get(f"/threads/{thread_id}/messages", params={"limit": 3}).json()
    assert first == {"messages": after[:3], "next_cursor": str(edited["version"])}
    rest = backend.get(
        f"/threads/{thread_id}/messages", params={"after_version": edited["version"]}
    ).json()
    assert rest == {"messages": after[3:], "next_cursor": None}
    # The old branch is intact, and comes back on checkout.
    back = moved(checkout(backend, thread_id, q2["id"]))
    assert back == [*before[:2], listed(q2, [q2["id"], edited["id"]]), a2]
    assert thread_of(backend, thread_id)["head_id"] == a2["id"]
    assert path(backend, thread_id) == back
    assert_read_models_are_the_fold(backend, thread_id)


def test_editing_the_first_question_starts_a_second_root(
    backend: httpx.Client, upstream: FakeOpenAI
) -> None:
    thread_id, (q1, a1, _, _) = two_turns(backend)
    answer = answered(edit(backend, thread_id, q1["id"], "Q1 edited"))
    root, reply = path(backend, thread_id)
    assert (root["content"], root["parent_id"]) == ("Q1 edited", None)
    assert root["sibling_ids"] == [q1["id"], root["id"]]
    assert reply == listed(answer, [answer["id"]])
    assert prompt_of(upstream, 2) == [("user", "Q1 edited")]
    # Checkout of the other root goes back to the newest leaf of the first branch.
    assert contents(moved(checkout(backend, thread_id, a1["id"]))) == [
        "Q1",
        "You said: Q1",
        "Q2",
        "You said: Q2",
    ]
    assert_read_models_are_the_fold(backend, thread_id)


def test_a_failed_edit_keeps_the_edited_question_and_an_empty_retry_answers_it(
    backend: httpx.Client, upstream: FakeOpenAI
) -> None:
    thread_id, (_, a1, q2, _) = two_turns(backend)
    upstream.script({"status": 401})
    failed = edit(backend, thread_id, q2["id"], "Q2 edited")
    assert failed.status_code == 502, failed.text
    assert failed.json()["error"]["code"] == "llm_upstream_error"
    listing = path(backend, thread_id)
    assert contents(listing) == ["Q1", "You said: Q1", "Q2 edited"]
    edited = listing[-1]
    assert (edited["parent_id"], edited["sibling_ids"]) == (a1["id"], [q2["id"], edited["id"]])
    assert thread_of(backend, thread_id)["head_id"] == edited["id"]

    retried = backend.post("/chat/", json={"thread_id": thread_id, "messages": []})
    answer = answered(retried)
    assert answer["parent_id"] == edited["id"]
    assert upstream.chat_requests[-1].raw == upstream.chat_requests[-2].raw
    assert prompt_of(upstream, 3) == [
        ("user", "Q1"),
        ("assistant", "You said: Q1"),
        ("user", "Q2 edited"),
    ]
    assert path(backend, thread_id)[-1] == listed(answer, [answer["id"]])
    assert_read_models_are_the_fold(backend, thread_id)


def test_an_interrupting_edit_keeps_the_partial_answer_on_the_old_branch(
    backend: httpx.Client, upstream: FakeOpenAI
) -> None:
    thread_id = turn(backend, "Q1")["thread_id"]
    _, a1 = path(backend, thread_id)
    full = slow(upstream, pieces=200)
    running = backend.post("/chat/", json=ask("Q2", thread_id=thread_id, background=True))
    run_id = running.json()["run_id"]
    generating(backend, thread_id, run_id)
    q2 = path(backend, thread_id)[-1]

    answer = answered(edit(backend, thread_id, q2["id"], "Q2 edited", if_busy="interrupt"))
    run = run_of(backend, thread_id, run_id)
    assert (run["status"], run["cancelled_by"]) == ("cancelled", "interrupt")
    listing = path(backend, thread_id)
    assert contents(listing) == ["Q1", "You said: Q1", "Q2 edited", "You said: Q2 edited"]
    assert listing[2]["parent_id"] == a1["id"]
    assert listing[2]["sibling_ids"] == [q2["id"], listing[2]["id"]]
    assert listing[3]["id"] == answer["id"]
    # The interrupted answer stays, partial, on the branch of the question it answered.
    old = moved(checkout(backend, thread_id, q2["id"]))
    partial = old[-1]
    assert (partial["id"], partial["parent_id"]) == (run["message_id"], q2["id"])
    assert partial["content"] and full.startswith(partial["content"])
    assert thread_of(backend, thread_id)["message_count"] == 6
    assert_read_models_are_the_fold(backend, thread_id)


# Regenerate -------------------------------------------------------------------------------


def test_a_regeneration_sends_the_very_prompt_of_the_answer_it_replaces(
    backend: httpx.Client, upstream: FakeOpenAI
) -> None:
    upstream.script(
        {"content": "A1"},
        {"content": "A2"},
        {"content": "A2 again"},
        {"content": "A1 again"},
        {"content": "A2 third"},
    )
    thread_id, before = two_turns(backend)
    q1, a1, q2, a2 = before
    version = thread_of(backend, thread_id)["version"]

    # The leaf's answer.
    again = answered(regenerate(backend, thread_id, a2["id"]))
    assert (again["content"], again["parent_id"], again["role"]) == (
        "A2 again",
        q2["id"],
        "assistant",
    )
    assert path(backend, thread_id) == [*before[:3], listed(again, [a2["id"], again["id"]])]
    assert thread_of(backend, thread_id)["head_id"] == again["id"]
    assert upstream.chat_requests[2].raw == upstream.chat_requests[1].raw
    # A regeneration appends its run and its answer, and no input.
    appended = [e for e in all_events(backend, thread_id) if e["version"] > version]
    assert [e["type"] for e in appended] == ["run.started", "message.added", "run.completed"]
    assert appended[0]["data"]["parent_id"] == q2["id"]

    # An older answer, on the active path but not its leaf.
    older = answered(regenerate(backend, thread_id, a1["id"]))
    assert (older["content"], older["parent_id"]) == ("A1 again", q1["id"])
    assert path(backend, thread_id) == [before[0], listed(older, [a1["id"], older["id"]])]
    assert upstream.chat_requests[3].raw == upstream.chat_requests[0].raw

    # An answer off the active path: its prompt is its own path, not the active one.
    third = answered(regenerate(backend, thread_id, a2["id"]))
    assert third["parent_id"] == q2["id"]
    assert path(backend, thread_id) == [
        listed(q1, [q1["id"]]),
        listed(a1, [a1["id"], older["id"]]),
        listed(q2, [q2["id"]]),
        listed(third, [a2["id"], again["id"], third["id"]]),
    ]
    assert upstream.chat_requests[4].raw == upstream.chat_requests[1].raw
    assert prompt_of(upstream, 4) == [("user", "Q1"), ("assistant", "A1"), ("user", "Q2")]
    assert thread_of(backend, thread_id)["message_count"] == 7

    # A regeneration that fails leaves the thread where it was.
    version = thread_of(backend, thread_id)["version"]
    upstream.script({"status": 401})
    failed = regenerate(backend, thread_id, a1["id"])
    assert failed.status_code == 502, failed.text
    assert [m["id"] for m in path(backend, thread_id)][-1] == third["id"]
    assert thread_of(backend, thread_id)["version"] == version + 2  # run.started, run.failed
    nothing = backend.post("/chat/", json={"thread_id": thread_id, "messages": []})
    assert nothing.status_code == 422  # the active leaf is an answer: nothing to retry
    assert_read_models_are_the_fold(backend, thread_id)


# Checkout ---------------------------------------------------------------------------------


def test_checkout_makes_the_newest_leaf_under_a_message_active(
    backend: httpx.Client, upstream: FakeOpenAI
) -> None:
    # q1 ─ a1 ─ q2 ─ a2
    #           └ q2' ─ a2' ─ q3 ─ a3
    #                        └ q3' ─ a3'
    thread_id, (q1, a1, q2, a2) = two_turns(backend)
    answered(edit(backend, thread_id, q2["id"], "Q2'"))
    turn(backend, "Q3", thread_id=thread_id)
    _, _, _, a2e, q3, a3 = path(backend, thread_id)
    answered(edit(backend, thread_id, q3["id"], "Q3'"))
    a3e = path(backend, thread_id)[-1]
    version = thread_of(backend, thread_id)["version"]

    def check(message_id: str, leaf_id: str, texts: list[str], appends: int) -> None:
        nonlocal version
        now = moved(checkout(backend, thread_id, message_id))
        assert contents(now) == texts
        assert now[-1]["id"] == leaf_id
        assert now == path(backend, thread_id)
        thread = thread_of(backend, thread_id)
        assert (thread["head_id"], thread["version"]) == (leaf_id, version + appends)
        version = thread["version"]

    # A sibling: the newest leaf under it.
    check(q2["id"], a2["id"], ["Q1", "You said: Q1", "Q2", "You said: Q2"], 1)
    # The active leaf, or a message whose newest leaf it is: nothing is appended.
    check(a2["id"], a2["id"], ["Q1", "You said: Q1", "Q2", "You said: Q2"], 0)
    check(q2["id"], a2["id"], ["Q1", "You said: Q1", "Q2", "You said: Q2"], 0)
    # An inner message of another branch: the newest leaf of its subtree.
    on_q3e = ["Q1", "You said: Q1", "Q2'", "You said: Q2'", "Q3'", "You said: Q3'"]
    check(a2e["id"], a3e["id"], on_q3e, 1)
    check(
        q3["id"], a3["id"], ["Q1", "You said: Q1", "Q2'", "You said: Q2'", "Q3", "You said: Q3"], 1
    )
    check(q1["id"], a3e["id"], on_q3e, 1)
    check(
        a3["id"], a3["id"], ["Q1", "You said: Q1", "Q2'", "You said: Q2'", "Q3", "You said: Q3"], 1
    )
    heads = [e["data"] for e in all_events(backend, thread_id) if e["type"] == "thread.head_moved"]
    assert heads == [
        {"message_id": i} for i in (a2["id"], a3e["id"], a3["id"], a3e["id"], a3["id"])
    ]

    # A new turn hangs under the leaf checked out, and its prompt is that path.
    turn(backend, "Q4", thread_id=thread_id)
    q4 = path(backend, thread_id)[-2]
    assert q4["parent_id"] == a3["id"]
    assert prompt_of(upstream, len(upstream.chat_requests) - 1) == [
        ("user", "Q1"),
        ("assistant", "You said: Q1"),
        ("user", "Q2'"),
        ("assistant", "You said: Q2'"),
        ("user", "Q3"),
        ("assistant", "You said: Q3"),
        ("user", "Q4"),
    ]
    # The answer is the new path's first page.
    page = checkout(backend, thread_id, q2["id"], params={"limit": 2})
    assert page.status_code == 200
    assert contents(page.json()["messages"]) == ["Q1", "You said: Q1"]
    assert page.json()["next_cursor"] == str(a1["version"])
    assert_read_models_are_the_fold(backend, thread_id)


# Errors: each appends nothing ---------------------------------------------------------------


def test_refused_rebranches_and_checkouts_append_nothing(
    backend: httpx.Client, upstream: FakeOpenAI
) -> None:
    thread_id, (q1, a1, q2, a2) = two_turns(backend)
    elsewhere = turn(backend, "elsewhere")["message"]["id"]
    version, calls = thread_of(backend, thread_id)["version"], len(upstream.chat_requests)

    def refused(response: httpx.Response, status: int, code: str, field: str | None = None) -> None:
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["code"] == code
        if field is not None:
            assert [d["field"] for d in error["details"]] == [field]
        assert thread_of(backend, thread_id)["version"] == version
        assert len(upstream.chat_requests) == calls

    refused(edit(backend, thread_id, a1["id"], "an answer"), 422, "invalid_request", "message_id")
    refused(regenerate(backend, thread_id, q2["id"]), 422, "invalid_request", "message_id")
    refused(edit(backend, thread_id, q2["id"], "   "), 422, "invalid_request", "content")
    refused(regenerate(backend, thread_id, a2["id"], content="x"), 422, "invalid_request")
    for missing in ("no-such-message", elsewhere):  # unknown, or another thread's
        refused(edit(backend, thread_id, missing, "x"), 404, "message_not_found")
        refused(regenerate(backend, thread_id, missing), 404, "message_not_found")
        refused(checkout(backend, thread_id, missing), 404, "message_not_found")
    refused(edit(backend, "no-such-thread", q1["id"], "x"), 404, "thread_not_found")
    refused(regenerate(backend, "no-such-thread", a1["id"]), 404, "thread_not_found")
    refused(checkout(backend, "no-such-thread", q1["id"]), 404, "thread_not_found")
    stale = version - 1
    refused(
        edit(backend, thread_id, q1["id"], "x", expected_version=stale), 409, "version_conflict"
    )
    refused(
        regenerate(backend, thread_id, a1["id"], expected_version=stale), 409, "version_conflict"
    )
    refused(checkout(backend, thread_id, q1["id"], expected_version=stale), 409, "version_conflict")
    # At the right version they go through.
    assert answered(regenerate(backend, thread_id, a1["id"], expected_version=version))
    now = thread_of(backend, thread_id)["version"]
    assert moved(checkout(backend, thread_id, a2["id"], expected_version=now))[-1] == listed(
        a2, [a2["id"]]
    )
    # A deleted thread is not found.
    assert backend.delete(f"/threads/{thread_id}").status_code == 204
    for response in (
        edit(backend, thread_id, q1["id"], "x"),
        regenerate(backend, thread_id, a1["id"]),
        checkout(backend, thread_id, q1["id"]),
    ):
        assert (response.status_code, response.json()["error"]["code"]) == (
            404,
            "thread_not_found",
        )


def test_another_users_thread_is_not_found(start_backend: StartBackend) -> None:
    backend = start_backend(auth_mode="jwt", secret_key=SECRET, admin_token=TOKEN)
    alice = auth("alice")
    first = backend.post("/chat/", json=ask("mine"), headers=alice).json()
    thread_id = first["thread_id"]
    question, answer = path(backend, thread_id, **alice)
    version = thread_of(backend, thread_id, **alice)["version"]
    bob = auth("bob")
    for response in (
        edit(backend, thread_id, question["id"], "theirs", headers=bob),
        regenerate(backend, thread_id, answer["id"], headers=bob),
        checkout(backend, thread_id, question["id"], headers=bob),
    ):
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "thread_not_found"
    assert thread_of(backend, thread_id, **alice)["version"] == version


def test_a_busy_thread_refuses_rebranches_and_checkouts(
    backend: httpx.Client, upstream: FakeOpenAI
) -> None:
    thread_id = turn(backend, "Q1")["thread_id"]
    q1, a1 = path(backend, thread_id)
    slow(upstream, pieces=100)
    running = backend.post("/chat/", json=ask("Q2", thread_id=thread_id, background=True))
    assert running.status_code == 202
    # The background run has recorded its input; its upstream call may come a moment later.
    deadline = time.monotonic() + 20
    while len(upstream.chat_requests) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    version = thread_of(backend, thread_id)["version"]
    for response in (
        edit(backend, thread_id, q1["id"], "Q1 again"),
        regenerate(backend, thread_id, a1["id"]),
        checkout(backend, thread_id, q1["id"]),
    ):
        assert response.status_code == 409, response.text
        assert response.json()["error"]["code"] == "thread_busy"
    assert thread_of(backend, thread_id)["version"] == version
    assert len(upstream.chat_requests) == 2
    backend.post(f"/threads/{thread_id}/cancel")
    wait_idle(backend, thread_id)


# Streaming and idempotency ------------------------------------------------------------------


def shape(events: list[Event]) -> list[tuple[str, str | None, list[str]]]:
    return [(e.event, e.id, sorted(e.data)) for e in events]


def test_streamed_edits_and_regenerations_send_the_events_of_chat_stream(
    backend: httpx.Client, upstream: FakeOpenAI
) -> None:
    pieces = {"chunks": ["one ", "two ", "three"]}
    upstream.script(pieces)
    chat = backend.post("/chat/stream", json=ask("Q1"))
    chatted = parse_sse(chat.text)
    thread_id = chatted[0].data["thread_id"]
    q1, _ = path(backend, thread_id)

    upstream.script(pieces)
    response = edit(backend, thread_id, q1["id"], "Q1 edited", stream=True)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    edited = parse_sse(response.text)
    assert shape(edited) == shape(chatted)
    assert delta_text(edited) == delta_text(chatted) == "one two three"
    started, completed = edited[0].data, edited[-1].data
    run_id = started["run_id"]
    assert response.headers["location"] == run_stream_path(thread_id, run_id)
    question, answer = path(backend, thread_id)
    # run.started lists the edited question; run.completed the answer under it.
    assert started["messages"] == [{k: v for k, v in question.items() if k != "sibling_ids"}]
    assert (question["content"], question["parent_id"]) == ("Q1 edited", None)
    assert completed["message"] == {k: v for k, v in answer.items() if k != "sibling_ids"}
    assert completed["version"] == thread_of(backend, thread_id)["version"]

    upstream.script(pieces)
    response = regenerate(backend, thread_id, answer["id"], stream=True)
    regenerated = parse_sse(response.text)
    assert shape(regenerated) == shape(chatted)
    assert regenerated[0].data["messages"] == []
    new = regenerated[-1].data["message"]
    assert new["parent_id"] == question["id"]
    assert path(backend, thread_id)[-1]["sibling_ids"] == [answer["id"], new["id"]]
    # The run's stream joined afterwards tells the same.
    with backend.stream("GET", response.headers["location"]) as joined:
        again = parse_sse(joined.read().decode())
    # (from the stored answer: deltas may be cut otherwise, the text is the same)
    assert (again[0].event, again[-1].event) == ("run.started", "run.completed")
    assert again[-1].data == regenerated[-1].data
    assert delta_text(again) == "one two three"
    assert_read_models_are_the_fold(backend, thread_id)


def test_an_idempotency_key_names_one_rebranch(backend: httpx.Client, upstream: FakeOpenAI) -> None:
    thread_id, (q1, _, q2, a2) = two_turns(backend)
    key = {"Idempotency-Key": "edit-q2"}
    first = edit(backend, thread_id, q2["id"], "Q2 edited", headers=key)
    answer = answered(first)
    version, calls = thread_of(backend, thread_id)["version"], len(upstream.chat_requests)

    again = edit(backend, thread_id, q2["id"], "Q2 edited", headers=key)
    assert again.status_code == 200 and again.json() == first.json()
    streamed = parse_sse(
        edit(backend, thread_id, q2["id"], "Q2 edited", stream=True, headers=key).text
    )
    assert [e.event for e in streamed] == ["run.started", "delta", "run.completed"]
    assert streamed[0].data["messages"] == [] and streamed[0].data["run_id"] == answer["run_id"]
    assert delta_text(streamed) == answer["content"]
    assert streamed[-1].data["message"] == answer
    assert (thread_of(backend, thread_id)["version"], len(upstream.chat_requests)) == (
        version,
        calls,
    )

    # The same key is another request on another message, another route, or /chat/.
    for response in (
        edit(backend, thread_id, q1["id"], "Q2 edited", headers=key),
        edit(backend, thread_id, q2["id"], "Q2 edited twice", headers=key),
        regenerate(backend, thread_id, a2["id"], headers=key),
        backend.post("/chat/", json=ask("Q2 edited", thread_id=thread_id), headers=key),
    ):
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "idempotency_key_reused"
    assert (thread_of(backend, thread_id)["version"], len(upstream.chat_requests)) == (
        version,
        calls,
    )

    # A regeneration's key alike.
    key = {"Idempotency-Key": "regen-a2"}
    regenerated = regenerate(backend, thread_id, a2["id"], headers=key)
    assert answered(regenerated)["parent_id"] == q2["id"]
    version = thread_of(backend, thread_id)["version"]
    assert regenerate(backend, thread_id, a2["id"], headers=key).json() == regenerated.json()
    reused = regenerate(backend, thread_id, answer["id"], headers=key)
    assert reused.json()["error"]["code"] == "idempotency_key_reused"
    assert thread_of(backend, thread_id)["version"] == version
    assert_read_models_are_the_fold(backend, thread_id)


# if_busy ----------------------------------------------------------------------------------


def test_queued_rebranches_keep_where_they_hang(
    backend: httpx.Client, upstream: FakeOpenAI
) -> None:
    thread_id, (_, a1, q2, _) = two_turns(backend)
    slow_answer = slow(upstream, pieces=30)
    upstream.script({"content": "A2 edited"}, {"content": "A1 again"})
    running = backend.post("/chat/", json=ask("Q3", thread_id=thread_id, background=True))
    assert running.status_code == 202
    queued = [
        edit(backend, thread_id, q2["id"], "Q2 edited", if_busy="enqueue", background=True),
        regenerate(backend, thread_id, a1["id"], if_busy="enqueue", background=True),
    ]
    assert [(r.status_code, r.json()["status"]) for r in queued] == [(202, "pending")] * 2
    edit_run, regen_run = (
        wait_run(backend, thread_id, r.json()["run_id"], "completed") for r in queued
    )
    assert run_of(backend, thread_id, running.json()["run_id"])["status"] == "completed"

    # Q3 was answered first (the active leaf then), yet the edit hangs beside Q2…
    assert prompt_of(upstream, 3) == [
        ("user", "Q1"),
        ("assistant", "You said: Q1"),
        ("user", "Q2 edited"),
    ]
    # …and the regeneration answers Q1 with Q1's prompt.
    assert upstream.chat_requests[4].raw == upstream.chat_requests[0].raw
    listing = path(backend, thread_id)
    assert contents(listing) == ["Q1", "A1 again"]
    assert listing[1]["id"] == regen_run["message_id"]
    assert listing[1]["sibling_ids"] == [a1["id"], regen_run["message_id"]]

    branch = moved(checkout(backend, thread_id, edit_run["message_id"]))
    assert contents(branch) == ["Q1", "You said: Q1", "Q2 edited", "A2 edited"]
    assert branch[2]["parent_id"] == a1["id"]
    assert branch[2]["sibling_ids"] == [q2["id"], branch[2]["id"]]
    old = moved(checkout(backend, thread_id, q2["id"]))
    assert contents(old) == ["Q1", "You said: Q1", "Q2", "You said: Q2", "Q3", slow_answer]
    assert_read_models_are_the_fold(backend, thread_id)


def test_a_rolled_back_edit_returns_the_leaf_to_where_it_started(
    backend: httpx.Client, upstream: FakeOpenAI
) -> None:
    thread_id, before = two_turns(backend)
    _, _, q2, a2 = before
    slow(upstream, pieces=200)
    doomed = edit(backend, thread_id, q2["id"], "Q2 edited", background=True)
    assert doomed.status_code == 202, doomed.text
    doomed_run = doomed.json()["run_id"]
    generating(backend, thread_id, doomed_run)
    assert contents(path(backend, thread_id))[-1] == "Q2 edited"

    response = backend.post("/chat/", json=ask("Q3", thread_id=thread_id, if_busy="rollback"))
    assert response.status_code == 200, response.text
    run = run_of(backend, thread_id, doomed_run)
    assert (run["status"], run["cancelled_by"]) == ("cancelled", "rollback")
    events = all_events(backend, thread_id)
    (rolled,) = [e["data"] for e in events if e["type"] == "run.rolled_back"]
    assert rolled["run_id"] == doomed_run
    edited_id, partial_id = rolled["message_ids"]
    # The leaf went back to the newest leaf where the edit started (the old branch's)…
    back = [e for e in events if e["type"] == "thread.head_moved"]
    assert [e["data"] for e in back] == [{"message_id": a2["id"]}]
    # …so the next turn hangs there, and nothing rolled back is a sibling or in a prompt.
    listing = path(backend, thread_id)
    assert listing[:4] == before
    assert contents(listing[4:]) == ["Q3", "You said: Q3"]
    assert listing[4]["parent_id"] == a2["id"]
    assert all(
        edited_id not in m["sibling_ids"] and partial_id not in m["sibling_ids"] for m in listing
    )
    assert prompt_of(upstream, 3) == [
        ("user", "Q1"),
        ("assistant", "You said: Q1"),
        ("user", "Q2"),
        ("assistant", "You said: Q2"),
        ("user", "Q3"),
    ]
    assert thread_of(backend, thread_id)["message_count"] == 6
    # What a rollback took out is not found any more.
    version = thread_of(backend, thread_id)["version"]
    for response in (
        edit(backend, thread_id, edited_id, "again"),
        regenerate(backend, thread_id, partial_id),
        checkout(backend, thread_id, edited_id),
    ):
        assert (response.status_code, response.json()["error"]["code"]) == (
            404,
            "message_not_found",
        )
    assert thread_of(backend, thread_id)["version"] == version
    assert_read_models_are_the_fold(backend, thread_id)


def test_editing_the_question_being_answered_with_rollback_replaces_it(
    backend: httpx.Client, upstream: FakeOpenAI
) -> None:
    thread_id = turn(backend, "Q1")["thread_id"]
    _, a1 = path(backend, thread_id)
    slow(upstream, pieces=200)
    typo = backend.post("/chat/", json=ask("Q2 tpyo", thread_id=thread_id, background=True))
    generating(backend, thread_id, typo.json()["run_id"])
    asked = path(backend, thread_id)[-1]
    assert asked["content"] == "Q2 tpyo"

    answer = answered(edit(backend, thread_id, asked["id"], "Q2 typo", if_busy="rollback"))
    assert answer["content"] == "You said: Q2 typo"
    listing = path(backend, thread_id)
    assert contents(listing) == ["Q1", "You said: Q1", "Q2 typo", "You said: Q2 typo"]
    fixed = listing[2]
    assert fixed["parent_id"] == a1["id"] and fixed["sibling_ids"] == [fixed["id"]]
    assert prompt_of(upstream, 2) == [
        ("user", "Q1"),
        ("assistant", "You said: Q1"),
        ("user", "Q2 typo"),
    ]
    assert thread_of(backend, thread_id)["message_count"] == 4
    assert_read_models_are_the_fold(backend, thread_id)


def test_a_rolled_back_regeneration_leaves_the_answer_it_replaced(
    backend: httpx.Client, upstream: FakeOpenAI
) -> None:
    thread_id = turn(backend, "Q1")["thread_id"]
    _, a1 = path(backend, thread_id)
    slow(upstream, pieces=200)
    doomed = regenerate(backend, thread_id, a1["id"], background=True)
    generating(backend, thread_id, doomed.json()["run_id"])
    answered_q2 = backend.post("/chat/", json=ask("Q2", thread_id=thread_id, if_busy="rollback"))
    assert answered_q2.status_code == 200, answered_q2.text
    listing = path(backend, thread_id)
    assert contents(listing) == ["Q1", "You said: Q1", "Q2", "You said: Q2"]
    assert listing[1] == listed(a1, [a1["id"]]) and listing[2]["parent_id"] == a1["id"]
    assert prompt_of(upstream, 2) == [("user", "Q1"), ("assistant", "You said: Q1"), ("user", "Q2")]
    assert_read_models_are_the_fold(backend, thread_id)


# Admin replay and fork --------------------------------------------------------------------


def test_a_replay_at_a_version_shows_the_path_and_the_prompt_of_then(
    backend: httpx.Client, upstream: FakeOpenAI
) -> None:
    active: dict[int, list[str]] = {}  # version → the active path's ids then

    def seen() -> None:
        active[thread_of(backend, thread_id)["version"]] = [
            m["id"] for m in path(backend, thread_id)
        ]

    thread_id = turn(backend, "Q1")["thread_id"]
    seen()
    turn(backend, "Q2", thread_id=thread_id, temperature=0.3)
    seen()
    q1, _, q2, a2 = path(backend, thread_id)
    answered(regenerate(backend, thread_id, a2["id"], temperature=1.1, max_tokens=40))
    seen()
    answered(edit(backend, thread_id, q1["id"], "Q1 edited", model="gpt-4o"))
    seen()
    moved(checkout(backend, thread_id, q2["id"]))
    seen()

    for version, ids in active.items():
        shown = replay(backend, thread_id, version)
        assert shown["thread"]["version"] == version
        assert [m["id"] for m in shown["messages"] if m["active"]] == ids
        assert shown["thread"]["head_id"] == ids[-1]
        assert not any(m["rolled_back"] for m in shown["messages"])
    final = replay(backend, thread_id, max(active))
    assert len(final["messages"]) == 7
    by_id = {m["id"]: m for m in final["messages"]}
    listing = path(backend, thread_id)
    assert [by_id[m["id"]] for m in listing] == [
        {**m, "rolled_back": False, "active": True} for m in listing
    ]

    # The prompt at the version each run started on is exactly what upstream received:
    # the regeneration's too (Q2's path, though the active leaf then was A2).
    started = [e for e in all_events(backend, thread_id) if e["type"] == "run.started"]
    assert len(started) == len(upstream.chat_requests) == 4
    for event, sent in zip(started, upstream.chat_requests, strict=True):
        prompt = replay(backend, thread_id, event["data"]["prompt_version"])["prompt"]
        assert json.dumps(prompt["messages"]) == json.dumps(sent.body["messages"])
        assert prompt["model"] == sent.body["model"] == event["data"]["model"]
        assert prompt["params"] == event["data"]["params"]
        assert prompt["params"]["temperature"] == sent.body["temperature"]
    regeneration = started[2]["data"]
    assert regeneration["parent_id"] == q2["id"]
    assert regeneration["params"] == {"temperature": 1.1, "max_tokens": 40}
    assert prompt_of(upstream, 2) == [("user", "Q1"), ("assistant", "You said: Q1"), ("user", "Q2")]
    # Run again, it is the very request the regeneration sent, and appends nothing.
    version = thread_of(backend, thread_id)["version"]
    rerun = backend.post(
        f"/admin/threads/{thread_id}/replay",
        json={"at_version": regeneration["prompt_version"]},
        headers=ADMIN,
    )
    assert rerun.status_code == 200, rerun.text
    assert upstream.chat_requests[-1].raw == upstream.chat_requests[2].raw
    assert thread_of(backend, thread_id)["version"] == version
    assert_read_models_are_the_fold(backend, thread_id)


def test_a_fork_copies_the_path_active_at_a_version_as_one_branch(
    backend: httpx.Client, upstream: FakeOpenAI
) -> None:
    thread_id, (q1, a1, q2, a2) = two_turns(backend)
    answered(edit(backend, thread_id, q2["id"], "Q2 edited"))
    edited_at = thread_of(backend, thread_id)["version"]
    moved(checkout(backend, thread_id, q2["id"]))

    def fork(**body: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        response = backend.post(f"/threads/{thread_id}/fork", json=body)
        assert response.status_code == 201, response.text
        thread: dict[str, Any] = response.json()
        return thread, path(backend, thread["id"])

    copy, listing = fork(at_version=edited_at)
    assert contents(listing) == ["Q1", "You said: Q1", "Q2 edited", "You said: Q2 edited"]
    assert [m["parent_id"] for m in listing] == [None, *(m["id"] for m in listing[:-1])]
    assert all(m["sibling_ids"] == [m["id"]] for m in listing)
    assert not {m["id"] for m in listing} & {q1["id"], a1["id"], q2["id"], a2["id"]}
    assert (copy["head_id"], copy["message_count"]) == (listing[-1]["id"], 4)
    (created,) = all_events(backend, copy["id"])[:1]
    assert created["data"]["forked_from"] == {"thread_id": thread_id, "version": edited_at}

    current, listing = fork()
    assert contents(listing) == ["Q1", "You said: Q1", "Q2", "You said: Q2"]
    assert current["message_count"] == 4
    # The fork goes on from its copy alone; a copied answer regenerates from its copy.
    turn(backend, "Q3", thread_id=copy["id"])
    assert prompt_of(upstream, len(upstream.chat_requests) - 1) == [
        ("user", "Q1"),
        ("assistant", "You said: Q1"),
        ("user", "Q2 edited"),
        ("assistant", "You said: Q2 edited"),
        ("user", "Q3"),
    ]
    copied_answer = path(backend, copy["id"])[3]
    again = answered(regenerate(backend, copy["id"], copied_answer["id"]))
    assert again["parent_id"] == copied_answer["parent_id"]
    assert prompt_of(upstream, len(upstream.chat_requests) - 1) == [
        ("user", "Q1"),
        ("assistant", "You said: Q1"),
        ("user", "Q2 edited"),
    ]
    assert_read_models_are_the_fold(backend, copy["id"])
    assert_read_models_are_the_fold(backend, thread_id)
