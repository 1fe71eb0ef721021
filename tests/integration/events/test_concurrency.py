"""Concurrent writers and a tailing reader, on both engines."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import psycopg
import pytest
import sqlalchemy as sa

from main_backend.db import Database
from main_backend.events.store import EventStore
from main_backend.events.types import StoredEvent
from tests.integration.events.append_worker import append_with_retries
from tests.support.databases import query
from tests.support.events import message_added, thread_created
from tests.support.servers import REPO_ROOT


async def read_feed(store: EventStore, limit: int = 97) -> list[StoredEvent]:
    """The whole feed, page after page, as a reader following `after_position` reads it."""
    seen: list[StoredEvent] = []
    while page := await store.read_all(seen[-1].position if seen else 0, limit=limit):
        seen += page
    return seen


def feed_keys(database_url: str, events: list[StoredEvent]) -> list[tuple[int, int]]:
    """The place of each event in the feed's order: (xid, position) on Postgres, the
    position on SQLite (where no row has an xid)."""
    rows = query(database_url, "SELECT position, coalesce(xid, 0) FROM events")
    xids = {position: xid for position, xid in rows}
    return [(int(str(xids[e.position])), e.position) for e in events]


async def test_ten_writers_on_one_thread_get_gapless_versions(
    store: EventStore, database_url: str
) -> None:
    await store.append("t1", [thread_created()], 0)
    conflicts = await asyncio.gather(
        *(append_with_retries(store, "t1", 100, f"w{w}") for w in range(10))
    )
    events = await store.read_thread("t1")
    assert [e.version for e in events] == list(range(1, 1002))
    contents = [e.data["content"] for e in events[1:]]
    assert sorted(contents) == sorted(f"w{w}-{i}" for w in range(10) for i in range(100))
    assert sum(conflicts) > 0, "the writers never raced; the test proves nothing"
    thread = await store.get_thread("t1")
    assert thread is not None and (thread.version, thread.message_count) == (1001, 1000)
    # One thread's appends are serialised, each taking its transaction id (Postgres) after
    # the one before committed: the feed serves the thread in version order.
    feed = await read_feed(store)
    assert [e.version for e in feed] == list(range(1, 1002))
    assert feed_keys(database_url, feed) == sorted(feed_keys(database_url, feed))


async def test_a_feed_reader_misses_nothing_while_two_writers_append(
    store: EventStore, database_url: str
) -> None:
    per_writer, batch = 5000, 10
    done = asyncio.Event()

    async def writer(thread_id: str) -> None:
        version = (await store.append(thread_id, [thread_created()], 0)).version
        for start in range(1, per_writer, batch):
            size = min(batch, per_writer - start)
            events = [message_added(f"{thread_id}-{start + i}") for i in range(size)]
            version = (await store.append(thread_id, events, version)).version

    async def reader() -> list[StoredEvent]:
        seen: list[StoredEvent] = []
        position = 0
        while True:
            finished = done.is_set()
            page = await store.read_all(position, limit=97)
            seen += page
            if page:
                position = page[-1].position
            elif finished:
                return seen
            else:
                await asyncio.sleep(0)

    tail = asyncio.create_task(reader())
    await asyncio.gather(writer("a"), writer("b"))
    done.set()
    seen = await tail

    assert len(seen) == 2 * per_writer
    assert len({e.event_id for e in seen}) == len(seen)
    # Never back: each page continues the feed's order (on Postgres positions of two
    # threads may interleave out of order, their transactions' ids may not).
    keys = feed_keys(database_url, seen)
    assert keys == sorted(keys)
    assert seen == await read_feed(store)
    for thread_id in ("a", "b"):
        versions = [e.version for e in seen if e.thread_id == thread_id]
        assert versions == list(range(1, per_writer + 1))


def test_writers_in_separate_processes_get_gapless_versions(database_url: str) -> None:
    # SQLite: they wait for the write lock, never fail on it; Postgres: for the thread's.
    asyncio.run(_create_thread(database_url))
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration.events.append_worker",
                database_url,
                "t1",
                "60",
            ],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [worker.communicate(timeout=120) for worker in workers]
    for worker, (out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err
        assert "locked" not in err
        assert out.startswith("conflicts=")
    versions = asyncio.run(_versions(database_url))
    assert versions == list(range(1, 182))


async def _create_thread(database_url: str) -> None:
    from main_backend.db import create_database

    db = create_database(database_url)
    await EventStore(db).append("t1", [thread_created()], 0)
    await db.dispose()


async def _versions(database_url: str) -> list[int]:
    from main_backend.db import create_database

    db = create_database(database_url)
    events = await EventStore(db).read_thread("t1")
    await db.dispose()
    return [e.version for e in events]


@pytest.mark.postgres
@pytest.mark.parametrize("engine_name", ["postgres"])
async def test_the_pool_survives_dropped_server_connections(
    store: EventStore, db: Database, database_url: str, postgres_admin: str
) -> None:
    await store.append("t1", [thread_created()], 0)
    database = database_url.rsplit("/", 1)[1]
    with psycopg.connect(postgres_admin, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchone()
    assert killed is not None and killed[0] >= 1, "no pooled connection was open to kill"
    # Pooled connections are dead now; the checkout replaces them transparently.
    await store.append("t1", [message_added("after the restart")], 1)
    assert await store.current_version("t1") == 2


@pytest.mark.postgres
@pytest.mark.parametrize("engine_name", ["postgres"])
async def test_a_checked_out_connection_found_dead_at_its_first_statement_is_replaced(
    store: EventStore, db: Database, postgres_admin: str
) -> None:
    """The server drops the connection after the checkout looked at it (here: while it
    is checked out, unused): its first statement runs again on a new connection."""
    await store.append("t1", [thread_created()], 0)
    async with db.engine.connect() as conn:
        raw = await conn.get_raw_connection()
        assert raw.driver_connection is not None
        pid = raw.driver_connection.info.backend_pid
        with psycopg.connect(postgres_admin, autocommit=True) as admin:
            # With a timeout, it returns once the backend has gone.
            admin.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,))
        assert await conn.scalar(sa.text("SELECT pg_backend_pid()")) != pid
    assert await store.current_version("t1") == 1


@pytest.mark.postgres
@pytest.mark.parametrize("engine_name", ["postgres"])
async def test_a_read_found_dead_at_its_first_statement_runs_again_in_autocommit(
    store: EventStore, db: Database, postgres_admin: str
) -> None:
    await store.append("t1", [thread_created()], 0)
    async with db.reader.connect() as conn:
        raw = await conn.get_raw_connection()
        assert raw.driver_connection is not None
        pid = raw.driver_connection.info.backend_pid
        with psycopg.connect(postgres_admin, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,))
        assert await conn.scalar(sa.text("SELECT pg_backend_pid()")) != pid
        # Still in autocommit: no transaction is open after the statement.
        raw = await conn.get_raw_connection()
        assert raw.driver_connection is not None
        assert raw.driver_connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert await store.current_version("t1") == 1
