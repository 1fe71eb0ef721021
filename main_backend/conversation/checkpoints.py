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
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.engine import URL

from main_backend.db import normalize_database_url

__all__ = ["open_checkpointer", "prune_thread"]


@asynccontextmanager
async def open_checkpointer(
    database_url: str,
    *,
    sqlite_busy_timeout_ms: int = 30_000,
    pool_max_size: int = 2,
    pool_timeout: float = 30.0,
) -> AsyncIterator[BaseCheckpointSaver[str]]:
    """A checkpointer over DATABASE_URL (any form `normalize_database_url` accepts).

    The database must be migrated to head; the tables are not created here.
    """
    url = normalize_database_url(database_url)
    if url.get_backend_name() == "sqlite":
        async with _sqlite_saver(url, sqlite_busy_timeout_ms) as saver:
            yield saver
    else:
        async with _postgres_saver(url, pool_max_size, pool_timeout) as saver:
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
    async with aiosqlite.connect(path, timeout=busy_timeout_ms / 1000) as conn:
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        await conn.execute("PRAGMA synchronous=FULL")
        saver = AsyncSqliteSaver(conn)
        # Migration 0002 created the saver's tables; skip its runtime DDL.
        saver.is_setup = True
        yield saver


@asynccontextmanager
async def _postgres_saver(
    url: URL, max_size: int, wait_seconds: float
) -> AsyncIterator[AsyncPostgresSaver]:
    pool: AsyncConnectionPool[AsyncConnection[DictRow]] = AsyncConnectionPool(
        postgres_conninfo(url),
        # What AsyncPostgresSaver requires of its connections.
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
        min_size=1,
        max_size=max_size,
        timeout=wait_seconds,
        check=AsyncConnectionPool.check_connection,
        open=False,
    )
    await pool.open(wait=True, timeout=wait_seconds)
    try:
        yield AsyncPostgresSaver(pool)
    finally:
        await pool.close()
