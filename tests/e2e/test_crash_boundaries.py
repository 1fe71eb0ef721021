"""A backend killed with SIGKILL at every step boundary of a turn, then taken over.

The first backend runs under `tests.support.crashing_backend`, which kills the process
at one precise point of the turn graph (record input → call the LLM → record outcome):
before and after each checkpoint LangGraph saves, after the input's append, mid-stream,
after the answer's append. A second, ordinary backend then starts on the same database.
Whatever the point, the question ends answered once: one terminal event (`run.completed`
with the upstream's answer), no duplicate message, and nothing left behind but the
thread's state: no lease, and one checkpoint, the run's last, which LangGraph reads as the
thread's. Killed before the input was recorded, nothing is appended for the run, its
lease does not linger and none of its checkpoints stays.

The turn of a new thread saves, in order: checkpoint 1 (the input), the start step's
writes, checkpoint 2, [append 1: the question and run.started], record_input's writes,
checkpoint 3, [answer deltas], call_llm's writes, checkpoint 4, [append 2: the answer and
run.completed], record_outcome's writes, checkpoint 5.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from main_backend.conversation.ids import terminal_event_id
from main_backend.conversation.tables import run_leases
from main_backend.db import create_database
from main_backend.events.tables import events as events_table
from main_backend.events.types import MESSAGE_ADDED, RUN_STARTED, RUN_TERMINAL_TYPES
from tests.e2e.conftest import HTTP_TIMEOUT, Backends, FakeUpstream, poll, read_log
from tests.support.checkpoints import checkpoint_runs, graph_state

pytestmark = pytest.mark.e2e

# (name, CRASH_AT, whether the question and run.started were stored when the process died)
BOUNDARIES = [
    ("before the input checkpoint", "checkpoint-before:1", False),
    ("after the input checkpoint", "checkpoint-after:1", False),
    ("before the start checkpoint", "checkpoint-before:2", False),
    ("after the start checkpoint", "checkpoint-after:2", False),
    ("after run.started", "append-after:1", True),
    ("before record_input's checkpoint", "checkpoint-before:3", True),
    ("after record_input's checkpoint", "checkpoint-after:3", True),
    ("mid-stream", "delta:2", True),
    ("before call_llm's checkpoint", "checkpoint-before:4", True),
    ("after call_llm's writes", "writes-after:3", True),
    ("after call_llm's checkpoint", "checkpoint-after:4", True),
    ("after the answer's append", "append-after:2", True),
    ("before the final checkpoint", "checkpoint-before:5", True),
    ("after the final checkpoint", "checkpoint-after:5", True),
]

# Points after which the answer was saved (call_llm's writes, then the log): the take-over
# must not ask for it again. (Before checkpoint 4 the writes may still be in flight.)
ANSWERED = {
    "writes-after:3",
    "checkpoint-after:4",
    "append-after:2",
    "checkpoint-before:5",
    "checkpoint-after:5",
}


def leftovers(database_url: str) -> dict[str, Any]:
    """Every event, lease and checkpoint in the database."""

    async def read() -> dict[str, Any]:
        db = create_database(database_url)
        try:
            async with db.engine.connect() as conn:
                stored = (
                    await conn.execute(
                        sa.select(events_table.c.thread_id, events_table.c.type).order_by(
                            events_table.c.position
                        )
                    )
                ).all()
                leases = (await conn.execute(sa.select(run_leases.c.run_id))).all()
            return {"events": stored, "leases": [row.run_id for row in leases]}
        finally:
            await db.dispose()

    # (thread id, run id) of each checkpoint, oldest first.
    return {**asyncio.run(read()), "checkpoints": checkpoint_runs(database_url)}


def ask_and_get_cut_off(client: httpx.Client, url: str, question: str) -> None:
    """Ask on a new thread; the backend dies before the answer ends."""
    body = {"messages": [{"role": "user", "content": question}]}
    with (
        contextlib.suppress(httpx.TransportError),
        client.stream("POST", url + "/chat/stream", json=body) as response,
    ):
        for _ in response.iter_lines():
            pass


def crash_and_take_over(
    backends: Backends,
    upstream: FakeUpstream,
    database_url: str,
    client: httpx.Client,
    crash_at: str,
    recorded: bool,
) -> None:
    upstream.reset()
    threads_before = {e.thread_id for e in leftovers(database_url)["events"]}
    question = f"Will my answer survive a crash at {crash_at}?"
    victim = backends.start("tests.support.crashing_backend:app", CRASH_AT=crash_at)
    ask_and_get_cut_off(client, victim.url, question)
    victim.process.wait(timeout=20)
    assert victim.process.returncode == -signal.SIGKILL, "the backend did not die there"

    dead = leftovers(database_url)
    [run_id] = dead["leases"]  # the run's lease, left by the dead process
    new_events = [e for e in dead["events"] if e.thread_id not in threads_before]
    assert any(e.type == RUN_STARTED for e in new_events) == recorded, new_events

    # The survivor takes the run over once its lease expires, and forgets it once ended:
    # each thread keeps one checkpoint, and a thread the log does not know none.
    def settled() -> dict[str, Any] | None:
        now = leftovers(database_url)
        threads = [thread for thread, _ in now["checkpoints"]]
        logged = {e.thread_id for e in now["events"]}
        done = len(threads) == len(set(threads)) and set(threads) <= logged
        return now if done and not now["leases"] else None

    after = poll(settled, 30, "the run to be taken over and forgotten")
    new_threads = {e.thread_id for e in after["events"]} - threads_before
    if not recorded:
        # Nothing of a run whose input was never recorded reaches the log.
        assert not new_threads
        return

    [thread_id] = new_threads
    assert (thread_id, run_id) in after["checkpoints"]
    state = graph_state(database_url, thread_id)  # at the end, or one step short of it
    assert state.values["run_id"] == run_id
    assert state.values["outcome"]["content"] == f"You said: {question}"
    events, thread = read_log(database_url, thread_id)
    terminal = [e for e in events if e.type in RUN_TERMINAL_TYPES and e.data["run_id"] == run_id]
    assert [(e.type, e.event_id) for e in terminal] == [
        ("run.completed", terminal_event_id(run_id))
    ], [(e.type, e.data) for e in events]
    added = [e for e in events if e.type == MESSAGE_ADDED]
    assert [(e.data["role"], e.data["content"]) for e in added] == [
        ("user", question),
        ("assistant", f"You said: {question}"),
    ]  # the fake's answer
    assert added[1].data["run_id"] == run_id and not added[1].data["partial"]
    assert len({e.data["message_id"] for e in added}) == len(added)
    assert thread is not None and thread.active_run_id is None
    if crash_at in ANSWERED:
        assert len(upstream.chat_requests()) == 1, "the answer was asked for twice"


@pytest.mark.timeout(900)  # 14 process start-ups, each a few seconds on a busy machine
def test_a_turn_survives_sigkill_at_each_step_boundary(
    backends: Backends, upstream: FakeUpstream, database_url: str
) -> None:
    # One survivor for every boundary (process start-up dominates the run time). It
    # leaves the victim's run alone while the victim renews the run's lease.
    backends.start()
    with httpx.Client(timeout=HTTP_TIMEOUT) as client:
        for name, crash_at, recorded in BOUNDARIES:
            try:
                crash_and_take_over(backends, upstream, database_url, client, crash_at, recorded)
            except BaseException as exc:
                print(backends.logs())
                raise AssertionError(f"killed {name} ({crash_at}): {exc}") from exc
        assert "AssertionError" not in backends.logs()
