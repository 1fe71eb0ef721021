"""LangGraph checkpoints in the app's database, on SQLite and Postgres.

The schema comes from migration 0002 alone: the app never runs a saver's
`setup()`, and the frozen DDL must build exactly what the installed savers'
own `setup()` builds (a saver release that changes its schema fails here).
"""

from __future__ import annotations

import asyncio
import operator
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, TypedDict

import aiosqlite
import pytest
import sqlalchemy as sa
from alembic import command
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph import END, START, StateGraph
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from main_backend.conversation.checkpoints import (
    drop_run,
    open_checkpointer,
    postgres_conninfo,
    prune_ended_run,
    prune_thread,
    run_config,
    sqlite_path,
)
from main_backend.db import create_database, normalize_database_url
from tests.support import databases

SQLITE_TABLES = {"checkpoints", "writes"}
POSTGRES_TABLES = {"checkpoints", "checkpoint_blobs", "checkpoint_writes", "checkpoint_migrations"}
POSTGRES = pytest.param("postgres", marks=pytest.mark.postgres)
# The tables whose rows belong to a thread.
THREAD_TABLES = {
    "sqlite": ["checkpoints", "writes"],
    "postgres": ["checkpoints", "checkpoint_blobs", "checkpoint_writes"],
}


class State(TypedDict):
    steps: Annotated[list[str], operator.add]
    notes: dict[str, Any]  # not a primitive: Postgres stores it in checkpoint_blobs


def two_step_graph(
    saver: BaseCheckpointSaver[str],
    runs: dict[str, int],
    *,
    fail_second_once: bool = False,
    gate: tuple[asyncio.Event, asyncio.Event] | None = None,
    stop_before_second: bool = False,
) -> Any:
    """`gate`: (entered, go): the second step says it started, and waits for go."""

    async def first(state: State) -> dict[str, Any]:
        runs["first"] += 1
        return {"steps": ["first"], "notes": {"first": runs["first"]}}

    async def second(state: State) -> dict[str, Any]:
        runs["second"] += 1
        if gate is not None:
            gate[0].set()
            await gate[1].wait()
        if fail_second_once and runs["second"] == 1:
            raise RuntimeError("second step failed")
        return {"steps": ["second"], "notes": {**state["notes"], "second": runs["second"]}}

    builder = StateGraph(State)
    builder.add_node("first", first)
    builder.add_node("second", second)
    builder.add_edge(START, "first")
    builder.add_edge("first", "second")
    builder.add_edge("second", END)
    return builder.compile(
        checkpointer=saver, interrupt_before=["second"] if stop_before_second else None
    )


def config(thread_id: str) -> Any:
    return {"configurable": {"thread_id": thread_id}}


@pytest.fixture(autouse=True)
def no_saver_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    """The app must never create checkpoint tables: the migration did."""

    async def refuse(self: AsyncPostgresSaver) -> None:
        raise AssertionError("AsyncPostgresSaver.setup() ran; migration 0002 owns the schema")

    # The SQLite saver calls setup() before every read and write; it must find
    # itself set up already rather than run its DDL.
    sqlite_setup = AsyncSqliteSaver.setup

    async def already_set_up(self: AsyncSqliteSaver) -> None:
        assert self.is_setup, "AsyncSqliteSaver would run its DDL; migration 0002 owns the schema"
        await sqlite_setup(self)

    monkeypatch.setattr(AsyncPostgresSaver, "setup", refuse)
    monkeypatch.setattr(AsyncSqliteSaver, "setup", already_set_up)


@pytest.fixture
async def saver(database_url: str) -> AsyncIterator[BaseCheckpointSaver[str]]:
    async with open_checkpointer(database_url) as checkpointer:
        yield checkpointer


async def thread_rows(database_url: str, engine_name: str, thread_id: str) -> dict[str, int]:
    database = create_database(database_url)
    try:
        async with database.engine.connect() as conn:
            return {
                table: (
                    await conn.execute(
                        sa.text(f"SELECT count(*) FROM {table} WHERE thread_id = :t"),
                        {"t": thread_id},
                    )
                ).scalar_one()
                for table in THREAD_TABLES[engine_name]
            }
    finally:
        await database.dispose()


async def test_a_graph_checkpoints_and_reads_back(
    saver: BaseCheckpointSaver[str], database_url: str, engine_name: str
) -> None:
    runs = {"first": 0, "second": 0}
    result = await two_step_graph(saver, runs).ainvoke(
        {"steps": [], "notes": {}}, config=config("t1")
    )
    assert result["steps"] == ["first", "second"]

    saved = await saver.aget_tuple(config("t1"))
    assert saved is not None
    assert saved.checkpoint["channel_values"]["steps"] == ["first", "second"]
    assert saved.checkpoint["channel_values"]["notes"] == {"first": 1, "second": 1}
    assert saved.metadata["step"] == 2
    history = [t async for t in saver.alist(config("t1"))]
    assert len(history) == 4  # input, before "first", before "second", final
    assert history[0].checkpoint["id"] == saved.checkpoint["id"]
    assert await saver.aget_tuple(config("other")) is None
    assert all(n > 0 for n in (await thread_rows(database_url, engine_name, "t1")).values())


def url_forms(database_url: str, engine_name: str) -> list[str]:
    if engine_name == "sqlite":
        return [database_url.replace("sqlite://", "sqlite+aiosqlite://")]
    return [
        database_url.replace("postgresql://", "postgres://"),
        database_url.replace("postgresql://", "postgresql+psycopg://"),
        database_url.replace("postgresql://", "postgresql+asyncpg://"),
    ]


async def test_every_database_url_form_reaches_the_same_database(
    saver: BaseCheckpointSaver[str], database_url: str, engine_name: str
) -> None:
    await two_step_graph(saver, {"first": 0, "second": 0}).ainvoke(
        {"steps": [], "notes": {}}, config=config("t1")
    )
    for url in url_forms(database_url, engine_name):
        async with open_checkpointer(url) as other:
            saved = await other.aget_tuple(config("t1"))
            assert saved is not None, url
            assert saved.checkpoint["channel_values"]["steps"] == ["first", "second"]


@pytest.mark.parametrize("engine_name", ["sqlite"])
async def test_the_sqlite_connection_waits_for_writers_in_wal_mode(
    saver: BaseCheckpointSaver[str],
) -> None:
    assert isinstance(saver, AsyncSqliteSaver)
    async with saver.conn.execute("PRAGMA journal_mode") as cursor:
        assert await cursor.fetchone() == ("wal",)
    async with saver.conn.execute("PRAGMA busy_timeout") as cursor:
        assert await cursor.fetchone() == (30_000,)


@pytest.mark.parametrize("durability", ["async", "sync", "exit"])
async def test_a_failed_run_resumes_from_its_checkpoint(
    saver: BaseCheckpointSaver[str], durability: Any
) -> None:
    runs = {"first": 0, "second": 0}
    graph = two_step_graph(saver, runs, fail_second_once=True)
    with pytest.raises(RuntimeError, match="second step failed"):
        await graph.ainvoke({"steps": [], "notes": {}}, config=config("t1"), durability=durability)
    assert runs == {"first": 1, "second": 1}
    state = await graph.aget_state(config("t1"))
    assert state.next == ("second",)
    assert state.values["steps"] == ["first"]

    result = await graph.ainvoke(None, config=config("t1"), durability=durability)

    assert runs == {"first": 1, "second": 2}  # only the remaining node ran again
    assert result["steps"] == ["first", "second"]
    assert result["notes"] == {"first": 1, "second": 2}
    assert (await graph.aget_state(config("t1"))).next == ()


@pytest.mark.parametrize("engine_name", [POSTGRES])
async def test_the_pool_replaces_connections_the_server_dropped(
    saver: BaseCheckpointSaver[str], database_url: str
) -> None:
    graph = two_step_graph(saver, {"first": 0, "second": 0})
    await graph.ainvoke({"steps": [], "notes": {}}, config=config("t1"))
    database = normalize_database_url(database_url).database
    admin_url = databases.POSTGRES_ADMIN_URL
    async with await AsyncConnection.connect(admin_url, autocommit=True) as admin:
        terminated = await (
            await admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s",
                (database,),
            )
        ).fetchone()
    assert terminated is not None and terminated[0] >= 1  # as a server restart would

    assert await saver.aget_tuple(config("t1")) is not None
    await graph.ainvoke({"steps": [], "notes": {}}, config=config("t2"))


async def test_prune_thread_deletes_one_thread_only(
    saver: BaseCheckpointSaver[str], database_url: str, engine_name: str
) -> None:
    for thread_id in ("t1", "t2"):
        await two_step_graph(saver, {"first": 0, "second": 0}).ainvoke(
            {"steps": [], "notes": {}}, config=config(thread_id)
        )
    kept = await thread_rows(database_url, engine_name, "t2")
    assert all(n > 0 for n in kept.values()), kept
    assert await thread_rows(database_url, engine_name, "t1") == kept

    await prune_thread(saver, "t1")

    assert await thread_rows(database_url, engine_name, "t1") == dict.fromkeys(kept, 0)
    assert await thread_rows(database_url, engine_name, "t2") == kept
    assert await saver.aget_tuple(config("t1")) is None
    assert await saver.aget_tuple(config("t2")) is not None
    await prune_thread(saver, "never-existed")  # not an error


# --- A thread keeps its latest run's checkpoint --------------------------------------

NEW_INPUT: dict[str, Any] = {"steps": [], "notes": {}}


def counts() -> dict[str, int]:
    return {"first": 0, "second": 0}


async def run_to_end(saver: BaseCheckpointSaver[str], thread_id: str, run_id: str) -> None:
    await two_step_graph(saver, counts()).ainvoke(
        NEW_INPUT, run_config(thread_id, run_id), durability="sync"
    )


async def checkpoint_runs(
    saver: BaseCheckpointSaver[str], thread_id: str
) -> list[tuple[str, str | None]]:
    """(checkpoint id, the run that saved it) of each of the thread's checkpoints, newest
    first, from the metadata LangGraph saved."""
    return [
        (saved.checkpoint["id"], saved.metadata.get("run_id"))
        async for saved in saver.alist(config(thread_id))
    ]


async def test_a_thread_keeps_its_last_runs_checkpoint_in_constant_space(
    saver: BaseCheckpointSaver[str], database_url: str, engine_name: str
) -> None:
    await run_to_end(saver, "other", "r0")
    other = await thread_rows(database_url, engine_name, "other")
    graph = two_step_graph(saver, counts())
    at_rest = []
    for n in range(1, 4):
        await run_to_end(saver, "t1", f"r{n}")
        # input, before first, before second, final: each names the run.
        assert [run for _, run in await checkpoint_runs(saver, "t1")][:4] == [f"r{n}"] * 4

        # The run's three older checkpoints go, and the previous run's last.
        assert await prune_ended_run(saver, "t1", f"r{n}") == (3 if n == 1 else 4)

        [(kept, run)] = await checkpoint_runs(saver, "t1")
        assert run == f"r{n}"
        state = await graph.aget_state(config("t1"))
        assert state.config["configurable"]["checkpoint_id"] == kept
        assert state.metadata is not None and state.metadata["run_id"] == f"r{n}"
        assert state.next == () and state.values["notes"] == {"first": 1, "second": 1}
        assert state.parent_config is None  # its parent was pruned
        at_rest.append(await thread_rows(database_url, engine_name, "t1"))
    assert at_rest[0]["checkpoints"] == 1
    assert at_rest[0] == at_rest[1] == at_rest[2], at_rest  # writes (and blobs) included
    assert await prune_ended_run(saver, "t1", "no-such-run") == 0
    assert await thread_rows(database_url, engine_name, "t1") == at_rest[-1]
    assert await thread_rows(database_url, engine_name, "other") == other


async def test_pruning_never_touches_a_newer_runs_checkpoints(
    saver: BaseCheckpointSaver[str], database_url: str, engine_name: str
) -> None:
    # r1 is in its second step when r2 starts on the thread and saves checkpoints:
    # they are newer than r1's first and older than r1's last, which r1 saves after.
    entered, go = asyncio.Event(), asyncio.Event()
    r1 = asyncio.create_task(
        two_step_graph(saver, counts(), gate=(entered, go)).ainvoke(
            NEW_INPUT, run_config("t1", "r1"), durability="sync"
        )
    )
    await entered.wait()
    # r2's input leaves `notes` alone, so its first checkpoints use the `notes` that
    # r1's checkpoint before its second step holds (on Postgres: the same blob).
    await two_step_graph(saver, counts(), stop_before_second=True).ainvoke(
        {"steps": []}, run_config("t1", "r2"), durability="sync"
    )
    go.set()
    await r1
    before = await checkpoint_runs(saver, "t1")
    r1_ids = [i for i, run in before if run == "r1"]
    r2_ids = [i for i, run in before if run == "r2"]
    assert min(r1_ids) < min(r2_ids) and max(r2_ids) < max(r1_ids), before

    assert await prune_ended_run(saver, "t1", "r1") == len(r1_ids) - 1

    after = await checkpoint_runs(saver, "t1")
    assert after == [(max(r1_ids), "r1"), *((i, "r2") for i in r2_ids)]
    for checkpoint_id in r2_ids:  # whole: no blob of theirs went with r1's checkpoints
        saved = await saver.aget_tuple(
            {
                "configurable": {
                    "thread_id": "t1",
                    "checkpoint_ns": "",
                    "checkpoint_id": checkpoint_id,
                }
            }
        )
        assert saved is not None
        assert saved.checkpoint["channel_values"].get("notes") == {"first": 1}, checkpoint_id
    rows = await thread_rows(database_url, engine_name, "t1")
    assert rows["checkpoints"] == 1 + len(r2_ids)


async def test_dropping_a_run_never_recorded_leaves_the_previous_runs_checkpoint(
    saver: BaseCheckpointSaver[str], database_url: str, engine_name: str
) -> None:
    await run_to_end(saver, "t1", "r1")
    await prune_ended_run(saver, "t1", "r1")
    [(kept, _)] = await checkpoint_runs(saver, "t1")
    settled = await thread_rows(database_url, engine_name, "t1")
    # r2 stops after its first step (as a run refused there would), on top of r1's.
    await two_step_graph(saver, counts(), stop_before_second=True).ainvoke(
        NEW_INPUT, run_config("t1", "r2"), durability="sync"
    )
    assert [run for _, run in await checkpoint_runs(saver, "t1")] == ["r2"] * 3 + ["r1"]

    assert await drop_run(saver, "t1", "r2") == 3

    assert await checkpoint_runs(saver, "t1") == [(kept, "r1")]
    assert await thread_rows(database_url, engine_name, "t1") == settled
    assert await drop_run(saver, "t1", "r2") == 0


# --- The migration is the savers' own schema ------------------------------------------


def table_names(database_url: str) -> set[str]:
    engine = sa.create_engine(
        normalize_database_url(database_url).set(
            drivername="sqlite" if database_url.startswith("sqlite") else "postgresql+psycopg"
        )
    )
    try:
        return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade_round_trip(empty_database_url: str, engine_name: str) -> None:
    expected = SQLITE_TABLES if engine_name == "sqlite" else POSTGRES_TABLES
    alembic = databases.alembic_config(empty_database_url)
    command.upgrade(alembic, "head")
    assert table_names(empty_database_url) >= expected
    command.check(alembic)  # the savers' tables are not drift
    command.downgrade(alembic, "0001")
    assert table_names(empty_database_url) & expected == set()
    command.downgrade(alembic, "base")
    assert table_names(empty_database_url) == set()
    command.upgrade(alembic, "head")
    assert table_names(empty_database_url) >= expected
    command.check(alembic)


def test_the_migration_adopts_tables_a_saver_set_up_before(
    empty_database_url: str, engine_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.undo()  # a deploy from before migration 0002 ran the savers' setup()
    url = normalize_database_url(empty_database_url)

    async def saver_setup() -> None:
        if engine_name == "sqlite":
            async with aiosqlite.connect(sqlite_path(url)) as conn:
                await AsyncSqliteSaver(conn).setup()
        else:
            async with AsyncPostgresSaver.from_conn_string(postgres_conninfo(url)) as saver:
                await saver.setup()

    asyncio.run(saver_setup())
    alembic = databases.alembic_config(empty_database_url)
    command.upgrade(alembic, "head")
    command.check(alembic)
    if engine_name == "postgres":
        schema = asyncio.run(postgres_schema(postgres_conninfo(url)))
        assert [row["v"] for row in schema["versions"]] == list(
            range(len(AsyncPostgresSaver.MIGRATIONS))
        )


async def sqlite_schema(path: Path) -> dict[str, Any]:
    async with aiosqlite.connect(path) as conn:
        async with conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'") as cur:
            names = sorted(row[0] for row in await cur.fetchall())
        schema: dict[str, Any] = {}
        for name in names:
            if not (name.startswith("checkpoint") or name == "writes"):
                continue
            async with conn.execute(f"PRAGMA table_xinfo({name})") as cur:
                columns = await cur.fetchall()
            async with conn.execute(f"PRAGMA index_list({name})") as cur:
                indexes = [row[1:] for row in await cur.fetchall()]
            schema[name] = (columns, indexes)
        return schema


async def postgres_schema(conninfo: str) -> dict[str, Any]:
    async with await AsyncConnection.connect(conninfo, row_factory=dict_row) as conn:
        columns = await (
            await conn.execute(
                """SELECT table_name, column_name, ordinal_position, data_type, is_nullable,
                      column_default
               FROM information_schema.columns
               WHERE table_schema = 'public' AND table_name LIKE 'checkpoint%'
               ORDER BY table_name, ordinal_position"""
            )
        ).fetchall()
        indexes = await (
            await conn.execute(
                """SELECT tablename, indexname, indexdef FROM pg_indexes
               WHERE schemaname = 'public' AND tablename LIKE 'checkpoint%'
               ORDER BY tablename, indexname"""
            )
        ).fetchall()
        versions = await (
            await conn.execute("SELECT v FROM checkpoint_migrations ORDER BY v")
        ).fetchall()
        return {"columns": columns, "indexes": indexes, "versions": versions}


async def test_the_migration_builds_what_the_savers_setup_builds(
    database_url: str, empty_database_url: str, engine_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.undo()  # this test runs the savers' own setup() on the empty database
    if engine_name == "sqlite":
        empty_file = sqlite_path(normalize_database_url(empty_database_url))
        async with aiosqlite.connect(empty_file) as conn:
            await AsyncSqliteSaver(conn).setup()
        expected = await sqlite_schema(empty_file)
        assert set(expected) == SQLITE_TABLES
        migrated = await sqlite_schema(sqlite_path(normalize_database_url(database_url)))
    else:
        empty = postgres_conninfo(normalize_database_url(empty_database_url))
        async with AsyncPostgresSaver.from_conn_string(empty) as postgres_saver:
            await postgres_saver.setup()
        expected = await postgres_schema(empty)
        assert {row["table_name"] for row in expected["columns"]} == POSTGRES_TABLES
        assert len(expected["versions"]) == len(AsyncPostgresSaver.MIGRATIONS)
        migrated = await postgres_schema(postgres_conninfo(normalize_database_url(database_url)))
    assert migrated == expected


@pytest.mark.parametrize("engine_name", [POSTGRES])
async def test_postgres_setup_after_the_migration_is_a_no_op(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.undo()
    conninfo = postgres_conninfo(normalize_database_url(database_url))
    before = await postgres_schema(conninfo)
    assert [row["v"] for row in before["versions"]] == list(
        range(len(AsyncPostgresSaver.MIGRATIONS))
    )
    async with AsyncPostgresSaver.from_conn_string(conninfo) as postgres_saver:
        await postgres_saver.setup()
    assert await postgres_schema(conninfo) == before
