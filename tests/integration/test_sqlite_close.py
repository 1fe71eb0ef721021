"""A SQLite connection closed in the middle of a transaction leaves the database writable.

`sqlite3.Connection.close()` on a connection whose statement is still alive in some
cursor (an `executemany`'s, or a SELECT's with rows left) does not really close it:
SQLite keeps it as a "zombie" with its open transaction, and so its write lock, until
that cursor is garbage-collected. Two ways a replica gets there, both when it stops with
a run in flight (and both the cause of the survivor's `database is locked`):

- a task cancelled mid-statement inside a write transaction: SQLAlchemy takes the
  cancel for a lost connection and closes it without a rollback, while the traceback
  still holds the cursor;
- the checkpointer closed while LangGraph's last checkpoint write (the cancelled node's
  error, saved from a callback nobody waits for) has run its INSERTs and waits for its
  commit.

Every connection the app opens to SQLite rolls back before it closes, so neither can
keep the lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from sqlalchemy import event

from main_backend.conversation.checkpoints import open_checkpointer
from main_backend.db import create_database

pytestmark = pytest.mark.parametrize("engine_name", ["sqlite"])


def writable(database_url: str) -> bool:
    """Whether another connection can take the write lock now."""
    probe = sqlite3.connect(
        database_url.removeprefix("sqlite:///"), timeout=0.2, isolation_level=None
    )
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        probe.close()


@contextlib.contextmanager
def no_cycle_collection() -> Iterator[None]:
    """Garbage in reference cycles (a traceback's frames and the cursor in them) stays
    until the end, as it may for minutes in a busy process: the check is then the same
    every time, not a matter of when the collector runs."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def pause(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


async def test_a_writer_cancelled_mid_statement_leaves_the_database_writable(
    database_url: str,
) -> None:
    db = create_database(database_url, sqlite_busy_timeout_ms=200)

    @event.listens_for(db.engine.sync_engine, "connect")
    def add_pause(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.create_function("pause", 1, pause)

    async def write() -> None:
        async with db.writer.begin() as conn:
            await conn.execute(sa.text("DELETE FROM run_progress"))
            # The lease renewal's shape: a SELECT inside the write transaction, cancelled
            # while SQLite runs it (its first row comes after the pause).
            await conn.execute(sa.text("SELECT pause(0.3) FROM (SELECT 1 UNION ALL SELECT 2)"))

    try:
        with no_cycle_collection():
            writing = asyncio.create_task(write())
            await asyncio.sleep(0.1)
            writing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writing
            assert writable(database_url)
            async with db.writer.begin() as conn:  # and so can the app
                await conn.execute(sa.text("DELETE FROM run_progress"))
    finally:
        await db.dispose()


async def test_closing_the_checkpointer_mid_write_leaves_the_database_writable(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    committing, commit_now = asyncio.Event(), asyncio.Event()
    config: Any = {"configurable": {"thread_id": "t:r", "checkpoint_ns": "", "checkpoint_id": "c"}}
    with no_cycle_collection():
        async with open_checkpointer(database_url) as saver:
            assert isinstance(saver, AsyncSqliteSaver)
            commit = saver.conn.commit

            async def commit_later() -> None:
                committing.set()
                await commit_now.wait()
                await commit()

            monkeypatch.setattr(saver.conn, "commit", commit_later)
            writing = asyncio.create_task(saver.aput_writes(config, [("steps", ["x"])], "task"))
            await committing.wait()  # its INSERTs ran; its commit waits
            assert saver.conn.in_transaction
        # Closed with the write's transaction open and its cursor alive.
        assert writable(database_url)
        commit_now.set()
        with pytest.raises(ValueError, match="closed"):
            await writing
    assert writable(database_url)
