"""Queued runs survive the replica that drives their thread: real processes, one database.

Two backends share a database. Replica A drives a thread's run while more runs are
queued on it (`if_busy: enqueue`, sent to replica B). A then dies with SIGKILL: in the
middle of the answer, or right after the answer was stored and before it started the
next queued run. Either way replica B finishes what A left (resumes the run, or starts
the queue) and answers every queued question once, in order, with the history
alternating question and answer.
"""

from __future__ import annotations

import signal
from typing import Any

import httpx
import pytest

from main_backend.events.types import MESSAGE_ADDED, RUN_STARTED, RUN_TERMINAL_TYPES
from tests.e2e.conftest import HTTP_TIMEOUT, Backends, FakeUpstream, poll, read_log

pytestmark = pytest.mark.e2e


def background(client: httpx.Client, url: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(url + "/chat/", json={**body, "background": True})
    assert response.status_code == 202, response.text
    accepted: dict[str, Any] = response.json()
    return accepted


def ask(content: str, **fields: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], **fields}


def run_status(client: httpx.Client, url: str, thread_id: str, run_id: str) -> str:
    status: str = client.get(f"{url}/threads/{thread_id}/runs/{run_id}").json()["status"]
    return status


@pytest.mark.parametrize(
    "dies",
    ["mid-answer", "after the answer, before the next start"],
)
def test_queued_runs_are_answered_in_order_after_the_driving_replica_dies(
    backends: Backends, upstream: FakeUpstream, database_url: str, dies: str
) -> None:
    if dies == "mid-answer":
        driver = backends.start()
        upstream.script({"chunks": [f"p{i} " for i in range(300)], "chunk_delay": 0.05})
    else:
        # A's second append is run 1's answer: it dies right after it, before the
        # next queued run is started (the queue's start then falls to the sweeper).
        driver = backends.start("tests.support.crashing_backend:app", CRASH_AT="append-after:2")
        upstream.script({"chunks": [f"p{i} " for i in range(20)], "chunk_delay": 0.1})
    survivor = backends.start()
    with httpx.Client(timeout=HTTP_TIMEOUT) as client:
        first = background(client, driver.url, ask("Q1"))
        thread_id = first["thread_id"]
        queued = [
            background(client, survivor.url, ask(f"Q{i}", thread_id=thread_id, if_busy="enqueue"))
            for i in (2, 3)
        ]
        assert [q["status"] for q in queued] == ["pending", "pending"]
        if dies == "mid-answer":
            driver.process.send_signal(signal.SIGKILL)
        driver.process.wait(timeout=30)
        assert driver.process.returncode == -signal.SIGKILL

        poll(
            lambda: (
                run_status(client, survivor.url, thread_id, queued[-1]["run_id"]) == "completed"
            ),
            60,
            "the last queued run to complete on the survivor",
        )
        messages = client.get(f"{survivor.url}/threads/{thread_id}/messages").json()["messages"]
        runs = client.get(f"{survivor.url}/threads/{thread_id}/runs").json()["runs"]

    roles = [m["role"] for m in messages]
    assert roles == ["user", "assistant"] * 3, backends.logs()
    assert [m["content"] for m in messages if m["role"] == "user"] == ["Q1", "Q2", "Q3"]
    assert [m["content"] for m in messages[3::2]] == ["You said: Q2", "You said: Q3"]
    assert [r["status"] for r in runs] == ["completed"] * 3
    events, thread = read_log(database_url, thread_id)
    assert thread is not None and thread.queued_run_ids == [] and thread.active_run_id is None
    for run_id in [first["run_id"], *(q["run_id"] for q in queued)]:
        mine = [e for e in events if e.data.get("run_id") == run_id]
        assert [e.type for e in mine if e.type in RUN_TERMINAL_TYPES] == ["run.completed"]
        assert [e.type for e in mine].count(RUN_STARTED) == 1
    # Every question recorded once, after the answer before it.
    assert [e.data["content"] for e in events if e.type == MESSAGE_ADDED][::2] == [
        "Q1",
        "Q2",
        "Q3",
    ]
