"""A thread's storage per turn stays constant as it grows, checkpoints included."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fakes.openai_server import FakeOpenAI
from tests.integration.chat.conftest import ask
from tests.support.checkpoints import (
    checkpoint_runs,
    engine_of,
    graph_state,
    stored_rows,
    stored_size,
)
from tests.support.databases import query
from tests.support.sse import parse_sse

TURNS = 200
USAGE = {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}


def settled(database_url: str, thread_id: str, run_id: str) -> dict[str, tuple[int, int]]:
    """The thread's checkpoint rows once the run's end has pruned them (right after its
    end is recorded): the run's last checkpoint alone. Per table: rows and bytes."""
    deadline = time.monotonic() + 5
    while checkpoint_runs(database_url, thread_id) != [(thread_id, run_id)]:
        assert time.monotonic() < deadline, checkpoint_runs(database_url, thread_id)
        time.sleep(0.02)
    return stored_rows(database_url, thread_id)


def checkpoint_bytes(database_url: str, thread_id: str) -> int:
    """Bytes of the thread's checkpoint rows (checkpoints and their writes/blobs)."""
    return sum(size for _, size in stored_rows(database_url, thread_id).values())


def event_bytes(database_url: str, thread_id: str, from_version: int, to_version: int) -> int:
    rows = query(
        database_url,
        "SELECT data, metadata FROM events WHERE thread_id = :t AND version BETWEEN :a AND :b",
        t=thread_id,
        a=from_version,
        b=to_version,
    )
    return sum(stored_size(value) for row in rows for value in row)


def _lg_ask(content: str) -> dict[str, Any]:
    return {"assistant_id": "chat", "input": {"messages": [{"type": "human", "content": content}]}}


def _run_of(response: httpx.Response) -> tuple[str, str]:
    """The thread and run a LangGraph route names in its `Content-Location`."""
    _, thread_id, _, run_id = response.headers["Content-Location"].strip("/").split("/")
    return thread_id, run_id


class _Turns:
    """One turn through the native API or the LangGraph one (the same runs either way)."""

    def __init__(self, backend: httpx.Client, api: str) -> None:
        self.backend = backend
        self.api = api

    def first(self, content: str) -> tuple[str, str]:
        if self.api == "native":
            body = self.backend.post("/chat/", json=ask(content)).json()
            return body["thread_id"], body["run_id"]
        response = self.backend.post("/langgraph/runs/wait", json=_lg_ask(content))
        assert response.status_code == 200, response.text
        return _run_of(response)

    def answered(self, content: str, thread_id: str) -> str:
        if self.api == "native":
            response = self.backend.post("/chat/", json=ask(content, thread_id=thread_id))
            assert response.status_code == 200
            return str(response.json()["run_id"])
        response = self.backend.post(
            f"/langgraph/threads/{thread_id}/runs/wait", json=_lg_ask(content)
        )
        assert response.status_code == 200, response.text
        assert response.json()["messages"][-1]["content"] == "An answer of fixed size."
        return _run_of(response)[1]

    def streamed(self, content: str, thread_id: str) -> Iterator[str]:
        """Yields once the answer has begun, then the run's id once it has ended."""
        if self.api == "native":
            path, body = "/chat/stream", ask(content, thread_id=thread_id)
            first_piece, last = "event: delta", "run.completed"
        else:
            path = f"/langgraph/threads/{thread_id}/runs/stream"
            body = {**_lg_ask(content), "stream_mode": ["messages-tuple", "values"]}
            first_piece, last = "event: messages", "values"
        with self.backend.stream("POST", path, json=body) as s:
            lines = s.iter_lines()
            seen = []
            for line in lines:
                seen.append(line)
                if line == first_piece:
                    break
            yield ""
            seen.extend(lines)
        events = parse_sse("\n".join(seen))
        assert events[-1].event == last
        if self.api == "native":
            yield events[0].data["run_id"]
        else:
            assert events[0].event == "metadata"
            yield events[0].data["run_id"]


def test_checkpoints_stay_bounded_and_turns_cost_the_same_at_200_as_at_10(
    backend: httpx.Client, upstream: FakeOpenAI, database_url: str
) -> None:
    grows_the_same(_Turns(backend, "native"), upstream, database_url)


# What a turn stores is its events and checkpoint, which the engine does not change (the
# test above runs on both): one engine shows the LangGraph API's turns grow no more.
@pytest.mark.parametrize("engine_name", ["sqlite"])
def test_turns_through_the_langgraph_api_cost_the_same_at_200_as_at_10(
    backend: httpx.Client, upstream: FakeOpenAI, database_url: str
) -> None:
    grows_the_same(_Turns(backend, "langgraph"), upstream, database_url)


def grows_the_same(turns: _Turns, upstream: FakeOpenAI, database_url: str) -> None:
    fast = {"content": "An answer of fixed size.", "usage": USAGE}
    upstream.script(fast)
    thread_id, first_run = turns.first("Question number 000")
    at_rest = {1: settled(database_url, thread_id, first_run)}
    in_flight: dict[int, int] = {}
    per_turn_events: dict[int, int] = {}
    for n in range(2, TURNS + 1):
        if n in (10, TURNS):
            # Look at the checkpoint while the run is between its steps.
            upstream.script(
                {"chunks": ["An answer ", "of fixed ", "size."], "chunk_delay": 1.5, "usage": USAGE}
            )
            steps = turns.streamed(f"Question number {n:03d}", thread_id)
            next(steps)
            in_flight[n] = checkpoint_bytes(database_url, thread_id)
            run_id = next(steps)
        else:
            upstream.script(fast)
            run_id = turns.answered(f"Question number {n:03d}", thread_id)
        version = 4 * n + 1
        per_turn_events[n] = event_bytes(database_url, thread_id, version - 3, version)
        at_rest[n] = settled(database_url, thread_id, run_id)

    # At rest the thread keeps one checkpoint, its last run's, and LangGraph reads the
    # thread's state from it; every older one (and its writes and blobs) is gone.
    state = graph_state(database_url, thread_id)
    assert state.values["run_id"] == run_id and state.next == ()
    assert state.values["outcome"]["content"] == "An answer of fixed size."
    # One checkpoint, no pending writes; on Postgres also the blobs of the state's two
    # dicts (`params`, `outcome`), the rest being stored inline.
    rows = {n: {table: count for table, (count, _) in at_rest[n].items()} for n in at_rest}
    if engine_of(database_url) == "sqlite":
        assert rows[1] == {"checkpoints": 1, "writes": 0}, rows[1]
    else:
        assert rows[1] == {"checkpoints": 1, "checkpoint_blobs": 2, "checkpoint_writes": 0}
    assert rows[3] == rows[30] == rows[TURNS] == rows[1], rows
    kept = {n: sum(size for _, size in at_rest[n].values()) for n in at_rest}
    assert abs(kept[TURNS] - kept[3]) <= kept[3] * 0.02, {n: kept[n] for n in (1, 3, 30, TURNS)}

    # Same message sizes: the same bytes per turn, give or take the encoding of
    # numbers (a version of 38 is one msgpack byte, 798 three; timings' digits;
    # LangGraph's channel versions end in random fractions of varying length).
    # History kept in the state would make turn 200's checkpoint ~20 times turn 10's.
    # In flight: the previous run's checkpoint alone (a run saves its own at its exit).
    assert in_flight[10] == kept[9], (in_flight, kept[9])
    assert in_flight[TURNS] == kept[TURNS - 1], (in_flight, kept[TURNS - 1])
    assert abs(in_flight[TURNS] - in_flight[10]) <= in_flight[10] * 0.02, in_flight
    assert abs(per_turn_events[TURNS] - per_turn_events[10]) <= 8, per_turn_events
