"""Migrations: `alembic upgrade head` is the only schema step, and models never drift."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from alembic import command

from tests.support import databases
from tests.support.servers import REPO_ROOT

OUR_TABLES = {"events", "threads", "messages"}


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
