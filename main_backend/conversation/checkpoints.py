"""LangGraph checkpointers over the app's database (SQLite file or Postgres).

The checkpoint tables belong to the schema: migration 0002 creates them with
the savers' own DDL, so nothing here creates tables. On Postgres the saver's
`setup()` is never called (the migration recorded its versions); on SQLite the
saver's lazy `setup()` (a CREATE TABLE IF NOT EXISTS script plus an ALTER TABLE
probe on first use) is skipped for the same reason.

SQLite: one `aiosqlite` connection of the saver's own to the app's file, in WAL
mode with a busy timeout, since the app writes the same file from its other
connections. Postgres: an `AsyncConnectionPool` with the connection settings
the saver requires, and a check of every connection it hands out (a look at its
socket, no round trip: `pg_connection.server_closed`), so the pool survives a
server restart. The saver serialises its own queries behind one
lock, so it never uses more than one connection at a time.

When the pool has lost its connections (an outage), the pool's wait for a new
one and its reconnection attempts are bounded by the connect timeout: a wait
fails promptly instead of holding the saver's lock (every run's checkpoints)
for long, and the pool's exponential reconnect backoff never grows past a few
seconds, so a connection is made again soon after the database is back.

Keys and pruning. The LangGraph thread of a turn is the Stubichat thread itself
(`run_config`: thread id, root namespace ""), so the thread's latest checkpoint is
what `graph.aget_state({"configurable": {"thread_id": ...}})` shows. Each run
records its id in its checkpoints' metadata (`metadata["run_id"]`: LangGraph copies
`config["metadata"]` into every checkpoint it saves), so SQL can tell a thread's
runs apart. The runner saves one checkpoint per run, when its graph exits
(`durability="exit"`), so a thread has few to prune. When a run is over,
`prune_ended_run` keeps its last checkpoint and deletes the thread's older ones;
`drop_run` deletes the checkpoints of a run whose input was never recorded. Both run
over the saver's own connection, behind its lock, in one transaction. LangGraph
checkpoint ids are time-ordered (uuid6), and neither ever deletes a checkpoint newer
than the run's first unless it is the run's own: another run of the thread may
start, and save checkpoints, before the previous run's pruning runs. Each checkpoint
holds every channel's value (the turn graph has no `DeltaChannel`), so keeping only
the latest loses nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.engine import URL

from main_backend.db import SQLiteConnection, normalize_database_url
from main_backend.pg_connection import (
    DatabaseTimeouts,
    bounded_connection_class,
    check_idle_connection,
)

__all__ = ["drop_run", "open_checkpointer", "prune_ended_run", "prune_thread", "run_config"]

# The checkpoint metadata key that names the run which saved a checkpoint: LangGraph's
# own. Its loop takes an input whose config names the run of the thread's latest
# checkpoint as a re-entry into that run, and does not apply it. The runner passes an
# input for a new run (the latest checkpoint is another run's) or to resume a run
# from its `run.started` when the latest checkpoint is not the run's own with work
# left; the run's own without work left is its final one, saved after its end was
# recorded, and such a run is never resumed.
RUN_ID_KEY = "run_id"
# Any fixed number: the first key of the per-thread Postgres advisory locks that
# serialise the pruning of one thread (apart from the event store's and leases').
PRUNE_LOCK_CLASS = 5_202_613


@asynccontextmanager
async def open_checkpointer(
    database_url: str,
    *,
    sqlite_busy_timeout_ms: int = 30_000,
    pool_max_size: int = 2,
    pool_timeout: float = 30.0,
    timeouts: DatabaseTimeouts | None = None,
) -> AsyncIterator[BaseCheckpointSaver[str]]:
    """A checkpointer over DATABASE_URL (any form `normalize_database_url` accepts).

    The database must be migrated to head; the tables are not created here.
    `timeouts` bound every Postgres connection and the pool's waits (see above).
    """
    url = normalize_database_url(database_url)
    if url.get_backend_name() == "sqlite":
        async with _sqlite_saver(url, sqlite_busy_timeout_ms) as saver:
            yield saver
    else:
        async with _postgres_saver(url, pool_max_size, pool_timeout, timeouts) as saver:
            yield saver


def run_config(thread_id: str, run_id: str) -> RunnableConfig:
    """The config that runs a turn of `thread_id`: the thread's own LangGraph thread
    (root namespace), with the run's id recorded in every checkpoint it saves."""
    return {"configurable": {"thread_id": thread_id}, "metadata": {RUN_ID_KEY: run_id}}


async def prune_thread(saver: BaseCheckpointSaver[str], thread_id: str) -> None:
    """Delete every checkpoint and pending write of one thread."""
    await saver.adelete_thread(thread_id)


async def prune_ended_run(saver: BaseCheckpointSaver[str], thread_id: str, run_id: str) -> int:
    """After a run whose input was recorded is over: keep its last checkpoint as the
    thread's latest and delete the thread's older ones; returns how many went.

    Deleted: the run's own checkpoints before its last, and every checkpoint of the
    thread older than the run's first (earlier runs', and those of a run refused
    meanwhile). Kept: anything newer than the run's first that is not the run's,
    that is, a later run's, which may be saving checkpoints already. A run
    without checkpoints (resumed from its `run.started` and closed as interrupted)
    deletes nothing. Their pending writes go with them, and on Postgres the blobs
    that only they used; the kept checkpoint's parent link is cleared, as
    LangGraph's own `keep_latest` pruning does.
    """
    return await _prune(saver, thread_id, run_id, keep_last=True)


async def drop_run(saver: BaseCheckpointSaver[str], thread_id: str, run_id: str) -> int:
    """Delete the checkpoints of a run whose input was never recorded; returns how many.

    Its state names a run the log does not know, so it is no state of the thread:
    the checkpoint before it (the previous run's) becomes the thread's latest again.
    Only this run's checkpoints go, with their writes (and blobs only they used).
    """
    return await _prune(saver, thread_id, run_id, keep_last=False)


def sqlite_path(url: URL) -> Path:
    """The file an SQLite URL names, as aiosqlite opens it."""
    assert url.database is not None  # normalize_database_url refuses URLs without one
    return Path(url.database).expanduser()


def postgres_conninfo(url: URL) -> str:
    """The libpq URI (`postgresql://…`, no SQLAlchemy driver suffix) for a Postgres URL."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@asynccontextmanager
async def _sqlite_saver(url: URL, busy_timeout_ms: int) -> AsyncIterator[AsyncSqliteSaver]:
    path = sqlite_path(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A connection that rolls back before it closes: LangGraph's last write may still
    # wait for its commit when the app stops (db.SQLiteConnection).
    async with aiosqlite.connect(
        path, timeout=busy_timeout_ms / 1000, factory=SQLiteConnection
    ) as conn:
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        await conn.execute("PRAGMA synchronous=FULL")
        saver = AsyncSqliteSaver(conn)
        # Migration 0002 created the saver's tables; skip its runtime DDL.
        saver.is_setup = True
        yield saver


@asynccontextmanager
async def _postgres_saver(
    url: URL, max_size: int, wait_seconds: float, timeouts: DatabaseTimeouts | None
) -> AsyncIterator[AsyncPostgresSaver]:
    bounds: dict[str, Any] = {"timeout": wait_seconds}
    if timeouts is not None:
        # The pool retries a lost connection with a backoff doubling from 1 s until
        # reconnect_timeout, then starts afresh on the next request: the gap between
        # two attempts stays below the connect timeout. A wait leaves room for two.
        bounds = {
            "connection_class": bounded_connection_class(timeouts),
            "timeout": 2.0 * timeouts.connect_seconds,
            "reconnect_timeout": float(timeouts.connect_seconds),
        }
    pool: AsyncConnectionPool[AsyncConnection[DictRow]] = AsyncConnectionPool(
        postgres_conninfo(url),
        # What AsyncPostgresSaver requires of its connections.
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
        min_size=1,
        max_size=max_size,
        # No ping per connection handed out: a look at its socket (pg_connection).
        check=check_idle_connection,
        open=False,
        **bounds,
    )
    await pool.open(wait=True, timeout=wait_seconds)
    try:
        yield AsyncPostgresSaver(pool)
    finally:
        await pool.close()


# Pruning ----------------------------------------------------------------------


async def _prune(
    saver: BaseCheckpointSaver[str], thread_id: str, run_id: str, *, keep_last: bool
) -> int:
    if isinstance(saver, AsyncSqliteSaver):
        async with saver.lock:
            return await _prune_sqlite(saver.conn, thread_id, run_id, keep_last)
    if isinstance(saver, AsyncPostgresSaver):
        async with saver.lock, _postgres_connection(saver) as conn, conn.transaction():
            return await _prune_postgres(conn, thread_id, run_id, keep_last)
    raise TypeError(f"cannot prune the checkpoints of a {type(saver).__name__}")


# The statements, with named parameters: `thread`, `run_id`, and the run's `first`
# and `last` checkpoint ids. The checkpoints that go are `_KEEP_LAST`'s (a run that
# ended) or `_DROP`'s (a run never recorded); `{run}` reads a checkpoint's run id
# from its metadata. Writes go with their checkpoint, and `before` (the run's first
# when it keeps its last, else null) also takes those left on an older checkpoint
# deleted before them (a run refused meanwhile saves its error on its checkpoint).
_KEEP_LAST = "checkpoint_id < {last} AND ({run} = {run_id} OR checkpoint_id < {first})"
_DROP = "{run} = {run_id}"
_BOUNDS = (
    "SELECT min(checkpoint_id) AS first_id, max(checkpoint_id) AS last_id FROM checkpoints "
    "WHERE thread_id = {thread} AND checkpoint_ns = '' AND {run} = {run_id}"
)
_DELETE_WRITES = (
    "DELETE FROM {writes} WHERE thread_id = {thread} AND (checkpoint_id < {before} "
    "OR checkpoint_id IN (SELECT checkpoint_id FROM checkpoints "
    "WHERE thread_id = {thread} AND {doomed}))"
)
_DELETE_CHECKPOINTS = "DELETE FROM checkpoints WHERE thread_id = {thread} AND {doomed}"
# The kept checkpoint's parent (the run's previous checkpoint, or the one it started
# from) has just been deleted.
_UNLINK_PARENT = (
    "UPDATE checkpoints SET parent_checkpoint_id = NULL "
    "WHERE thread_id = {thread} AND checkpoint_ns = '' AND checkpoint_id = {last}"
)


def _statements(style: str, run: str, writes: str) -> dict[str, str]:
    """The statements in one driver's parameter style (`:{}` or `%({})s`)."""
    marks = {name: style.format(name) for name in ("thread", "run_id", "first", "last", "before")}
    keep_last, drop = (d.format(run=run, **marks) for d in (_KEEP_LAST, _DROP))
    sql = {"bounds": _BOUNDS.format(run=run, **marks), "unlink": _UNLINK_PARENT.format(**marks)}
    for mode, doomed in (("keep_last", keep_last), ("drop", drop)):
        sql[f"writes_{mode}"] = _DELETE_WRITES.format(writes=writes, doomed=doomed, **marks)
        sql[f"checkpoints_{mode}"] = _DELETE_CHECKPOINTS.format(doomed=doomed, **marks)
    return sql


_SQLITE = _statements(":{}", f"json_extract(CAST(metadata AS TEXT), '$.{RUN_ID_KEY}')", "writes")


async def _prune_sqlite(
    conn: aiosqlite.Connection, thread_id: str, run_id: str, keep_last: bool
) -> int:
    # Take the write lock before reading, so no other connection commits in between.
    await conn.execute("BEGIN IMMEDIATE")
    try:
        params: dict[str, str | None] = {"thread": thread_id, "run_id": run_id}
        async with conn.execute(_SQLITE["bounds"], params) as cursor:
            params["first"], params["last"] = await cursor.fetchone() or (None, None)
        params["before"] = params["first"] if keep_last else None
        deleted = 0
        if params["last"] is not None or not keep_last:
            mode = "keep_last" if keep_last else "drop"
            await conn.execute(_SQLITE[f"writes_{mode}"], params)
            async with conn.execute(_SQLITE[f"checkpoints_{mode}"], params) as cursor:
                deleted = cursor.rowcount
            if keep_last:
                await conn.execute(_SQLITE["unlink"], params)
        await conn.commit()
        return deleted
    except BaseException:
        await conn.rollback()
        raise


# One statement prunes a thread on Postgres (after its lock, in the same transaction):
# its CTEs share one snapshot, so the checkpoints that stay are those of the thread that
# `gone` did not take. Blobs go when a gone checkpoint named them and none that stays
# does. A checkpoint being saved meanwhile names versions of its own run's earlier
# checkpoints (never deleted while that run goes on, being newer than the pruned run's
# first) or new ones, saved with it: a run's input rewrites every channel of the state.
_PRUNE_POSTGRES = """
WITH mine AS ({bounds}),
gone AS (
    DELETE FROM checkpoints c USING mine
    WHERE c.thread_id = %(thread)s AND {doomed}
    RETURNING c.checkpoint_ns, c.checkpoint_id, c.checkpoint -> 'channel_versions' AS versions
),
writes AS (
    DELETE FROM checkpoint_writes w USING mine
    WHERE w.thread_id = %(thread)s
    AND ({before} OR w.checkpoint_id IN (SELECT checkpoint_id FROM gone))
),
unlink AS (
    UPDATE checkpoints k SET parent_checkpoint_id = NULL FROM mine
    WHERE {keep_last} AND k.thread_id = %(thread)s AND k.checkpoint_ns = ''
    AND k.checkpoint_id = mine.last_id AND k.parent_checkpoint_id IS NOT NULL
),
freed AS (
    SELECT DISTINCT g.checkpoint_ns, v.key AS channel, v.value AS version
    FROM gone g, jsonb_each_text(g.versions) v
),
blobs AS (
    DELETE FROM checkpoint_blobs b USING freed f
    WHERE b.thread_id = %(thread)s AND b.checkpoint_ns = f.checkpoint_ns
    AND b.channel = f.channel AND b.version = f.version
    AND NOT EXISTS (
        SELECT 1 FROM checkpoints c, jsonb_each_text(c.checkpoint -> 'channel_versions') v
        WHERE c.thread_id = %(thread)s AND c.checkpoint_ns = f.checkpoint_ns
        AND v.key = f.channel AND v.value = f.version
        AND (c.checkpoint_ns, c.checkpoint_id) NOT IN (
            SELECT checkpoint_ns, checkpoint_id FROM gone
        )
    )
)
SELECT count(*) AS gone FROM gone
"""
_RUN = f"metadata ->> '{RUN_ID_KEY}'"
_PRUNE_POSTGRES_SQL = {
    mode: _PRUNE_POSTGRES.format(
        bounds=_BOUNDS.format(run=_RUN, thread="%(thread)s", run_id="%(run_id)s"),
        doomed=(
            "c.checkpoint_id < mine.last_id AND "
            f"(c.{_RUN} = %(run_id)s OR c.checkpoint_id < mine.first_id)"
            if keep_last
            else f"c.{_RUN} = %(run_id)s"
        ),
        before="w.checkpoint_id < mine.first_id" if keep_last else "false",
        keep_last="true" if keep_last else "false",
    )
    for mode, keep_last in (("keep_last", True), ("drop", False))
}


async def _prune_postgres(
    conn: AsyncConnection[DictRow], thread_id: str, run_id: str, keep_last: bool
) -> int:
    # One pruning of a thread at a time: two would delete the same rows in any order.
    # The lock comes first, in a statement of its own: the pruning's snapshot is then
    # taken after any other pruning of the thread committed.
    await conn.execute(
        "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (PRUNE_LOCK_CLASS, thread_id)
    )
    sql = _PRUNE_POSTGRES_SQL["keep_last" if keep_last else "drop"]
    row = await (await conn.execute(sql, {"thread": thread_id, "run_id": run_id})).fetchone()
    assert row is not None  # an aggregate: one row
    return int(row["gone"])


@asynccontextmanager
async def _postgres_connection(
    saver: AsyncPostgresSaver,
) -> AsyncIterator[AsyncConnection[DictRow]]:
    """A connection of the saver's (its pool's, or its one connection)."""
    if isinstance(saver.conn, AsyncConnectionPool):
        async with saver.conn.connection() as conn:
            yield conn
    else:
        yield saver.conn
