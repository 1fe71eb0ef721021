"""A thread's LangGraph checkpoints read back, for tests: through the turn graph (its
`aget_state`, as anyone using LangGraph would) and as the rows the savers stored."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import StateSnapshot

from main_backend.conversation.checkpoints import open_checkpointer
from main_backend.conversation.graph import TurnContext, TurnDeps, TurnState, build_turn_graph
from main_backend.conversation.progress import RunProgress
from main_backend.db import create_database
from main_backend.events.store import EventStore
from main_backend.llm_client import LLMAgentClient
from tests.support.databases import query
from tests.support.servers import free_port

# The tables whose rows belong to a thread, per engine.
THREAD_TABLES = {
    "sqlite": ("checkpoints", "writes"),
    "postgres": ("checkpoints", "checkpoint_blobs", "checkpoint_writes"),
}
# The run that saved a checkpoint, from its metadata.
RUN_OF_CHECKPOINT = {
    "sqlite": "json_extract(CAST(metadata AS TEXT), '$.run_id')",
    "postgres": "metadata ->> 'run_id'",
}


TurnGraph = CompiledStateGraph[TurnState, TurnContext, TurnState, TurnState]
T = TypeVar("T")


def engine_of(database_url: str) -> str:
    return "sqlite" if database_url.startswith("sqlite") else "postgres"


def graph_state(database_url: str, thread_id: str) -> StateSnapshot:
    """`aget_state({"configurable": {"thread_id": thread_id}})` of the turn graph."""
    return asyncio.run(
        _with_turn_graph(database_url, lambda graph: graph.aget_state(_of(thread_id)))
    )


def graph_history(database_url: str, thread_id: str, run_id: str) -> list[StateSnapshot]:
    """The states the run's checkpoints hold, newest first (`aget_state_history`)."""

    async def history(graph: TurnGraph) -> list[StateSnapshot]:
        states = graph.aget_state_history(_of(thread_id), filter={"run_id": run_id})
        return [state async for state in states]

    return asyncio.run(_with_turn_graph(database_url, history))


def _of(thread_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id}}


async def _with_turn_graph(database_url: str, read: Callable[[TurnGraph], Awaitable[T]]) -> T:
    """What `read` finds with the real turn graph, over a checkpointer of its own."""
    db = create_database(database_url)
    llm = LLMAgentClient(f"http://127.0.0.1:{free_port()}", timeout=1)  # never called
    try:
        async with open_checkpointer(database_url) as saver:
            deps = TurnDeps(EventStore(db), llm, None, 1000, RunProgress(db))
            return await read(build_turn_graph(deps, saver))
    finally:
        await llm.aclose()
        await db.dispose()


def checkpoint_runs(database_url: str, thread_id: str | None = None) -> list[tuple[str, str]]:
    """(thread id, run id) of every checkpoint stored (of one thread), oldest first."""
    run = RUN_OF_CHECKPOINT[engine_of(database_url)]
    where = "" if thread_id is None else "WHERE thread_id = :t"
    rows = query(
        database_url,
        f"SELECT thread_id, {run} FROM checkpoints {where} ORDER BY checkpoint_id",
        t=thread_id,
    )
    return [(str(thread), str(run_id)) for thread, run_id in rows]


def stored_rows(database_url: str, thread_id: str) -> dict[str, tuple[int, int]]:
    """Per table of the thread's checkpoints: its rows and their bytes."""
    stored = {}
    for table in THREAD_TABLES[engine_of(database_url)]:
        rows = query(database_url, f"SELECT * FROM {table} WHERE thread_id = :t", t=thread_id)
        stored[table] = (len(rows), sum(stored_size(value) for row in rows for value in row))
    return stored


def stored_size(value: object) -> int:
    if isinstance(value, bytes | memoryview):
        return len(bytes(value))
    return len(str(value).encode())
