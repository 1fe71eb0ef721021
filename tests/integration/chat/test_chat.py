"""Chat turns through the HTTP API, on SQLite and Postgres."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest

from tests.fakes.openai_server import FakeOpenAI
from tests.integration.chat.conftest import StartBackend, ask, wait_idle
from tests.support.databases import event_count, query
from tests.support.sse import Event, parse_sse


def turn(backend: httpx.Client, content: str, **fields: Any) -> dict[str, Any]:
    response = backend.post("/chat/", json=ask(content, **fields))
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_a_conversation_replays_its_history_into_every_prompt(
    backend: httpx.Client, upstream: FakeOpenAI
) -> None:
    upstream.script({"content": "Hi! I'm fine."}, {"content": "It is 4."}, {"content": "Bye."})
    first = turn(backend, "Hello, how are you?", temperature=0.3, max_tokens=100)
    thread_id = first["thread_id"]
    assert first["message"]["content"] == "Hi! I'm fine."
    assert (first["message"]["role"], first["finish_reason"], first["version"]) == (
        "assistant",
        "stop",
        5,
    )
    assert first["message"]["run_id"] == first["run_id"]
    second = turn(backend, "What is 2+2?", thread_id=thread_id)
    third = turn(backend, "Thanks, goodbye.", thread_id=thread_id)
    assert (second["version"], third["version"]) == (9, 13)

    assert upstream.chat_requests[-1].body["messages"] == [
        {"role": "user", "content": "Hello, how are you?"},
        {"role": "assistant", "content": "Hi! I'm fine."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "It is 4."},
        {"role": "user", "content": "Thanks, goodbye."},
    ]
    assert upstream.chat_requests[0].body["temperature"] == 0.3
    assert upstream.chat_requests[0].body["max_tokens"] == 100
    messages = backend.get(f"/threads/{thread_id}/messages").json()["messages"]
    assert [m["content"] for m in messages] == [
        "Hello, how are you?",
        "Hi! I'm fine.",
        "What is 2+2?",
        "It is 4.",
        "Thanks, goodbye.",
        "Bye.",
    ]
    assert [m["version"] for m in messages] == [2, 4, 6, 8, 10, 12]
    thread = backend.get(f"/threads/{thread_id}").json()
    assert (thread["version"], thread["message_count"], thread["status"]) == (13, 6, "idle")


def test_a_new_thread_may_import_a_whole_history(
    backend: httpx.Client, upstream: FakeOpenAI
) -> None:
    history = [
        {"role": "system", "content": "You are a pirate."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Arr!"},
        {"role": "user", "content": "Where is the treasure?"},
    ]
    result = backend.post("/chat/", json={"messages": history}).json()
    assert upstream.chat_requests[0].body["messages"] == history
    stored = backend.get(f"/threads/{result['thread_id']}/messages").json()["messages"]
    assert [(m["role"], m["content"]) for m in stored][:4] == [
        (m["role"], m["content"]) for m in history
    ]


def test_system_prompts_come_first(start_backend: StartBackend, upstream: FakeOpenAI) -> None:
    backend = start_backend(system_prompt="Be brief.")
    thread_id = turn(backend, "one")["thread_id"]
    assert upstream.chat_requests[0].body["messages"][0] == {
        "role": "system",
        "content": "Be brief.",
    }
    turn(backend, "two", thread_id=thread_id)
    assert upstream.chat_requests[1].body["messages"][0]["content"] == "Be brief."
    own = turn(backend, "three", system_prompt="Answer in French.")
    assert upstream.chat_requests[2].body["messages"] == [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "three"},
    ]
    assert own["thread_id"] != thread_id


def test_the_context_window_keeps_the_newest_whole_messages(
    start_backend: StartBackend, upstream: FakeOpenAI
) -> None:
    backend = start_backend(max_context_tokens=60)
    thread_id = None
    for i in range(6):
        upstream.script({"content": f"answer {i} " + "x" * 40})
        fields: dict[str, str] = {"thread_id": thread_id} if thread_id else {}
        thread_id = turn(backend, f"question {i} " + "y" * 40, **fields)["thread_id"]
    sent = upstream.chat_requests[-1].body["messages"]
    assert sent[-1]["content"].startswith("question 5")
    assert len(sent) < 11
    # whole messages only, newest kept, in order
    expected_tail: list[str] = []
    for i in range(5, -1, -1):
        expected_tail = [f"question {i} " + "y" * 40, *expected_tail]
        if len(expected_tail) == len(sent):
            break
        expected_tail = [f"answer {i - 1} " + "x" * 40, *expected_tail]
        if len(expected_tail) == len(sent):
            break
    assert [m["content"] for m in sent] == expected_tail


def test_the_latest_question_is_kept_even_over_budget(
    start_backend: StartBackend, upstream: FakeOpenAI
) -> None:
    backend = start_backend(max_context_tokens=10)
    turn(backend, "z" * 400)
    assert upstream.chat_requests[0].body["messages"] == [{"role": "user", "content": "z" * 400}]


def stream_events(
    backend: httpx.Client, body: dict[str, Any], path: str = "/chat/stream"
) -> list[Event]:
    response = backend.post(path, json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return parse_sse(response.text)


@pytest.mark.parametrize(("path", "extra"), [("/chat/stream", {}), ("/chat/", {"stream": True})])
def test_streaming_sends_started_deltas_and_one_terminal_event(
    backend: httpx.Client, upstream: FakeOpenAI, path: str, extra: dict[str, Any]
) -> None:
    upstream.script({"chunks": ["Stream", "ing ", "works", "."]})
    events = stream_events(backend, ask("Stream please", **extra), path)
    assert [e.event for e in events] == ["run.started"] + ["delta"] * 4 + ["run.completed"]
    # Ids name the event on every connection and replica: a delta's, its offset.
    assert [e.id for e in events] == ["start", "1-6", "1-10", "1-15", "1-16", "end"]
    started, completed = events[0].data, events[-1].data
    assert [m["content"] for m in started["messages"]] == ["Stream please"]
    assert started["version"] == 3
    answer = "".join(e.data["text"] for e in events[1:-1])
    assert answer == completed["message"]["content"] == "Streaming works."
    assert completed["finish_reason"] == "stop" and completed["version"] == 5
    stored = backend.get(f"/threads/{started['thread_id']}/messages").json()["messages"]
    assert stored[-1]["content"] == answer and stored[-1]["id"] == completed["message"]["id"]


BAD_BODIES = [
    ({"messages": []}, 422, "messages"),
    ({"messages": [{"role": "assistant", "content": "hi"}]}, 422, "messages"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, 422, "messages.0.role"),
    ({"messages": [{"role": "user", "content": ""}]}, 422, "messages.0.content"),
    ({"messages": [{"role": "user", "content": "a\u0000b"}]}, 422, "messages.0.content"),
    ({"messages": [{"role": "user", "content": 5}]}, 422, "messages.0.content"),
    ({**ask("hi"), "temperature": 2.5}, 422, "temperature"),
    ({**ask("hi"), "temperature": "warm"}, 422, "temperature"),
    ({**ask("hi"), "max_tokens": 0}, 422, "max_tokens"),
    ({**ask("hi"), "max_tokens": 10_000}, 422, "max_tokens"),
    ({**ask("hi"), "model": "gpt-unknown"}, 422, "model"),
    ({**ask("hi"), "expected_version": -1}, 422, "expected_version"),
    ({**ask("hi"), "surprise": 1}, 422, "surprise"),
    ({"messages": [{"role": "user", "content": "x"}] * 11}, 422, "messages"),
    ({"messages": [{"role": "user", "content": "x" * 2001}]}, 422, "messages.0.content"),
]


@pytest.mark.parametrize("path", ["/chat/", "/chat/stream"])
@pytest.mark.parametrize(("body", "status", "field"), BAD_BODIES)
def test_bad_input_is_a_clear_4xx_and_writes_nothing(
    start_backend: StartBackend,
    upstream: FakeOpenAI,
    database_url: str,
    path: str,
    body: dict[str, Any],
    status: int,
    field: str,
) -> None:
    backend = start_backend(
        allowed_models="gpt-4o-mini,gpt-4", max_input_messages=10, max_message_chars=2000
    )
    before = event_count(database_url)
    response = backend.post(path, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert field in [d["field"] for d in error["details"]]
    assert error["request_id"] == response.headers["x-request-id"]
    assert event_count(database_url) == before
    assert upstream.chat_requests == []


@pytest.mark.parametrize(
    ("content", "headers", "status", "code"),
    [
        (b"{not json", {"content-type": "application/json"}, 422, "invalid_request"),
        (b"[]", {"content-type": "application/json"}, 422, "invalid_request"),
        (
            b'{"messages": [{"role": "user", "content": "' + b"x" * 5000 + b'"}]}',
            {"content-type": "application/json"},
            413,
            "payload_too_large",
        ),
    ],
)
def test_malformed_and_oversized_bodies(
    start_backend: StartBackend,
    database_url: str,
    content: bytes,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    backend = start_backend(max_request_bytes=4096)
    response = backend.post("/chat/", content=content, headers=headers)
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)
    assert event_count(database_url) == 0


def test_existing_threads_refuse_new_thread_fields_and_unknown_ids(
    backend: httpx.Client, database_url: str
) -> None:
    thread_id = turn(backend, "hi")["thread_id"]
    before = event_count(database_url)
    for field, value in (("system_prompt", "new"), ("metadata", {"a": 1})):
        response = backend.post("/chat/", json=ask("again", thread_id=thread_id, **{field: value}))
        assert response.status_code == 422
        assert response.json()["error"]["details"][0]["field"] == field
    missing = backend.post("/chat/", json=ask("hi", thread_id="no-such-thread"))
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "thread_not_found")
    assert event_count(database_url) == before


def test_a_stale_expected_version_is_a_conflict(backend: httpx.Client, database_url: str) -> None:
    first = turn(backend, "one")
    thread_id = first["thread_id"]
    before = event_count(database_url)
    stale = backend.post("/chat/", json=ask("two", thread_id=thread_id, expected_version=3))
    assert (stale.status_code, stale.json()["error"]["code"]) == (409, "version_conflict")
    assert event_count(database_url) == before
    fresh = backend.post(
        "/chat/", json=ask("two", thread_id=thread_id, expected_version=first["version"])
    )
    assert fresh.status_code == 200


def test_a_busy_thread_refuses_a_second_run(
    backend: httpx.Client, upstream: FakeOpenAI, database_url: str
) -> None:
    thread_id = turn(backend, "first")["thread_id"]
    upstream.script({"chunks": ["slow "] * 6, "chunk_delay": 0.2})
    with backend.stream("POST", "/chat/stream", json=ask("second", thread_id=thread_id)) as live:
        lines = live.iter_lines()
        next(line for line in lines if line.startswith("event: delta"))
        before = event_count(database_url, thread_id)
        for path in ("/chat/", "/chat/stream"):
            busy = backend.post(path, json=ask("third", thread_id=thread_id))
            assert (busy.status_code, busy.json()["error"]["code"]) == (409, "thread_busy")
        assert backend.get(f"/threads/{thread_id}").json()["status"] == "busy"
        assert event_count(database_url, thread_id) == before
        rest = "\n".join(lines)
    assert rest.count("event: run.completed") == 1


def test_concurrent_requests_on_one_thread_run_once(
    backend: httpx.Client, upstream: FakeOpenAI, database_url: str
) -> None:
    thread_id = turn(backend, "first")["thread_id"]
    before = event_count(database_url, thread_id)
    upstream.script(*[{"chunks": ["a ", "b"], "chunk_delay": 0.2}] * 2)
    results: list[httpx.Response] = []

    def post() -> None:
        results.append(backend.post("/chat/", json=ask("race", thread_id=thread_id)))

    racers = [threading.Thread(target=post) for _ in range(2)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()
    assert sorted(r.status_code for r in results) == [200, 409]
    assert next(r for r in results if r.status_code == 409).json()["error"]["code"] == (
        "thread_busy"
    )
    assert event_count(database_url, thread_id) == before + 4


def test_an_llm_failure_keeps_the_question_and_an_empty_retry_answers_it(
    backend: httpx.Client, upstream: FakeOpenAI, database_url: str
) -> None:
    upstream.script({"status": 401})
    failed = backend.post("/chat/", json=ask("Will this work?"))
    assert failed.status_code == 502
    error = failed.json()["error"]
    assert error["code"] == "llm_upstream_error"
    thread_id, run_id = error["details"][0]["thread_id"], error["details"][0]["run_id"]
    types = [
        r[0]
        for r in query(
            database_url,
            "SELECT type FROM events WHERE thread_id = :t ORDER BY version",
            t=thread_id,
        )
    ]
    assert types == ["thread.created", "message.added", "run.started", "run.failed"]
    assert backend.get(f"/threads/{thread_id}").json()["status"] == "idle"

    retried = backend.post("/chat/", json={"thread_id": thread_id, "messages": []})
    assert retried.status_code == 200, retried.text
    assert retried.json()["run_id"] != run_id
    assert upstream.chat_requests[-1].body["messages"] == [
        {"role": "user", "content": "Will this work?"}
    ]
    messages = backend.get(f"/threads/{thread_id}/messages").json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]

    nothing_to_retry = backend.post("/chat/", json={"thread_id": thread_id, "messages": []})
    assert nothing_to_retry.status_code == 422


def test_llm_errors_map_to_their_codes(start_backend: StartBackend, upstream: FakeOpenAI) -> None:
    backend = start_backend()
    upstream.script({"status": 429, "headers": {"Retry-After": "120"}})
    limited = backend.post("/chat/", json=ask("hi"))
    assert (limited.status_code, limited.json()["error"]["code"]) == (429, "llm_rate_limited")
    assert limited.headers["retry-after"] == "120"

    upstream.script({"chunks": ["partial ", "answer"], "drop_after": 1})
    events = stream_events(backend, ask("hi"))
    assert [e.event for e in events] == ["run.started", "delta", "run.failed"]
    assert events[-1].data["partial_content"] == "partial "
    assert events[-1].data["error"]["code"] == "llm_upstream_error"
    assert events[-1].data["error"]["retryable"] is True


def test_an_unreachable_agent_is_a_503(start_backend: StartBackend) -> None:
    from tests.support.servers import free_port

    backend = start_backend(llm_agent_url=f"http://127.0.0.1:{free_port()}")
    response = backend.post("/chat/", json=ask("hi"))
    assert (response.status_code, response.json()["error"]["code"]) == (
        503,
        "llm_agent_unavailable",
    )
    health = backend.get("/health")
    assert health.status_code == 503
    assert health.json()["checks"]["llm_agent"]["status"] == "failing"


def test_idempotency_keys(backend: httpx.Client, upstream: FakeOpenAI, database_url: str) -> None:
    key = {"Idempotency-Key": "order-42"}
    first = backend.post("/chat/", json=ask("Once only"), headers=key)
    assert first.status_code == 200
    events = event_count(database_url)
    again = backend.post("/chat/", json=ask("Once only"), headers=key)
    assert again.status_code == 200
    assert again.json() == first.json()
    assert event_count(database_url) == events
    assert len(upstream.chat_requests) == 1

    streamed = backend.post("/chat/stream", json=ask("Once only"), headers=key)
    sse = parse_sse(streamed.text)
    assert sse[-1].event == "run.completed"
    assert sse[-1].data["message"] == first.json()["message"]

    other = backend.post("/chat/", json=ask("Something else"), headers=key)
    assert (other.status_code, other.json()["error"]["code"]) == (422, "idempotency_key_reused")
    assert event_count(database_url) == events


def test_a_repeat_while_the_first_is_running_is_409(
    backend: httpx.Client, upstream: FakeOpenAI, database_url: str
) -> None:
    key = {"Idempotency-Key": "slow-one"}
    upstream.script({"chunks": ["slow "] * 5, "chunk_delay": 0.2})
    with backend.stream("POST", "/chat/stream", json=ask("Slow"), headers=key) as live:
        lines = live.iter_lines()
        next(line for line in lines if line.startswith("event: delta"))
        events = event_count(database_url)
        repeat = backend.post("/chat/", json=ask("Slow"), headers=key)
        assert (repeat.status_code, repeat.json()["error"]["code"]) == (409, "request_in_progress")
        assert event_count(database_url) == events
        assert sum(1 for line in lines if line == "event: run.completed") == 1


def test_keys_are_scoped_to_their_user_and_refused_when_malformed(
    backend: httpx.Client, database_url: str
) -> None:
    response = backend.post("/chat/", json=ask("hi"), headers={"Idempotency-Key": "k" * 256})
    assert response.status_code == 422
    assert event_count(database_url) == 0


def test_a_client_that_disconnects_does_not_lose_the_answer(
    backend: httpx.Client, upstream: FakeOpenAI
) -> None:
    chunks = [f"word{i} " for i in range(10)]
    upstream.script({"chunks": chunks, "chunk_delay": 0.1})
    with backend.stream("POST", "/chat/stream", json=ask("Tell me a story")) as live:
        lines = live.iter_lines()
        started = next(line for line in lines if line.startswith("data:") and "run_id" in line)
        next(line for line in lines if line.startswith("event: delta"))
    thread_id = started.split('"thread_id":"')[1].split('"')[0]
    wait_idle(backend, thread_id)
    messages = backend.get(f"/threads/{thread_id}/messages").json()["messages"]
    assert messages[-1]["content"] == "".join(chunks)


def test_cancel_stops_the_run_and_keeps_the_partial_answer(
    backend: httpx.Client, upstream: FakeOpenAI
) -> None:
    upstream.script({"chunks": [f"w{i} " for i in range(50)], "chunk_delay": 0.1})
    received: list[str] = []
    with backend.stream("POST", "/chat/stream", json=ask("Go on")) as live:
        text = ""
        for line in live.iter_lines():
            text += line + "\n"
            if line.startswith("event: delta"):
                received.append(line)
                if len(received) == 2:
                    thread_id = parse_sse(text)[0].data["thread_id"]
                    cancelled = backend.post(f"/threads/{thread_id}/cancel")
                    assert cancelled.status_code == 202
                    assert cancelled.json()["run_id"] == parse_sse(text)[0].data["run_id"]
    events = parse_sse(text)
    assert events[-1].event == "run.cancelled"
    partial = "".join(e.data["text"] for e in events if e.event == "delta")
    assert partial and events[-1].data["message"]["content"] == partial
    assert len(partial.split()) < 50
    assert [e.event for e in events].count("run.cancelled") == 1
    thread = wait_idle(backend, thread_id)
    messages = backend.get(f"/threads/{thread_id}/messages").json()["messages"]
    assert messages[-1]["content"] == partial and messages[-1]["role"] == "assistant"
    again = backend.post(f"/threads/{thread_id}/cancel")
    assert (again.status_code, again.json()["error"]["code"]) == (409, "no_active_run")
    assert thread["status"] == "idle"
    # the partial answer is history: the next prompt carries it
    turn(backend, "continue", thread_id=thread_id)
    assert upstream.chat_requests[-1].body["messages"][-2] == {
        "role": "assistant",
        "content": partial,
    }


def test_idle_streams_get_keep_alive_pings(
    start_backend: StartBackend, upstream: FakeOpenAI
) -> None:
    backend = start_backend(sse_ping_seconds=0.1)
    upstream.script({"chunks": ["slow ", "answer"], "chunk_delay": 0.6})
    response = backend.post("/chat/stream", json=ask("Take your time"))
    assert ": ping" in response.text
    events = parse_sse(response.text)
    assert [e.event for e in events] == ["run.started", "delta", "delta", "run.completed"]
    assert [e.id for e in events] == ["start", "1-5", "1-11", "end"]
