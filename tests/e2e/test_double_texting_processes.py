"""Background runs and double-texting across replicas: real processes, one database.

Each `if_busy` policy is sent to replica B while replica A drives the thread's run in the
background: B refuses it, queues it, or queues it and has A's run stopped (the cancel
reaches A through the run's lease), and the thread ends as the policy says.

Queued runs survive the replica that drives their thread: A drives a thread's run while
more runs are queued on it (`if_busy: enqueue`, sent to replica B). A then dies with
SIGKILL: in the middle of the answer, or right after the answer was stored and before it
started the next queued run. Either way replica B finishes what A left (resumes the run,
or starts the queue) and answers every queued question once, in order, with the history
alternating question and answer.
"""

from __future__ import annotations

import signal
from typing import Any

import httpx
import pytest

from main_backend.events.types import MESSAGE_ADDED, RUN_STARTED, RUN_TERMINAL_TYPES
from tests.e2e.conftest import HTTP_TIMEOUT, Backends, FakeUpstream, ask, poll, read_log

pytestmark = pytest.mark.e2e


def background(client: httpx.Client, url: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(url + "/chat/", json={**body, "background": True})
    assert response.status_code == 202, response.text
    accepted: dict[str, Any] = response.json()
    return accepted


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
        # A's second append is run 1's answer at the version its input left, refused
        # (the queued runs moved the thread); its third, at the thread's version, is
        # stored: it dies right after it, before the next queued run is started (the
        # queue's start then falls to the sweeper).
        driver = backends.start("tests.support.crashing_backend:app", CRASH_AT="append-after:3")
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


@pytest.mark.parametrize("policy", ["reject", "enqueue", "interrupt", "rollback"])
def test_each_if_busy_policy_across_two_replicas(
    backends: Backends, upstream: FakeUpstream, policy: str
) -> None:
    driver, other = backends.start(), backends.start()
    first_answer = "".join(f"p{i} " for i in range(150))
    upstream.script({"chunks": [f"p{i} " for i in range(150)], "chunk_delay": 0.04})
    with httpx.Client(timeout=HTTP_TIMEOUT) as client:
        first = background(client, driver.url, ask("Q1"))
        thread_id, first_run = first["thread_id"], first["run_id"]
        # The run is generating (two deltas seen through the other replica) before B is asked.
        path = f"{other.url}/threads/{thread_id}/runs/{first_run}/stream"
        with client.stream("GET", path) as joined:
            names = []
            for line in joined.iter_lines():
                if line.startswith("event: "):
                    names.append(line.removeprefix("event: "))
                if names.count("delta") == 2:
                    break
        second = client.post(
            other.url + "/chat/", json=ask("Q2", thread_id=thread_id, if_busy=policy)
        )
        if policy == "reject":
            assert second.status_code == 409, second.text
            assert second.json()["error"]["code"] == "thread_busy"
        else:
            assert second.status_code == 200, second.text
            assert second.json()["message"]["content"] == "You said: Q2"
        poll(
            lambda: (
                run_status(client, other.url, thread_id, first_run) in ("completed", "cancelled")
            ),
            60,
            "the first run to end",
        )
        run = client.get(f"{other.url}/threads/{thread_id}/runs/{first_run}").json()
        messages = client.get(f"{other.url}/threads/{thread_id}/messages").json()["messages"]
    history = [(m["role"], m["content"]) for m in messages]
    if policy in ("reject", "enqueue"):
        assert run["status"] == "completed"
        assert history[:2] == [("user", "Q1"), ("assistant", first_answer)]
    else:
        assert (run["status"], run["cancelled_by"]) == ("cancelled", policy)
    if policy == "reject":
        assert len(history) == 2
    elif policy == "rollback":
        assert history == [("user", "Q2"), ("assistant", "You said: Q2")]
    else:
        assert history[0] == ("user", "Q1") and first_answer.startswith(history[1][1])
        assert history[2:] == [("user", "Q2"), ("assistant", "You said: Q2")]
    if policy == "interrupt":
        assert len(history[1][1]) < len(first_answer)
