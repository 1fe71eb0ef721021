"""A replica's drain (main_backend/shutdown.py) over real HTTP, in this process.

Served from a thread, the app has no signal hook: the tests begin the drain as the
hook does, with `Shutdown.request()`. The hand-over to another replica, real signals
and the process exit are in tests/e2e/test_shutdown.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from main_backend.app import create_app as create_backend
from main_backend.shutdown import Shutdown
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.chat.conftest import ask, backend_settings
from tests.support.servers import serve_in_thread
from tests.support.sse import Event, read_events, run_stream_path

TERMINAL = {"run.completed", "run.failed", "run.cancelled"}


class Replica:
    def __init__(self, app: FastAPI, client: httpx.Client) -> None:
        self.app = app
        self.client = client

    @property
    def shutdown(self) -> Shutdown:
        shutdown: Shutdown = self.app.state.shutdown
        return shutdown


StartReplica = Callable[..., Replica]


@pytest.fixture
def start_replica(database_url: str, agent_url: str) -> Iterator[StartReplica]:
    with ExitStack() as stack:

        def start(**overrides: Any) -> Replica:
            app = create_backend(backend_settings(database_url, agent_url, **overrides))
            url = stack.enter_context(serve_in_thread(app))
            return Replica(app, stack.enter_context(httpx.Client(base_url=url, timeout=30)))

        yield start


def wait_for(check: Callable[[], Any], what: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
    return result


def health(client: httpx.Client) -> tuple[int, str]:
    response = client.get("/health")
    return response.status_code, response.json()["status"]


def error_of(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


def in_thread(target: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(target()))
    thread.start()
    return thread, result


def test_a_draining_replica_takes_no_run_and_ends_its_streams_at_the_deadline(
    start_replica: StartReplica, upstream: FakeOpenAI
) -> None:
    replica = start_replica(shutdown_grace_seconds=1, stream_poll_seconds=0.05)
    client = replica.client
    long = [f"w{i} " for i in range(200)]
    upstream.script({"chunks": long, "chunk_delay": 0.05}, {"chunks": long, "chunk_delay": 0.05})
    threads_before = len(client.get("/threads").json()["threads"])

    with client.stream("POST", "/chat/stream", json=ask("A long answer")) as live:
        lines = live.iter_lines()
        seen = read_events(lines, most=3)
        started = seen[0].data
        path = run_stream_path(started["thread_id"], started["run_id"])

        def join() -> list[Event]:
            with client.stream("GET", path, headers={"Last-Event-ID": "start"}) as joined:
                assert joined.status_code == 200
                return read_events(joined.iter_lines())

        joiner, joined = in_thread(join)
        waiter, answered = in_thread(lambda: client.post("/chat/", json=ask("Another")))
        wait_for(lambda: len(upstream.chat_requests) == 2, "the second run's LLM call")
        assert health(client) == (200, "ok")

        replica.shutdown.request()
        wait_for(lambda: health(client) == (503, "draining"), "/health: draining")
        for route, body in [
            ("/chat/", ask("New")),
            ("/chat/", ask("New", stream=True)),
            ("/chat/stream", ask("New")),
        ]:
            refused = client.post(route, json=body)
            assert error_of(refused) == (503, "shutting_down"), route
            assert refused.headers["retry-after"] == "1"
            assert "details" not in refused.json()["error"]
        seen += read_events(lines)  # until the deadline ends the stream

    joiner.join(timeout=20)
    waiter.join(timeout=20)
    # Both streams ended without terminal event, and without a made-up run.failed.
    assert [e.event for e in seen][:2] == ["run.started", "delta"]
    assert not TERMINAL & {e.event for e in seen}, seen
    assert all(e.id for e in seen)
    [events] = joined
    assert events and not TERMINAL & {e.event for e in events}, events
    # The request that waited for its answer learns where to read it later.
    [response] = answered
    assert error_of(response) == (503, "shutting_down")
    [details] = response.json()["error"]["details"]
    assert set(details) == {"thread_id", "run_id"} and details["run_id"]
    # Nothing was appended for the refused requests; joining here is refused now.
    assert len(client.get("/threads").json()["threads"]) == threads_before + 2
    assert error_of(client.get(path)) == (503, "shutting_down")
    # The runs were handed over, not ended here.
    assert client.get(f"/threads/{started['thread_id']}").json()["status"] == "busy"


def test_a_run_that_finishes_within_the_grace_ends_normally(
    start_replica: StartReplica, upstream: FakeOpenAI
) -> None:
    replica = start_replica(shutdown_grace_seconds=30, stream_poll_seconds=0.05)
    client = replica.client
    chunks = [f"p{i} " for i in range(20)]
    upstream.script({"chunks": chunks, "chunk_delay": 0.05})
    with client.stream("POST", "/chat/stream", json=ask("A short answer")) as live:
        lines = live.iter_lines()
        seen = read_events(lines, most=2)
        replica.shutdown.request()
        wait_for(lambda: health(client) == (503, "draining"), "/health: draining")
        # During the grace a client may still join the run here.
        started = seen[0].data
        path = run_stream_path(started["thread_id"], started["run_id"])
        with client.stream("GET", path, headers={"Last-Event-ID": str(seen[-1].id)}) as joined:
            assert joined.status_code == 200
            rest_joined = read_events(joined.iter_lines())
        seen += read_events(lines)
    answer = "".join(chunks)
    assert seen[-1].event == "run.completed"
    assert seen[-1].data["message"]["content"] == answer
    assert "".join(e.data["text"] for e in seen if e.event == "delta") == answer
    assert rest_joined[-1].event == "run.completed"
    # No run is left: the drain is over long before its deadline.
    wait_for(replica.shutdown.streams_ended.is_set, "the end of the drain")
    assert error_of(client.get(path)) == (503, "shutting_down")
