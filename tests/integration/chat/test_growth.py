"""A thread's storage per turn stays constant as it grows, checkpoints included."""

from __future__ import annotations

import time

import httpx

from tests.fakes.openai_server import FakeOpenAI
from tests.integration.chat.conftest import ask
from tests.support.databases import count, query

TURNS = 200
USAGE = {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}


def checkpoint_rows(database_url: str, thread_id: str) -> int:
    return count(
        database_url, "SELECT count(*) FROM checkpoints WHERE thread_id LIKE :t", t=f"{thread_id}:%"
    )


def pruned_soon(database_url: str, thread_id: str) -> bool:
    """A run's checkpoints go right after its end is recorded (just after the answer)."""
    deadline = time.monotonic() + 5
    while checkpoint_rows(database_url, thread_id) and time.monotonic() < deadline:
        time.sleep(0.02)
    return checkpoint_rows(database_url, thread_id) == 0


def checkpoint_bytes(database_url: str, thread_id: str) -> int:
    """Bytes of the thread's checkpoint rows (checkpoints and their writes/blobs)."""
    total = 0
    for table in ("checkpoints", "checkpoint_blobs", "checkpoint_writes", "writes"):
        try:
            rows = query(
                database_url, f"SELECT * FROM {table} WHERE thread_id LIKE :t", t=f"{thread_id}:%"
            )
        except Exception:  # the table belongs to the other engine's saver
            continue
        total += sum(stored_size(value) for row in rows for value in row)
    return total


def stored_size(value: object) -> int:
    if isinstance(value, bytes | memoryview):
        return len(bytes(value))
    return len(str(value).encode())


def event_bytes(database_url: str, thread_id: str, from_version: int, to_version: int) -> int:
    rows = query(
        database_url,
        "SELECT data, metadata FROM events WHERE thread_id = :t AND version BETWEEN :a AND :b",
        t=thread_id,
        a=from_version,
        b=to_version,
    )
    return sum(stored_size(value) for row in rows for value in row)


def test_checkpoints_stay_bounded_and_turns_cost_the_same_at_200_as_at_10(
    backend: httpx.Client, upstream: FakeOpenAI, database_url: str
) -> None:
    fast = {"content": "An answer of fixed size.", "usage": USAGE}
    upstream.script(fast)
    thread_id = backend.post("/chat/", json=ask("Question number 000")).json()["thread_id"]
    in_flight: dict[int, int] = {}
    per_turn_events: dict[int, int] = {}
    for n in range(2, TURNS + 1):
        if n in (10, TURNS):
            # Look at the checkpoint while the run is between its steps.
            upstream.script(
                {"chunks": ["An answer ", "of fixed ", "size."], "chunk_delay": 1.5, "usage": USAGE}
            )
            with backend.stream(
                "POST", "/chat/stream", json=ask(f"Question number {n:03d}", thread_id=thread_id)
            ) as s:
                lines = s.iter_lines()
                next(line for line in lines if line == "event: delta")
                in_flight[n] = checkpoint_bytes(database_url, thread_id)
                assert any(line == "event: run.completed" for line in lines)
        else:
            upstream.script(fast)
            response = backend.post(
                "/chat/", json=ask(f"Question number {n:03d}", thread_id=thread_id)
            )
            assert response.status_code == 200
        version = 4 * n + 1
        per_turn_events[n] = event_bytes(database_url, thread_id, version - 3, version)
        assert pruned_soon(database_url, thread_id), "finished runs are pruned"

    # Same message sizes: the same bytes per turn, give or take the encoding of
    # numbers (a version of 38 is one msgpack byte, 798 three; timings' digits;
    # LangGraph's channel versions end in random fractions of varying length).
    # History kept in the state would make turn 200's checkpoint ~20 times turn 10's.
    assert in_flight[10] > 0
    assert abs(in_flight[TURNS] - in_flight[10]) <= in_flight[10] * 0.02, in_flight
    assert abs(per_turn_events[TURNS] - per_turn_events[10]) <= 8, per_turn_events
