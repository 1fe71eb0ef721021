"""The event store on real SQLite files and a real Postgres: the same tests for both."""

from __future__ import annotations

import json
import math
from datetime import UTC

import pytest
import sqlalchemy as sa

from main_backend.db import Database
from main_backend.errors import EventIdConflict, InvalidEvent, VersionConflict
from main_backend.events.fold import MessageState
from main_backend.events.store import EventStore
from main_backend.events.types import NewEvent
from tests.support.events import message_added, run_completed, run_started, thread_created


async def table_counts(db: Database) -> tuple[int, int, int]:
    async with db.engine.connect() as conn:

        async def count(table: str) -> int:
            rows = sa.select(sa.func.count()).select_from(sa.table(table))
            return (await conn.execute(rows)).scalar_one()

        return await count("events"), await count("threads"), await count("messages")


async def test_append_stores_versions_positions_and_read_models(store: EventStore) -> None:
    question = message_added("What is 2+2?")
    first = await store.append("t1", [thread_created(owner="ann"), question], 0)
    answer = message_added("4", role="assistant", run_id="r1")
    second = await store.append(
        "t1", [run_started("r1", 2), answer, run_completed("r1", answer.data["message_id"])], 2
    )
    assert (first.version, second.version, first.replayed) == (2, 5, False)

    events = await store.read_thread("t1")
    assert [e.version for e in events] == [1, 2, 3, 4, 5]
    positions = [e.position for e in events]
    assert positions == sorted(positions) and len(set(positions)) == 5
    assert events[1].data == question.data and events[1].metadata == {"request_id": "test"}
    assert all(
        e.recorded_at.tzinfo is not None and e.recorded_at.utcoffset() == UTC.utcoffset(None)
        for e in events
    )
    # One append, one timestamp.
    assert events[2].recorded_at == events[4].recorded_at

    thread = await store.get_thread("t1")
    assert thread is not None
    assert (thread.owner, thread.version, thread.message_count, thread.status) == (
        "ann",
        5,
        2,
        "idle",
    )
    assert thread.updated_at == events[-1].recorded_at
    assert await store.current_version("t1") == 5
    assert await store.read_thread("t1", from_version=2, to_version=3) == events[1:3]
    assert await store.read_thread("t1", from_version=4, limit=1) == events[3:4]


async def test_a_stale_expected_version_is_a_conflict_and_writes_nothing(
    store: EventStore, db: Database
) -> None:
    await store.append("t1", [thread_created(), message_added()], 0)
    before = await table_counts(db)
    with pytest.raises(VersionConflict) as caught:
        await store.append("t1", [message_added()], 1)
    assert (caught.value.expected, caught.value.actual) == (1, 2)
    with pytest.raises(VersionConflict):
        await store.append("t1", [thread_created()], 0)
    assert await table_counts(db) == before


async def test_reappending_stored_events_is_a_no_op(store: EventStore, db: Database) -> None:
    batch = [thread_created(), message_added("once")]
    first = await store.append("t1", batch, 0)
    counts = await table_counts(db)
    again = await store.append("t1", batch, 0)
    assert again.replayed and again.events == first.events
    # Also after later appends moved the thread on.
    await store.append("t1", [message_added("later")], 2)
    assert (await store.append("t1", batch, 0)).events == first.events
    assert await table_counts(db) == (counts[0] + 1, counts[1], counts[2] + 1)


async def test_a_partial_overlap_is_refused(store: EventStore, db: Database) -> None:
    created, stored_message = thread_created(), message_added("stored")
    await store.append("t1", [created, stored_message], 0)
    before = await table_counts(db)
    with pytest.raises(EventIdConflict):
        await store.append("t1", [created, message_added("new")], 0)
    with pytest.raises(EventIdConflict):  # same id, other content
        changed = message_added("changed", event_id=stored_message.event_id)
        await store.append("t1", [created, changed], 0)
    with pytest.raises(EventIdConflict):  # an id stored in another thread
        await store.append("t2", [NewEvent(created.type, created.data, {}, created.event_id)], 0)
    with pytest.raises(EventIdConflict):  # current version matches, id reused
        await store.append("t1", [message_added("x", event_id=stored_message.event_id)], 2)
    assert await table_counts(db) == before


async def test_a_failing_batch_writes_nothing(store: EventStore, db: Database) -> None:
    await store.append("t1", [thread_created()], 0)
    before = await table_counts(db)
    # The third event is invalid for the thread (created twice): nothing of the batch stays.
    with pytest.raises(InvalidEvent):
        await store.append("t1", [message_added("a"), message_added("b"), thread_created()], 1)
    assert await table_counts(db) == before
    assert await store.current_version("t1") == 1


@pytest.mark.parametrize(
    ("thread_id", "events", "message"),
    [
        ("t1", [], "at least one event"),
        ("", [thread_created()], "thread_id"),
        ("x" * 65, [thread_created()], "thread_id"),
        ("t\x00", [thread_created()], "NUL"),
        ("t1", [NewEvent("thread.renamed", {})], "unknown event type"),
        ("t1", [NewEvent("thread.created", {"owner": "a"})], "needs"),
        ("t1", [thread_created(title="nul \x00 title")], "NUL"),
        ("t1", [thread_created(metadata={"k\x00": 1})], "NUL"),
        ("t1", [thread_created(metadata={"score": math.nan})], "JSON"),
        ("t1", [thread_created(metadata={"when": object()})], "JSON"),
        # What no engine or response could carry back, and metadata past its limits.
        ("t1", [thread_created(title="lone \ud800")], "surrogate"),
        ("t1", [thread_created(metadata={"\udc00": 1})], "surrogate"),
        ("t1", [thread_created(), message_added("x\ud800")], "surrogate"),
        ("t\ud800", [thread_created()], "surrogate"),
        ("t1", [thread_created(metadata=json.loads('{"k":' * 33 + "1" + "}" * 33))], "nested"),
        ("t1", [thread_created(metadata={"k": "x" * 16 * 1024})], "bytes"),
        ("t1", [thread_created(metadata=[1])], "type"),
        ("t1", [thread_created(), message_added(role="tool")], "role"),
        (
            "t1",
            [
                NewEvent("thread.deleted", {}, {}, "same"),
                NewEvent("thread.deleted", {}, {}, "same"),
            ],
            "twice",
        ),
    ],
)
async def test_events_that_must_not_be_stored_are_refused(
    store: EventStore, db: Database, thread_id: str, events: list[NewEvent], message: str
) -> None:
    with pytest.raises(InvalidEvent, match=message):
        await store.append(thread_id, events, 0)
    assert await table_counts(db) == (0, 0, 0)


async def test_nul_in_message_content_is_a_validation_error(
    store: EventStore, db: Database
) -> None:
    await store.append("t1", [thread_created()], 0)
    with pytest.raises(InvalidEvent, match="NUL"):
        await store.append("t1", [message_added("bad \x00 byte")], 1)
    assert await table_counts(db) == (1, 1, 0)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET type = 'thread.deleted'",
        "UPDATE events SET data = data WHERE version = 1",
        "DELETE FROM events",
        "DELETE FROM events WHERE version = 2",
    ],
)
async def test_the_database_refuses_to_rewrite_history(
    store: EventStore, db: Database, statement: str
) -> None:
    await store.append("t1", [thread_created(), message_added()], 0)
    before = await store.read_thread("t1")
    with pytest.raises(sa.exc.DatabaseError, match="append-only"):
        async with db.engine.begin() as conn:
            await conn.execute(sa.text(statement))
    assert await store.read_thread("t1") == before


@pytest.mark.postgres
@pytest.mark.parametrize("engine_name", ["postgres"])
async def test_postgres_refuses_truncate(store: EventStore, db: Database) -> None:
    await store.append("t1", [thread_created()], 0)
    with pytest.raises(sa.exc.DatabaseError, match="append-only"):
        async with db.engine.begin() as conn:
            await conn.execute(sa.text("TRUNCATE events CASCADE"))
    assert await store.current_version("t1") == 1


async def test_the_global_feed_pages_in_position_order(store: EventStore) -> None:
    await store.append("a", [thread_created()], 0)
    await store.append("b", [thread_created(), message_added()], 0)
    await store.append("a", [message_added()], 1)
    feed = await store.read_all(0, limit=10)
    assert [(e.thread_id, e.version) for e in feed] == [("a", 1), ("b", 1), ("b", 2), ("a", 2)]
    first_page = await store.read_all(0, limit=2)
    second_page = await store.read_all(first_page[-1].position, limit=2)
    assert first_page + second_page == feed
    assert await store.read_all(feed[-1].position) == []


async def test_a_path_is_read_a_window_of_parents_at_a_time(
    store: EventStore, db: Database
) -> None:
    await store.append("t1", [thread_created()], 0)
    version = 1
    for start in range(0, 600, 100):
        batch = [
            message_added(f"m{i}", role="user" if i % 2 == 0 else "assistant")
            for i in range(start, start + 100)
        ]
        version = (await store.append("t1", batch, version)).version
    # A branch beside the path: m300 edited, and 50 messages under the edit.
    m299 = await _message(store, "t1", 301)
    side = [_under(m299.message_id, "m300 edited")]
    for i in range(50):
        side.append(_under(side[-1].data["message_id"], f"s{i}"))
    version = (await store.append("t1", side, version)).version
    thread = await store.get_thread("t1")
    assert thread is not None and thread.head_id == side[-1].data["message_id"]
    statements: list[str] = []
    sa.event.listen(
        db.engine.sync_engine, "before_cursor_execute", lambda *args: statements.append(args[2])
    )

    newest = []
    async for message in store.iter_path("t1", thread.head_id, window=8):
        newest.append(message.content)
        if len(newest) == 5:
            break
    assert newest == ["s49", "s48", "s47", "s46", "s45"]
    # One window of 8 parents, one query.
    assert len([s for s in statements if "FROM messages" in s]) == 1

    path = [m.content async for m in store.iter_path("t1", thread.head_id, window=64)]
    assert path == [*(f"s{i}" for i in range(49, -1, -1)), "m300 edited"] + [
        f"m{i}" for i in range(299, -1, -1)
    ]
    old_leaf = await _message(store, "t1", 601)
    assert [m.content async for m in store.iter_path("t1", old_leaf.message_id, window=7)] == [
        f"m{i}" for i in range(599, -1, -1)
    ]
    assert [m async for m in store.iter_path("t1", None)] == []
    assert [m async for m in store.iter_path("t1", "no such message")] == []


async def _message(store: EventStore, thread_id: str, version: int) -> MessageState:
    (event,) = await store.read_thread(thread_id, from_version=version, to_version=version)
    message = await store.get_message(thread_id, event.data["message_id"])
    assert message is not None
    return message


def _under(parent_id: str, content: str) -> NewEvent:
    event = message_added(content)
    return NewEvent(event.type, {**event.data, "parent_id": parent_id}, event.metadata)


@pytest.mark.parametrize("engine_name", ["sqlite"])
async def test_sqlite_connections_use_wal_busy_timeout_and_foreign_keys(db: Database) -> None:
    async with db.engine.connect() as conn:
        pragmas = [
            (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar()
            for name in ("journal_mode", "busy_timeout", "foreign_keys")
        ]
    assert pragmas == ["wal", 30000, 1]
