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

from main_backend.db import create_database
from main_backend.events import projections
from main_backend.events.store import EventStore
from main_backend.events.types import RUN_CANCELLED, RUN_FAILED, NewEvent
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
