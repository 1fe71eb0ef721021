"""SIGTERM hands runs and streams over (main_backend/shutdown.py), over real processes:
the fake OpenAI upstream, `llm_agent`, and two `uvicorn main_backend.main:app` replicas
on one database (a Postgres database, or one SQLite file), started as the Dockerfile
and `scripts/start` start them.

A replica told to stop refuses new runs at once, lets its runs finish within
`SHUTDOWN_GRACE_SECONDS`, and at the deadline ends its streams without a terminal event
and hands the runs over; the clients resume on the other replica from their last event
id, and the process exits within the grace period plus a few seconds although clients
are still connected.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time

import httpx
import pytest

from main_backend.events.types import RUN_TERMINAL_TYPES
from tests.e2e.conftest import HTTP_TIMEOUT, Backends, FakeUpstream, ask, poll, read_log
from tests.support.servers import ServiceProcess
from tests.support.sse import Event, iter_events

pytestmark = pytest.mark.e2e

TERMINAL = {"run.completed", "run.failed", "run.cancelled"}
# The feature's bound: a replica exits within its grace period plus this many seconds
# (the hand-over takes at most 5; the rest is slack for a busy machine).
EXIT_MARGIN = 15.0


def health_status(client: httpx.Client, backend: ServiceProcess) -> str:
    status: str = client.get(backend.url + "/health").json()["status"]
    return status


def answer_of(events: list[Event]) -> str:
    """The text a client shows: the deltas, started again after each `run.restarted`."""
    text = ""
    for event in events:
        if event.event == "run.restarted":
            text = ""
        elif event.event == "delta":
            text += event.data["text"]
    return text


def wait_exit(backend: ServiceProcess, since: float, grace: float) -> float:
    """Seconds from `since` until the process exited; fails past grace + EXIT_MARGIN."""
    try:
        code = backend.process.wait(timeout=grace + EXIT_MARGIN - (time.monotonic() - since))
    except subprocess.TimeoutExpired:
        pytest.fail(f"the backend did not exit within {grace} + {EXIT_MARGIN} s")
    # uvicorn re-raises the SIGTERM once it has shut down cleanly.
    assert code in (0, -signal.SIGTERM), backend.output()
    return time.monotonic() - since


def terminal_events(database_url: str, thread_id: str, run_id: str) -> list[str]:
    events, _ = read_log(database_url, thread_id)
    return [e.type for e in events if e.type in RUN_TERMINAL_TYPES and e.data["run_id"] == run_id]


def test_sigterm_hands_runs_and_their_streams_over_to_another_replica(
    backends: Backends, upstream: FakeUpstream, database_url: str
) -> None:
    grace = 5.0
    # Two answers far longer than the grace period; once taken over, the runs get the
    # fake's default answer ("You said: <question>").
    upstream.script(
        {"chunks": [f"long{i} " for i in range(100)], "chunk_delay": 0.2},
        {"chunks": [f"whole{i} " for i in range(100)], "chunk_delay": 0.2},
    )
    leaving = backends.start(SHUTDOWN_GRACE_SECONDS=str(grace))
    staying = backends.start()
    waiter: dict[str, httpx.Response] = {}

    def ask_whole() -> None:  # a POST /chat/ that waits for its answer on `leaving`
        with httpx.Client(timeout=HTTP_TIMEOUT) as client:
            waiter["response"] = client.post(leaving.url + "/chat/", json=ask("Answer whole"))

    seen: list[Event] = []
    with httpx.Client(timeout=HTTP_TIMEOUT) as client:
        with client.stream(
            "POST", leaving.url + "/chat/stream", json=ask("Tell me a long story")
        ) as response:
            assert response.status_code == 200
            location = response.headers["location"]
            events = iter_events(response.iter_lines())
            for event in events:
                seen.append(event)
                if event.event == "delta" and len(seen) >= 3:
                    break
            whole = threading.Thread(target=ask_whole)
            whole.start()
            poll(lambda: len(upstream.chat_requests()) == 2, 20, "the second run's LLM call")

            leaving.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            # Draining: it says so to load balancers, and starts no run, while its runs
            # in flight go on.
            poll(lambda: health_status(client, leaving) == "draining", 10, "/health: draining")
            refused = client.post(leaving.url + "/chat/", json=ask("A new question"))
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "shutting_down"
            assert refused.headers["retry-after"] == "1"
            refused = client.post(leaving.url + "/chat/stream", json=ask("A new question"))
            assert (refused.status_code, refused.json()["error"]["code"]) == (503, "shutting_down")

            seen += list(events)  # until the replica ends the stream
        whole.join(timeout=30)
        exited_after = wait_exit(leaving, signalled, grace)

        # The stream ended without a terminal event (and without a made-up run.failed),
        # after events that all have ids to resume from.
        names = [e.event for e in seen]
        assert names[0] == "run.started" and names.count("delta") > 2, names
        assert not TERMINAL & set(names), names
        assert all(e.id for e in seen), seen
        started = seen[0].data
        thread_id, run_id = started["thread_id"], started["run_id"]
        assert location == f"/threads/{thread_id}/runs/{run_id}/stream"

        # The whole answer's request was told that its run went elsewhere, and which.
        answered = waiter["response"]
        assert answered.status_code == 503, answered.text
        error = answered.json()["error"]
        assert error["code"] == "shutting_down"
        [details] = error["details"]
        assert details["run_id"] and details["thread_id"] != thread_id

        # The client resumes on the other replica from the last event it got.
        with client.stream(
            "GET", staying.url + location, headers={"Last-Event-ID": str(seen[-1].id)}
        ) as resumed_response:
            assert resumed_response.status_code == 200
            resumed = list(iter_events(resumed_response.iter_lines()))
        try:
            assert resumed and resumed[-1].event == "run.completed", resumed
            stored = resumed[-1].data["message"]["content"]
            assert answer_of(seen + resumed) == stored
            messages = client.get(f"{staying.url}/threads/{thread_id}/messages").json()
            assert messages["messages"][-1]["content"] == stored
            assert terminal_events(database_url, thread_id, run_id) == ["run.completed"]

            # The whole answer is completed by the other replica too, once.
            def idle() -> bool:
                url = f"{staying.url}/threads/{details['thread_id']}"
                return bool(client.get(url).json()["status"] == "idle")

            poll(idle, 30, "the handed-over /chat/ run to end")
            assert terminal_events(database_url, details["thread_id"], details["run_id"]) == [
                "run.completed"
            ]
        except BaseException:
            print(backends.logs())
            raise
    assert exited_after < grace + EXIT_MARGIN
    assert "handing 2 unfinished run(s) over" in leaving.output()


def test_a_run_that_finishes_within_the_grace_completes_then_the_replica_exits(
    backends: Backends, upstream: FakeUpstream
) -> None:
    grace = 10.0
    chunks = [f"part{i} " for i in range(8)]
    upstream.script({"chunks": chunks, "chunk_delay": 0.25})
    backend = backends.start(SHUTDOWN_GRACE_SECONDS=str(grace))
    events: list[Event] = []
    signalled = 0.0
    with (
        httpx.Client(timeout=HTTP_TIMEOUT) as client,
        client.stream("POST", backend.url + "/chat/stream", json=ask("Keep going")) as response,
    ):
        for event in iter_events(response.iter_lines()):
            events.append(event)
            if event.event == "delta" and not signalled:
                backend.process.send_signal(signal.SIGTERM)
                signalled = time.monotonic()
    assert events[-1].event == "run.completed"
    assert events[-1].data["message"]["content"] == "".join(chunks) == answer_of(events)
    wait_exit(backend, signalled, grace)
    output = backend.output()
    assert "unfinished" not in output and "Application shutdown complete" in output
