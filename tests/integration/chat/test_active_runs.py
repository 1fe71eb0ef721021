"""MAX_ACTIVE_RUNS_PER_USER: a user's runs in flight, over all threads and replicas.

Counted in the database when a run's lease is taken, before anything of the
run is appended: a refused request is `429 too_many_active_runs` and writes
nothing. Runs here are held in flight by a slow upstream and ended by cancel.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from main_backend.conversation.ids import terminal_event_id
from main_backend.conversation.leases import RunLeases
from main_backend.db import Database, create_database
from main_backend.errors import TooManyActiveRuns
from main_backend.events.store import EventStore
from main_backend.events.types import RUN_COMPLETED, NewEvent
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.chat.conftest import StartBackend, ask, wait_idle
from tests.integration.chat.test_auth import SECRET, auth
from tests.support.databases import event_count, execute, query
from tests.support.events import message_added, run_started, thread_created

# About 30 s of answer unless cancelled: a run that stays in flight for the test.
SLOW = {"chunks": [f"w{i} " for i in range(100)], "chunk_delay": 0.3}
LIMITED = {"max_active_runs_per_user": 2, "shutdown_grace_seconds": 0}


def start_run(backend: httpx.Client, content: str, **kwargs: Any) -> str:
    """Start a run on a new thread and leave it answering; returns the thread id."""
    thread_id = None
    with backend.stream("POST", "/chat/stream", json=ask(content), **kwargs) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data:") and thread_id is None:
                thread_id = str(json.loads(line.removeprefix("data:"))["thread_id"])
            elif line == "event: delta":  # the model is answering
                assert thread_id is not None
                return thread_id
    raise AssertionError("the stream had no delta")


def cancel(backend: httpx.Client, thread_id: str, **kwargs: Any) -> None:
    assert backend.post(f"/threads/{thread_id}/cancel", **kwargs).status_code == 202
    wait_idle_as(backend, thread_id, **kwargs)


def wait_idle_as(backend: httpx.Client, thread_id: str, **kwargs: Any) -> None:
    if not kwargs:
        wait_idle(backend, thread_id)
        return
    deadline = time.monotonic() + 20
    while backend.get(f"/threads/{thread_id}", **kwargs).json()["status"] != "idle":
        assert time.monotonic() < deadline, f"thread {thread_id} stayed busy"
        time.sleep(0.05)


def assert_too_many(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == "too_many_active_runs"
    assert "2 answers in progress" in error["message"]
    assert response.headers["Retry-After"] == "5"


def test_a_run_past_the_cap_is_refused_and_appends_nothing(
    start_backend: StartBackend, upstream: FakeOpenAI, database_url: str
) -> None:
    backend = start_backend(**LIMITED)
    upstream.script(SLOW, SLOW)
    running = [start_run(backend, "one"), start_run(backend, "two")]
    idle = backend.post("/threads", json={}).json()["id"]
    before = event_count(database_url)
    try:
        assert_too_many(
            backend.post("/chat/", json=ask("three"), headers={"Idempotency-Key": "k-three"})
        )
        assert_too_many(backend.post("/chat/stream", json=ask("three")))
        assert_too_many(backend.post("/chat/", json=ask("on an idle thread", thread_id=idle)))
        assert event_count(database_url) == before
        assert len(upstream.chat_requests) == 2
        assert backend.get(f"/threads/{idle}").json()["version"] == 1
    finally:
        cancel(backend, running[0])
    # One run ended: room for the next, and the refused request's key is free again.
    answered = backend.post("/chat/", json=ask("three"), headers={"Idempotency-Key": "k-three"})
    assert answered.status_code == 200, answered.text
    assert answered.json()["message"]["content"] == "You said: three"
    cancel(backend, running[1])


def test_the_cap_is_per_user(start_backend: StartBackend, upstream: FakeOpenAI) -> None:
    backend = start_backend(auth_mode="jwt", secret_key=SECRET, **LIMITED)
    upstream.script(SLOW, SLOW)
    running = [
        start_run(backend, "one", headers=auth("alice")),
        start_run(backend, "two", headers=auth("alice")),
    ]
    try:
        assert_too_many(backend.post("/chat/", json=ask("three"), headers=auth("alice")))
        answered = backend.post("/chat/", json=ask("hello"), headers=auth("bob"))
        assert answered.status_code == 200, answered.text
    finally:
        for thread_id in running:
            cancel(backend, thread_id, headers=auth("alice"))


def test_the_cap_holds_across_two_replicas_under_concurrent_requests(
    start_backend: StartBackend, upstream: FakeOpenAI, database_url: str
) -> None:
    replicas = [
        start_backend(max_active_runs_per_user=3, shutdown_grace_seconds=0) for _ in range(2)
    ]
    upstream.script(*[SLOW] * 10)

    def attempt(index: int) -> tuple[int, str | None]:
        replica = replicas[index % 2]
        with replica.stream("POST", "/chat/stream", json=ask(f"q{index}")) as response:
            if response.status_code != 200:
                response.read()
                return response.status_code, response.json()["error"]["code"]
            for line in response.iter_lines():
                if line.startswith("data:"):
                    return 200, json.loads(line.removeprefix("data:"))["thread_id"]
        raise AssertionError("the stream had no run.started")

    with ThreadPoolExecutor(10) as pool:
        outcomes = list(pool.map(attempt, range(10)))
    started = [value for status, value in outcomes if status == 200]
    try:
        assert sorted(status for status, _ in outcomes) == [200] * 3 + [429] * 7, outcomes
        assert {value for status, value in outcomes if status == 429} == {"too_many_active_runs"}
        # Only the three admitted runs wrote anything: thread, question, run.started each.
        assert event_count(database_url) == 9
        assert len(query(database_url, "SELECT DISTINCT thread_id FROM events")) == 3
    finally:
        for thread_id in started:
            cancel(replicas[0], str(thread_id))


def test_ended_runs_make_room_at_once(start_backend: StartBackend) -> None:
    backend = start_backend(max_active_runs_per_user=1)
    thread_id = None
    for index in range(4):
        body = ask(f"turn {index}", **({"thread_id": thread_id} if thread_id else {}))
        with backend.stream("POST", "/chat/stream", json=body) as response:
            assert response.status_code == 200, response.read()
            text = response.read().decode()
        assert "event: run.completed" in text
        thread_id = json.loads(text.split("data:", 1)[1].split("\n", 1)[0])["thread_id"]


def test_an_expired_lease_of_a_run_never_recorded_does_not_count(
    start_backend: StartBackend, database_url: str
) -> None:
    """A replica that died between taking a lease and recording the input."""

    async def dead_replica_leases() -> None:
        db = create_database(database_url)
        try:
            leases = RunLeases(db, "dead", lease_seconds=0.05, max_active_per_owner=10)
            for _ in range(2):
                await leases.take(str(uuid.uuid4()), str(uuid.uuid4()), "local")
        finally:
            await db.dispose()

    asyncio.run(dead_replica_leases())
    time.sleep(0.2)  # past their expiry
    backend = start_backend(**LIMITED)
    assert backend.post("/chat/", json=ask("hello")).status_code == 200


# ---- the count itself, with RunLeases over the real database -------------------------------


async def recorded_run(store: EventStore, owner: str) -> tuple[str, str]:
    """A thread whose run's input is in the log: the run is active."""
    thread_id, run_id = str(uuid.uuid4()), str(uuid.uuid4())
    await store.append(
        thread_id, [thread_created(owner=owner), message_added("hi"), run_started(run_id, 2)], 0
    )
    return thread_id, run_id


async def end_run(store: EventStore, thread_id: str, run_id: str) -> None:
    completed = NewEvent(
        RUN_COMPLETED,
        {
            "run_id": run_id,
            "message_id": str(uuid.uuid4()),
            "finish_reason": "stop",
            "usage": None,
            "latency_ms": 1.0,
            "ttft_ms": None,
        },
        {},
        terminal_event_id(run_id),
    )
    await store.append(thread_id, [completed], 3)


async def test_a_run_whose_replica_died_counts_until_it_is_resumed(
    db: Database, store: EventStore
) -> None:
    dead = RunLeases(db, "dead", lease_seconds=0.05, max_active_per_owner=1)
    thread_id, run_id = await recorded_run(store, "alice")
    await dead.take(run_id, thread_id, "alice")
    await asyncio.sleep(0.2)  # the lease expired; the run is still active
    live = RunLeases(db, "live", lease_seconds=30, max_active_per_owner=1)
    with pytest.raises(TooManyActiveRuns):
        await live.take(str(uuid.uuid4()), str(uuid.uuid4()), "alice")
    await live.take(str(uuid.uuid4()), str(uuid.uuid4()), "bob")


async def test_an_ended_run_counts_for_nothing_before_its_lease_is_released(
    db: Database, store: EventStore
) -> None:
    leases = RunLeases(db, "r", lease_seconds=30, max_active_per_owner=1)
    thread_id, run_id = await recorded_run(store, "alice")
    await leases.take(run_id, thread_id, "alice")
    with pytest.raises(TooManyActiveRuns):
        await leases.take(str(uuid.uuid4()), str(uuid.uuid4()), "alice")
    await end_run(store, thread_id, run_id)
    await leases.take(str(uuid.uuid4()), str(uuid.uuid4()), "alice")


async def test_concurrent_takes_on_two_pools_never_pass_the_cap(database_url: str) -> None:
    """Two replicas' connection pools taking leases for one user at the same moment."""
    dbs = [create_database(database_url) for _ in range(2)]
    try:
        replicas = [
            RunLeases(db, f"r{i}", lease_seconds=30, max_active_per_owner=3)
            for i, db in enumerate(dbs)
        ]

        async def take(index: int) -> bool:
            try:
                await replicas[index % 2].take(str(uuid.uuid4()), str(uuid.uuid4()), "alice")
            except TooManyActiveRuns:
                return False
            return True

        for _ in range(3):  # a race that passes once may not pass every time
            taken = await asyncio.gather(*(take(i) for i in range(16)))
            assert sum(taken) == 3, taken
            rows = query(database_url, "SELECT count(*) FROM run_leases WHERE owner = 'alice'")
            assert rows[0][0] == 3
            execute(database_url, "DELETE FROM run_leases")
    finally:
        for db in dbs:
            await db.dispose()
