"""Read models: maintained with each append, rebuilt from the log, verified against it."""

from __future__ import annotations

import asyncio
from typing import Any

import sqlalchemy as sa

from main_backend.db import Database
from main_backend.events import projections
from main_backend.events.store import EventStore
from main_backend.events.types import THREAD_DELETED, THREAD_UPDATED, NewEvent
from tests.support.events import message_added, run_completed, run_started, thread_created


async def snapshot(db: Database) -> dict[str, list[dict[str, Any]]]:
    async with db.engine.connect() as conn:
        return {
            table: [
                dict(row._mapping)
                for row in await conn.execute(sa.text(f"SELECT * FROM {table} ORDER BY {key}"))
            ]
            for table, key in (
                ("threads", "thread_id"),
                ("messages", "message_id"),
                ("runs", "run_id"),
            )
        }


async def populate(store: EventStore) -> None:
    for n in range(5):
        thread_id = f"thread-{n}"
        version = (await store.append(thread_id, [thread_created(owner=f"u{n % 2}")], 0)).version
        for turn in range(n + 1):
            answer = message_added(f"answer {turn}", role="assistant", run_id=f"r{n}-{turn}")
            version = (
                await store.append(
                    thread_id,
                    [
                        message_added(f"question {turn}"),
                        run_started(f"r{n}-{turn}", version + 1),
                        answer,
                        run_completed(f"r{n}-{turn}", answer.data["message_id"]),
                    ],
                    version,
                )
            ).version
    await store.append("thread-1", [NewEvent(THREAD_UPDATED, {"title": "renamed"})], 9)
    await store.append("thread-2", [NewEvent(THREAD_DELETED, {})], 13)
    await store.append("thread-3", [message_added("pending"), run_started("r-open", 18)], 17)


async def test_rebuild_equals_the_incrementally_maintained_read_models(
    store: EventStore, db: Database
) -> None:
    await populate(store)
    maintained = await snapshot(db)
    assert (await projections.verify(db)).ok

    report = await projections.rebuild(db)
    assert await snapshot(db) == maintained
    assert (report.threads, report.messages) == (5, len(maintained["messages"]))
    assert report.runs == len(maintained["runs"]) == 1 + 2 + 3 + 4 + 5 + 1
    async with db.engine.connect() as conn:
        assert report.events == await conn.scalar(sa.text("SELECT count(*) FROM events"))
    assert report.duration_ms >= 0
    assert (await projections.verify(db)).ok
    busy = await store.get_thread("thread-3")
    assert busy is not None and busy.status == "busy"
    statuses = {row["run_id"]: row["status"] for row in maintained["runs"]}
    assert statuses["r-open"] == "running"
    assert set(statuses.values()) == {"running", "completed"}


async def test_rebuilds_while_threads_are_appended_to_keep_the_read_models_exact(
    store: EventStore, db: Database
) -> None:
    # A rebuild keeps appends out while it runs (Postgres: table locks, since appends take
    # no global lock; SQLite: the write lock): none is lost nor folded twice.
    async def writer(thread_id: str) -> None:
        version = (await store.append(thread_id, [thread_created()], 0)).version
        for i in range(30):
            version = (await store.append(thread_id, [message_added(f"{i}")], version)).version

    async def rebuilder() -> None:
        for _ in range(5):
            await projections.rebuild(db)
            await asyncio.sleep(0)

    await asyncio.gather(*(writer(f"t{w}") for w in range(4)), rebuilder())
    assert (await projections.verify(db)).ok
    for w in range(4):
        thread = await store.get_thread(f"t{w}")
        assert thread is not None and (thread.version, thread.message_count) == (31, 30)


async def test_rebuild_restores_wiped_read_models(store: EventStore, db: Database) -> None:
    await populate(store)
    maintained = await snapshot(db)
    async with db.engine.begin() as conn:
        await conn.execute(sa.text("DELETE FROM runs"))
        await conn.execute(sa.text("DELETE FROM messages"))
        await conn.execute(sa.text("DELETE FROM threads"))
    assert not (await projections.verify(db)).ok
    await projections.rebuild(db)
    assert await snapshot(db) == maintained


async def test_verify_names_each_tampered_field(store: EventStore, db: Database) -> None:
    await populate(store)
    async with db.engine.begin() as conn:
        await conn.execute(
            sa.text("UPDATE threads SET title = 'forged' WHERE thread_id = 'thread-0'")
        )
        await conn.execute(
            sa.text(
                "UPDATE messages SET role = 'system' WHERE thread_id = 'thread-4' AND version = 2"
            )
        )
        await conn.execute(
            sa.text("DELETE FROM messages WHERE thread_id = 'thread-1' AND version = 4")
        )
        await conn.execute(sa.text("UPDATE runs SET model = 'forged' WHERE run_id = 'r2-1'"))
        await conn.execute(sa.text("DELETE FROM runs WHERE run_id = 'r3-0'"))
        await conn.execute(
            sa.text(
                "INSERT INTO runs (thread_id, run_id, status, created_at) "
                "SELECT thread_id, 'ghost-run', status, created_at FROM runs "
                "WHERE run_id = 'r0-0'"
            )
        )
    report = await projections.verify(db)
    assert not report.ok
    found = {(m["kind"], m["thread_id"], m.get("field")) for m in report.mismatches}
    assert found == {
        ("thread", "thread-0", "title"),
        ("message", "thread-4", "role"),
        ("missing_message", "thread-1", None),
        ("run", "thread-2", "model"),
        ("missing_run", "thread-3", None),
        ("extra_run", "thread-0", None),
    }
    forged = next(m for m in report.mismatches if m.get("field") == "title")
    assert (forged["expected"], forged["actual"]) == ("A thread", "forged")


async def test_verify_reports_read_models_without_events(store: EventStore, db: Database) -> None:
    await populate(store)
    async with db.engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO threads (thread_id, owner, metadata, created_at, updated_at, version, "
                "message_count, deleted) SELECT 'ghost', owner, metadata, created_at, updated_at, "
                "1, 0, deleted FROM threads WHERE thread_id = 'thread-0'"
            )
        )
    report = await projections.verify(db)
    assert report.mismatches == [{"kind": "extra_thread", "thread_id": "ghost"}]
