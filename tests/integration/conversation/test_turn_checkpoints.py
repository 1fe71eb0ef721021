"""What the runner leaves of a thread's checkpoints when a run is refused or goes stale,
with the real turn graph and database (no HTTP)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from langchain_core.runnables import RunnableConfig

from main_backend.conversation.checkpoints import open_checkpointer, run_config
from main_backend.conversation.graph import (
    RunEnded,
    TurnContext,
    TurnDeps,
    build_turn_graph,
    fresh_state,
)
from main_backend.conversation.leases import RunLeases
from main_backend.conversation.progress import RunProgress
from main_backend.conversation.runner import TurnRunner
from main_backend.conversation.tables import run_leases
from main_backend.conversation.turns import (
    ChatCommand,
    ChatMessage,
    TurnPlan,
    new_run_id,
    plan_turn,
)
from main_backend.db import Database
from main_backend.errors import VersionConflict
from main_backend.events.store import EventStore
from main_backend.llm_client import LLMAgentClient
from tests.support.servers import free_port

LEASE_SECONDS = 0.1


@pytest.fixture
async def runner(db: Database, store: EventStore, database_url: str) -> AsyncIterator[TurnRunner]:
    leases = RunLeases(db, "here", lease_seconds=LEASE_SECONDS, max_active_per_owner=10)
    # Nothing listens there: every answer fails at once, which ends its run all the same.
    llm = LLMAgentClient(f"http://127.0.0.1:{free_port()}", timeout=1)
    try:
        async with open_checkpointer(database_url) as checkpointer:
            deps = TurnDeps(store, llm, None, 1000, RunProgress(db))
            graph = build_turn_graph(deps, checkpointer)
            yield TurnRunner(
                graph, checkpointer, store, leases, poll_seconds=1, sweep_seconds=1, max_resumes=1
            )
    finally:
        await llm.aclose()


async def plan(store: EventStore, thread_id: str | None = None) -> TurnPlan:
    command = ChatCommand(
        user="alice",
        messages=[ChatMessage("user", "hi")],
        model="gpt-4o-mini",
        temperature=0.5,
        max_tokens=None,
        thread_id=thread_id,
    )
    planned = await plan_turn(store, command, new_run_id())
    assert isinstance(planned, TurnPlan)  # the thread is idle: the run starts now
    return planned


async def turn(runner: TurnRunner, store: EventStore, thread_id: str | None = None) -> RunEnded:
    handle = await runner.start(await plan(store, thread_id), None, "alice")
    ended = await handle.wait_ended()
    assert ended is not None and ended.status == "failed"  # as expected: no agent there
    return ended


async def checkpoint_runs(runner: TurnRunner, thread_id: str) -> list[str]:
    """The run of each of the thread's checkpoints, newest first."""
    config: RunnableConfig = {"configurable": {"thread_id": thread_id}}
    return [saved.metadata["run_id"] async for saved in runner.checkpointer.alist(config)]


async def lease_count(db: Database) -> int:
    async with db.engine.connect() as conn:
        return await conn.scalar(sa.select(sa.func.count()).select_from(run_leases)) or 0


async def test_a_run_refused_at_its_input_leaves_the_thread_as_it_was(
    runner: TurnRunner, store: EventStore, db: Database
) -> None:
    first = await turn(runner, store)
    thread_id = first.thread_id
    assert await checkpoint_runs(runner, thread_id) == [first.run_id]
    late = await plan(store, thread_id)
    second = await turn(runner, store, thread_id)  # appended before `late` could be

    # `late` saved its first checkpoints on top of the second run's, then its append
    # met the version the second run moved the thread to.
    with pytest.raises(VersionConflict):
        await runner.start(late, None, "alice")

    assert await checkpoint_runs(runner, thread_id) == [second.run_id]
    state = await runner.graph.aget_state({"configurable": {"thread_id": thread_id}})
    assert state.values["run_id"] == second.run_id
    assert state.values["outcome"]["error"]["code"] == "llm_agent_unavailable"
    assert await lease_count(db) == 0


async def test_stale_runs_leave_the_thread_its_latest_recorded_state(
    runner: TurnRunner, store: EventStore, db: Database
) -> None:
    first = await turn(runner, store)
    thread_id = first.thread_id
    dead = RunLeases(db, "dead", lease_seconds=0.05, max_active_per_owner=10)

    async def run_on_dead_replica(plan: TurnPlan, *, record: bool) -> None:
        """The graph, driven by a replica that dies before its run's end is pruned,
        or (`record=False`) before the run's input is recorded."""
        await dead.take(plan.run_id, thread_id, "alice")
        await runner.graph.ainvoke(
            fresh_state({"thread_id": thread_id, "run_id": plan.run_id, "user": "alice"}),
            run_config(thread_id, plan.run_id),
            context=TurnContext(plan=plan),
            durability="sync",
            interrupt_before=None if record else ["record_input"],
        )

    ended = await plan(store, thread_id)
    await run_on_dead_replica(ended, record=True)
    unrecorded = await plan(store, thread_id)
    await run_on_dead_replica(unrecorded, record=False)
    runs = await checkpoint_runs(runner, thread_id)
    assert runs[-1] == first.run_id and runs[0] == unrecorded.run_id
    assert set(runs) == {first.run_id, ended.run_id, unrecorded.run_id}
    await asyncio.sleep(0.05 + LEASE_SECONDS + 0.1)  # expired a lease time ago

    assert await runner.collect_stale() == 2

    # The run that ended keeps its last checkpoint, the older ones went (the first
    # run's too), and nothing is left of the run the log does not know.
    assert await checkpoint_runs(runner, thread_id) == [ended.run_id]
    state = await runner.graph.aget_state({"configurable": {"thread_id": thread_id}})
    assert state.values["run_id"] == ended.run_id and state.next == ()
    assert await lease_count(db) == 0
