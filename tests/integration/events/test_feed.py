"""The global feed without a global append lock (Postgres): transactions that take their
ids and their positions in opposite orders, and appends to other threads running at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest
import sqlalchemy as sa

from main_backend.db import Database, create_database
from main_backend.events.store import EventStore
from main_backend.events.types import StoredEvent, new_id
from tests.integration.events.test_concurrency import read_feed
from tests.support.events import message_added, run_started, thread_created

pytestmark = [pytest.mark.postgres, pytest.mark.parametrize("engine_name", ["postgres"])]


@pytest.fixture
async def connections(database_url: str) -> AsyncIterator[list[psycopg.AsyncConnection]]:
    """Two plain connections, each its own explicit transaction."""
    opened = [await psycopg.AsyncConnection.connect(database_url) for _ in range(2)]
    yield opened
    for conn in opened:
        await conn.close()


async def insert_event(conn: psycopg.AsyncConnection, thread_id: str, version: int) -> int:
    """One event straight into the log (its xid by the column's default): its position."""
    row = await (
        await conn.execute(
            "INSERT INTO events (event_id, thread_id, version, type, data, metadata, "
            "recorded_at) VALUES (%s, %s, %s, 'message.added', '{}', '{}', now()) "
            "RETURNING position",
            (new_id(), thread_id, version),
        )
    ).fetchone()
    assert row is not None
    return int(row[0])


async def xact_id(conn: psycopg.AsyncConnection) -> int:
    row = await (await conn.execute("SELECT pg_current_xact_id()::text::bigint")).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("first_commit", ["smaller xid", "larger xid"])
async def test_a_transaction_with_the_smaller_id_and_the_larger_position_is_not_missed(
    store: EventStore, connections: list[psycopg.AsyncConnection], first_commit: str
) -> None:
    for thread_id in ("a", "b"):
        await store.append(thread_id, [thread_created()], 0)
    reader: list[StoredEvent] = await read_feed(store)

    async def read_on() -> list[StoredEvent]:
        page = await store.read_all(reader[-1].position, limit=100)
        reader.extend(page)
        return page

    early, late = connections
    early_xid = await xact_id(early)  # takes its id first ...
    late_xid = await xact_id(late)
    late_position = await insert_event(late, "a", 2)  # ... its position second
    early_position = await insert_event(early, "b", 2)
    assert early_xid < late_xid and early_position > late_position, "no inversion"

    assert await read_on() == []
    if first_commit == "smaller xid":
        await early.commit()
        # Served although a smaller position is still in flight: none can come before it.
        assert [e.position for e in await read_on()] == [early_position]
        await late.commit()
        assert [e.position for e in await read_on()] == [late_position]
    else:
        await late.commit()
        # Held back: the transaction with the smaller id may still write before it.
        assert await read_on() == []
        await early.commit()
        assert [e.position for e in await read_on()] == [early_position, late_position]
    assert await read_on() == []
    assert reader == await read_feed(store)  # nothing missed, nothing twice, never back


async def test_the_cursor_of_a_position_that_names_no_event(
    store: EventStore, connections: list[psycopg.AsyncConnection]
) -> None:
    await store.append("a", [thread_created(), message_added()], 0)
    conn = connections[0]
    await insert_event(conn, "a", 3)
    await conn.rollback()  # a position taken and never committed
    await store.append("a", [message_added()], 2)
    feed = await read_feed(store)
    assert [e.position for e in feed] == [1, 2, 4]
    # 3 names no event: it stands for the nearest event below it (2).
    assert await store.read_all(3) == await store.read_all(2) == feed[2:]
    assert await store.read_all(0) == feed
    assert await store.read_all(10**9) == []


async def waiting_query(db: Database) -> str | None:
    """The statement of a connection of this database that waits for a lock, if any."""
    async with db.engine.connect() as conn:
        query: str | None = await conn.scalar(
            sa.text(
                "SELECT query FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            )
        )
    return query


async def test_an_append_to_another_thread_never_waits_for_one_in_flight(
    store: EventStore, db: Database, database_url: str, connections: list[psycopg.AsyncConnection]
) -> None:
    for thread_id in ("a", "b"):
        await store.append(thread_id, [thread_created()], 0)
    # A run row of thread a, inserted and held uncommitted: the append that starts that
    # run waits for it at its last statement, with its thread locked and its events in.
    run_id, blocker = new_id(), connections[0]
    await blocker.execute(
        "INSERT INTO runs (thread_id, run_id, status, created_at) "
        "VALUES ('a', %s, 'pending', now())",
        (run_id,),
    )
    in_flight = asyncio.create_task(
        store.append("a", [message_added("q"), run_started(run_id, 2)], 1)
    )
    waiting = await waiting_query(db)
    while waiting is None:
        # Polled: the server is the only one to know when the append starts to wait.
        await asyncio.sleep(0.01)
        waiting = await waiting_query(db)
    assert waiting.startswith("INSERT INTO runs"), waiting

    # Any wait for a lock fails at once here (lock_timeout): the other thread's append
    # takes none that the append in flight holds.
    impatient = create_database(f"{database_url}?options=-c%20lock_timeout%3D200")
    try:
        other = EventStore(impatient)
        appended = await other.append("b", [message_added("b's")], 1)
        assert appended.version == 2
        # The same thread's next append does wait: for the append in flight to end.
        with pytest.raises(sa.exc.OperationalError, match="lock timeout"):
            await other.append("a", [message_added("too early")], 3)
    finally:
        await impatient.dispose()
    # The feed holds b's append back while a's, whose transaction began first, is open.
    assert [(e.thread_id, e.version) for e in await read_feed(store)] == [("a", 1), ("b", 1)]

    await blocker.rollback()
    assert (await in_flight).version == 3
    assert [(e.thread_id, e.version) for e in await read_feed(store)] == [
        ("a", 1),
        ("b", 1),
        ("a", 2),
        ("a", 3),
        ("b", 2),
    ]
