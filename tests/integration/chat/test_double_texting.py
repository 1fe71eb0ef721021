"""Background runs, `on_disconnect` and the `if_busy` policies, over real HTTP on both engines."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from main_backend.values import MAX_QUEUED_RUNS
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.chat.conftest import StartBackend, ask, wait_idle
from tests.support.sse import parse_sse, read_events, run_stream_path

ADMIN = "admin-token"


@pytest.fixture
def backend(start_backend: StartBackend) -> httpx.Client:
    return start_backend(admin_token=ADMIN)


def slow(upstream: FakeOpenAI, pieces: int = 40, delay: float = 0.05) -> str:
    """The next upstream answer comes slowly (about pieces × delay seconds)."""
    chunks = [f"s{i} " for i in range(pieces)]
    upstream.script({"chunks": chunks, "chunk_delay": delay})
    return "".join(chunks)


def wait_run(
    backend: httpx.Client, thread_id: str, run_id: str, *statuses: str, timeout: float = 20
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run: dict[str, Any] = backend.get(f"/threads/{thread_id}/runs/{run_id}").json()
        if run["status"] in statuses:
            return run
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} never reached {statuses}")


def background(backend: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = backend.post("/chat/", json={**body, "background": True})
    assert response.status_code == 202, response.text
    accepted: dict[str, Any] = response.json()
    assert response.headers["location"] == run_stream_path(
        accepted["thread_id"], accepted["run_id"]
    )
    return accepted


def generating(backend: httpx.Client, thread_id: str, run_id: str, deltas: int = 2) -> None:
    """Returns once the run has streamed `deltas` deltas (it is generating now)."""
    with backend.stream("GET", run_stream_path(thread_id, run_id)) as response:
        events = read_events(response.iter_lines(), most=1 + deltas)
    assert [e.event for e in events] == ["run.started"] + ["delta"] * deltas


def history(backend: httpx.Client, thread_id: str) -> list[tuple[str, str]]:
    messages = backend.get(f"/threads/{thread_id}/messages").json()["messages"]
    return [(m["role"], m["content"]) for m in messages]


def prompt_of(upstream: FakeOpenAI, index: int) -> list[tuple[str, str]]:
    body = upstream.chat_requests[index].body
    return [(m["role"], m["content"]) for m in body["messages"]]


def events_of(backend: httpx.Client, thread_id: str) -> list[dict[str, Any]]:
    response = backend.get(
        f"/admin/threads/{thread_id}/events", headers={"Authorization": f"Bearer {ADMIN}"}
    )
    events: list[dict[str, Any]] = response.json()["events"]
    return events


# Background runs -------------------------------------------------------------------------


def test_a_background_run_answers_202_at_once_and_goes_on(
    backend: httpx.Client, upstream: FakeOpenAI
) -> None:
    answer = slow(upstream, pieces=20)
    accepted = background(backend, ask("Think about it"))
    assert accepted["status"] == "running"
    thread_id, run_id = accepted["thread_id"], accepted["run_id"]
    assert backend.get(f"/threads/{thread_id}/runs/{run_id}").json()["status"] == "running"
    with backend.stream("GET", run_stream_path(thread_id, run_id)) as response:
        events = read_events(response.iter_lines())
    assert events[0].event == "run.started" and events[-1].event == "run.completed"
    assert "".join(e.data["text"] for e in events if e.event == "delta") == answer
    run = backend.get(f"/threads/{thread_id}/runs/{run_id}").json()
    assert run["status"] == "completed"
    assert history(backend, thread_id) == [("user", "Think about it"), ("assistant", answer)]


def test_a_background_repeat_is_accepted_again_with_the_runs_status(
    backend: httpx.Client, upstream: FakeOpenAI
) -> None:
    slow(upstream, pieces=20)
    key = {"Idempotency-Key": "bg-1"}
    body = {**ask("Once"), "background": True}
    first = backend.post("/chat/", json=body, headers=key)
    again = backend.post("/chat/", json=body, headers=key)
    assert first.status_code == again.status_code == 202
    assert again.json() == {**first.json(), "status": "running"}
    thread_id, run_id = first.json()["thread_id"], first.json()["run_id"]
    wait_run(backend, thread_id, run_id, "completed")
    done = backend.post("/chat/", json=body, headers=key)
    assert done.status_code == 202 and done.json()["status"] == "completed"
    assert len(upstream.chat_requests) == 1
    assert len(history(backend, thread_id)) == 2


@pytest.mark.parametrize("path", ["/chat/", "/chat/stream"])
def test_background_with_a_stream_is_refused_and_writes_nothing(
    backend: httpx.Client, upstream: FakeOpenAI, path: str
) -> None:
    body = {**ask("Both?"), "background": True}
    if path == "/chat/":
        body["stream"] = True
    response = backend.post(path, json=body)
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "background"
    assert backend.get("/threads").json()["threads"] == []
    assert upstream.chat_requests == []


# on_disconnect ----------------------------------------------------------------------------


@pytest.mark.parametrize("on_disconnect", ["cancel", "continue"])
def test_a_streaming_client_that_leaves_cancels_its_run_only_if_it_asked(
    backend: httpx.Client, upstream: FakeOpenAI, on_disconnect: str
) -> None:
    answer = slow(upstream)
    body = {**ask("Long one"), "on_disconnect": on_disconnect}
    with backend.stream("POST", "/chat/stream", json=body) as response:
        seen = read_events(response.iter_lines(), most=3)
    started = seen[0].data
    thread_id, run_id = started["thread_id"], started["run_id"]
    run = wait_run(backend, thread_id, run_id, "completed", "cancelled")
    if on_disconnect == "cancel":
        assert (run["status"], run["cancelled_by"]) == ("cancelled", "user")
        partial = history(backend, thread_id)[-1][1]
        assert answer.startswith(partial) and len(partial) < len(answer)
    else:
        assert run["status"] == "completed"
        assert history(backend, thread_id)[-1] == ("assistant", answer)


def test_a_queued_streams_client_that_leaves_takes_its_run_out_of_the_queue(
    backend: httpx.Client, upstream: FakeOpenAI
) -> None:
    slow(upstream, pieces=40)
    first = background(backend, ask("Q1"))
    thread_id = first["thread_id"]
    body = ask("Q2", thread_id=thread_id, if_busy="enqueue", on_disconnect="cancel")
    with backend.stream("POST", "/chat/stream", json=body) as response:
        (queued,) = read_events(response.iter_lines(), most=1)
    assert queued.event == "run.queued"
    run = wait_run(backend, thread_id, queued.data["run_id"], "cancelled")
    assert (run["started_at"], run["cancelled_by"]) == (None, "user")
    assert wait_run(backend, thread_id, first["run_id"], "completed")["status"] == "completed"
    assert [m[1] for m in history(backend, thread_id) if m[0] == "user"] == ["Q1"]


def test_a_stream_that_ends_normally_cancels_nothing(
    backend: httpx.Client, upstream: FakeOpenAI
) -> None:
    upstream.script({"chunks": ["all ", "of ", "it"]})
    body = {**ask("Short"), "on_disconnect": "cancel"}
    events = parse_sse(backend.post("/chat/stream", json=body).text)
    assert events[-1].event == "run.completed"
    thread_id = events[0].data["thread_id"]
    time.sleep(0.3)  # a cancel sent by mistake would have landed by now
    runs = backend.get(f"/threads/{thread_id}/runs").json()["runs"]
    assert [r["status"] for r in runs] == ["completed"]


# if_busy ----------------------------------------------------------------------------------


def test_reject_is_the_default_and_appends_nothing(
    backend: httpx.Client, upstream: FakeOpenAI
) -> None:
    slow(upstream)
    first = background(backend, ask("First"))
    thread_id = first["thread_id"]
    version = backend.get(f"/threads/{thread_id}").json()["version"]
    response = backend.post("/chat/", json=ask("Second", thread_id=thread_id))
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "thread_busy"
    assert backend.get(f"/threads/{thread_id}").json()["version"] == version
    wait_idle(backend, thread_id)


def test_enqueued_runs_are_answered_in_order_and_history_alternates(
    backend: httpx.Client, upstream: FakeOpenAI
) -> None:
    first_answer = slow(upstream, pieces=30)
    first = background(backend, ask("Q1"))
    thread_id = first["thread_id"]
    queued = [
        background(backend, ask(f"Q{i}", thread_id=thread_id, if_busy="enqueue")) for i in (2, 3)
    ]
    assert [q["status"] for q in queued] == ["pending", "pending"]
    # Queued input is stored, but not in the history until its run starts.
    thread = backend.get(f"/threads/{thread_id}").json()
    assert thread["status"] == "busy"
    assert [m for m in history(backend, thread_id) if m[0] == "user"] == [("user", "Q1")]
    pending = backend.get(f"/threads/{thread_id}/runs/{queued[0]['run_id']}").json()
    assert (pending["status"], pending["started_at"]) == ("pending", None)

    for q in queued:
        wait_run(backend, thread_id, q["run_id"], "completed")
    assert history(backend, thread_id) == [
        ("user", "Q1"),
        ("assistant", first_answer),
        ("user", "Q2"),
        ("assistant", "You said: Q2"),
        ("user", "Q3"),
        ("assistant", "You said: Q3"),
    ]
    # Each queued run's prompt replays the history as it stood when it started.
    assert prompt_of(upstream, 2) == history(backend, thread_id)[:5]
    runs = backend.get(f"/threads/{thread_id}/runs").json()["runs"]
    assert [r["status"] for r in runs] == ["completed"] * 3
    assert wait_idle(backend, thread_id)["message_count"] == 6


def test_a_queued_chat_waits_for_its_own_answer(
    backend: httpx.Client, upstream: FakeOpenAI
) -> None:
    slow(upstream, pieces=20)
    first = background(backend, ask("Q1"))
    thread_id = first["thread_id"]
    response = backend.post("/chat/", json=ask("Q2", thread_id=thread_id, if_busy="enqueue"))
    assert response.status_code == 200, response.text
    answered = response.json()
    assert answered["message"]["content"] == "You said: Q2"
    assert response.headers["location"] == run_stream_path(thread_id, answered["run_id"])
    assert backend.get(f"/threads/{thread_id}/runs/{first['run_id']}").json()["status"] == (
        "completed"
    )


def test_a_queued_stream_says_queued_then_streams_its_run(
    backend: httpx.Client, upstream: FakeOpenAI
) -> None:
    slow(upstream, pieces=20)
    first = background(backend, ask("Q1"))
    thread_id = first["thread_id"]
    response = backend.post("/chat/stream", json=ask("Q2", thread_id=thread_id, if_busy="enqueue"))
    events = parse_sse(response.text)
    names = [e.event for e in events]
    assert names[:2] == ["run.queued", "run.started"] and names[-1] == "run.completed"
    assert [e.id for e in events[:2]] == ["queued", "start"]
    run_id = events[0].data["run_id"]
    assert response.headers["location"] == run_stream_path(thread_id, run_id)
    assert [m["content"] for m in events[1].data["messages"]] == ["Q2"]
    assert "".join(e.data["text"] for e in events if e.event == "delta") == "You said: Q2"
    # Joined again after `queued`, it goes on from run.started.
    with backend.stream(
        "GET", run_stream_path(thread_id, run_id), headers={"Last-Event-ID": "queued"}
    ) as joined:
        again = read_events(joined.iter_lines())
    assert again[0].event == "run.started" and again[-1].event == "run.completed"


def test_interrupt_cancels_the_active_run_keeping_its_partial_answer(
    backend: httpx.Client, upstream: FakeOpenAI
) -> None:
    first_answer = slow(upstream, pieces=200)
    first = background(backend, ask("Q1"))
    thread_id, first_run = first["thread_id"], first["run_id"]
    generating(backend, thread_id, first_run)
    response = backend.post("/chat/", json=ask("Q2", thread_id=thread_id, if_busy="interrupt"))
    assert response.status_code == 200, response.text
    assert response.json()["message"]["content"] == "You said: Q2"
    run = backend.get(f"/threads/{thread_id}/runs/{first_run}").json()
    assert (run["status"], run["cancelled_by"]) == ("cancelled", "interrupt")
    messages = history(backend, thread_id)
    partial = messages[1][1]
    assert messages[0] == ("user", "Q1") and first_answer.startswith(partial) and partial
    assert len(partial) < len(first_answer)
    assert messages[2:] == [("user", "Q2"), ("assistant", "You said: Q2")]
    # The new run's prompt holds the interrupted exchange, partial answer included.
    assert prompt_of(upstream, 1) == messages[:3]


def test_rollback_takes_the_cancelled_runs_input_and_answer_out_of_history(
    backend: httpx.Client, upstream: FakeOpenAI
) -> None:
    upstream.script({"chunks": ["A0"]})
    first = backend.post("/chat/", json=ask("Q0")).json()
    thread_id = first["thread_id"]
    slow(upstream, pieces=200)
    doomed = background(backend, ask("Q1", thread_id=thread_id))
    generating(backend, thread_id, doomed["run_id"])
    response = backend.post("/chat/", json=ask("Q2", thread_id=thread_id, if_busy="rollback"))
    assert response.status_code == 200, response.text
    run = backend.get(f"/threads/{thread_id}/runs/{doomed['run_id']}").json()
    assert (run["status"], run["cancelled_by"]) == ("cancelled", "rollback")
    expected = [("user", "Q0"), ("assistant", "A0"), ("user", "Q2"), ("assistant", "You said: Q2")]
    assert history(backend, thread_id) == expected
    assert backend.get(f"/threads/{thread_id}").json()["message_count"] == 4
    # Gone from every later prompt…
    assert prompt_of(upstream, 2) == expected[:3]
    upstream.script({"chunks": ["A3"]})
    backend.post("/chat/", json=ask("Q3", thread_id=thread_id))
    assert prompt_of(upstream, 3) == [*expected, ("user", "Q3")]
    # …but not from the log, which says why.
    events = events_of(backend, thread_id)
    rolled = [e for e in events if e["type"] == "run.rolled_back"]
    assert len(rolled) == 1 and rolled[0]["data"]["run_id"] == doomed["run_id"]
    contents = [e["data"]["content"] for e in events if e["type"] == "message.added"]
    assert "Q1" in contents
    replay = backend.get(
        f"/admin/threads/{thread_id}/replay", headers={"Authorization": f"Bearer {ADMIN}"}
    ).json()
    shown = [(m["content"], m["rolled_back"]) for m in replay["messages"]]
    assert ("Q1", True) in shown and ("Q2", False) in shown
    prompt = [m["content"] for m in replay["prompt"]["messages"]]
    assert prompt == ["Q0", "A0", "Q2", "You said: Q2", "Q3", "A3"]
    # The read models stay the fold of the log.
    verify = backend.get(
        "/admin/projections/verify", headers={"Authorization": f"Bearer {ADMIN}"}
    ).json()
    assert verify == {"ok": True, "mismatches": []}


def test_a_queued_run_cancelled_before_it_starts_never_starts(
    backend: httpx.Client, upstream: FakeOpenAI
) -> None:
    slow(upstream, pieces=40)
    first = background(backend, ask("Q1"))
    thread_id = first["thread_id"]
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(
            backend.post, "/chat/", json=ask("Q2", thread_id=thread_id, if_busy="enqueue")
        )
        queued_id = None
        deadline = time.monotonic() + 10
        while queued_id is None and time.monotonic() < deadline:
            runs = backend.get(f"/threads/{thread_id}/runs").json()["runs"]
            queued_id = next((r["id"] for r in runs if r["status"] == "pending"), None)
        assert queued_id is not None
        cancel = backend.post(f"/threads/{thread_id}/runs/{queued_id}/cancel")
        assert cancel.status_code == 202 and cancel.json() == {"run_id": queued_id}
        response = waiting.result(timeout=20)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "run_cancelled"
    run = backend.get(f"/threads/{thread_id}/runs/{queued_id}").json()
    assert (run["status"], run["started_at"], run["message_id"]) == ("cancelled", None, None)
    wait_run(backend, thread_id, first["run_id"], "completed")
    thread = wait_idle(backend, thread_id)
    assert [m[1] for m in history(backend, thread_id) if m[0] == "user"] == ["Q1"]
    assert len(upstream.chat_requests) == 1
    assert thread["message_count"] == 2
    again = backend.post(f"/threads/{thread_id}/runs/{queued_id}/cancel")
    assert again.status_code == 409 and again.json()["error"]["code"] == "no_active_run"


def test_a_full_queue_is_429_and_appends_nothing(
    backend: httpx.Client, upstream: FakeOpenAI
) -> None:
    slow(upstream, pieces=400)
    first = background(backend, ask("Q0"))
    thread_id = first["thread_id"]
    for i in range(MAX_QUEUED_RUNS):
        background(backend, ask(f"Q{i + 1}", thread_id=thread_id, if_busy="enqueue"))
    version = backend.get(f"/threads/{thread_id}").json()["version"]
    response = backend.post(
        "/chat/", json=ask("one too many", thread_id=thread_id, if_busy="enqueue")
    )
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "queue_full"
    assert response.headers["retry-after"] == "5"
    assert backend.get(f"/threads/{thread_id}").json()["version"] == version
    backend.post(f"/threads/{thread_id}/cancel")


def test_a_queued_request_needs_messages(backend: httpx.Client, upstream: FakeOpenAI) -> None:
    slow(upstream)
    first = background(backend, ask("Q1"))
    thread_id = first["thread_id"]
    version = backend.get(f"/threads/{thread_id}").json()["version"]
    response = backend.post(
        "/chat/", json={"thread_id": thread_id, "messages": [], "if_busy": "enqueue"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "messages"
    assert backend.get(f"/threads/{thread_id}").json()["version"] == version
    wait_idle(backend, thread_id)
