"""Chat turns end to end over real processes: the fake OpenAI upstream, `llm_agent` and
`main_backend` each run as their own uvicorn process, on a real database (both engines).

What only real processes can show: a thread survives a backend restart and its history
is replayed into the prompt; the SSE stream is framed right on the wire; a backend
killed with SIGKILL mid-answer leaves a run that another process resumes and ends
exactly once; "one run per thread" holds under concurrent requests, in one process
and across two processes over one Postgres database.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from itertools import accumulate
from typing import Any

import httpx
import pytest

from main_backend.conversation.ids import terminal_event_id
from main_backend.events.types import MESSAGE_ADDED, RUN_TERMINAL_TYPES
from tests.e2e.conftest import (
    HTTP_TIMEOUT,
    Backends,
    FakeUpstream,
    ask,
    chat,
    messages_of,
    poll,
    read_log,
)
from tests.support.servers import ServiceProcess
from tests.support.sse import iter_events, parse_sse

pytestmark = pytest.mark.e2e


def prompt_of(request: dict[str, Any]) -> list[tuple[str, str]]:
    """The (role, content) pairs the upstream received, system messages aside."""
    return [(m["role"], m["content"]) for m in request["body"]["messages"] if m["role"] != "system"]


# 1 ------------------------------------------------------------------------------------


def test_history_survives_a_backend_restart_and_is_replayed_in_order(
    backends: Backends, upstream: FakeUpstream
) -> None:
    upstream.script(
        {"content": "First answer."}, {"content": "Second answer."}, {"content": "Third answer."}
    )
    with httpx.Client(timeout=HTTP_TIMEOUT) as client:
        backend = backends.start()
        first = chat(client, backend, ask("Question one?"))
        thread_id = first["thread_id"]
        assert first["message"]["content"] == "First answer."

        backend.stop()
        backend = backends.start()

        second = chat(client, backend, ask("Question two?", thread_id=thread_id))
        third = chat(client, backend, ask("Question three?", thread_id=thread_id))
        assert (second["thread_id"], third["thread_id"]) == (thread_id, thread_id)
        assert (second["message"]["content"], third["message"]["content"]) == (
            "Second answer.",
            "Third answer.",
        )

        requests = upstream.chat_requests()
        assert len(requests) == 3
        assert prompt_of(requests[2]) == [
            ("user", "Question one?"),
            ("assistant", "First answer."),
            ("user", "Question two?"),
            ("assistant", "Second answer."),
            ("user", "Question three?"),
        ]

        messages = messages_of(client, backend, thread_id)
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "Question one?"),
        ("assistant", "First answer."),
        ("user", "Question two?"),
        ("assistant", "Second answer."),
        ("user", "Question three?"),
        ("assistant", "Third answer."),
    ]
    versions = [m["version"] for m in messages]
    assert versions == sorted(set(versions)), versions
    assert [m["run_id"] for m in messages] == [
        None,
        first["run_id"],
        None,
        second["run_id"],
        None,
        third["run_id"],
    ]
    assert third["version"] > versions[-1]  # run.completed follows the answer


# 2 ------------------------------------------------------------------------------------


def test_stream_is_framed_on_the_wire_and_matches_the_stored_answer(
    backends: Backends, upstream: FakeUpstream
) -> None:
    chunks = ["Streaming ", "over ", "real ", "processes", "."]
    upstream.script({"chunks": chunks, "chunk_delay": 0.02})
    backend = backends.start()
    with httpx.Client(timeout=HTTP_TIMEOUT) as client:
        response = client.post(backend.url + "/chat/stream", json=ask("Stream to me"))
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/event-stream")
        events = parse_sse(response.text)

        names = [e.event for e in events]
        assert names[0] == "run.started"
        assert names[-1] == "run.completed"
        assert set(names[1:-1]) == {"delta"}, names
        # Stable ids (the same on a join): start, then each delta's attempt and the
        # answer's length once it is added, then end.
        ids = [e.id for e in events]
        assert (ids[0], ids[-1]) == ("start", "end"), ids
        lengths = list(accumulate(len(e.data["text"]) for e in events[1:-1]))
        assert ids[1:-1] == [f"1-{n}" for n in lengths], ids

        started, completed = events[0].data, events[-1].data
        thread_id = started["thread_id"]
        [appended] = started["messages"]
        assert (appended["role"], appended["content"], appended["run_id"]) == (
            "user",
            "Stream to me",
            None,
        )
        answer = "".join(e.data["text"] for e in events[1:-1])
        assert answer == "".join(chunks)
        assert completed["message"]["content"] == answer
        assert completed["message"]["run_id"] == started["run_id"]

        stored = messages_of(client, backend, thread_id)
    assert [(m["id"], m["role"], m["content"]) for m in stored] == [
        (appended["id"], "user", "Stream to me"),
        (completed["message"]["id"], "assistant", answer),
    ]


# 3 ------------------------------------------------------------------------------------


def test_backend_killed_mid_stream_resumes_and_ends_the_run_once(
    backends: Backends, upstream: FakeUpstream, database_url: str
) -> None:
    question = "Tell me a long story"
    upstream.script(
        {"chunks": [f"word{i} " for i in range(20)], "chunk_delay": 0.2},
        {"content": "The resumed answer."},
        {"content": "The resumed answer, again."},
    )
    backend = backends.start()
    started: dict[str, Any] | None = None
    with httpx.Client(timeout=HTTP_TIMEOUT) as client:
        with client.stream("POST", backend.url + "/chat/stream", json=ask(question)) as response:
            assert response.status_code == 200
            for event in iter_events(response.iter_lines()):
                if event.event == "run.started":
                    started = event.data
                elif event.event == "delta":
                    break
                else:
                    pytest.fail(f"the run ended before its first delta: {event}")
            backend.process.kill()  # SIGKILL: no shutdown, no lease release
            backend.process.wait(timeout=10)
        assert started is not None
        thread_id, run_id = started["thread_id"], started["run_id"]

        backend = backends.start()

        def idle() -> dict[str, Any] | None:
            thread = client.get(f"{backend.url}/threads/{thread_id}").json()
            return thread if thread["status"] == "idle" else None

        try:
            poll(idle, 30, "the resumed run to end")
        except BaseException:
            print(backends.logs())
            raise

        events, thread = read_log(database_url, thread_id)
        terminal = [
            e for e in events if e.type in RUN_TERMINAL_TYPES and e.data["run_id"] == run_id
        ]
        assert len(terminal) == 1, [(e.version, e.type) for e in events]
        assert terminal[0].event_id == terminal_event_id(run_id)
        added = [e for e in events if e.type == MESSAGE_ADDED]
        assert [e.data["content"] for e in added if e.data["role"] == "user"] == [question]
        answers = [e for e in added if e.data["role"] == "assistant" and e.data["run_id"] == run_id]
        assert len(answers) <= 1
        # Resumed from its checkpoint (not closed as interrupted): the LLM call ran again.
        assert terminal[0].type == "run.completed", terminal[0].data
        assert [e.data["content"] for e in answers] == ["The resumed answer."]
        assert thread is not None and thread.active_run_id is None

        follow_up = chat(client, backend, ask("Are you still there?", thread_id=thread_id))
        assert follow_up["message"]["role"] == "assistant"
        assert follow_up["message"]["content"]
        stored = messages_of(client, backend, thread_id)
    assert [m["content"] for m in stored if m["role"] == "user"] == [
        question,
        "Are you still there?",
    ]


# 4 ------------------------------------------------------------------------------------


def race_two_turns(
    targets: tuple[ServiceProcess, ServiceProcess], thread_id: str
) -> list[tuple[str, httpx.Response]]:
    """Two `POST /chat/` on one thread, released together; (question, response) each."""
    gate = threading.Barrier(2)

    def send(target: ServiceProcess, question: str) -> tuple[str, httpx.Response]:
        with httpx.Client(timeout=HTTP_TIMEOUT) as client:
            client.get(target.url + "/")  # connect first, so both requests leave together
            gate.wait(timeout=10)
            return question, client.post(
                target.url + "/chat/", json=ask(question, thread_id=thread_id)
            )

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [
            pool.submit(send, target, f"Concurrent question {i}")
            for i, target in enumerate(targets, start=1)
        ]
        return [f.result() for f in futures]


def check_one_turn_won(
    upstream: FakeUpstream, database_url: str, targets: tuple[ServiceProcess, ServiceProcess]
) -> None:
    upstream.script({"content": "The first answer."})
    with httpx.Client(timeout=HTTP_TIMEOUT) as client:
        first = chat(client, targets[0], ask("Opening question"))
    thread_id, before = first["thread_id"], first["version"]
    upstream.script(
        {"chunks": [f"slow{i} " for i in range(10)], "chunk_delay": 0.1},
        {"content": "A second answer that must not exist."},
    )

    results = race_two_turns(targets, thread_id)

    statuses = sorted(r.status_code for _, r in results)
    bodies = [r.text for _, r in results]
    assert statuses == [200, 409], bodies
    [(won, winner)] = [(q, r) for q, r in results if r.status_code == 200]
    [loser] = [r for _, r in results if r.status_code == 409]

    # Nothing of the loser's reached the log: one turn's four events, the winner's.
    events, thread = read_log(database_url, thread_id)
    assert thread is not None
    assert thread.version == before + 4 == winner.json()["version"]
    turn = events[before:]
    assert [e.type for e in turn] == [
        "message.added",
        "run.started",
        "message.added",
        "run.completed",
    ]
    assert turn[0].data["content"] == won
    assert len(upstream.chat_requests()) == 2  # the opening turn and the winner's
    # The client sent no expected_version: the refusal is "busy", not a version conflict.
    assert loser.json()["error"]["code"] == "thread_busy", loser.text


def test_concurrent_turns_on_one_thread_in_one_process(
    backends: Backends, upstream: FakeUpstream, database_url: str
) -> None:
    backend = backends.start()
    check_one_turn_won(upstream, database_url, (backend, backend))


@pytest.mark.postgres
@pytest.mark.parametrize("engine_name", ["postgres"])
def test_concurrent_turns_on_one_thread_across_two_processes(
    backends: Backends, upstream: FakeUpstream, database_url: str
) -> None:
    one, two = backends.start(), backends.start()
    check_one_turn_won(upstream, database_url, (one, two))
