"""Migrations: `alembic upgrade head` is the only schema step, and models never drift."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from alembic import command

from main_backend.conversation.prompt import prompt_at
from main_backend.conversation.threads import ThreadService
from main_backend.db import create_database
from main_backend.events import projections
from main_backend.events.store import EventStore
from main_backend.events.types import (
    MESSAGE_ADDED,
    RUN_CANCELLED,
    RUN_FAILED,
    RUN_QUEUED,
    RUN_ROLLED_BACK,
    NewEvent,
)
from tests.support import databases
from tests.support.databases import query
from tests.support.events import message_added, run_completed, run_started, thread_created
from tests.support.servers import REPO_ROOT

OUR_TABLES = {"events", "threads", "messages", "runs"}


def tables(database_url: str) -> set[str]:
    sync_url = database_url.replace("postgresql://", "postgresql+psycopg://")
    engine = sa.create_engine(sync_url)
    try:
        return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade_round_trip(empty_database_url: str) -> None:
    config = databases.alembic_config(empty_database_url)
    command.upgrade(config, "head")
    assert tables(empty_database_url) >= OUR_TABLES
    command.check(config)  # raises if models and migrations drifted apart
    command.downgrade(config, "base")
    assert tables(empty_database_url) == set()
    command.upgrade(config, "head")
    assert tables(empty_database_url) >= OUR_TABLES
    command.check(config)


def test_the_deploy_command_reads_database_url(empty_database_url: str, engine_name: str) -> None:
    url = empty_database_url
    if engine_name == "postgres":
        # Written the way operators write it: the short scheme, no driver.
        url = url.replace("postgresql://", "postgres://")
    env = {**os.environ, "DATABASE_URL": url}
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert tables(empty_database_url) >= OUR_TABLES
    check = subprocess.run(
        [sys.executable, "-m", "alembic", "check"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stderr
    assert "No new upgrade operations detected" in check.stdout + check.stderr


def test_the_default_database_is_an_sqlite_file_under_data(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(REPO_ROOT / "alembic.ini"), "upgrade", "head"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "data" / "stubichat.db").is_file()


@pytest.mark.parametrize("engine_name", ["postgres"])
def test_checkpoint_tables_are_left_alone(empty_database_url: str) -> None:
    config = databases.alembic_config(empty_database_url)
    command.upgrade(config, "head")
    with psycopg.connect(empty_database_url) as conn:
        conn.execute("CREATE TABLE checkpoints_example (id int primary key)")
    command.check(config)  # a foreign table is not drift
    command.downgrade(config, "base")
    assert tables(empty_database_url) == {"checkpoints_example"}


def test_the_runs_migration_backfills_every_threads_runs(empty_database_url: str) -> None:
    """An upgrade to 0006 on a database with history gives the runs the appends would have."""
    config = databases.alembic_config(empty_database_url)
    command.upgrade(config, "head")
    asyncio.run(_write_runs(empty_database_url))
    snapshot = "SELECT * FROM runs ORDER BY thread_id, run_id"
    maintained = query(empty_database_url, snapshot)
    assert [(row[0], row[1], row[2]) for row in maintained] == [
        ("t-ended", "r-cancelled", "cancelled"),
        ("t-ended", "r-completed", "completed"),
        ("t-ended", "r-failed", "failed"),
        ("t-running", "r-running", "running"),
    ]
    command.downgrade(config, "0005")
    assert "runs" not in tables(empty_database_url)
    command.upgrade(config, "head")
    assert query(empty_database_url, snapshot) == maintained
    assert query(
        empty_database_url, "SELECT cancelled_by FROM runs WHERE run_id = 'r-cancelled'"
    ) == [("user",)]  # written before cancelled_by existed: the user's
    command.check(config)


async def _write_runs(database_url: str) -> None:
    db = create_database(database_url)
    try:
        store = EventStore(db)
        answer = message_added("done", role="assistant", run_id="r-completed")
        await store.append(
            "t-ended",
            [
                thread_created(),
                message_added("q1"),
                run_started("r-completed", 2),
                answer,
                run_completed("r-completed", answer.data["message_id"]),
                message_added("q2"),
                run_started("r-failed", 6),
                NewEvent(
                    RUN_FAILED,
                    {
                        "run_id": "r-failed",
                        "error": {"code": "llm_timeout", "message": "too slow"},
                        "partial_content": "",
                    },
                ),
                message_added("q3"),
                run_started("r-cancelled", 9),
                NewEvent(RUN_CANCELLED, {"run_id": "r-cancelled", "message_id": "m-c"}),
            ],
            0,
        )
        await store.append(
            "t-running", [thread_created(), message_added("q"), run_started("r-running", 2)], 0
        )
        assert (await projections.verify(db)).ok
    finally:
        await db.dispose()


def columns(database_url: str, table: str) -> set[str]:
    sync_url = database_url.replace("postgresql://", "postgresql+psycopg://")
    engine = sa.create_engine(sync_url)
    try:
        return {c["name"] for c in sa.inspect(engine).get_columns(table)}
    finally:
        engine.dispose()


def test_the_tree_migration_reads_threads_of_before_as_one_branch(empty_database_url: str) -> None:
    """An upgrade to 0009 on a database written before trees (no `parent_id` in its
    events) gives each message the one before it as parent, marks the path active and
    sets the thread's active leaf; a rollback of then (no `thread.head_moved` followed
    it) leaves its messages off the path, as the history of then left them out."""
    url = empty_database_url
    config = databases.alembic_config(url)
    command.upgrade(config, "head")
    ids = asyncio.run(_write_before_trees(url))
    q0, a0, q1, a1, q2, a2 = ids
    command.downgrade(config, "0008")
    assert not {"parent_id", "active"} & columns(url, "messages")
    assert "head_id" not in columns(url, "threads")
    command.upgrade(config, "head")

    tree = query(
        url,
        "SELECT message_id, parent_id, active, rolled_back FROM messages "
        "WHERE thread_id = 't-old' ORDER BY version",
    )
    assert [(m, p, bool(a), bool(r)) for m, p, a, r in tree] == [
        (q0, None, True, False),
        (a0, q0, True, False),
        (q1, a0, False, True),
        (a1, q1, False, True),
        (q2, a0, True, False),
        (a2, q2, True, False),
    ]
    heads = query(url, "SELECT thread_id, head_id FROM threads ORDER BY thread_id")
    assert heads == [("t-empty", None), ("t-old", a2)]
    command.check(config)
    asyncio.run(_read_after_trees(url, ids))


async def _write_before_trees(database_url: str) -> list[str]:
    """Appends shaped as the code of 0008 wrote them: messages without `parent_id`, and a
    rollback without the `thread.head_moved` that follows one today."""
    db = create_database(database_url)
    try:
        store = EventStore(db)
        q0, q1, q2 = message_added("Q0"), message_added("Q1"), message_added("Q2")
        a0 = message_added("A0", role="assistant", run_id="r0")
        a1 = message_added("A1 partial", role="assistant", run_id="r1", partial=True)
        a2 = message_added("A2", role="assistant", run_id="r2")
        queued = {"role": "user", "content": "Q2"}
        appends = [
            [thread_created(), q0, run_started("r0", 2)],
            [a0, run_completed("r0", a0.data["message_id"])],
            [q1, run_started("r1", 6)],
            [
                NewEvent(
                    RUN_QUEUED, {"run_id": "r2", "model": "m", "params": {}, "messages": [queued]}
                )
            ],
            [
                a1,
                NewEvent(
                    RUN_CANCELLED,
                    {
                        "run_id": "r1",
                        "message_id": a1.data["message_id"],
                        "cancelled_by": "rollback",
                    },
                ),
                NewEvent(
                    RUN_ROLLED_BACK,
                    {"run_id": "r1", "message_ids": [q1.data["message_id"], a1.data["message_id"]]},
                ),
            ],
            [q2, run_started("r2", 12)],
            [a2, run_completed("r2", a2.data["message_id"])],
        ]
        version = 0
        for events in appends:
            assert all("parent_id" not in e.data for e in events)
            version = (await store.append("t-old", events, version)).version
        await store.append("t-empty", [thread_created()], 0)
        return [e.data["message_id"] for e in (q0, a0, q1, a1, q2, a2)]
    finally:
        await db.dispose()


async def _read_after_trees(database_url: str, ids: list[str]) -> None:
    """The migrated thread reads as the history of then, and grows as a tree."""
    q0, a0, _, _, q2, a2 = ids
    db = create_database(database_url)
    try:
        store = EventStore(db)
        assert await projections.verify(db) == projections.VerifyReport(ok=True)
        listing, _ = await ThreadService(store).messages("alice", "t-old", 0, 100)
        assert [(e.message.content, e.sibling_ids) for e in listing] == [
            ("Q0", [q0]),
            ("A0", [a0]),
            ("Q2", [q2]),
            ("A2", [a2]),
        ]
        thread = await store.get_thread("t-old")
        assert thread is not None and thread.message_count == 4
        prompt = await prompt_at(store, thread, thread.head_id, None, 8000)
        assert [m["content"] for m in prompt.messages] == ["Q0", "A0", "Q2", "A2"]
        # A question edited today hangs beside Q2.
        edited = NewEvent(
            MESSAGE_ADDED,
            {**message_added("Q2 edited").data, "parent_id": a0},
        )
        await store.append("t-old", [edited], thread.version)
        listing, _ = await ThreadService(store).messages("alice", "t-old", 0, 100)
        assert [e.message.content for e in listing] == ["Q0", "A0", "Q2 edited"]
        assert listing[-1].sibling_ids == [q2, edited.data["message_id"]]
        assert await projections.verify(db) == projections.VerifyReport(ok=True)
    finally:
        await db.dispose()
