"""A backend killed with SIGKILL at every step boundary of a turn, then taken over.

The first backend runs under `tests.support.crashing_backend`, which kills the process
at one precise point of the turn graph (record input → call the LLM → record outcome):
before and after each append, mid-stream, before and after the checkpoint LangGraph
saves. A second, ordinary backend then starts on the same database. Whatever the point,
the question ends answered once: one terminal event (`run.completed` with the upstream's
answer), no duplicate message, and nothing left behind but the thread's state: no
lease, and at most one checkpoint, the run's last, which LangGraph reads as the
thread's. Killed before the input was recorded, nothing is appended for the run, its
lease does not linger and none of its checkpoints stays.

The turn of a new thread saves, in order (the runner's durability is "exit"): [append 1:
the question and run.started], [answer deltas], [append 2: the answer and
run.completed], checkpoint 1, the run's only one. A run killed before it resumes from
its run.started; one killed after append 2 is over, and the survivor only forgets it:
its thread is left without a checkpoint of the run (the state the log holds is whole).

An edit and a regeneration (runs that answer an earlier message, on a thread that has a
turn already) are killed at the boundaries where they differ from a turn; they end once
too, with the answer under the message they answer (the edited question, the regenerated
answer's question), that answer the active leaf, and the read models verified.
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
from main_backend.events.types import MESSAGE_ADDED, RUN_COMPLETED, RUN_STARTED, RUN_TERMINAL_TYPES
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
from tests.support.checkpoints import checkpoint_runs, graph_state
from tests.support.servers import ServiceProcess

pytestmark = pytest.mark.e2e

# (name, CRASH_AT, whether the question and run.started were stored when the process died)
BOUNDARIES = [
    ("before run.started", "append-before:1", False),
    ("after run.started", "append-after:1", True),
    ("mid-stream", "delta:2", True),
    ("before the answer's append", "append-before:2", True),
    ("after the answer's append", "append-after:2", True),
    ("before the checkpoint", "checkpoint-before:1", True),
    ("after the checkpoint", "checkpoint-after:1", True),
]

# Points after which the answer was saved (in the log): the take-over must not ask for
# it again.
ANSWERED = {"append-after:2", "checkpoint-before:1", "checkpoint-after:1"}
# Points after the run's end was recorded and before its checkpoint was saved.
ENDED_WITHOUT_CHECKPOINT = {"append-after:2", "checkpoint-before:1"}


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


def get_cut_off(client: httpx.Client, url: str, body: dict[str, Any]) -> None:
    """Ask for a streamed answer; the backend dies before the answer ends."""
    with (
        contextlib.suppress(httpx.TransportError),
        client.stream("POST", url, json=body) as response,
    ):
        for _ in response.iter_lines():
            pass


def start_and_kill(
    backends: Backends, client: httpx.Client, crash_at: str, path: str, body: dict[str, Any]
) -> None:
    """A backend that dies at `crash_at` of the run `POST path` starts."""
    victim = backends.start("tests.support.crashing_backend:app", CRASH_AT=crash_at)
    get_cut_off(client, victim.url + path, body)
    victim.process.wait(timeout=20)
    assert victim.process.returncode == -signal.SIGKILL, "the backend did not die there"


def settled(database_url: str) -> dict[str, Any]:
    """What the database holds once the survivor took the victim's run over and forgot
    it: no lease; each thread one checkpoint, and a thread the log does not know none."""

    def check() -> dict[str, Any] | None:
        now = leftovers(database_url)
        threads = [thread for thread, _ in now["checkpoints"]]
        logged = {e.thread_id for e in now["events"]}
        done = len(threads) == len(set(threads)) and set(threads) <= logged
        return now if done and not now["leases"] else None

    found: dict[str, Any] = poll(check, 30, "the run to be taken over and forgotten")
    return found


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
    start_and_kill(backends, client, crash_at, "/chat/stream", ask(question))

    dead = leftovers(database_url)
    [run_id] = dead["leases"]  # the run's lease, left by the dead process
    new_events = [e for e in dead["events"] if e.thread_id not in threads_before]
    assert any(e.type == RUN_STARTED for e in new_events) == recorded, new_events

    # The survivor takes the run over once its lease expires, and forgets it once ended.
    after = settled(database_url)
    new_threads = {e.thread_id for e in after["events"]} - threads_before
    if not recorded:
        # Nothing of a run whose input was never recorded reaches the log.
        assert not new_threads
        return

    [thread_id] = new_threads
    if crash_at in ENDED_WITHOUT_CHECKPOINT:
        assert not [t for t, _ in after["checkpoints"] if t == thread_id]
    else:
        assert (thread_id, run_id) in after["checkpoints"]
        state = graph_state(database_url, thread_id)
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


@pytest.mark.timeout(900)  # 7 process start-ups, each a few seconds on a busy machine
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


# Edits and regenerations --------------------------------------------------------------

# A run that answers again from an earlier message (an edited question, or a regenerated
# answer's question), on a thread with a turn and its checkpoint already, killed where it
# matters for them: after its run.started and mid-answer (the take-over reads the
# message it answers back from its run.started), and an edit killed before its input is
# recorded (nothing of it may stay; the thread keeps its last turn's checkpoint). The
# other boundaries run the same code as a new turn's, above.
# One kind of boundary each (the plain turn covers all 7): before the input is recorded,
# after it (the answered message read back from the log), and mid-stream.
REBRANCH_BOUNDARIES = [
    ("edit", "before run.started", "append-before:1", False),
    ("regenerate", "after run.started", "append-after:1", True),
    ("edit", "mid-stream", "delta:2", True),
]
# How many times the upstream is asked for the answer: the victim died before asking, or
# while it streamed the answer; the survivor asks (again).
UPSTREAM_CALLS = {"append-after:1": 1, "delta:2": 2}
ADMIN_TOKEN = "crash-admin-token"


def rebranch_crash_and_take_over(
    backends: Backends,
    survivor: ServiceProcess,
    upstream: FakeUpstream,
    database_url: str,
    client: httpx.Client,
    kind: str,
    crash_at: str,
    recorded: bool,
) -> None:
    question = f"Will my {kind} survive a crash at {crash_at}?"
    first = chat(client, survivor, ask(question))
    thread_id = first["thread_id"]
    asked, answered = before = messages_of(client, survivor, thread_id)
    logged_before, _ = read_log(database_url, thread_id)
    upstream.reset()
    if kind == "edit":
        edited = f"{question} (edited)"
        target, body, prompt = asked, {"content": edited}, [("user", edited)]
    else:
        target, body, prompt = answered, {}, [("user", question)]
    path = f"/threads/{thread_id}/messages/{target['id']}/{kind}"
    start_and_kill(backends, client, crash_at, path, {**body, "stream": True})

    [run_id] = leftovers(database_url)["leases"]  # the run's lease, left by the dead process
    logged, _ = read_log(database_url, thread_id)
    assert any(e.data.get("run_id") == run_id for e in logged) == recorded, logged

    settled(database_url)
    events, thread = read_log(database_url, thread_id)
    assert thread is not None and thread.active_run_id is None
    verdict = client.get(
        survivor.url + "/admin/projections/verify",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert verdict.json() == {"ok": True, "mismatches": []}, verdict.text
    listing = messages_of(client, survivor, thread_id)
    if not recorded:
        # Nothing of the run reached the log, and the thread keeps its last turn's state.
        assert [e.event_id for e in events] == [e.event_id for e in logged_before]
        assert listing == before
        assert checkpoint_runs(database_url, thread_id) == [(thread_id, first["run_id"])]
        assert upstream.chat_requests() == []
        return

    # The run's events, once each: the edited question (a sibling of the one edited) and
    # run.started naming the message it answers; the answer under it; the end.
    run = [(e.type, e.data) for e in events[len(logged_before) :]]
    question_id = answer_parent = asked["id"]
    if kind == "edit":
        (added, edit_data), *run = run
        assert (added, edit_data["role"], edit_data["content"]) == (MESSAGE_ADDED, "user", edited)
        assert edit_data["parent_id"] is None  # the edited question was the first
        question_id = answer_parent = edit_data["message_id"]
    [(started, started_data), (added, answer), (ended, ended_data)] = run
    assert (started, started_data["run_id"], started_data["parent_id"]) == (
        RUN_STARTED,
        run_id,
        answer_parent,
    )
    assert (added, answer["role"], answer["run_id"], answer["parent_id"]) == (
        MESSAGE_ADDED,
        "assistant",
        run_id,
        answer_parent,
    )
    assert not answer["partial"]
    assert answer["content"] == f"You said: {prompt[-1][1]}"  # the fake's answer
    assert (ended, ended_data["run_id"]) == (RUN_COMPLETED, run_id)
    assert thread.head_id == answer["message_id"]
    assert checkpoint_runs(database_url, thread_id) == [(thread_id, run_id)]
    assert graph_state(database_url, thread_id).values["outcome"]["content"] == answer["content"]

    # The active path is the new branch; the old one is its sibling.
    if kind == "edit":
        assert [(m["id"], m["parent_id"], m["sibling_ids"]) for m in listing] == [
            (question_id, None, [asked["id"], question_id]),
            (answer["message_id"], question_id, [answer["message_id"]]),
        ]
    else:
        assert [(m["id"], m["parent_id"], m["sibling_ids"]) for m in listing] == [
            (asked["id"], None, [asked["id"]]),
            (answer["message_id"], asked["id"], [answered["id"], answer["message_id"]]),
        ]
    # The upstream was sent the new branch's prompt, and only it.
    sent = [
        [(m["role"], m["content"]) for m in r["body"]["messages"] if m["role"] != "system"]
        for r in upstream.chat_requests()
    ]
    assert sent == [prompt] * UPSTREAM_CALLS[crash_at]


@pytest.mark.timeout(600)  # 3 process start-ups, each a few seconds on a busy machine
def test_an_edit_and_a_regeneration_survive_sigkill_where_it_matters(
    backends: Backends, upstream: FakeUpstream, database_url: str
) -> None:
    survivor = backends.start(ADMIN_TOKEN=ADMIN_TOKEN)
    with httpx.Client(timeout=HTTP_TIMEOUT) as client:
        for kind, name, crash_at, recorded in REBRANCH_BOUNDARIES:
            try:
                rebranch_crash_and_take_over(
                    backends, survivor, upstream, database_url, client, kind, crash_at, recorded
                )
            except BaseException as exc:
                print(backends.logs())
                raise AssertionError(f"{kind} killed {name} ({crash_at}): {exc}") from exc
        assert "AssertionError" not in backends.logs()
