"""LangGraph checkpointers over the app's database (SQLite file or Postgres).

The checkpoint tables belong to the schema: migration 0002 creates them with
the savers' own DDL, so nothing here creates tables. On Postgres the saver's
`setup()` is never called (the migration recorded its versions); on SQLite the
saver's lazy `setup()` (a CREATE TABLE IF NOT EXISTS script plus an ALTER TABLE
probe on first use) is skipped for the same reason.

SQLite: one `aiosqlite` connection of the saver's own to the app's file, in WAL
mode with a busy timeout, since the app writes the same file from its other
connections. Postgres: an `AsyncConnectionPool` with the connection settings
the saver requires, and a check of every connection it hands out, so the pool
survives a server restart. The saver serialises its own queries behind one
lock, so it never uses more than one connection at a time.

When the pool has lost its connections (an outage), the pool's wait for a new
one and its reconnection attempts are bounded by the connect timeout: a wait
fails promptly instead of holding the saver's lock (every run's checkpoints)
for long, and the pool's exponential reconnect backoff never grows past a few
seconds, so a connection is made again soon after the database is back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.engine import URL

from main_backend.db import SQLiteConnection, normalize_database_url
from main_backend.pg_connection import DatabaseTimeouts, bounded_connection_class

__all__ = ["open_checkpointer", "prune_thread"]


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


async def prune_thread(saver: BaseCheckpointSaver[str], thread_id: str) -> None:
    """Delete every checkpoint and pending write of one thread."""
    await saver.adelete_thread(thread_id)


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
        check=AsyncConnectionPool.check_connection,
        open=False,
        **bounds,
    )
    await pool.open(wait=True, timeout=wait_seconds)
    try:
        yield AsyncPostgresSaver(pool)
    finally:
        await pool.close()
